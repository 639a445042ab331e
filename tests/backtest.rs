//! Backtests on fixed simulated worlds, small enough for CI: the win-rate
//! detector accuses no honest manager and finds diverters.

use feidan::backtest::{replay, score_managers, GroundTruth};
use feidan::config::Config;
use feidan::simulate::{SimConfig, Simulation};

fn backtest(seed: u64) -> feidan::backtest::ManagerScore {
    let mut simulation = Simulation::new(SimConfig {
        seed,
        managers: 40,
        days: 450,
        ..SimConfig::default()
    });
    let mut lines = Vec::new();
    for events in simulation.by_ref() {
        for event in events {
            lines.extend(event.to_json().to_string().into_bytes());
            lines.push(b'\n');
        }
    }
    let truth = GroundTruth::parse(&serde_json::to_string(simulation.labels()).unwrap()).unwrap();
    let report = replay(&Config::defaults(), lines.as_slice(), |_| Ok(())).unwrap();
    score_managers(&report.alerts, &truth)
}

#[test]
fn no_honest_manager_is_accused_and_diverters_are_found() {
    for seed in [11, 12] {
        let score = backtest(seed);
        assert_eq!(score.falsely_accused, 0, "seed {seed}: {score:?}");
        assert!(score.detected >= 1, "seed {seed}: {score:?}");
        assert!(
            score.median_delay_days.unwrap() <= 150.0,
            "seed {seed}: {score:?}"
        );
    }
}

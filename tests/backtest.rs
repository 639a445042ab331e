//! Backtests on fixed simulated worlds, small enough for CI (40 managers,
//! 450 days, every diversion style and every confounder of the simulator).
//! They pin the detection quality measured when the detectors were tuned,
//! so a change that accuses honest managers or loses diverters fails here.
//! (The targets and where feidan stands against them: README.)

use feidan::backtest::{
    replay, score_accounts, score_managers, AccountScore, GroundTruth, ManagerScore,
};
use feidan::config::Config;
use feidan::simulate::{SimConfig, Simulation};

/// A CI-sized world: 40 managers over 450 days.
fn world(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        managers: 40,
        days: 450,
        ..SimConfig::default()
    }
}

fn backtest(world: SimConfig) -> (ManagerScore, AccountScore) {
    let mut simulation = Simulation::new(world);
    let mut lines = Vec::new();
    for events in simulation.by_ref() {
        for event in events {
            lines.extend(event.to_json().to_string().into_bytes());
            lines.push(b'\n');
        }
    }
    let truth = GroundTruth::parse(&serde_json::to_string(simulation.labels()).unwrap()).unwrap();
    let report = replay(&Config::defaults(), lines.as_slice(), |_| Ok(())).unwrap();
    (
        score_managers(&report.alerts, &truth),
        score_accounts(&report.alerts, &truth),
    )
}

#[test]
fn no_honest_manager_is_accused_and_most_diverters_are_found() {
    for seed in [11, 12] {
        let (managers, accounts) = backtest(world(seed));
        // Downturns, holiday lulls, leave, new hires and reassignments are all
        // in these worlds: none of them may page anyone.
        assert_eq!(managers.falsely_accused, 0, "seed {seed}: {managers:?}");
        assert!(managers.recall >= 0.75, "seed {seed}: {managers:?}");
        assert!(
            managers.median_delay_days.unwrap() <= 70.0,
            "seed {seed}: {managers:?}"
        );
        // The target is 0.8 for both. Measured (precision / recall)
        // 0.96 / 0.83 (seed 11) and 0.89 / 0.94 (seed 12) since the holiday
        // lull slows ordering only while it lasts; seed 12's six false
        // alerts are honest gaps of three mean gaps and more, at p of 0.0005
        // to 0.0007. On the worlds of the old lull (a January order could
        // pause for months) it was 0.96 / 0.73 and 0.97 / 0.76.
        assert!(accounts.precision >= 0.85, "seed {seed}: {accounts:?}");
        assert!(accounts.recall >= 0.80, "seed {seed}: {accounts:?}");
    }
}

#[test]
fn a_manager_alone_in_a_team_is_not_accused_on_a_short_history() {
    // Every manager a team of one: no teammates lend a baseline. Before
    // every baseline held two pseudo-deals, a spotless dozen deals made
    // any leak look impossible, and 2 honest managers were accused here.
    let (managers, _) = backtest(SimConfig {
        managers_per_team: 1,
        ..world(11)
    });
    assert_eq!(managers.falsely_accused, 0, "{managers:?}");
    assert!(managers.recall >= 0.75, "{managers:?}");
}

#[test]
fn a_shrinking_company_is_not_a_lull() {
    // Honest churn takes half the accounts a year, so the company's orders
    // fall steadily. Against a business baseline of a year that read as a
    // lull, business time ran slow and account recall was 0.77; with the
    // 120-day baseline it is 0.82, with no false alert.
    let (_, accounts) = backtest(SimConfig {
        churn_per_year: 0.5,
        ..world(11)
    });
    assert!(accounts.recall >= 0.80, "{accounts:?}");
    assert!(accounts.precision >= 0.95, "{accounts:?}");
}

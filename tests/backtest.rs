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
        // Measured 35 and 50 days (in the worlds of the simulator before
        // new hires' churn was drawn over their own months: 35 and 56; 40
        // and 62.5 before quiet accounts the manager keeps visiting counted
        // in book churn, churn.visited_alpha).
        assert!(
            managers.median_delay_days.unwrap() <= 60.0,
            "seed {seed}: {managers:?}"
        );
        // The target is 0.8 for both. Measured (precision / recall)
        // 0.94 / 0.83 (seed 11) and 0.90 / 0.92 (seed 12); before new
        // hires' churn was fixed in the simulator, 0.96 / 0.83 and 0.89 /
        // 0.94, whose six false alerts on seed 12 were honest gaps of three
        // mean gaps and more, at p of 0.0005 to 0.0007. On the worlds of the
        // old lull (a January order could pause for months) it was 0.96 /
        // 0.73 and 0.97 / 0.76.
        assert!(accounts.precision >= 0.85, "seed {seed}: {accounts:?}");
        assert!(accounts.recall >= 0.80, "seed {seed}: {accounts:?}");
    }
}

/// Where two managers in five divert, most of the company's quiet accounts
/// still visited are theirs: book churn reckons the company's shares without
/// the books that stand out, so the diverters do not hide one another.
#[test]
fn diverters_do_not_hide_one_another() {
    for seed in [31, 34] {
        let (managers, _) = backtest(SimConfig {
            diverter_share: 0.4,
            ..world(seed)
        });
        assert_eq!(managers.falsely_accused, 0, "seed {seed}: {managers:?}");
        // Measured 13 and 14 of 16 found, in 46 and 48 days; 45 and 51
        // days when business time ran on the company's orders alone (seed
        // 34's diverted accounts' silence slowed the clock their silence is
        // measured on, see `engine::pace`). In the worlds of the simulator
        // before new hires' churn was fixed: 43 and 39 days, and 60 and 61
        // when the shares counted every book.
        assert!(managers.recall >= 0.8, "seed {seed}: {managers:?}");
        assert!(
            managers.median_delay_days.unwrap() <= 50.0,
            "seed {seed}: {managers:?}"
        );
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
    // 120-day baseline it was 0.82. In the world of the simulator with new
    // hires' churn fixed, business time on orders alone ran at 0.58 over
    // the last months and recall was 0.796; with the orders the accounts
    // still ordering expect (`engine::pace`) the clock runs at about 0.8
    // there (the holiday lull among it), and recall is 0.82 (177 of 216),
    // with no false alert.
    let (_, accounts) = backtest(SimConfig {
        churn_per_year: 0.5,
        ..world(11)
    });
    assert!(accounts.recall >= 0.80, "{accounts:?}");
    assert!(accounts.precision >= 0.95, "{accounts:?}");
}

#[test]
fn the_backtest_gives_the_transitions_of_one_engine_in_the_same_order() {
    // The backtest runs the account and manager stages on two threads, as
    // scaled-out feidan does: what it writes must be what one engine
    // writes, byte for byte and in the same order, whatever the input
    // holds (repeats, lines that are not events, events a week late).
    let mut lines: Vec<Vec<u8>> = Simulation::new(world(12))
        .flatten()
        .map(|event| event.to_json().to_string().into_bytes())
        .collect();
    // An event of a few days before, with an id of its own: late, and applied.
    let at = lines.len() * 3 / 5;
    let late = String::from_utf8(lines[at - 700].clone())
        .unwrap()
        .replacen("\"event_id\":\"", "\"event_id\":\"late-", 1)
        .into_bytes();
    for (i, at) in [1_000, 20_000, 40_000].into_iter().enumerate() {
        let repeat = lines[at - 500].clone();
        lines.insert(at, repeat);
        lines.insert(at + 1, format!("not an event {i}").into_bytes());
    }
    lines.insert(at, late);
    let config = Config::defaults();

    let mut engine = feidan::engine::Engine::new(&config);
    let mut one = Vec::new();
    let mut outcomes = std::collections::BTreeMap::<&str, u64>::new();
    for line in &lines {
        *outcomes
            .entry(engine.ingest(line, 0, &mut one).outcome.label())
            .or_default() += 1;
    }
    let joined: Vec<u8> = lines.join(&b'\n');
    let mut written = Vec::new();
    let report = replay(&config, joined.as_slice(), |alert| {
        written.push(alert.to_json().to_string());
        Ok(())
    })
    .unwrap();

    let one: Vec<String> = one.iter().map(|a| a.to_json().to_string()).collect();
    assert!(
        ["account_churn", "book_churn", "diversion_risk"]
            .iter()
            .all(|kind| one.iter().any(|a| a.contains(kind))),
        "the world must raise account and manager alerts for this to mean anything"
    );
    assert_eq!(written.len(), one.len());
    for (i, (a, b)) in written.iter().zip(&one).enumerate() {
        assert_eq!(a, b, "transition {i} differs");
    }
    assert_eq!(report.outcomes, outcomes);
    assert_eq!(report.outcomes["duplicate"], 3);
    assert_eq!(report.outcomes["late"], 1);
    let (state, expected) = (&report.state, engine.stats());
    assert_eq!(
        (state.accounts, state.open_opportunities, state.managers),
        (
            expected.accounts,
            expected.open_opportunities,
            expected.managers
        )
    );
    assert_eq!(
        (state.remembered_event_ids, state.buffered_events),
        (expected.remembered_event_ids, expected.buffered_events)
    );
    assert_eq!(state.evictions, expected.evictions);
    assert_eq!(state.active, expected.active);
    assert_eq!(report.watermark, engine.watermark());
}

//! Metrics cardinality under a flood of managers: per-manager series stay
//! within `metrics.max_manager_series`, what the cap drops is counted, and
//! no account id ever becomes a label.

use feidan::config::Config;
use feidan::engine::Engine;
use feidan::metrics::Metrics;
use feidan::time::{Timestamp, DAY};
use std::collections::BTreeSet;

#[test]
fn a_flood_of_managers_stays_within_the_series_cap() {
    let config = Config::defaults();
    let mut engine = Engine::new(&config);
    let mut out = Vec::new();
    let managers = 3_000;
    // Every manager closes a deal on their own account over a few days.
    for day in 0..5i64 {
        for m in 0..managers {
            let at = Timestamp(1_735_689_600 + day * DAY + 3_600 + m as i64);
            let event = format!(
                r#"{{"event_id":"e-{day}-{m}","type":"opportunity_won","occurred_at":"{at}","manager_id":"kam-{m}","account_id":"acc-{m}","team":"team-{}","opportunity_id":"o-{day}-{m}","amount":1000}}"#,
                m % 40
            );
            engine.ingest(event.as_bytes(), 0, &mut out);
        }
    }
    let cap = 250;
    let metrics = Metrics::new(true, cap);
    metrics.refresh(&engine.stats(), 0.0);
    let text = metrics.render();

    let managers_exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("feidan_manager_"))
        .filter_map(|l| l.split("manager_id=\"").nth(1)?.split('"').next())
        .collect();
    assert!(
        engine.stats().managers >= managers,
        "the flood reached the engine"
    );
    assert_eq!(
        managers_exported.len(),
        cap,
        "per-manager series are capped"
    );
    assert!(
        metrics.series_dropped.get() >= (managers - cap) as u64,
        "what the cap drops is counted"
    );
    assert!(!text.contains("account_id"), "account ids are never labels");
    // A second refresh keeps the same managers and counts the drops again.
    metrics.refresh(&engine.stats(), 0.0);
    let again: usize = metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("feidan_manager_risk_score{"))
        .count();
    assert_eq!(again, cap);
}

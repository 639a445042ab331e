//! Resident memory per entity: grows the engine's accounts, managers and open
//! opportunities to N each (default 1,000,000 accounts and opportunities,
//! 100,000 managers; `FEIDAN_BENCH_SCALE` divides them) and divides the
//! growth of the process's resident set by N. Linux only (/proc/self/statm).

use feidan::config::Config;
use feidan::engine::Engine;
use feidan::time::Timestamp;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Bytes per entity after ingesting `n` events made by `event(i)`.
fn measure(n: usize, event: impl Fn(usize, &str) -> String) -> f64 {
    let mut config = Config::defaults();
    // Remembered event ids are per event, not per entity: keep them out.
    config.engine.dedup_capacity = 1_000;
    let mut engine = Engine::new(&config);
    let mut out = Vec::new();
    // Midday, so that pushing the watermark past the events crosses no day
    // boundary and runs no evaluation.
    let at = Timestamp(1_735_732_800).to_string();
    let later = Timestamp(1_735_732_800 + 7_200).to_string();
    let before = resident_bytes();
    for i in 0..n {
        engine.ingest(event(i, &at).as_bytes(), 0, &mut out);
    }
    let push = format!(
        r#"{{"event_id":"push","type":"activity_logged","occurred_at":"{later}","manager_id":"m","account_id":"push","activity":"call"}}"#
    );
    engine.ingest(push.as_bytes(), 0, &mut out);
    let after = resident_bytes();
    let stats = engine.stats();
    assert!(stats.buffered_events <= 1, "events were applied");
    std::hint::black_box(&engine);
    (after.saturating_sub(before)) as f64 / n as f64
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let scale: usize = std::env::var("FEIDAN_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let (accounts, managers, opportunities) =
        (1_000_000 / scale, 100_000 / scale, 1_000_000 / scale);

    let per_account = measure(accounts, |i, at| {
        format!(
            r#"{{"event_id":"a{i}","type":"order_placed","occurred_at":"{at}","manager_id":"kam-{}","account_id":"acc-{i:07}","order_id":"o{i}","amount":100}}"#,
            i % 1000
        )
    });
    let per_manager = measure(managers, |i, at| {
        format!(
            r#"{{"event_id":"m{i}","type":"opportunity_won","occurred_at":"{at}","manager_id":"kam-{i:06}","account_id":"acc-{i:06}","team":"team-{}","opportunity_id":"w{i}","amount":100}}"#,
            i % 100
        )
    });
    let per_opportunity = measure(opportunities, |i, at| {
        format!(
            r#"{{"event_id":"p{i}","type":"opportunity_created","occurred_at":"{at}","manager_id":"kam-1","account_id":"acc-{}","opportunity_id":"opp-{i:07}","amount":100}}"#,
            i % 1000
        )
    });
    println!("memory/account          {per_account:>8.0} bytes  ({accounts} accounts)");
    println!("memory/manager          {per_manager:>8.0} bytes  ({managers} managers, each with one account)");
    println!("memory/open_opportunity {per_opportunity:>8.0} bytes  ({opportunities} opportunities on 1000 accounts)");
}

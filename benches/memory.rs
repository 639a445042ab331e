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
    // So is the buffer of events waiting for the watermark, whose peak would
    // otherwise stay resident in the allocator: apply them as they come.
    config.engine.max_buffered_events = 1_000;
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

/// Runs one measurement, named by `kind`, in this process.
fn measure_kind(kind: &str, scale: usize) -> (f64, usize) {
    let (accounts, managers, opportunities) =
        (1_000_000 / scale, 100_000 / scale, 1_000_000 / scale);
    match kind {
        "account" => (
            measure(accounts, |i, at| {
                format!(
                    r#"{{"event_id":"a{i}","type":"order_placed","occurred_at":"{at}","manager_id":"kam-{}","account_id":"acc-{i:07}","order_id":"o{i}","amount":100}}"#,
                    i % 1000
                )
            }),
            accounts,
        ),
        "manager" => (
            measure(managers, |i, at| {
                format!(
                    r#"{{"event_id":"m{i}","type":"opportunity_won","occurred_at":"{at}","manager_id":"kam-{i:06}","account_id":"acc-{i:06}","team":"team-{}","opportunity_id":"w{i}","amount":100}}"#,
                    i % 100
                )
            }),
            managers,
        ),
        _ => (
            measure(opportunities, |i, at| {
                format!(
                    r#"{{"event_id":"p{i}","type":"opportunity_created","occurred_at":"{at}","manager_id":"kam-1","account_id":"acc-{}","opportunity_id":"opp-{i:07}","amount":100}}"#,
                    i % 1000
                )
            }),
            opportunities,
        ),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let scale: usize = std::env::var("FEIDAN_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    // Each kind is measured in a fresh process: memory one measurement
    // freed would otherwise be reused by the next and hide its growth.
    if let Some(kind) = args
        .iter()
        .position(|a| a == "--measure")
        .map(|i| &args[i + 1])
    {
        let (bytes, count) = measure_kind(kind, scale);
        println!("{bytes} {count}");
        return;
    }
    let exe = std::env::current_exe().expect("the bench's own path");
    for (kind, what) in [
        ("account", "accounts"),
        ("manager", "managers, each with one account"),
        ("open_opportunity", "opportunities on 1000 accounts"),
    ] {
        let output = std::process::Command::new(&exe)
            .args(["--measure", kind])
            // mimalloc hands freed memory back to the system after a delay:
            // without this, the resident set at the moment of measuring
            // held a freed buffer of the account index's last doubling, or
            // not, by timing (293 or 547 bytes per account, run to run).
            .env("MIMALLOC_PURGE_DELAY", "0")
            .output()
            .expect("the bench re-runs itself");
        // The child prints the bytes per entity and how many it grew.
        let printed = String::from_utf8_lossy(&output.stdout).into_owned();
        let (bytes, count) = printed
            .split_once(' ')
            .and_then(|(bytes, count)| Some((bytes.parse::<f64>().ok()?, count.trim().to_owned())))
            .unwrap_or_else(|| panic!("measuring {kind} failed: {output:?}"));
        println!(
            "{:<27}{bytes:>5.0} bytes  ({count} {what})",
            format!("memory/{kind}")
        );
    }
}

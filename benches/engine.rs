//! Engine hot path on a simulated stream, beside the cost of its layers:
//! scanning the bytes, decoding alone, decode + stages + lifecycle, and the
//! same with no evaluation (what applying events costs, apart from judging).
//! Then the cost of a checkpoint of the engine fed that stream (records
//! encoded and changelog writes planned): of the whole state, and of what
//! changed in the stream's last hour, which is what `run` writes.
//! Inputs are generated before the timed loops. Size with
//! `FEIDAN_BENCH_MANAGERS`, `FEIDAN_BENCH_ACCOUNTS` (per manager) and
//! `FEIDAN_BENCH_DAYS` (default 200 managers, 10 accounts each, 180 days).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use feidan::changelog::{Changelog, Marker};
use feidan::config::Config;
use feidan::engine::Engine;
use feidan::event::{decode, DecodeLimits};
use feidan::simulate::{SimConfig, Simulation};

/// A positive number from the environment, or `default`.
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn stream() -> Vec<Vec<u8>> {
    Simulation::new(SimConfig {
        seed: 1,
        managers: env_or("FEIDAN_BENCH_MANAGERS", 200),
        accounts_per_manager: env_or("FEIDAN_BENCH_ACCOUNTS", 10),
        days: env_or("FEIDAN_BENCH_DAYS", 180) as i64,
        ..SimConfig::default()
    })
    .flatten()
    .map(|event| event.to_json().to_string().into_bytes())
    .collect()
}

/// Feeds `engine` every event; the number of alert transitions.
fn ingest_all(mut engine: Engine, events: &[Vec<u8>]) -> usize {
    let mut out = Vec::new();
    for event in events {
        engine.ingest(event, 0, &mut out);
    }
    out.len()
}

fn engine_hot_path(c: &mut Criterion) {
    let events = stream();
    println!("engine/stream of {} events", events.len());
    let config = Config::defaults();
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.sample_size(10);

    group.bench_function("scan_bytes", |b| {
        b.iter(|| {
            events
                .iter()
                .map(|e| e.iter().filter(|&&byte| byte == b'"').count())
                .sum::<usize>()
        })
    });
    group.bench_function("decode_only", |b| {
        b.iter(|| {
            events
                .iter()
                .filter(|e| decode(e, DecodeLimits::default()).is_ok())
                .count()
        })
    });
    group.bench_function("decode_stages_lifecycle", |b| {
        b.iter_batched(
            || Engine::new(&config),
            |engine| ingest_all(engine, &events),
            BatchSize::LargeInput,
        )
    });
    // The same without evaluations (one boundary in a thousand days): what
    // applying events costs, apart from judging accounts and managers.
    let mut rare = config.clone();
    rare.alerts.evaluate_every = std::time::Duration::from_secs(1000 * 86_400);
    group.bench_function("decode_stages_no_evaluation", |b| {
        b.iter_batched(
            || Engine::new(&rare),
            |engine| ingest_all(engine, &events),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn checkpoints(c: &mut Criterion) {
    // Its set-up feeds a whole engine before any filter applies: skipped
    // where only the hot path is wanted (benches/run.sh, the wide world).
    if std::env::var_os("FEIDAN_BENCH_ONLY_ENGINE").is_some() {
        return;
    }
    let events = stream();
    let config = Config::defaults();
    let limits = DecodeLimits::default();
    let times: Vec<i64> = events
        .iter()
        .map(|e| decode(e, limits).map(|e| e.occurred_at.0).unwrap_or(0))
        .collect();
    let end = times.iter().copied().max().unwrap_or(0);
    let (before, last_hour): (Vec<_>, Vec<_>) = events
        .iter()
        .zip(&times)
        .partition(|(_, at)| **at < end - 3600);
    let before: Vec<&Vec<u8>> = before.into_iter().map(|(e, _)| e).collect();
    let last_hour: Vec<&Vec<u8>> = last_hour.into_iter().map(|(e, _)| e).collect();
    let mut engine = Engine::new(&config);
    let mut out = Vec::new();
    for event in &before {
        engine.ingest(event, 0, &mut out);
    }
    let records = engine.checkpoint();
    let mut group = c.benchmark_group("checkpoint");
    group.sample_size(10);
    // Each run starts from an engine and a changelog that hold the state
    // before the last hour, then applies the last hour (untimed, as is
    // dropping them).
    let setup = || {
        let mut changelog = Changelog::default();
        changelog.plan(records.clone(), Marker::default());
        let mut engine = Engine::restore(&config, records.clone()).expect("restores");
        let mut out = Vec::new();
        for event in &last_hour {
            engine.ingest(event, 0, &mut out);
        }
        (engine, changelog)
    };
    let (mut engine, _) = setup();
    let mut listed: Vec<(&str, usize, usize)> = Vec::new();
    for (key, payload) in engine.checkpoint_changes() {
        let kind = [
            "account/", "manager/", "team/", "alert/", "dedup/", "buffer/",
        ]
        .into_iter()
        .find(|p| key.starts_with(p))
        .unwrap_or("engine");
        match listed.iter_mut().find(|(k, _, _)| *k == kind) {
            Some(entry) => (entry.1, entry.2) = (entry.1 + 1, entry.2 + payload.len()),
            None => listed.push((kind, 1, payload.len())),
        }
    }
    println!(
        "checkpoint/state: {} records in all; after the last hour's {} events, listed as changed (kind, records, bytes): {listed:?}",
        records.len(),
        last_hour.len()
    );
    group.bench_function("whole", |b| {
        b.iter_batched_ref(
            setup,
            |(engine, changelog)| changelog.plan(engine.checkpoint(), Marker::default()).len(),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("changes_of_the_last_hour", |b| {
        b.iter_batched_ref(
            setup,
            |(engine, changelog)| {
                let changes = engine.checkpoint_changes();
                changelog
                    .plan_changes(changes, Marker::default(), |key| engine.holds(key))
                    .len()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, engine_hot_path, checkpoints);
criterion_main!(benches);

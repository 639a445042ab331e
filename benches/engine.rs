//! Engine hot path on a simulated stream, beside the cost of its layers:
//! scanning the bytes, decoding alone, and decode + stages + lifecycle.
//! Inputs are generated before the timed loops. Size with
//! `FEIDAN_BENCH_MANAGERS` (default 200 managers, 10 accounts each, 180 days).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use feidan::config::Config;
use feidan::engine::Engine;
use feidan::event::{decode, DecodeLimits};
use feidan::simulate::{SimConfig, Simulation};

fn stream() -> Vec<Vec<u8>> {
    let managers = std::env::var("FEIDAN_BENCH_MANAGERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    Simulation::new(SimConfig {
        seed: 1,
        managers,
        days: 180,
        ..SimConfig::default()
    })
    .flatten()
    .map(|event| event.to_json().to_string().into_bytes())
    .collect()
}

fn engine_hot_path(c: &mut Criterion) {
    let events = stream();
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
            |mut engine| {
                let mut out = Vec::new();
                for event in &events {
                    engine.ingest(event, 0, &mut out);
                }
                out.len()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, engine_hot_path);
criterion_main!(benches);

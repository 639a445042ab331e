//! Properties of the engine that hold for any delivery of the same events:
//! spreading them over partitions, or delaying some within the allowed
//! lateness, changes nothing in the alerts.

mod common;

use feidan::alert::Alert;
use feidan::config::Config;
use feidan::engine::{Engine, Outcome};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn world() -> &'static Vec<Vec<u8>> {
    static WORLD: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    WORLD.get_or_init(|| common::small_world(3))
}

fn times(world: &[Vec<u8>]) -> Vec<i64> {
    world
        .iter()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            feidan::time::Timestamp::parse_rfc3339(v["occurred_at"].as_str().unwrap())
                .unwrap()
                .0
        })
        .collect()
}

/// Feeds `(partition, payload)` pairs and returns every transition as JSON text.
fn run(deliveries: &[(i32, &[u8])], partitions: &[i32]) -> (Vec<String>, usize) {
    let mut engine = Engine::new(&Config::defaults());
    let mut out: Vec<Alert> = Vec::new();
    engine.assign_partitions(partitions, &mut out);
    let mut late = 0;
    for (partition, payload) in deliveries {
        let ingested = engine.ingest(payload, *partition, &mut out);
        assert!(
            !matches!(ingested.outcome, Outcome::DeadLetter(_)),
            "{ingested:?}"
        );
        late += usize::from(ingested.outcome == Outcome::Late);
    }
    (out.iter().map(|a| a.to_json().to_string()).collect(), late)
}

fn in_order() -> &'static (Vec<String>, usize) {
    static BASELINE: std::sync::OnceLock<(Vec<String>, usize)> = std::sync::OnceLock::new();
    BASELINE.get_or_init(|| {
        let deliveries: Vec<(i32, &[u8])> = world().iter().map(|l| (0, l.as_slice())).collect();
        run(&deliveries, &[0])
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Events spread over partitions by account, each partition in order, the
    /// partitions interleaved at random: the same alerts as one ordered stream.
    #[test]
    fn partitioning_and_interleaving_do_not_change_the_alerts(partitions in 1i32..5, seed in any::<u64>()) {
        let world = world();
        let mut queues: Vec<Vec<&[u8]>> = vec![Vec::new(); partitions as usize];
        for line in world {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            let account = v["account_id"].as_str().unwrap();
            let p = account.bytes().map(u32::from).sum::<u32>() % partitions as u32;
            queues[p as usize].push(line);
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut cursors = vec![0usize; queues.len()];
        let mut deliveries = Vec::with_capacity(world.len());
        while deliveries.len() < world.len() {
            let p = rng.gen_range(0..queues.len());
            // Bursts of up to 200 from one partition, as a fetch would deliver.
            for _ in 0..rng.gen_range(1..200) {
                if cursors[p] < queues[p].len() {
                    deliveries.push((p as i32, queues[p][cursors[p]]));
                    cursors[p] += 1;
                }
            }
        }
        let all: Vec<i32> = (0..partitions).collect();
        let (alerts, late) = run(&deliveries, &all);
        prop_assert_eq!(late, 0);
        prop_assert_eq!(&alerts, &in_order().0);
    }

    /// Events delayed by less than the allowed lateness (1 h): never late, and
    /// the same alerts as the ordered stream.
    #[test]
    fn delays_within_the_lateness_do_not_change_the_alerts(seed in any::<u64>()) {
        let world = world();
        let at = times(world);
        let mut rng = StdRng::seed_from_u64(seed);
        // Each event arrives at its time plus a random delay under 50 minutes.
        let mut arrivals: Vec<(i64, usize)> = at.iter().enumerate().map(|(i, t)| (t + rng.gen_range(0..3000), i)).collect();
        arrivals.sort();
        let deliveries: Vec<(i32, &[u8])> = arrivals.iter().map(|(_, i)| (0, world[*i].as_slice())).collect();
        let (alerts, late) = run(&deliveries, &[0]);
        prop_assert_eq!(late, 0);
        prop_assert_eq!(&alerts, &in_order().0);
    }
}

#[test]
fn the_baseline_world_raises_alerts() {
    assert!(
        in_order().0.len() >= 2,
        "the properties above must compare real alerts"
    );
}

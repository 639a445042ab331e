//! Scaled out, the stages raise exactly the alerts of one engine (DESIGN
//! §7): a simulated world split over input partitions by account, its
//! managers over facts partitions by team, and the messages between the
//! stages delivered as Kafka may deliver them: each sender's stream to each
//! receiver in order, the streams interleaved at random, and some messages
//! twice (a source replaying after a restart sends them again).

mod common;

use std::collections::{BTreeMap, VecDeque};

use feidan::alert::Alert;
use feidan::config::Config;
use feidan::engine::exchange::{Envelope, Exchange, Route};
use feidan::engine::shard::Shard;
use feidan::engine::source::Source;
use feidan::engine::Engine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn world() -> &'static Vec<Vec<u8>> {
    static WORLD: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    WORLD.get_or_init(|| common::small_world(3))
}

/// The input partition of an event: its account, as a producer keys it.
fn partition_of(payload: &[u8], partitions: usize) -> usize {
    let event: serde_json::Value = serde_json::from_slice(payload).unwrap();
    let account = event["account_id"].as_str().unwrap();
    let hash = account
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    (hash % partitions as u64) as usize
}

/// Every transition as (alert id, status) → JSON text.
fn transitions(alerts: &[Alert]) -> BTreeMap<(String, String), String> {
    let mut seen = BTreeMap::new();
    for alert in alerts {
        let key = (alert.alert_id.clone(), alert.status.as_str().to_owned());
        let text = alert.to_json().to_string();
        if let Some(first) = seen.insert(key, text.clone()) {
            assert_eq!(first, text, "a repeated transition must be identical");
        }
    }
    seen
}

fn one_engine(partitions: usize) -> Vec<Alert> {
    let mut engine = Engine::new(&Config::defaults());
    let mut out = Vec::new();
    let all: Vec<i32> = (0..partitions as i32).collect();
    engine.assign_partitions(&all, &mut out);
    for payload in world() {
        engine.ingest(payload, partition_of(payload, partitions) as i32, &mut out);
    }
    out
}

/// Messages in flight, one queue per (sender, receiver): Kafka keeps each
/// producer's records to one partition in order.
#[derive(Default)]
struct Wire {
    queues: BTreeMap<(i32, Receiver), VecDeque<Exchange>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Receiver {
    Source(usize),
    Shard(u32),
}

impl Wire {
    fn send(&mut self, from: i32, envelopes: Vec<Envelope>, sources: usize) {
        for Envelope { to, message } in envelopes {
            match to {
                Route::Sources => {
                    for source in 0..sources {
                        self.queues
                            .entry((from, Receiver::Source(source)))
                            .or_default()
                            .push_back(message.clone());
                    }
                }
                Route::Shard(shard) => self
                    .queues
                    .entry((from, Receiver::Shard(shard)))
                    .or_default()
                    .push_back(message),
            }
        }
    }

    /// One message from a random non-empty queue, sometimes left at the
    /// front to be delivered again.
    fn next(&mut self, rng: &mut StdRng) -> Option<(i32, Receiver, Exchange)> {
        let busy: Vec<(i32, Receiver)> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| *k)
            .collect();
        if busy.is_empty() {
            return None;
        }
        let key = busy[rng.gen_range(0..busy.len())];
        let queue = self.queues.get_mut(&key).unwrap();
        let message = if rng.gen_bool(0.05) {
            queue.front().unwrap().clone()
        } else {
            queue.pop_front().unwrap()
        };
        Some((key.0, key.1, message))
    }
}

struct Scaled {
    sources: Vec<Source>,
    shards: Vec<Shard>,
    wire: Wire,
    alerts: Vec<Alert>,
}

impl Scaled {
    fn new(sources: usize, shards: u32) -> Scaled {
        let config = Config::defaults();
        Scaled {
            sources: (0..sources)
                .map(|p| Source::new(&config, p as i32, sources, shards))
                .collect(),
            shards: (0..shards)
                .map(|f| Shard::new(&config, f, sources))
                .collect(),
            wire: Wire::default(),
            alerts: Vec::new(),
        }
    }

    fn collect(&mut self, source: usize) {
        let outbox = self.sources[source].take_outbox();
        let count = self.sources.len();
        self.wire.send(source as i32, outbox, count);
    }

    fn deliver(&mut self, rng: &mut StdRng, at_most: usize) {
        for _ in 0..at_most {
            let Some((_, receiver, message)) = self.wire.next(rng) else {
                return;
            };
            match receiver {
                Receiver::Source(source) => {
                    self.sources[source].receive(&message, &mut self.alerts);
                    self.collect(source);
                }
                Receiver::Shard(shard) => {
                    self.shards[shard as usize].receive(message, &mut self.alerts);
                }
            }
        }
    }
}

fn scaled(sources: usize, shards: u32, seed: u64) -> Vec<Alert> {
    run_scaled(sources, shards, seed).alerts
}

fn run_scaled(sources: usize, shards: u32, seed: u64) -> Scaled {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut scaled = Scaled::new(sources, shards);
    for payload in world() {
        let source = partition_of(payload, sources);
        scaled.sources[source].ingest(payload, &mut scaled.alerts);
        scaled.collect(source);
        let burst = rng.gen_range(0..4);
        scaled.deliver(&mut rng, burst);
    }
    scaled.deliver(&mut rng, usize::MAX);
    scaled
}

#[test]
fn sources_and_shards_raise_the_alerts_of_one_engine() {
    for (sources, shards, seed) in [(3, 2, 1), (4, 3, 2), (2, 1, 3)] {
        let expected = one_engine(sources);
        assert!(
            expected.len() > 20,
            "the world raises alerts: {}",
            expected.len()
        );
        let got = scaled(sources, shards, seed);
        let (expected, got) = (transitions(&expected), transitions(&got));
        let missing: Vec<_> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
        let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{sources} sources, {shards} shards: missing {missing:?}, extra {extra:?}"
        );
        for (key, text) in &expected {
            assert_eq!(&got[key], text, "{key:?}");
        }
    }
}

#[test]
fn one_source_and_one_shard_are_one_engine() {
    let expected = transitions(&one_engine(1));
    assert_eq!(transitions(&scaled(1, 1, 9)), expected);
}

#[test]
fn every_source_runs_business_time_at_the_whole_companys_pace() {
    let scaled = run_scaled(3, 2, 4);
    let next = scaled.sources[0].next_evaluation().unwrap();
    assert!(scaled
        .sources
        .iter()
        .all(|s| s.next_evaluation() == Some(next)));
    // The company's orders per day over the last 60 days evaluated, from
    // the world itself.
    let days = next.day() - 60..next.day() - 1;
    let mut orders = vec![0u64; (days.end - days.start) as usize];
    for payload in world() {
        let event: serde_json::Value = serde_json::from_slice(payload).unwrap();
        if event["type"] == "order_placed" {
            let at = feidan::time::Timestamp::parse_rfc3339(event["occurred_at"].as_str().unwrap());
            let day = at.unwrap().day();
            if days.contains(&day) {
                orders[(day - days.start) as usize] += 1;
            }
        }
    }
    assert!(orders.iter().sum::<u64>() > 100);
    for source in &scaled.sources {
        assert_eq!(source.company_orders(days.clone()), orders);
        assert!(
            source.accounts() < 16 * 10,
            "a source holds a share of the accounts"
        );
    }
}

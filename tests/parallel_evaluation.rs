//! Accounts and managers are judged in parallel at each evaluation, and the
//! lifecycle sees the results in one fixed order: so the number of threads
//! changes nothing. A world large enough to be split into parts (a part
//! holds at least 1024 accounts or 128 managers) replayed on one thread and
//! on three gives the same transitions, byte for byte and in the same order.

use feidan::config::Config;

/// The world's events: 300 managers with 10 accounts each (3000 accounts)
/// over 200 days, judged in two parts of each.
fn world() -> Vec<Vec<u8>> {
    let sim = feidan::simulate::SimConfig {
        seed: 8,
        managers: 300,
        days: 200,
        ..Default::default()
    };
    feidan::simulate::Simulation::new(sim)
        .flatten()
        .map(|event| event.to_json().to_string().into_bytes())
        .collect()
}

/// One engine's transitions as JSON text, judged on `threads` threads.
/// (The engine, not `backtest`: the backtest runs its manager stage on a
/// thread of its own, outside the pool installed here.)
fn replayed_on(threads: usize, input: &[Vec<u8>]) -> Vec<String> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut engine = feidan::engine::Engine::new(&Config::defaults());
        let mut out = Vec::new();
        for payload in input {
            engine.ingest(payload, 0, &mut out);
        }
        out.iter()
            .map(|alert| alert.to_json().to_string())
            .collect()
    })
}

#[test]
fn judging_on_three_threads_gives_the_transitions_of_one() {
    let input = world();
    let one = replayed_on(1, &input);
    let three = replayed_on(3, &input);
    // The world must exercise every kind of judgement that is split.
    for kind in ["account_churn", "book_churn", "diversion_risk"] {
        assert!(
            one.iter().any(|alert| alert.contains(kind)),
            "no {kind} alert: the world is too quiet to test anything"
        );
    }
    assert_eq!(one.len(), three.len());
    for (i, (a, b)) in one.iter().zip(&three).enumerate() {
        assert_eq!(a, b, "transition {i} differs");
    }
}

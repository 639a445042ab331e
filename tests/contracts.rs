//! The contracts of ../shared/schemas: the decoder accepts exactly what the
//! event schema accepts, and every alert feidan writes passes the alert schema.

mod common;

use common::*;
use feidan::backtest;
use feidan::config::Config;
use feidan::event::{decode, DecodeLimits};
use serde_json::{json, Value};

fn valid_examples() -> Vec<Value> {
    let head = json!({"event_id": "ev-1", "occurred_at": "2025-03-01T09:30:00Z", "manager_id": "kam-1", "account_id": "acc-1", "team": "east"});
    let bodies = [
        json!({"type": "opportunity_created", "opportunity_id": "o1", "amount": 1000}),
        json!({"type": "opportunity_updated", "opportunity_id": "o1", "amount": 900.5, "stage": "proposal", "expected_close": "2025-04-01T00:00:00Z"}),
        json!({"type": "opportunity_won", "opportunity_id": "o1", "amount": 900}),
        json!({"type": "opportunity_lost", "opportunity_id": "o1", "amount": 900, "reason": "competitor", "competitor": "Acme"}),
        json!({"type": "opportunity_withdrawn", "opportunity_id": "o1", "amount": 0}),
        json!({"type": "order_placed", "order_id": "ord-1", "amount": 12.5}),
        json!({"type": "activity_logged", "activity": "visit"}),
        json!({"type": "account_assigned", "previous_manager_id": "kam-0"}),
        json!({"type": "contract_ended", "contract_id": "c1", "renewed": false, "amount": 5000}),
        json!({"type": "customer_feedback", "kind": "complaint", "score": 2}),
    ];
    bodies
        .iter()
        .map(|body| {
            let mut event = head.clone();
            event
                .as_object_mut()
                .unwrap()
                .extend(body.as_object().unwrap().clone());
            event
        })
        .collect()
}

/// Each example with each field removed, and set to each of a set of odd values.
fn mutations(example: &Value) -> Vec<Value> {
    let odd = [
        json!(null),
        json!(""),
        json!(-1),
        json!(0),
        json!(2.5),
        json!(7),
        json!(true),
        json!([]),
        json!({}),
        json!("x".repeat(257)),
        json!("visit"),
        json!("2025-13-45T99:00:00Z"),
        json!("order_refunded"),
        json!("no_decision"),
    ];
    let mut out = Vec::new();
    for key in example.as_object().unwrap().keys() {
        let mut removed = example.clone();
        removed.as_object_mut().unwrap().remove(key);
        out.push(removed);
        for value in &odd {
            let mut changed = example.clone();
            changed[key] = value.clone();
            out.push(changed);
        }
    }
    out
}

#[test]
fn the_decoder_accepts_exactly_what_the_event_schema_accepts() {
    let validator = schema("event.v1.schema.json");
    let mut checked = 0;
    let mut invalid = 0;
    for example in valid_examples() {
        assert!(validator.is_valid(&example), "{example}");
        for instance in std::iter::once(example.clone()).chain(mutations(&example)) {
            let by_schema = validator.is_valid(&instance);
            let decoded = decode(instance.to_string().as_bytes(), DecodeLimits::default());
            assert_eq!(
                by_schema,
                decoded.is_ok(),
                "schema says {by_schema}, decoder says {decoded:?} for {instance}"
            );
            checked += 1;
            invalid += usize::from(!by_schema);
        }
    }
    assert!(
        checked > 1_000 && invalid > 500,
        "{checked} checked, {invalid} invalid"
    );
}

#[test]
fn every_simulated_event_passes_the_event_schema() {
    let validator = schema("event.v1.schema.json");
    for line in small_world(1).iter().take(20_000) {
        let event: Value = serde_json::from_slice(line).unwrap();
        assert_valid(&validator, &event);
    }
}

#[test]
fn every_alert_passes_the_alert_schema_and_its_p_value_recomputes() {
    let validator = schema("alert.v1.schema.json");
    let lines: Vec<u8> = small_world(3)
        .into_iter()
        .flat_map(|l| l.into_iter().chain([b'\n']))
        .collect();
    let report = backtest::replay(&Config::defaults(), lines.as_slice(), |_| Ok(())).unwrap();
    assert!(!report.alerts.is_empty());
    for alert in &report.alerts {
        let json = alert.to_json();
        assert_valid(&validator, &json);
        assert_eq!(alert.test.p_value(), alert.p_value);
        assert!(json["evidence"].as_array().unwrap().len() <= 20);
        let score = json["score"].as_f64().unwrap();
        let expected = (-10.0 * alert.p_value.log10()).min(100.0);
        assert!((score - expected).abs() < 1e-3, "{score} vs {expected}");
    }
}

#[test]
fn the_schemas_here_are_the_shared_ones() {
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/schemas");
    if !shared.exists() {
        return; // a clone without the shared folder beside it
    }
    for name in ["event.v1.schema.json", "alert.v1.schema.json"] {
        let ours =
            std::fs::read_to_string(format!("{}/schemas/{name}", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        let theirs = std::fs::read_to_string(shared.join(name)).unwrap();
        assert_eq!(
            ours, theirs,
            "schemas/{name} differs from ../shared/schemas/{name}: copy it again"
        );
    }
}

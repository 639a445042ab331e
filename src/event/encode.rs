//! [`Event`] → schema-v1 JSON, for the simulator's output and for tests.
//! `decode(encode(e)) == e` for every event (a property test checks it).

use serde_json::{json, Map, Value};

use super::{Event, EventBody};

impl Event {
    /// The event as a schema-v1 JSON object.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("event_id".into(), json!(self.event_id));
        object.insert("type".into(), json!(self.body.type_name()));
        object.insert("occurred_at".into(), json!(self.occurred_at.to_string()));
        object.insert("manager_id".into(), json!(self.manager_id));
        object.insert("account_id".into(), json!(self.account_id));
        object.insert("team".into(), json!(self.team));
        let mut put = |key: &str, value: Value| {
            object.insert(key.to_owned(), value);
        };
        match &self.body {
            EventBody::OpportunityCreated {
                opportunity_id,
                amount,
            }
            | EventBody::OpportunityWon {
                opportunity_id,
                amount,
            }
            | EventBody::OpportunityWithdrawn {
                opportunity_id,
                amount,
            } => {
                put("opportunity_id", json!(opportunity_id));
                put("amount", json!(amount));
            }
            EventBody::OpportunityUpdated {
                opportunity_id,
                amount,
                stage,
                expected_close,
            } => {
                put("opportunity_id", json!(opportunity_id));
                if let Some(amount) = amount {
                    put("amount", json!(amount));
                }
                if let Some(stage) = stage {
                    put("stage", json!(stage));
                }
                if let Some(close) = expected_close {
                    put("expected_close", json!(close.to_string()));
                }
            }
            EventBody::OpportunityLost {
                opportunity_id,
                amount,
                reason,
                competitor,
            } => {
                put("opportunity_id", json!(opportunity_id));
                put("amount", json!(amount));
                put("reason", json!(reason.as_str()));
                if let Some(competitor) = competitor {
                    put("competitor", json!(competitor));
                }
            }
            EventBody::OrderPlaced { order_id, amount } => {
                put("order_id", json!(order_id));
                put("amount", json!(amount));
            }
            EventBody::ActivityLogged { activity } => put("activity", json!(activity.as_str())),
            EventBody::AccountAssigned {
                previous_manager_id,
            } => {
                if let Some(previous) = previous_manager_id {
                    put("previous_manager_id", json!(previous));
                }
            }
            EventBody::ContractEnded {
                contract_id,
                renewed,
                amount,
            } => {
                put("contract_id", json!(contract_id));
                put("renewed", json!(renewed));
                put("amount", json!(amount));
            }
            EventBody::CustomerFeedback { kind, score } => {
                put("kind", json!(kind.as_str()));
                if let Some(score) = score {
                    put("score", json!(score));
                }
            }
        }
        Value::Object(object)
    }
}

//! Facts: the small messages the account stage sends to the manager stage
//! (DESIGN §1). A fact carries the manager and team it counts for, its event
//! time, what happened, and a reference to the event behind it so an alert
//! can cite it as evidence.
//!
//! In one process facts pass in memory; scaled out they travel on an internal
//! topic keyed by team. They hold no account state.

use serde_json::{json, Map, Value};

use crate::event::LossReason;
use crate::time::Timestamp;

#[derive(Clone, Debug, PartialEq)]
pub struct Fact {
    pub manager_id: String,
    pub team: String,
    pub at: Timestamp,
    pub kind: FactKind,
    pub evidence: EvidenceRef,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FactKind {
    /// A deal left the pipeline.
    DealClosed { outcome: DealOutcome, amount: f64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DealOutcome {
    Won,
    Lost(LossReason),
    Withdrawn,
}

/// The event behind a fact, as an alert cites it.
#[derive(Clone, Debug, PartialEq)]
pub struct EvidenceRef {
    pub event_id: String,
    pub event_type: &'static str,
    pub occurred_at: Timestamp,
    pub account_id: String,
    pub opportunity_id: Option<String>,
    pub amount: Option<f64>,
    pub reason: Option<&'static str>,
    pub competitor: Option<String>,
}

impl EvidenceRef {
    /// The evidence item of an alert: at least `event_id` and `type`.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("event_id".into(), json!(self.event_id));
        object.insert("type".into(), json!(self.event_type));
        object.insert("occurred_at".into(), json!(self.occurred_at.to_string()));
        object.insert("account_id".into(), json!(self.account_id));
        if let Some(opportunity) = &self.opportunity_id {
            object.insert("opportunity_id".into(), json!(opportunity));
        }
        if let Some(amount) = self.amount {
            object.insert("amount".into(), json!(amount));
        }
        if let Some(reason) = self.reason {
            object.insert("reason".into(), json!(reason));
        }
        if let Some(competitor) = &self.competitor {
            object.insert("competitor".into(), json!(competitor));
        }
        Value::Object(object)
    }
}

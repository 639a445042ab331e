//! Facts: the small messages the account stage sends to the manager stage
//! (DESIGN §1). A fact carries the manager and team it counts for, its event
//! time, what happened, and a reference to the event behind it so an alert
//! can cite it as evidence.
//!
//! In one process facts pass in memory; scaled out they travel on an internal
//! topic keyed by team. They hold no account state.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::event::{Id, LossReason};
use crate::time::Timestamp;

use super::checkpoint::StaticName;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    pub manager_id: Id,
    pub team: Id,
    pub at: Timestamp,
    pub kind: FactKind,
    pub evidence: EvidenceRef,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FactKind {
    /// A deal was won, lost or withdrawn (win rate, competitor losses).
    DealClosed { outcome: DealOutcome },
    /// A deal left the pipeline, by a leak route or not (leakage). A deal
    /// leaves once: when it stalls, or when it closes if it never stalled.
    DealExited { leak: Option<LeakRoute> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DealOutcome {
    Won,
    Lost {
        reason: LossReason,
        competitor: Option<String>,
    },
    Withdrawn,
}

/// How a deal leaked out of the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeakRoute {
    Withdrawn,
    NoDecision,
    Stalled,
    Cut,
}

impl LeakRoute {
    pub const ALL: [LeakRoute; 4] = [
        LeakRoute::Withdrawn,
        LeakRoute::NoDecision,
        LeakRoute::Stalled,
        LeakRoute::Cut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LeakRoute::Withdrawn => "withdrawn",
            LeakRoute::NoDecision => "no_decision",
            LeakRoute::Stalled => "stalled",
            LeakRoute::Cut => "cut",
        }
    }
}

/// The event behind a fact, as an alert cites it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvidenceRef {
    pub event_id: Id,
    #[serde(with = "super::checkpoint::name")]
    pub event_type: StaticName,
    pub occurred_at: Timestamp,
    pub account_id: Id,
    pub opportunity_id: Option<Id>,
    pub amount: Option<f64>,
    #[serde(with = "super::checkpoint::optional_name")]
    pub reason: Option<StaticName>,
    pub competitor: Option<Id>,
    /// Why this event is cited, when its type does not say it: a leak route,
    /// or one of the account stage's notes (`activity_since_last_order`, …).
    #[serde(with = "super::checkpoint::optional_name")]
    pub note: Option<StaticName>,
    /// With an order whose value fell: the account's usual order value
    /// (geometric mean of the orders before its latest three).
    #[serde(default)]
    pub usual_amount: Option<f64>,
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
        if let Some(note) = self.note {
            object.insert("note".into(), json!(note));
        }
        if let Some(usual) = self.usual_amount {
            object.insert("usual_amount".into(), json!(usual));
        }
        Value::Object(object)
    }

    pub fn amount_or_zero(&self) -> f64 {
        self.amount.unwrap_or(0.0)
    }
}

/// Keeps the `keep` largest items by amount, dropping the smallest. Items
/// from before `forget_before` are dropped first when room is needed, so a
/// full list holds only items a window still reaches.
pub fn keep_largest(
    items: &mut Vec<EvidenceRef>,
    item: EvidenceRef,
    keep: usize,
    forget_before: Timestamp,
) {
    if items.len() >= keep {
        items.retain(|e| e.occurred_at >= forget_before);
    }
    items.push(item);
    if items.len() > keep {
        let smallest = items
            .iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| {
                a.amount_or_zero()
                    .total_cmp(&b.amount_or_zero())
                    .then(a.occurred_at.cmp(&b.occurred_at))
                    .then(a.event_id.cmp(&b.event_id))
            })
            .map(|(i, _)| i);
        if let Some(i) = smallest {
            items.swap_remove(i);
        }
    }
}

/// The largest items with `from <= occurred_at < until` matching `keep`, largest
/// first (ties by time, then id), as alert evidence.
pub fn largest_between(
    items: &[EvidenceRef],
    from: Timestamp,
    until: Timestamp,
    max: usize,
    keep: impl Fn(&EvidenceRef) -> bool,
) -> Vec<Value> {
    let mut sorted: Vec<&EvidenceRef> = items
        .iter()
        .filter(|e| e.occurred_at >= from && e.occurred_at < until && keep(e))
        .collect();
    sorted.sort_by(|a, b| {
        b.amount_or_zero()
            .total_cmp(&a.amount_or_zero())
            .then(a.occurred_at.cmp(&b.occurred_at))
            .then(a.event_id.cmp(&b.event_id))
    });
    sorted
        .into_iter()
        .take(max)
        .map(EvidenceRef::to_json)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(id: &str, day: i64, amount: f64) -> EvidenceRef {
        EvidenceRef {
            event_id: id.into(),
            event_type: "opportunity_lost",
            occurred_at: Timestamp::from_day(day),
            account_id: "a".into(),
            opportunity_id: None,
            amount: Some(amount),
            reason: None,
            competitor: None,
            note: None,
            usual_amount: None,
        }
    }

    fn ids(items: &[EvidenceRef]) -> Vec<&str> {
        let mut ids: Vec<&str> = items.iter().map(|e| e.event_id.as_str()).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn a_full_list_forgets_what_no_window_reaches_before_dropping_the_smallest() {
        let mut items = Vec::new();
        let forget_before = Timestamp::from_day(100);
        keep_largest(&mut items, lost("old-big", 10, 900.0), 3, forget_before);
        keep_largest(&mut items, lost("new-1", 120, 50.0), 3, forget_before);
        // Room left: an old item stays until room is needed (it is never
        // cited: no window reaches it).
        keep_largest(&mut items, lost("new-2", 121, 60.0), 3, forget_before);
        assert_eq!(ids(&items), ["new-1", "new-2", "old-big"]);
        // Full: the old item goes first, so the small new one is kept.
        keep_largest(&mut items, lost("new-3", 122, 5.0), 3, forget_before);
        assert_eq!(ids(&items), ["new-1", "new-2", "new-3"]);
        // Full of current items: the smallest is dropped, the new one too
        // when it is the smallest.
        keep_largest(&mut items, lost("new-4", 123, 70.0), 3, forget_before);
        assert_eq!(ids(&items), ["new-1", "new-2", "new-4"]);
        keep_largest(&mut items, lost("new-5", 124, 1.0), 3, forget_before);
        assert_eq!(ids(&items), ["new-1", "new-2", "new-4"]);
        let cited = largest_between(&items, forget_before, Timestamp::from_day(200), 2, |_| true);
        let cited: Vec<&str> = cited
            .iter()
            .map(|e| e["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(cited, ["new-4", "new-2"]);
    }
}

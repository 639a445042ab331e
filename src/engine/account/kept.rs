//! The events an account keeps to cite later (its last order, its latest
//! visits, a lapsed contract) and how they and other events become the
//! evidence of facts and alerts.

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventBody, Id};
use crate::time::Timestamp;

use crate::engine::checkpoint::StaticName;
use crate::engine::fact::EvidenceRef;

use super::AccountState;

/// The time of an account's latest kept visit in Unix seconds, inline: 0
/// for none, and [`LatestVisit::UNKNOWN`] for a time 32 bits do not hold
/// (before 1970 or after 2106) and for a restored account, whose kept
/// visits are then read instead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct LatestVisit(pub(super) u32);

impl LatestVisit {
    pub(super) const NONE: LatestVisit = LatestVisit(0);
    pub(super) const UNKNOWN: LatestVisit = LatestVisit(u32::MAX);

    /// The latest of `visits`.
    pub(super) fn of(visits: &[Kept]) -> LatestVisit {
        match LatestVisit::read(visits) {
            None => LatestVisit::NONE,
            Some(at) => u32::try_from(at.0)
                .ok()
                .filter(|secs| *secs != 0 && *secs != u32::MAX)
                .map_or(LatestVisit::UNKNOWN, LatestVisit),
        }
    }

    /// The latest visit time, `visits` being the kept visits it was taken of.
    pub(super) fn get(self, visits: &[Kept]) -> Option<Timestamp> {
        match self {
            LatestVisit::NONE => None,
            LatestVisit::UNKNOWN => LatestVisit::read(visits),
            LatestVisit(secs) => Some(Timestamp(i64::from(secs))),
        }
    }

    /// The latest time of `visits`, read from them.
    pub(super) fn read(visits: &[Kept]) -> Option<Timestamp> {
        visits.iter().map(|v| v.occurred_at).max()
    }
}

impl Default for LatestVisit {
    /// What a restored account starts with: read from its kept visits.
    fn default() -> LatestVisit {
        LatestVisit::UNKNOWN
    }
}

/// An event the account stage keeps to cite later. Its account is the
/// account's own and its type is the slot it is kept in, so they are not
/// stored; a checkpoint of the full [`EvidenceRef`] reads as one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Kept {
    pub(super) event_id: Box<str>,
    pub(super) occurred_at: Timestamp,
    /// NaN when the event has none (an activity); checkpointed as an option.
    #[serde(default = "no_amount", with = "amount_or_none")]
    pub(super) amount: f64,
}

pub(super) fn no_amount() -> f64 {
    f64::NAN
}

/// Serde for an amount held as NaN when absent: written and read as an
/// option, as the full evidence references of older checkpoints hold it.
mod amount_or_none {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(amount: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        (!amount.is_nan()).then_some(*amount).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
    }
}

impl Kept {
    pub(super) fn of(event: &Event, amount: Option<f64>) -> Kept {
        Kept {
            event_id: event.event_id.as_str().into(),
            occurred_at: event.occurred_at,
            amount: amount.unwrap_or(f64::NAN),
        }
    }

    /// The evidence reference of the kept event.
    pub(super) fn cite(
        &self,
        account_id: &str,
        event_type: StaticName,
        note: Option<StaticName>,
    ) -> EvidenceRef {
        EvidenceRef {
            event_id: Id::from(&*self.event_id),
            event_type,
            occurred_at: self.occurred_at,
            account_id: account_id.into(),
            opportunity_id: None,
            amount: (!self.amount.is_nan()).then_some(self.amount),
            reason: None,
            competitor: None,
            note,
            usual_amount: None,
        }
    }
}

/// What an account's kept events are cited as.
pub(super) const ORDER: StaticName = "order_placed";
pub(super) const VISIT: StaticName = "activity_logged";
pub(super) const CONTRACT: StaticName = "contract_ended";

/// Evidence notes: an activity logged since the account's last order ...
pub const NOTE_ACTIVITY_SINCE_ORDER: &str = "activity_since_last_order";
/// ... a contract that ended without renewal ...
pub const NOTE_NOT_RENEWED: &str = "contract_not_renewed";
/// ... and the latest order of an account whose orders fell far below their
/// usual value.
pub const NOTE_VALUE_FELL: &str = "order_value_fell";

/// A leaving account's evidence in its manager's book: its last order, its
/// two latest visits since, a lapsed contract; when its orders fell far
/// below their usual value, the last order says so, with the usual value.
pub(super) fn cite_leaving(
    account_id: &str,
    account: &AccountState,
    lapsed: Option<&Kept>,
    shrinking: bool,
) -> Vec<EvidenceRef> {
    let last_order = account.last_order.as_ref();
    let mut evidence = cite_kept(
        account_id,
        last_order,
        account.recent_visits.iter().rev().take(2),
        lapsed,
    );
    if let (true, Some(order)) = (shrinking, last_order.and(evidence.first_mut())) {
        order.note = Some(NOTE_VALUE_FELL);
        let usual = f64::from(account.rhythm.value_mean).exp();
        order.usual_amount = Some((usual * 100.0).round() / 100.0);
    }
    evidence
}

/// An account's kept events as evidence: its last order, the `visits`
/// given, and a contract that lapsed.
pub(super) fn cite_kept<'a>(
    account_id: &str,
    last_order: Option<&Kept>,
    visits: impl Iterator<Item = &'a Kept>,
    lapsed: Option<&Kept>,
) -> Vec<EvidenceRef> {
    let mut evidence: Vec<EvidenceRef> = last_order
        .map(|order| order.cite(account_id, ORDER, None))
        .into_iter()
        .collect();
    evidence.extend(visits.map(|v| v.cite(account_id, VISIT, Some(NOTE_ACTIVITY_SINCE_ORDER))));
    evidence.extend(lapsed.map(|l| l.cite(account_id, CONTRACT, Some(NOTE_NOT_RENEWED))));
    evidence
}

/// The evidence reference of an event; `note` says why it is cited.
pub fn evidence_of(event: &Event, note: Option<&'static str>) -> EvidenceRef {
    let (opportunity_id, amount, reason, competitor) = match &event.body {
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
        } => (Some(opportunity_id.clone()), Some(*amount), None, None),
        EventBody::OpportunityUpdated {
            opportunity_id,
            amount,
            ..
        } => (Some(opportunity_id.clone()), *amount, None, None),
        EventBody::OpportunityLost {
            opportunity_id,
            amount,
            reason,
            competitor,
        } => (
            Some(opportunity_id.clone()),
            Some(*amount),
            Some(reason.as_str()),
            competitor.clone(),
        ),
        EventBody::OrderPlaced { amount, .. } | EventBody::ContractEnded { amount, .. } => {
            (None, Some(*amount), None, None)
        }
        EventBody::ActivityLogged { .. }
        | EventBody::AccountAssigned { .. }
        | EventBody::CustomerFeedback { .. } => (None, None, None, None),
    };
    EvidenceRef {
        event_id: event.event_id.clone(),
        event_type: event.body.type_name(),
        occurred_at: event.occurred_at,
        account_id: event.account_id.clone(),
        opportunity_id,
        amount,
        reason,
        competitor,
        note,
        usual_amount: None,
    }
}

//! Sales-activity events, schema v1 (DESIGN §2): the typed form every input
//! message is decoded into, and the decoder that gets it there.
//!
//! This module owns the input contract. It knows nothing about Kafka or about
//! detection; `decode` turns bytes into an [`Event`] or a [`DecodeError`] whose
//! [`DecodeError::code`] is the dead-letter reason.

mod decode;
mod encode;

pub use decode::{decode, DecodeError, DecodeLimits};

use crate::time::Timestamp;

/// An id or name carried by an event. Ids of up to 24 bytes (nearly all)
/// are held inline, so decoding an event allocates nothing for them.
pub type Id = compact_str::CompactString;

/// One decoded sales-activity event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub event_id: Id,
    pub occurred_at: Timestamp,
    pub manager_id: Id,
    pub account_id: Id,
    /// The peer group; `"default"` when the event names none.
    pub team: Id,
    pub body: EventBody,
}

/// The type-specific part of an event.
#[derive(Clone, Debug, PartialEq)]
pub enum EventBody {
    OpportunityCreated {
        opportunity_id: Id,
        amount: f64,
    },
    OpportunityUpdated {
        opportunity_id: Id,
        amount: Option<f64>,
        stage: Option<Id>,
        expected_close: Option<Timestamp>,
    },
    OpportunityWon {
        opportunity_id: Id,
        amount: f64,
    },
    OpportunityLost {
        opportunity_id: Id,
        amount: f64,
        reason: LossReason,
        competitor: Option<Id>,
    },
    OpportunityWithdrawn {
        opportunity_id: Id,
        amount: f64,
    },
    OrderPlaced {
        order_id: Id,
        amount: f64,
    },
    ActivityLogged {
        activity: ActivityKind,
    },
    AccountAssigned {
        previous_manager_id: Option<Id>,
    },
    ContractEnded {
        contract_id: Id,
        renewed: bool,
        amount: f64,
    },
    CustomerFeedback {
        kind: FeedbackKind,
        score: Option<u8>,
    },
}

/// Why a deal was lost, as the CRM records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LossReason {
    Price,
    Competitor,
    NoDecision,
    Other,
}

/// A loss reason travels as its wire name (between stages, scaled out).
impl serde::Serialize for LossReason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for LossReason {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        LossReason::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown loss reason `{text}`")))
    }
}

/// How the manager touched the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivityKind {
    Visit,
    Call,
    Email,
    Meeting,
}

/// Result of a complaint or a customer revisit (客户回访).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedbackKind {
    Complaint,
    Revisit,
}

/// Every event type of schema v1, in the order of DESIGN §2. The names are
/// the wire names and the `type` label of `feidan_events_total`.
pub const EVENT_TYPES: [&str; 10] = [
    "opportunity_created",
    "opportunity_updated",
    "opportunity_won",
    "opportunity_lost",
    "opportunity_withdrawn",
    "order_placed",
    "activity_logged",
    "account_assigned",
    "contract_ended",
    "customer_feedback",
];

impl EventBody {
    /// The wire name of this event's type.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventBody::OpportunityCreated { .. } => "opportunity_created",
            EventBody::OpportunityUpdated { .. } => "opportunity_updated",
            EventBody::OpportunityWon { .. } => "opportunity_won",
            EventBody::OpportunityLost { .. } => "opportunity_lost",
            EventBody::OpportunityWithdrawn { .. } => "opportunity_withdrawn",
            EventBody::OrderPlaced { .. } => "order_placed",
            EventBody::ActivityLogged { .. } => "activity_logged",
            EventBody::AccountAssigned { .. } => "account_assigned",
            EventBody::ContractEnded { .. } => "contract_ended",
            EventBody::CustomerFeedback { .. } => "customer_feedback",
        }
    }
}

impl LossReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LossReason::Price => "price",
            LossReason::Competitor => "competitor",
            LossReason::NoDecision => "no_decision",
            LossReason::Other => "other",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<LossReason> {
        Some(match text {
            "price" => LossReason::Price,
            "competitor" => LossReason::Competitor,
            "no_decision" => LossReason::NoDecision,
            "other" => LossReason::Other,
            _ => return None,
        })
    }
}

impl ActivityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Visit => "visit",
            ActivityKind::Call => "call",
            ActivityKind::Email => "email",
            ActivityKind::Meeting => "meeting",
        }
    }

    fn parse(text: &str) -> Option<ActivityKind> {
        Some(match text {
            "visit" => ActivityKind::Visit,
            "call" => ActivityKind::Call,
            "email" => ActivityKind::Email,
            "meeting" => ActivityKind::Meeting,
            _ => return None,
        })
    }
}

impl FeedbackKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackKind::Complaint => "complaint",
            FeedbackKind::Revisit => "revisit",
        }
    }

    fn parse(text: &str) -> Option<FeedbackKind> {
        Some(match text {
            "complaint" => FeedbackKind::Complaint,
            "revisit" => FeedbackKind::Revisit,
            _ => return None,
        })
    }
}

//! An account's open deals, and how they leave the pipeline: closed
//! (won, lost, withdrawn, quote cut) by their events, or stalled by the
//! event-time timer as the watermark passes.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thin_vec::ThinVec;

use crate::config::{Config, DetectConfig};
use crate::event::{Event, Id, LossReason};
use crate::time::Timestamp;

use crate::engine::checkpoint::StaticName;
use crate::engine::fact::{DealOutcome, EvidenceRef, Fact, FactKind, LeakRoute};

use super::{evidence_of, AccountState};

/// An account's open deals, in a vector sorted by opportunity id: most
/// accounts have none or a few, and a map's fixed size and spare buckets cost
/// more than the search. Checkpointed as a map of [`OpenDealRecord`]s.
///
/// An id lives behind a pointer, so comparing one is a cache miss: a deal
/// is found by its [`tag`] first, scanning the few deals side by side, and
/// only a deal whose tag matches has its id read.
#[derive(Debug, Default)]
pub(super) struct OpenDeals(pub(super) ThinVec<OpenDeal>);

/// Open deals past which a deal is found by a binary search of ids, not a
/// scan of tags.
pub(super) const SCANNED_DEALS: usize = 32;

/// A 16-bit digest of an opportunity id (FNV-1a, folded): equal ids have
/// equal tags, and two of an account's deals seldom share one.
pub(super) fn tag(opportunity_id: &str) -> u16 {
    let hash = opportunity_id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (hash ^ (hash >> 16)) as u16
}

impl OpenDeals {
    /// Where the deal `id` is (`Ok`), or where it would go in id order (`Err`).
    pub(super) fn find(&self, id: &str) -> Result<usize, usize> {
        self.0
            .binary_search_by(|deal| deal.opportunity_id().cmp(id))
    }

    /// Where the deal `id` is, if it is open.
    pub(super) fn position(&self, id: &str) -> Option<usize> {
        if self.0.len() > SCANNED_DEALS {
            return self.find(id).ok();
        }
        let tag = tag(id);
        self.0
            .iter()
            .position(|deal| deal.tag == tag && deal.opportunity_id() == id)
    }

    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut OpenDeal> {
        let i = self.position(id)?;
        Some(&mut self.0[i])
    }

    pub(super) fn insert(&mut self, deal: OpenDeal) {
        match self.find(deal.opportunity_id()) {
            Ok(i) => self.0[i] = deal,
            Err(i) => self.0.insert(i, deal),
        }
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<OpenDeal> {
        let i = self.position(id)?;
        Some(self.0.remove(i))
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

/// An open deal as checkpointed (the form older versions wrote).
#[derive(Serialize, Deserialize)]
pub(super) struct OpenDealRecord {
    pub(super) initial_amount: f64,
    pub(super) last_update: Timestamp,
    pub(super) last_event_id: Box<str>,
    #[serde(with = "crate::engine::checkpoint::name")]
    pub(super) last_event_type: StaticName,
    pub(super) amount: f64,
    /// Whether the deal already left the pipeline, stalled or its quote cut
    /// (named for the first way there was).
    pub(super) stalled: bool,
}

impl Serialize for OpenDeals {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(OpenDeal::record))
    }
}

impl<'de> Deserialize<'de> for OpenDeals {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let sorted = BTreeMap::<Box<str>, OpenDealRecord>::deserialize(deserializer)?;
        Ok(OpenDeals(
            sorted
                .into_iter()
                .map(|(id, record)| OpenDeal::from_record(&id, record))
                .collect(),
        ))
    }
}

/// One open deal. Its opportunity id and the id of its latest event (cited
/// if it stalls) share one allocation, `ids`, split at `split`: half the
/// memory of two strings for a small deal.
#[derive(Debug, Clone)]
pub(super) struct OpenDeal {
    pub(super) ids: Box<str>,
    pub(super) split: u32,
    /// The opportunity id's [`tag`] (in what would be padding).
    pub(super) tag: u16,
    /// Whether its latest event is an update (else it is its creation).
    pub(super) updated: bool,
    /// Whether it already left the pipeline before closing, stalled or its
    /// quote cut: a deal leaves it once.
    pub(super) left: bool,
    pub(super) initial_amount: f64,
    pub(super) last_update: Timestamp,
    pub(super) amount: f64,
}

/// The event types an open deal's latest event can have.
pub(super) const CREATED: StaticName = "opportunity_created";
pub(super) const UPDATED: StaticName = "opportunity_updated";

impl OpenDeal {
    pub(super) fn new(
        opportunity_id: &str,
        event_id: &str,
        at: Timestamp,
        amount: f64,
    ) -> OpenDeal {
        OpenDeal {
            ids: OpenDeal::ids(opportunity_id, event_id),
            split: opportunity_id.len() as u32,
            tag: tag(opportunity_id),
            updated: false,
            left: false,
            initial_amount: amount,
            last_update: at,
            amount,
        }
    }

    pub(super) fn ids(opportunity_id: &str, event_id: &str) -> Box<str> {
        let mut ids = String::with_capacity(opportunity_id.len() + event_id.len());
        ids.push_str(opportunity_id);
        ids.push_str(event_id);
        ids.into_boxed_str()
    }

    pub(super) fn opportunity_id(&self) -> &str {
        &self.ids[..self.split as usize]
    }

    pub(super) fn last_event_id(&self) -> &str {
        &self.ids[self.split as usize..]
    }

    pub(super) fn last_event_type(&self) -> StaticName {
        if self.updated {
            UPDATED
        } else {
            CREATED
        }
    }

    /// The deal as checkpointed: its opportunity id and its record.
    pub(super) fn record(&self) -> (&str, OpenDealRecord) {
        let record = OpenDealRecord {
            initial_amount: self.initial_amount,
            last_update: self.last_update,
            last_event_id: self.last_event_id().into(),
            last_event_type: self.last_event_type(),
            amount: self.amount,
            stalled: self.left,
        };
        (self.opportunity_id(), record)
    }

    /// The deal of a checkpoint record (the inverse of [`OpenDeal::record`]).
    pub(super) fn from_record(opportunity_id: &str, record: OpenDealRecord) -> OpenDeal {
        OpenDeal {
            ids: OpenDeal::ids(opportunity_id, &record.last_event_id),
            split: opportunity_id.len() as u32,
            tag: tag(opportunity_id),
            updated: record.last_event_type == UPDATED,
            left: record.stalled,
            initial_amount: record.initial_amount,
            last_update: record.last_update,
            amount: record.amount,
        }
    }

    /// Records an update at `at` as the deal's latest event.
    pub(super) fn updated_by(&mut self, event_id: &str, at: Timestamp) {
        self.ids = OpenDeal::ids(self.opportunity_id(), event_id);
        self.updated = true;
        self.last_update = at;
    }
}

/// Whether a quote of `amount` cuts a deal of `initial_amount` by more than
/// `cut_ratio`.
pub(super) fn is_cut(initial_amount: f64, amount: f64, cut_ratio: f64) -> bool {
    initial_amount > 0.0 && amount < (1.0 - cut_ratio) * initial_amount
}

/// Closes a deal: a `DealClosed` fact, and a `DealExited` one unless the deal
/// already left the pipeline, stalled or cut.
pub(super) fn close(
    account: &mut AccountState,
    event: &Event,
    opportunity_id: &str,
    amount: f64,
    outcome: DealOutcome,
    config: &Config,
    facts: &mut Vec<Fact>,
) {
    let open = account.open.remove(opportunity_id);
    let cut_ratio = config.detect_for(&event.team).leakage.cut_ratio;
    let cut = open
        .as_ref()
        .is_some_and(|o| is_cut(o.initial_amount, amount, cut_ratio));
    let leak = match &outcome {
        DealOutcome::Withdrawn => Some(LeakRoute::Withdrawn),
        DealOutcome::Lost {
            reason: LossReason::NoDecision,
            ..
        } => Some(LeakRoute::NoDecision),
        _ if cut => Some(LeakRoute::Cut),
        _ => None,
    };
    if !open.as_ref().is_some_and(|o| o.left) {
        facts.push(deal_exited(event, leak));
    }
    facts.push(fact_of(event, FactKind::DealClosed { outcome }, None));
}

/// The fact that a deal left the pipeline at `event`, by `leak` if it
/// leaked (the route is then the evidence's note).
pub(super) fn deal_exited(event: &Event, leak: Option<LeakRoute>) -> Fact {
    let kind = FactKind::DealExited { leak };
    fact_of(event, kind, leak.map(LeakRoute::as_str))
}

/// A fact about `event`'s manager at its time, citing it with `note`.
pub(super) fn fact_of(event: &Event, kind: FactKind, note: Option<&'static str>) -> Fact {
    Fact {
        manager_id: event.manager_id.clone(),
        team: event.team.clone(),
        at: event.occurred_at,
        kind,
        evidence: evidence_of(event, note),
    }
}

/// Open deals with no update for `stall_after` leave the pipeline as stalled,
/// and deals that have not moved since before `forget_before` are dropped.
/// Returns when the next of the account's deals is due to do either.
pub(super) fn sweep_deals(
    account_id: &str,
    account: &mut AccountState,
    at: Timestamp,
    forget_before: Timestamp,
    detect: &DetectConfig,
    facts: &mut Vec<Fact>,
) -> i64 {
    let stall_after = detect.leakage.stall_after.as_secs() as i64;
    let keep_for = at.0 - forget_before.0;
    let mut next_due = i64::MAX;
    account.open.0.retain_mut(|deal| {
        let stalls_at = deal.last_update.plus(stall_after);
        if !deal.left && stalls_at <= at {
            deal.left = true;
            facts.push(Fact {
                manager_id: Id::from(&*account.manager_id),
                team: Id::from(&*account.team),
                at: stalls_at,
                kind: FactKind::DealExited {
                    leak: Some(LeakRoute::Stalled),
                },
                evidence: EvidenceRef {
                    event_id: deal.last_event_id().into(),
                    event_type: deal.last_event_type(),
                    occurred_at: deal.last_update,
                    account_id: account_id.into(),
                    opportunity_id: Some(deal.opportunity_id().into()),
                    amount: Some(deal.amount),
                    reason: None,
                    competitor: None,
                    note: Some(LeakRoute::Stalled.as_str()),
                    usual_amount: None,
                },
            });
        }
        if deal.last_update < forget_before {
            return false;
        }
        if !deal.left {
            next_due = next_due.min(stalls_at.0);
        }
        next_due = next_due.min(deal.last_update.plus(keep_for).0.saturating_add(1));
        true
    });
    next_due
}

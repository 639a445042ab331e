//! The account stage (DESIGN §1): per-account state, keyed by `account_id`.
//!
//! It knows who owns each account now (`account_assigned` moves it, history
//! and all), which deals are open on it, the account's order rhythm, the
//! activities logged on it since its last order, and whether a contract
//! lapsed. From events it makes [`Fact`]s for the manager stage; at each
//! evaluation it fires the event-time timers (deals stalling, accounts going
//! overdue), runs the account-churn detector, and reports each manager's
//! book to the manager stage.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::{part_size, Map};
use rayon::prelude::*;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thin_vec::ThinVec;

use crate::alert::{Alert, AlertKind};
use crate::config::{ChurnConfig, Config, DetectConfig};
use crate::detect::account_churn::{self, OrderSilence};
use crate::detect::book_churn::{Bars, ByBar};
use crate::detect::value_fall::{self, ValueFall};
use crate::detect::Finding;
use crate::event::{Event, EventBody, Id, LossReason};
use crate::stats;
use crate::time::{Timestamp, DAY};

use super::base_rates::BookCounts;
use super::calibration::{Calibration, TailCounts};
use super::checkpoint::{self, RestoreError, StaticName};
use super::eviction::EvictionSampler;
use super::fact::{DealOutcome, EvidenceRef, Fact, FactKind, LeakRoute};
use super::lifecycle::{AlertDraft, Lifecycle};
use super::pace::{CompanyOrders, CompanyPace, StillOrdering};
use super::window::DailyBuckets;

/// Activities kept per account as evidence of visits without orders.
const VISITS_KEPT: usize = 4;

/// Order times kept per account: enough to count orders over the longest
/// order-volume window for all but the busiest accounts, and the gaps an
/// account-churn alert's silence must outlast.
const RECENT_ORDERS: usize = 12;

/// The accounts, in one dense vector indexed by id: iterated in order at
/// every evaluation, and about a fifth of the memory of a hash map holding
/// the states in its buckets (whose spare buckets are resident too).
type Accounts = indexmap::IndexMap<Id, AccountState, ahash::RandomState>;

/// All accounts this instance owns, and the company's order rate as they see it.
#[derive(Debug, Default)]
pub struct AccountStage {
    accounts: Accounts,
    /// Manager and team names, shared by the accounts that name them.
    names: Names,
    /// Chooses what to forget at the cap.
    eviction: EvictionSampler,
    /// Accounts forgotten because they were idle past `engine.entity_ttl` ...
    pub expired: u64,
    /// ... or because `engine.max_accounts` was reached.
    pub evicted: u64,
    /// Orders per day over all accounts: the company's pace, for business time.
    company_orders: DailyBuckets<u64>,
    /// The orders per day the accounts still ordering expect, sampled at
    /// each evaluation (see `pace`).
    company_expected: DailyBuckets<StillOrdering>,
    /// The gaps ended by the orders of each evaluation's day, and how many
    /// a silence test would have put past each tail level (see
    /// `calibration`), by the day of the evaluation.
    company_tails: DailyBuckets<TailCounts>,
    /// The calibration of the last evaluation, for the metrics.
    calibration: Option<Calibration>,
}

#[derive(Debug, Serialize, Deserialize)]
struct AccountState {
    manager_id: Name,
    team: Name,
    /// When the account last changed hands; recent arrivals do not count in
    /// the new owner's book churn.
    assigned_at: MaybeTime,
    open: OpenDeals,
    rhythm: Rhythm,
    last_order: Option<Kept>,
    /// Activities logged since the last order (at most `u16::MAX`).
    visits_since: u16,
    recent_visits: ThinVec<Kept>,
    /// The latest of `recent_visits`, held inline: judging reads it every
    /// day, and the vector is a pointer away (see [`LatestVisit`]).
    #[serde(skip)]
    latest_visit: LatestVisit,
    /// Times of the latest orders in Unix seconds, newest first (0: none),
    /// for order volume. 32 bits hold 1970 to 2106; an order outside that is
    /// not counted in volume.
    recent_orders: [u32; RECENT_ORDERS],
    /// The latest contract that ended without renewal (boxed: it is rare).
    lapsed: Option<Box<Kept>>,
    /// Whether the lifecycle holds an account-churn entry for this account.
    watched: bool,
    /// The evaluation at which the account began churning (none while it is
    /// not): accounts churning for longer than `churn.book_window` are gone
    /// from the book.
    #[serde(default)]
    churning_since: MaybeTime,
    /// The newest event time seen on the account, for expiry.
    last_seen: Timestamp,
    /// The earliest time an open deal may stall or be forgotten, so that an
    /// evaluation looks at an account's deals only when one is due: Unix
    /// seconds, 0 to look at the next evaluation (how a restored account
    /// starts), `u32::MAX` for none (see [`due_at`]).
    #[serde(skip)]
    deals_due: u32,
    /// Whether the account changed since the last checkpoint of changes
    /// (new accounts have; restored ones have not).
    #[serde(skip)]
    changed: bool,
}

/// The gaps, in days, between the kept order times (newest first), taken
/// between deliveries: orders less than half a day apart are one. A time
/// 32 bits do not hold (0) ends what is known.
fn delivery_gaps(recent_orders: &[u32; RECENT_ORDERS]) -> impl Iterator<Item = f64> + '_ {
    let mut kept = recent_orders
        .iter()
        .map(|t| i64::from(*t))
        .take_while(|t| *t != 0);
    let mut newer = kept.next();
    kept.filter_map(move |older| {
        let gap = newer? - older;
        (gap >= DAY / 2).then(|| {
            newer = Some(older);
            gap as f64 / DAY as f64
        })
    })
}

/// The gap, in days, between the latest kept order and the latest kept one
/// at least half a day before it (orders closer together are one delivery),
/// if both are kept; times 32 bits do not hold are not.
fn gap_before(recent_orders: &[u32; RECENT_ORDERS]) -> Option<f64> {
    delivery_gaps(recent_orders).next()
}

/// The gaps between an account's latest orders kept ([`delivery_gaps`], as
/// the rhythm learns them): what its ordering did of late,
/// whether or not the rhythm learnt each gap (see the gap rule in
/// [`AccountStage::apply`]) or still remembers it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct RecentGaps {
    count: u32,
    /// Their sum and the sum of their logarithms, days.
    sum: f64,
    log_sum: f64,
    longest: f64,
}

/// Recent gaps needed before their spread bounds an alert's shape.
const MIN_RECENT_GAPS: u32 = 5;

impl RecentGaps {
    fn of(recent_orders: &[u32; RECENT_ORDERS]) -> RecentGaps {
        let mut gaps = RecentGaps::default();
        for gap in delivery_gaps(recent_orders) {
            gaps.count += 1;
            gaps.sum += gap;
            gaps.log_sum += gap.ln();
            gaps.longest = gaps.longest.max(gap);
        }
        gaps
    }

    /// Their maximum-likelihood gamma shape, believed as a rhythm's is;
    /// `None` with fewer than [`MIN_RECENT_GAPS`].
    fn believed_shape(&self, max_shape: f64) -> Option<f64> {
        if self.count < MIN_RECENT_GAPS {
            return None;
        }
        let n = f64::from(self.count);
        account_churn::gamma_shape_from_logs(self.sum / n, self.log_sum / n)
            .map(|shape| believed(shape, n, max_shape))
    }
}

/// A time as [`AccountState::deals_due`] holds it: before 1970 is due at
/// once, after 2106 never.
fn due_at(at: i64) -> u32 {
    u32::try_from(at.max(0)).unwrap_or(u32::MAX)
}

/// The time of an account's latest kept visit in Unix seconds, inline: 0
/// for none, and [`LatestVisit::UNKNOWN`] for a time 32 bits do not hold
/// (before 1970 or after 2106) and for a restored account, whose kept
/// visits are then read instead.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LatestVisit(u32);

impl LatestVisit {
    const NONE: LatestVisit = LatestVisit(0);
    const UNKNOWN: LatestVisit = LatestVisit(u32::MAX);

    /// The latest of `visits`.
    fn of(visits: &[Kept]) -> LatestVisit {
        match LatestVisit::read(visits) {
            None => LatestVisit::NONE,
            Some(at) => u32::try_from(at.0)
                .ok()
                .filter(|secs| *secs != 0 && *secs != u32::MAX)
                .map_or(LatestVisit::UNKNOWN, LatestVisit),
        }
    }

    /// The latest visit time, `visits` being the kept visits it was taken of.
    fn get(self, visits: &[Kept]) -> Option<Timestamp> {
        match self {
            LatestVisit::NONE => None,
            LatestVisit::UNKNOWN => LatestVisit::read(visits),
            LatestVisit(secs) => Some(Timestamp(i64::from(secs))),
        }
    }

    /// The latest time of `visits`, read from them.
    fn read(visits: &[Kept]) -> Option<Timestamp> {
        visits.iter().map(|v| v.occurred_at).max()
    }
}

impl Default for LatestVisit {
    /// What a restored account starts with: read from its kept visits.
    fn default() -> LatestVisit {
        LatestVisit::UNKNOWN
    }
}

impl AccountState {
    /// Days from the latest activity logged since the last order to `at`,
    /// when at least `churn.min_visits` were logged since (fewer never count
    /// as visiting, so the kept visits, a pointer away, are not read).
    fn days_since_visit(&self, at: Timestamp, churn: &ChurnConfig) -> Option<f64> {
        if u32::from(self.visits_since) < churn.min_visits {
            return None;
        }
        let latest = self.latest_visit.get(&self.recent_visits)?;
        Some((at.0 - latest.0) as f64 / DAY as f64)
    }
}

/// An event the account stage keeps to cite later. Its account is the
/// account's own and its type is the slot it is kept in, so they are not
/// stored; a checkpoint of the full [`EvidenceRef`] reads as one.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Kept {
    event_id: Box<str>,
    occurred_at: Timestamp,
    /// NaN when the event has none (an activity); checkpointed as an option.
    #[serde(default = "no_amount", with = "amount_or_none")]
    amount: f64,
}

fn no_amount() -> f64 {
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
    fn of(event: &Event, amount: Option<f64>) -> Kept {
        Kept {
            event_id: event.event_id.as_str().into(),
            occurred_at: event.occurred_at,
            amount: amount.unwrap_or(f64::NAN),
        }
    }

    /// The evidence reference of the kept event.
    fn cite(
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

/// An optional time in 8 bytes (`i64::MIN`: none), checkpointed as an
/// option: an account holds two.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "Option<Timestamp>", into = "Option<Timestamp>")]
struct MaybeTime(i64);

impl MaybeTime {
    const NONE: MaybeTime = MaybeTime(i64::MIN);

    fn get(self) -> Option<Timestamp> {
        (self != MaybeTime::NONE).then_some(Timestamp(self.0))
    }
}

impl From<Option<Timestamp>> for MaybeTime {
    fn from(time: Option<Timestamp>) -> MaybeTime {
        time.map_or(MaybeTime::NONE, |t| MaybeTime(t.0))
    }
}

impl From<MaybeTime> for Option<Timestamp> {
    fn from(time: MaybeTime) -> Option<Timestamp> {
        time.get()
    }
}

impl Default for MaybeTime {
    fn default() -> MaybeTime {
        MaybeTime::NONE
    }
}

/// What an account's kept events are cited as.
const ORDER: StaticName = "order_placed";
const VISIT: StaticName = "activity_logged";
const CONTRACT: StaticName = "contract_ended";

/// An account's open deals, in a vector sorted by opportunity id: most
/// accounts have none or a few, and a map's fixed size and spare buckets cost
/// more than the search. Checkpointed as a map of [`OpenDealRecord`]s.
///
/// An id lives behind a pointer, so comparing one is a cache miss: a deal
/// is found by its [`tag`] first, scanning the few deals side by side, and
/// only a deal whose tag matches has its id read.
#[derive(Debug, Default)]
struct OpenDeals(ThinVec<OpenDeal>);

/// Open deals past which a deal is found by a binary search of ids, not a
/// scan of tags.
const SCANNED_DEALS: usize = 32;

/// A 16-bit digest of an opportunity id (FNV-1a, folded): equal ids have
/// equal tags, and two of an account's deals seldom share one.
fn tag(opportunity_id: &str) -> u16 {
    let hash = opportunity_id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (hash ^ (hash >> 16)) as u16
}

impl OpenDeals {
    /// Where the deal `id` is (`Ok`), or where it would go in id order (`Err`).
    fn find(&self, id: &str) -> Result<usize, usize> {
        self.0
            .binary_search_by(|deal| deal.opportunity_id().cmp(id))
    }

    /// Where the deal `id` is, if it is open.
    fn position(&self, id: &str) -> Option<usize> {
        if self.0.len() > SCANNED_DEALS {
            return self.find(id).ok();
        }
        let tag = tag(id);
        self.0
            .iter()
            .position(|deal| deal.tag == tag && deal.opportunity_id() == id)
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut OpenDeal> {
        let i = self.position(id)?;
        Some(&mut self.0[i])
    }

    fn insert(&mut self, deal: OpenDeal) {
        match self.find(deal.opportunity_id()) {
            Ok(i) => self.0[i] = deal,
            Err(i) => self.0.insert(i, deal),
        }
    }

    fn remove(&mut self, id: &str) -> Option<OpenDeal> {
        let i = self.position(id)?;
        Some(self.0.remove(i))
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// An open deal as checkpointed (the form older versions wrote).
#[derive(Serialize, Deserialize)]
struct OpenDealRecord {
    initial_amount: f64,
    last_update: Timestamp,
    last_event_id: Box<str>,
    #[serde(with = "super::checkpoint::name")]
    last_event_type: StaticName,
    amount: f64,
    /// Whether the deal already left the pipeline, stalled or its quote cut
    /// (named for the first way there was).
    stalled: bool,
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

/// A manager or team name as an account holds it: interned (see [`Names`]),
/// behind a thin pointer — 8 bytes in every account where `Arc<str>` took
/// 16, for one more allocation per distinct name. Checkpointed as a string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Name(Arc<String>);

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|name| Name(Arc::new(name)))
    }
}

impl Name {
    /// Where the name lives: the same for every holder of one interned name.
    fn address(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }
}

/// Interned names: one allocation per manager or team, however many
/// accounts name it. Names no account holds any more are dropped at expiry.
#[derive(Debug, Default)]
struct Names(HashSet<Name, ahash::RandomState>);

impl Names {
    fn intern(&mut self, name: &str) -> Name {
        if let Some(known) = self.0.get(name) {
            return known.clone();
        }
        let name = Name(Arc::new(name.to_owned()));
        self.0.insert(name.clone());
        name
    }

    /// Gives back one account's hold on `name`, forgetting the name when no
    /// other account holds it: a flood of new names at the account cap must
    /// not grow the set.
    fn release(&mut self, name: Name) {
        if Arc::strong_count(&name.0) == 2 {
            self.0.remove(&*name);
        }
    }

    /// Drops the names only this set still holds.
    fn prune(&mut self) {
        self.0.retain(|name| Arc::strong_count(&name.0) > 1);
    }
}

/// One open deal. Its opportunity id and the id of its latest event (cited
/// if it stalls) share one allocation, `ids`, split at `split`: half the
/// memory of two strings for a small deal.
#[derive(Debug, Clone)]
struct OpenDeal {
    ids: Box<str>,
    split: u32,
    /// The opportunity id's [`tag`] (in what would be padding).
    tag: u16,
    /// Whether its latest event is an update (else it is its creation).
    updated: bool,
    /// Whether it already left the pipeline before closing, stalled or its
    /// quote cut: a deal leaves it once.
    left: bool,
    initial_amount: f64,
    last_update: Timestamp,
    amount: f64,
}

/// The event types an open deal's latest event can have.
const CREATED: StaticName = "opportunity_created";
const UPDATED: StaticName = "opportunity_updated";

impl OpenDeal {
    fn new(opportunity_id: &str, event_id: &str, at: Timestamp, amount: f64) -> OpenDeal {
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

    fn ids(opportunity_id: &str, event_id: &str) -> Box<str> {
        let mut ids = String::with_capacity(opportunity_id.len() + event_id.len());
        ids.push_str(opportunity_id);
        ids.push_str(event_id);
        ids.into_boxed_str()
    }

    fn opportunity_id(&self) -> &str {
        &self.ids[..self.split as usize]
    }

    fn last_event_id(&self) -> &str {
        &self.ids[self.split as usize..]
    }

    fn last_event_type(&self) -> StaticName {
        if self.updated {
            UPDATED
        } else {
            CREATED
        }
    }

    /// The deal as checkpointed: its opportunity id and its record.
    fn record(&self) -> (&str, OpenDealRecord) {
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
    fn from_record(opportunity_id: &str, record: OpenDealRecord) -> OpenDeal {
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
    fn updated_by(&mut self, event_id: &str, at: Timestamp) {
        self.ids = OpenDeal::ids(self.opportunity_id(), event_id);
        self.updated = true;
        self.last_update = at;
    }
}

/// An account's ordering: exponentially weighted moments of the gaps between
/// orders (days) and of the order values (logarithms, so a fall to half is
/// the same step for a small customer as for a large one). Moments are
/// worked out in double precision and kept in single (seven digits are
/// more than a rhythm is known to; an account is a few hundred bytes).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Rhythm {
    /// Gaps learnt (saturating).
    #[serde(deserialize_with = "saturating_u16")]
    gaps: u16,
    /// Orders with a positive value (saturating) ...
    #[serde(default, deserialize_with = "saturating_u16")]
    valued: u16,
    gap_mean: f32,
    gap_var: f32,
    /// The gaps' logarithms' mean, weighted as the moments are (see
    /// [`account_churn::gamma_shape_from_logs`]); NaN while unknown (a
    /// rhythm checkpointed before 2026-11-30).
    #[serde(default = "unknown_log_mean")]
    gap_log_mean: f32,
    /// ... and the moments of their log values, all but the last three:
    /// the usual value the latest orders are judged against.
    #[serde(default)]
    value_mean: f32,
    #[serde(default)]
    value_var: f32,
    /// Log values of the last three such orders, newest first.
    #[serde(default)]
    recent_values: [f32; 3],
}

/// The gamma shapes a rhythm is judged by.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Shapes {
    /// For an alert about the account: the lesser of the moments' estimate
    /// and the maximum-likelihood one (from the logarithms' mean); judging
    /// an account bounds it by its latest orders' spread as well
    /// ([`RecentGaps`]).
    alerting: f64,
    /// For book churn's counts and for learning: the moments' alone. Book
    /// churn weighs a book against the company's share of accounts past
    /// the same bars, every account judged alike, so a bias the moments
    /// share across accounts cancels there; bounding them by the logarithms
    /// as well lowered the company's shares, and honest books whose
    /// customers left together stood out (an honest manager accused on a
    /// held-out world).
    compared: f64,
}

/// A count checkpointed as 32 bits before 2026-11-30, held in 16 now:
/// larger counts read as the most 16 bits hold.
fn saturating_u16<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    u32::deserialize(deserializer).map(|n| u16::try_from(n).unwrap_or(u16::MAX))
}

fn unknown_log_mean() -> f32 {
    f32::NAN
}

/// Weight of the newest gap once an account has many: the rhythm follows
/// slow changes over about this many orders.
const RHYTHM_MEMORY: f64 = 30.0;

/// Orders judged for a fall in value: the last one, two and three.
const VALUE_JUDGED: usize = 3;

/// Adds `x` to exponentially weighted moments over `n` earlier values
/// (equal weights until `RHYTHM_MEMORY` of them).
fn add_moment(n: u32, mean: &mut f32, var: &mut f32, x: f64) {
    if n == 0 {
        *mean = x as f32;
        return;
    }
    let w = (1.0 / f64::from(n + 1)).max(1.0 / RHYTHM_MEMORY);
    let delta = x - f64::from(*mean);
    *mean = (f64::from(*mean) + w * delta) as f32;
    *var = ((1.0 - w) * (f64::from(*var) + w * delta * delta)) as f32;
}

/// A gamma shape estimated from `n` gaps, taken one standard error toward
/// irregular (the estimate is noisy, and an overconfident rhythm accuses),
/// at most half the gaps and at most `max_shape`.
fn believed(estimate: f64, n: f64, max_shape: f64) -> f64 {
    (estimate / (1.0 + (2.0 / n).sqrt())).clamp(0.5, max_shape.min(n / 2.0).max(0.5))
}

impl Rhythm {
    /// Mean gap between orders, days.
    fn gap_mean(&self) -> f64 {
        f64::from(self.gap_mean)
    }

    fn add_order(&mut self, gap_days: Option<f64>, amount: f64) {
        if let Some(gap) = gap_days {
            let n = u32::from(self.gaps);
            // The logarithms' mean takes the moments' weights, so that it
            // stays in step with the mean (ln of the mean is never below
            // it). Unknown (restored), it starts at the mean's logarithm:
            // no spread, which bounds nothing, until gaps come.
            if n == 0 {
                self.gap_log_mean = gap.ln() as f32;
            } else {
                if self.gap_log_mean.is_nan() {
                    self.gap_log_mean = self.gap_mean().ln() as f32;
                }
                let w = (1.0 / f64::from(n + 1)).max(1.0 / RHYTHM_MEMORY);
                let log_mean = f64::from(self.gap_log_mean);
                self.gap_log_mean = (log_mean + w * (gap.ln() - log_mean)) as f32;
            }
            add_moment(n, &mut self.gap_mean, &mut self.gap_var, gap);
            self.gaps = self.gaps.saturating_add(1);
        }
        if amount > 0.0 {
            // The order leaving the recent three joins the usual value.
            if usize::from(self.valued) >= VALUE_JUDGED {
                let base = u32::from(self.valued) - VALUE_JUDGED as u32;
                let oldest = f64::from(self.recent_values[VALUE_JUDGED - 1]);
                add_moment(base, &mut self.value_mean, &mut self.value_var, oldest);
            }
            self.recent_values.rotate_right(1);
            self.recent_values[0] = amount.ln() as f32;
            self.valued = self.valued.saturating_add(1);
        }
    }

    /// The gamma shapes the rhythm is judged by, each estimate believed
    /// as [`believed`] says.
    fn shapes(&self, max_shape: f64) -> Shapes {
        let n = f64::from(self.gaps).min(RHYTHM_MEMORY);
        let believe = |estimate: f64| believed(estimate, n, max_shape);
        let moments =
            account_churn::gamma_shape(self.gap_mean(), f64::from(self.gap_var), max_shape);
        let likeliest =
            account_churn::gamma_shape_from_logs(self.gap_mean(), f64::from(self.gap_log_mean))
                .map_or(moments, |likeliest| moments.min(likeliest));
        Shapes {
            alerting: believe(likeliest),
            compared: believe(moments),
        }
    }

    /// Whether a gap of `gap_days` is improbable under a learnt rhythm: its
    /// gamma survival below `churn.alpha`, the bar an account-churn alert
    /// fires at, under the shape book churn counts by (what is learnt is
    /// what book churn compares). A gap no longer than the mean never is
    /// below a bar under 0.3 (the survival at the mean is 0.32 at the least
    /// regular shape believed, 0.5, and more at every other), so most
    /// orders cost no survival function.
    fn is_improbable(&self, gap_days: f64, churn: &ChurnConfig) -> bool {
        if (gap_days <= self.gap_mean() && churn.alpha < 0.3)
            || !self.learnt(churn.min_gaps, churn.min_history)
        {
            return false;
        }
        let shape = self.shapes(churn.max_shape).compared;
        stats::gamma_survival(gap_days, shape, self.gap_mean() / shape) < churn.alpha
    }

    /// Whether the rhythm is learnt well enough to judge a silence by: at
    /// least `min_gaps` gaps, adding up to at least `min_history` (their
    /// mean times their count; the mean is exact until `RHYTHM_MEMORY`
    /// gaps, and by then the history is long anyway).
    fn learnt(&self, min_gaps: u32, min_history: std::time::Duration) -> bool {
        let span_days = self.gap_mean() * f64::from(self.gaps);
        u32::from(self.gaps) >= min_gaps && span_days * DAY as f64 >= min_history.as_secs_f64()
    }

    /// How far the latest orders fell below `max_ratio` of the usual
    /// value, once `min_orders` orders before them make it known.
    fn value_fall(&self, min_orders: u32, max_ratio: f64) -> Option<ValueFall> {
        let base = u32::from(self.valued).checked_sub(VALUE_JUDGED as u32)?;
        if base < min_orders.max(2) {
            return None;
        }
        let recent = self.recent_values.map(f64::from);
        value_fall::assess(
            &recent,
            f64::from(base).min(RHYTHM_MEMORY),
            f64::from(self.value_mean),
            f64::from(self.value_var),
            max_ratio,
        )
    }
}

/// Evidence notes: an activity logged since the account's last order ...
pub const NOTE_ACTIVITY_SINCE_ORDER: &str = "activity_since_last_order";
/// ... a contract that ended without renewal ...
pub const NOTE_NOT_RENEWED: &str = "contract_not_renewed";
/// ... and the latest order of an account whose orders fell far below their
/// usual value.
pub const NOTE_VALUE_FELL: &str = "order_value_fell";

/// The gamma shapes silences are judged by, of a `rhythm` whose latest
/// orders were `recent_orders`, and the gaps between those: an alert's
/// rhythm is no more regular than the latest orders were, long pauses the
/// rhythm did not learn included.
fn judged_shapes(
    rhythm: &Rhythm,
    recent_orders: &[u32; RECENT_ORDERS],
    max_shape: f64,
) -> (Shapes, RecentGaps) {
    let recent = RecentGaps::of(recent_orders);
    let mut shapes = rhythm.shapes(max_shape);
    if let Some(recent_shape) = recent.believed_shape(max_shape) {
        shapes.alerting = shapes.alerting.min(recent_shape);
    }
    (shapes, recent)
}

/// Key prefix of account records in a checkpoint.
pub const ACCOUNT_PREFIX: &str = "account/";

/// The account stage's state besides its accounts, as checkpointed.
#[derive(Debug, Serialize, Deserialize)]
pub struct AccountGlobals {
    expired: u64,
    evicted: u64,
    company_orders: DailyBuckets<u64>,
    /// Absent from checkpoints of before 2026-11-30: business time then
    /// runs on orders alone until the samples cover a baseline again.
    #[serde(default)]
    company_expected: DailyBuckets<StillOrdering>,
    /// Absent from checkpoints of before 2026-12-01: silences are then
    /// judged on the rhythms' own tails until gaps are counted again.
    #[serde(default)]
    company_tails: DailyBuckets<TailCounts>,
}

/// One manager's book as the account stage sees it at an evaluation.
/// Written with its counts' fields beside the others, as before the counts
/// were a type of their own (see [`BookWire`]).
#[derive(Debug, Default, Clone)]
pub struct Book {
    pub team: Id,
    /// Accounts with a learnt rhythm, not recently reassigned; churning;
    /// kept visited while they churn, or while their silence is past
    /// `churn.visited_alpha` (not churning yet), and past each tighter bar
    /// ([`Bars`]); churning with their latest orders far below their usual
    /// value, past `churn.book_alpha` and each tighter bar.
    pub counts: BookCounts,
    /// The churning and the visited accounts, for evidence.
    pub churning_accounts: Vec<ChurningAccount>,
    /// Orders placed by the judged accounts over the order windows
    /// (half, one and two `order_window`s back from the evaluation) ...
    pub orders: [u64; 3],
    /// ... and how many their rhythms would have placed.
    pub expected_orders: [ExpectedOrders; 3],
    /// The latest activity logged on the judged accounts since their last
    /// orders: whether the manager is at work (see `presence`).
    pub last_activity: Option<Timestamp>,
}

/// A book as written: the counts' fields inline. Spelt out rather than
/// `#[serde(flatten)]`, which makes serde buffer every field of every book
/// before reading it (scaled out, a shard reads every source's part of
/// every book at every evaluation).
#[derive(Serialize, Deserialize)]
struct BookWire<T, A> {
    team: T,
    judged: u64,
    churning: u64,
    #[serde(deserialize_with = "super::base_rates::count_or_by_bar")]
    visited: ByBar,
    #[serde(default, deserialize_with = "super::base_rates::count_or_by_bar")]
    shrinking: ByBar,
    churning_accounts: A,
    orders: [u64; 3],
    expected_orders: [ExpectedOrders; 3],
    /// Absent from books of before 2026-11-30.
    #[serde(default)]
    last_activity: Option<Timestamp>,
}

impl Serialize for Book {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        BookWire {
            team: &self.team,
            judged: self.counts.judged,
            churning: self.counts.churning,
            visited: self.counts.visited,
            shrinking: self.counts.shrinking,
            churning_accounts: &self.churning_accounts,
            orders: self.orders,
            expected_orders: self.expected_orders,
            last_activity: self.last_activity,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Book {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Book, D::Error> {
        let wire = BookWire::<Id, Vec<ChurningAccount>>::deserialize(deserializer)?;
        Ok(Book {
            team: wire.team,
            counts: BookCounts {
                judged: wire.judged,
                churning: wire.churning,
                visited: wire.visited,
                shrinking: wire.shrinking,
            },
            churning_accounts: wire.churning_accounts,
            orders: wire.orders,
            expected_orders: wire.expected_orders,
            last_activity: wire.last_activity,
        })
    }
}

impl Book {
    /// Adds the part of a book another account stage holds (scaled out, a
    /// manager's accounts are spread over the input partitions). Every sum
    /// is exact, so the parts give the book one stage would have given.
    pub fn merge(&mut self, part: Book) {
        self.counts.add(&part.counts);
        self.churning_accounts.extend(part.churning_accounts);
        for i in 0..3 {
            self.orders[i] += part.orders[i];
            self.expected_orders[i] += part.expected_orders[i];
        }
        self.last_activity = self.last_activity.max(part.last_activity);
    }
}

/// A number of orders expected, summed exactly: in units of 2⁻²⁴ order, so
/// that a sum over accounts is the same in whatever order they are added,
/// in one process or gathered from several (DESIGN §7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExpectedOrders(u64);

impl ExpectedOrders {
    const UNIT: f64 = (1u64 << 24) as f64;

    pub fn of(orders: f64) -> ExpectedOrders {
        // Rounded half up by truncation: `f64::round` is a call into libm
        // on baseline x86-64, made for every judged account at every
        // evaluation.
        ExpectedOrders((orders.max(0.0) * Self::UNIT + 0.5) as u64)
    }

    pub fn get(self) -> f64 {
        self.0 as f64 / Self::UNIT
    }

    /// What is left of `self` without `part` (never below zero).
    pub fn without(self, part: ExpectedOrders) -> ExpectedOrders {
        ExpectedOrders(self.0.saturating_sub(part.0))
    }
}

impl std::ops::AddAssign for ExpectedOrders {
    fn add_assign(&mut self, other: ExpectedOrders) {
        self.0 += other.0;
    }
}

fn churning_by_default() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChurningAccount {
    pub account_id: Id,
    /// The stronger of its silence and its fall in order value.
    pub p_value: f64,
    pub visited: bool,
    /// Whether it churns (else it is listed as quiet and visited). Books
    /// of older versions listed churning accounts only.
    #[serde(default = "churning_by_default")]
    pub churning: bool,
    /// The last order, the latest visits, a lapsed contract.
    pub evidence: Vec<EvidenceRef>,
}

/// The books gathered in one evaluation, keyed by the address of the
/// interned manager id: every account of a manager holds the same `Arc`
/// (see [`Names`]), so finding the book hashes a pointer, not the id.
#[derive(Default)]
struct BooksByManager(Map<usize, (Name, Book)>);

impl BooksByManager {
    fn of(&mut self, manager_id: &Name, team: &str) -> &mut Book {
        let (_, book) = self.0.entry(manager_id.address()).or_insert_with(|| {
            let book = Book {
                team: Id::from(team),
                ..Book::default()
            };
            (manager_id.clone(), book)
        });
        book
    }

    /// Adds the books another thread gathered.
    fn merge(&mut self, other: BooksByManager) {
        for (address, (manager_id, part)) in other.0 {
            match self.0.entry(address) {
                Entry::Occupied(mut held) => held.get_mut().1.merge(part),
                Entry::Vacant(free) => {
                    free.insert((manager_id, part));
                }
            }
        }
    }

    fn by_id(self) -> Map<Id, Book> {
        self.0
            .into_values()
            .map(|(manager_id, book)| (Id::from(&*manager_id), book))
            .collect()
    }
}

/// What one thread gathers while judging its share of the accounts: the
/// facts and books it found, and the accounts whose silence the lifecycle
/// must see (by index, with the finding).
#[derive(Default)]
struct JudgedPart {
    facts: Vec<Fact>,
    books: BooksByManager,
    observed: Vec<(usize, Finding)>,
    /// Orders per day the part's accounts still ordering expect.
    expected_orders: ExpectedOrders,
    /// Gaps its accounts' orders since the last evaluation ended.
    tails: TailCounts,
}

impl JudgedPart {
    /// Adds a later part: its facts, books and accounts to observe after
    /// this part's.
    fn absorb(&mut self, part: JudgedPart) {
        let mut expected_orders = self.expected_orders;
        expected_orders += part.expected_orders;
        let mut tails = self.tails;
        tails += part.tails;
        if self.books.0.is_empty() && self.facts.is_empty() && self.observed.is_empty() {
            *self = part;
        } else {
            self.facts.extend(part.facts);
            self.books.merge(part.books);
            self.observed.extend(part.observed);
        }
        self.expected_orders = expected_orders;
        self.tails = tails;
    }
}

/// Fewer accounts than this are judged on one thread: splitting would cost
/// more than it saves.
const PARALLEL_MIN_ACCOUNTS: usize = 1024;

/// What one evaluation of the account stage yields for the manager stage.
#[derive(Debug, Default)]
pub struct AccountReport {
    /// Deals that stalled as the watermark passed.
    pub facts: Vec<Fact>,
    pub books: Map<Id, Book>,
    /// Orders per day the stage's accounts still ordering expect (see
    /// `pace`): this evaluation's sample.
    pub expected_orders: ExpectedOrders,
    /// The gaps the orders since the last evaluation ended (see
    /// `calibration`): this evaluation's count.
    pub tails: TailCounts,
}

impl AccountStage {
    /// Applies one event to its account and appends the facts it yields.
    pub fn apply(&mut self, event: &Event, config: &Config, facts: &mut Vec<Fact>) {
        // Looked up once, without cloning the id: a new account is the rare case.
        let index = match self.accounts.get_index_of(event.account_id.as_str()) {
            Some(index) => index,
            None => {
                if self.accounts.len() >= config.engine.max_accounts {
                    self.evict_one();
                }
                let account = AccountState {
                    manager_id: self.names.intern(&event.manager_id),
                    team: self.names.intern(&event.team),
                    assigned_at: MaybeTime::NONE,
                    open: OpenDeals::default(),
                    rhythm: Rhythm::default(),
                    last_order: None,
                    visits_since: 0,
                    recent_visits: ThinVec::new(),
                    latest_visit: LatestVisit::NONE,
                    recent_orders: [0; RECENT_ORDERS],
                    lapsed: None,
                    watched: false,
                    churning_since: MaybeTime::NONE,
                    last_seen: event.occurred_at,
                    deals_due: u32::MAX,
                    changed: true,
                };
                self.accounts
                    .insert_full(event.account_id.as_str().into(), account)
                    .0
            }
        };
        let account = &mut self.accounts[index];
        account.changed = true;
        let at = event.occurred_at;
        account.last_seen = account.last_seen.max(at);
        match &event.body {
            EventBody::AccountAssigned { .. } => {
                account.manager_id = self.names.intern(&event.manager_id);
                account.team = self.names.intern(&event.team);
                account.assigned_at = MaybeTime::from(Some(at));
                // The new team's `stall_after` may be shorter.
                account.deals_due = 0;
            }
            EventBody::OrderPlaced { amount, .. } => {
                let previous = account.last_order.as_ref().map(|o| o.occurred_at);
                if previous.is_none_or(|p| at >= p) {
                    // Orders on the same day are one delivery, not a zero gap.
                    let gap = previous
                        .map(|p| (at.0 - p.0) as f64 / DAY as f64)
                        .filter(|gap| *gap >= 0.5);
                    if gap.is_some() || previous.is_none() {
                        // A gap improbable under the rhythm (a customer who
                        // paged as leaving, then came back) is not learnt as
                        // its rhythm, unless the gap before it is too: two in
                        // a row are the account's new pace.
                        let churn = &config.detect_for(&event.team).churn;
                        let improbable = |gap: f64| account.rhythm.is_improbable(gap, churn);
                        let learnt = gap.filter(|gap| {
                            !improbable(*gap)
                                || gap_before(&account.recent_orders).is_some_and(improbable)
                        });
                        account.rhythm.add_order(learnt, *amount);
                    }
                    account.last_order = Some(Kept::of(event, Some(*amount)));
                    account.recent_orders.rotate_right(1);
                    account.recent_orders[0] = u32::try_from(at.0).unwrap_or(0);
                    account.visits_since = 0;
                    account.recent_visits.clear();
                    account.latest_visit = LatestVisit::NONE;
                }
                self.company_orders.add(at.day(), 1);
            }
            EventBody::ActivityLogged { .. } => {
                if account
                    .last_order
                    .as_ref()
                    .is_none_or(|o| at >= o.occurred_at)
                {
                    account.visits_since = account.visits_since.saturating_add(1);
                    // The oldest out first, so the vector never outgrows
                    // the four it keeps (a fifth would double it).
                    if account.recent_visits.len() >= VISITS_KEPT {
                        account.recent_visits.remove(0);
                    }
                    account.recent_visits.push(Kept::of(event, None));
                    account.latest_visit = LatestVisit::of(&account.recent_visits);
                }
            }
            EventBody::ContractEnded {
                renewed, amount, ..
            } => {
                account.lapsed = (!renewed).then(|| Box::new(Kept::of(event, Some(*amount))));
            }
            EventBody::OpportunityCreated {
                opportunity_id,
                amount,
            } => {
                // Its exact due time is worked out at the next evaluation.
                account.deals_due = account.deals_due.min(due_at(at.0));
                account
                    .open
                    .insert(OpenDeal::new(opportunity_id, &event.event_id, at, *amount));
            }
            EventBody::OpportunityUpdated {
                opportunity_id,
                amount,
                ..
            } => {
                if let Some(open) = account.open.get_mut(opportunity_id) {
                    if at >= open.last_update {
                        open.updated_by(&event.event_id, at);
                    }
                    if let Some(amount) = amount {
                        open.amount = *amount;
                        // A quote cut by more than `cut_ratio` leaks now,
                        // not when the deal finally closes.
                        let cut_ratio = config.detect_for(&event.team).leakage.cut_ratio;
                        if !open.left && is_cut(open.initial_amount, *amount, cut_ratio) {
                            open.left = true;
                            facts.push(deal_exited(event, Some(LeakRoute::Cut)));
                        }
                    }
                }
            }
            EventBody::OpportunityWon {
                opportunity_id,
                amount,
            } => {
                close(
                    account,
                    event,
                    opportunity_id,
                    *amount,
                    DealOutcome::Won,
                    config,
                    facts,
                );
            }
            EventBody::OpportunityLost {
                opportunity_id,
                amount,
                reason,
                competitor,
            } => {
                let outcome = DealOutcome::Lost {
                    reason: *reason,
                    competitor: competitor.as_ref().map(|c| c.to_string()),
                };
                close(
                    account,
                    event,
                    opportunity_id,
                    *amount,
                    outcome,
                    config,
                    facts,
                );
            }
            EventBody::OpportunityWithdrawn {
                opportunity_id,
                amount,
            } => {
                close(
                    account,
                    event,
                    opportunity_id,
                    *amount,
                    DealOutcome::Withdrawn,
                    config,
                    facts,
                );
            }
            EventBody::CustomerFeedback { .. } => {}
        }
    }

    /// Fires the timers due at `at`, judges every account's rhythm, then
    /// drops open deals that have not moved since before `forget_before`
    /// and the company order buckets older than it (in the same pass).
    ///
    /// Business time runs at the pace of `company` when given (the whole
    /// company's orders, when this stage holds a share of the accounts),
    /// else at the pace of this stage's own accounts, whose expected orders
    /// it then samples itself.
    pub fn evaluate(
        &mut self,
        at: Timestamp,
        forget_before: Timestamp,
        company: Option<CompanyOrders<'_>>,
        config: &Config,
        lifecycle: &mut Lifecycle,
        out: &mut Vec<Alert>,
    ) -> AccountReport {
        let own = CompanyOrders {
            placed: &self.company_orders,
            expected: &self.company_expected,
            tails: &self.company_tails,
        };
        let company_given = company.is_some();
        let company = company.unwrap_or(own);
        // The gaps counted by the evaluations before this one.
        let calibration = Calibration::from_days(company.tails, at.day());
        self.calibration = Some(calibration);
        let since = at.plus(-(config.alerts.evaluate_every.as_secs() as i64));
        let pace = CompanyPace::new(
            company,
            at,
            config.detect.churn.business_baseline.as_secs() as i64 / DAY,
        );
        // Each account is judged on its own state and the company's pace
        // alone, so the judging runs in parallel, in one part per thread
        // (each part's books are merged after), each gathering its books and
        // facts; the lifecycle then sees the accounts it must, in the
        // accounts' order, as if one by one.
        let share = part_size(self.accounts.len(), 1, PARALLEL_MIN_ACCOUNTS);
        // Each part is boxed: the fold hands it on from account to account,
        // and a pointer moves where the whole part was copied each time.
        let parts: Vec<Box<JudgedPart>> = self
            .accounts
            .par_iter_mut()
            .enumerate()
            .with_min_len(share)
            .fold(
                Box::<JudgedPart>::default,
                |mut part, (index, (account_id, account))| {
                    let detect = config.detect_for(&account.team);
                    let churning_before = account.churning_since;
                    if i64::from(account.deals_due) <= at.0 {
                        account.changed = true;
                        account.deals_due = due_at(sweep_deals(
                            account_id,
                            account,
                            at,
                            forget_before,
                            detect,
                            &mut part.facts,
                        ));
                    }
                    part.tails += completed_gaps(account, since..at, &detect.churn, &pace);
                    let silence = judge_rhythm(
                        account_id,
                        account,
                        at,
                        detect,
                        &pace,
                        &calibration,
                        &mut part.books,
                    );
                    if let Some(finding) = silence {
                        part.observed.push((index, finding));
                    }
                    account.changed |= account.churning_since != churning_before;
                    if account.churning_since.get().is_none()
                        && account
                            .rhythm
                            .learnt(detect.churn.min_gaps, detect.churn.min_history)
                    {
                        part.expected_orders +=
                            ExpectedOrders::of(1.0 / account.rhythm.gap_mean().max(1.0));
                    }
                    part
                },
            )
            .collect();
        let mut judged = JudgedPart::default();
        for part in parts {
            judged.absorb(*part);
        }
        for (index, finding) in judged.observed {
            let (account_id, account) = self
                .accounts
                .get_index_mut(index)
                .expect("an account judged in this evaluation");
            observe_silence(
                account_id,
                account,
                at,
                finding,
                &config.detect_for(&account.team).churn,
                lifecycle,
                out,
            );
        }
        if !company_given {
            self.company_expected
                .add(at.day(), StillOrdering::sample(judged.expected_orders));
            self.company_tails.add(at.day(), judged.tails);
        }
        self.company_orders.prune_before(forget_before.day());
        self.company_expected.prune_before(forget_before.day());
        self.company_tails.prune_before(forget_before.day());
        AccountReport {
            facts: judged.facts,
            books: judged.books.by_id(),
            expected_orders: judged.expected_orders,
            tails: judged.tails,
        }
    }

    pub fn accounts(&self) -> usize {
        self.accounts.len()
    }

    /// The tail calibration of the last evaluation (see `calibration`).
    pub fn calibration(&self) -> Option<Calibration> {
        self.calibration
    }

    pub fn open_opportunities(&self) -> usize {
        self.accounts.values().map(|a| a.open.len()).sum()
    }

    /// The manager who owns `account_id` now, if the account is known.
    pub fn owner(&self, account_id: &str) -> Option<&str> {
        self.accounts.get(account_id).map(|a| &*a.manager_id)
    }

    /// Forgets accounts with no event since before `cutoff`, unless an
    /// account-churn alert about them is pending or firing.
    pub fn expire_idle(&mut self, cutoff: Timestamp) {
        let before = self.accounts.len();
        self.accounts
            .retain(|_, a| a.last_seen >= cutoff || a.watched);
        self.expired += (before - self.accounts.len()) as u64;
        if self.accounts.len() < before {
            self.names.prune();
        }
    }

    /// Makes room for a new account at the cap: forgets the longest idle of
    /// a small sample (approximately the least recently seen), preferring
    /// accounts no alert is about.
    fn evict_one(&mut self) {
        let accounts = &self.accounts;
        let victim = self.eviction.pick(accounts.len(), |i| {
            let account = &accounts[i];
            (account.watched, account.last_seen)
        });
        if let Some((_, account)) = victim.and_then(|i| self.accounts.swap_remove_index(i)) {
            self.names.release(account.manager_id);
            self.names.release(account.team);
            self.evicted += 1;
        }
    }

    /// Appends one checkpoint record per account: `account/<id>`.
    pub fn checkpoint(&self, out: &mut Vec<(String, Vec<u8>)>) {
        for (id, account) in &self.accounts {
            out.push(account_record(id, account));
        }
    }

    /// Appends the records of the accounts changed since the last call (all
    /// of them at the first), and counts them as saved.
    pub fn checkpoint_changes(&mut self, out: &mut Vec<(String, Vec<u8>)>) {
        for (id, account) in &mut self.accounts {
            if std::mem::take(&mut account.changed) {
                out.push(account_record(id, account));
            }
        }
    }

    /// Whether the stage holds account `id`.
    pub fn holds(&self, id: &str) -> bool {
        self.accounts.contains_key(id)
    }

    /// What the stage keeps besides its accounts.
    pub fn globals(&self) -> AccountGlobals {
        AccountGlobals {
            expired: self.expired,
            evicted: self.evicted,
            company_orders: self.company_orders.clone(),
            company_expected: self.company_expected.clone(),
            company_tails: self.company_tails.clone(),
        }
    }

    pub fn restore_globals(&mut self, globals: AccountGlobals) {
        self.expired = globals.expired;
        self.evicted = globals.evicted;
        self.company_orders = globals.company_orders;
        self.company_expected = globals.company_expected;
        self.company_tails = globals.company_tails;
    }

    /// Restores one account from its checkpoint record.
    pub fn restore_account(&mut self, id: &str, payload: &[u8]) -> Result<(), RestoreError> {
        let mut account: AccountState =
            checkpoint::decode_payload(&format!("{ACCOUNT_PREFIX}{id}"), payload)?;
        account.manager_id = self.names.intern(&account.manager_id);
        account.team = self.names.intern(&account.team);
        self.accounts.insert(id.into(), account);
        Ok(())
    }
}

fn account_record(id: &str, account: &AccountState) -> (String, Vec<u8>) {
    (format!("{ACCOUNT_PREFIX}{id}"), checkpoint::encode(account))
}

/// Whether a quote of `amount` cuts a deal of `initial_amount` by more than
/// `cut_ratio`.
fn is_cut(initial_amount: f64, amount: f64, cut_ratio: f64) -> bool {
    initial_amount > 0.0 && amount < (1.0 - cut_ratio) * initial_amount
}

/// Closes a deal: a `DealClosed` fact, and a `DealExited` one unless the deal
/// already left the pipeline, stalled or cut.
fn close(
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
fn deal_exited(event: &Event, leak: Option<LeakRoute>) -> Fact {
    let kind = FactKind::DealExited { leak };
    fact_of(event, kind, leak.map(LeakRoute::as_str))
}

/// A fact about `event`'s manager at its time, citing it with `note`.
fn fact_of(event: &Event, kind: FactKind, note: Option<&'static str>) -> Fact {
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
fn sweep_deals(
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

/// The account's lapsed contract, if it lapsed within `churn.lapse_horizon`.
fn lapsed_contract<'a>(
    lapsed: Option<&'a Kept>,
    at: Timestamp,
    churn: &ChurnConfig,
) -> Option<&'a Kept> {
    lapsed.filter(|l| at.0 - l.occurred_at.0 <= churn.lapse_horizon.as_secs() as i64)
}

/// Shows the lifecycle an account's silence, judged at `at`, with the
/// evidence built only for a transition; the account is watched while an
/// alert about it is pending or firing.
fn observe_silence(
    account_id: &str,
    account: &mut AccountState,
    at: Timestamp,
    finding: Finding,
    churn: &ChurnConfig,
    lifecycle: &mut Lifecycle,
    out: &mut Vec<Alert>,
) {
    let lapsed = lapsed_contract(account.lapsed.as_deref(), at, churn);
    let draft = || {
        let last_order = account.last_order.as_ref()?;
        Some(AlertDraft {
            manager_id: account.manager_id.to_string(),
            team: account.team.to_string(),
            account_id: Some(account_id.to_owned()),
            window_start: last_order.occurred_at,
            window_end: at,
            finding: finding.clone(),
            evidence: cite_kept(
                account_id,
                Some(last_order),
                account.recent_visits.iter(),
                lapsed,
            )
            .iter()
            .map(EvidenceRef::to_json)
            .collect(),
        })
    };
    lifecycle.observe(
        AlertKind::AccountChurn,
        account_id,
        at,
        Some(&finding),
        draft,
        out,
    );
    let watched = lifecycle.contains(AlertKind::AccountChurn, account_id);
    account.changed |= watched != account.watched;
    account.watched = watched;
}

/// The gaps ended by the account's orders placed within `window` (the day
/// an evaluation closes), each with its survival, in business time, under
/// the rhythm an alert judges the account's silences by (see
/// `calibration`). Only an account with a learnt rhythm counts; a gap no
/// longer than the mean passes no tail level and costs no survival.
fn completed_gaps(
    account: &AccountState,
    window: std::ops::Range<Timestamp>,
    churn: &ChurnConfig,
    pace: &CompanyPace,
) -> TailCounts {
    let mut counts = TailCounts::default();
    let newest = i64::from(account.recent_orders[0]);
    if !(window.start.0..window.end.0).contains(&newest)
        || !account.rhythm.learnt(churn.min_gaps, churn.min_history)
    {
        return counts;
    }
    let mean = account.rhythm.gap_mean();
    // The shape as it was before these orders: the latest gaps' spread
    // without the gaps they ended (a long one would excuse itself).
    let mut shape = None;
    let judged_shape = || {
        let mut before = [0u32; RECENT_ORDERS];
        let in_window = account
            .recent_orders
            .iter()
            .take_while(|t| i64::from(**t) >= window.start.0)
            .count();
        before[..RECENT_ORDERS - in_window].copy_from_slice(&account.recent_orders[in_window..]);
        judged_shapes(&account.rhythm, &before, churn.max_shape)
            .0
            .alerting
    };
    let mut newer = newest;
    for older in account.recent_orders[1..].iter().map(|t| i64::from(*t)) {
        if older == 0 || newer < window.start.0 {
            break;
        }
        // Orders on the same day are one delivery (see `delivery_gaps`).
        if newer - older < DAY / 2 {
            continue;
        }
        let days = (newer - older) as f64 / DAY as f64;
        let business_days = days * pace.ratio(Timestamp(older).day(), Timestamp(newer).day());
        let survival = (business_days > mean).then(|| {
            let shape = *shape.get_or_insert_with(judged_shape);
            stats::gamma_survival(business_days, shape, mean / shape)
        });
        counts += TailCounts::of_gap(survival);
        newer = older;
    }
    counts
}

/// Judges one account's silence and value and adds the account to its
/// owner's book; returns the silence's finding when the account-churn
/// lifecycle must see it (it alerts, or the account is watched).
fn judge_rhythm(
    account_id: &str,
    account: &mut AccountState,
    at: Timestamp,
    detect: &DetectConfig,
    pace: &CompanyPace,
    calibration: &Calibration,
    books: &mut BooksByManager,
) -> Option<Finding> {
    let churn = &detect.churn;
    let lapsed = lapsed_contract(account.lapsed.as_deref(), at, churn);
    let judged = account.rhythm.learnt(churn.min_gaps, churn.min_history);
    // Looked up once: the kept visits are a pointer away.
    let last_visit_days = account.days_since_visit(at, churn);
    let recently_assigned = account
        .assigned_at
        .get()
        .is_some_and(|t| at.0 - t.0 < churn.reassign_grace.as_secs() as i64);

    let mut p_value = 1.0;
    let mut observed = None;
    if let (true, Some(last_order)) = (judged, &account.last_order) {
        let elapsed_days = (at.0 - last_order.occurred_at.0) as f64 / DAY as f64;
        // Cheap first: an account within its usual gap is not overdue.
        let min_silence = churn.min_silence.as_secs() as f64 / DAY as f64;
        if (elapsed_days > account.rhythm.gap_mean() && elapsed_days >= min_silence)
            || account.watched
        {
            let business_days = elapsed_days * pace.ratio(last_order.occurred_at.day(), at.day());
            let (shapes, recent) =
                judged_shapes(&account.rhythm, &account.recent_orders, churn.max_shape);
            let mut silence = OrderSilence {
                elapsed_days,
                business_days,
                mean_gap: account.rhythm.gap_mean(),
                shape: shapes.alerting,
                visits_since: u32::from(account.visits_since),
                last_visit_days,
                contract_lapsed: lapsed.is_some(),
                last_order: last_order.occurred_at,
                longest_recent_gap: recent.longest,
                tail_scale: 1.0,
            };
            let mut judgement = account_churn::judge(&silence, churn);
            p_value = if shapes.compared == shapes.alerting {
                judgement.p_value
            } else {
                let silence = OrderSilence {
                    shape: shapes.compared,
                    ..silence
                };
                account_churn::silence_test(&silence).p_value()
            };
            // An alert judges the silence at the company's calibrated tail,
            // as likely as returning customers' gaps say (`calibration`):
            // under a less regular shape that gives that, which its test
            // then publishes (sought only where the lifecycle must see the
            // silence). Book churn, which holds a book to the company's own
            // shares of churning accounts, keeps the rhythm's p-value.
            let calibrated = calibration.p_value(judgement.p_value);
            if calibrated > judgement.p_value {
                if calibrated < account_churn::alerting_bar(&silence, churn) || account.watched {
                    silence.shape = account_churn::shape_with_survival(
                        silence.business_days / silence.mean_gap,
                        calibrated,
                        silence.shape,
                        judgement.p_value,
                    );
                    silence.tail_scale = calibrated / judgement.p_value;
                    judgement = account_churn::judge(&silence, churn);
                } else {
                    judgement.alerting = false;
                }
            }
            // Worded only for the lifecycle: most overdue accounts are
            // neither past the bar nor watched.
            if judgement.alerting || account.watched {
                observed = Some(judgement.finding(&silence, churn));
            }
        }
    }

    if recently_assigned {
        return observed;
    }
    let value_p = account
        .rhythm
        .value_fall(churn.value_min_orders, churn.value_fall_ratio)
        .map_or(1.0, |fall| fall.p_value);
    let bars = Bars::of(churn);
    let shrinking_bars = Bars::passed(&bars.shrinking, value_p);
    let shrinking = shrinking_bars > 0;
    let churning = p_value < churn.book_alpha || shrinking || lapsed.is_some();
    account.churning_since =
        MaybeTime::from(churning.then(|| account.churning_since.get().unwrap_or(at)));
    if !judged && !churning {
        return observed;
    }
    let kept_visiting =
        account_churn::kept_visiting(u32::from(account.visits_since), last_visit_days, churn);
    // A customer lost for longer than the book window is no longer news,
    // unless the manager still calls on it.
    let gone = !kept_visiting
        && account
            .churning_since
            .get()
            .is_some_and(|since| at.0 - since.0 > churn.book_window.as_secs() as i64);
    if gone {
        return observed;
    }
    let book = books.of(&account.manager_id, &account.team);
    book.counts.judged += 1;
    book.last_activity = book
        .last_activity
        .max(account.latest_visit.get(&account.recent_visits));
    // Order volume judges the accounts still ordering: a churning account's
    // missing orders are counted by book churn, and a customer who leaves
    // takes all its orders with it at once, which volume's Poisson test
    // would weigh as many improbable absences (one cause counted twice).
    if judged && !churning {
        let window = churn.order_window.as_secs() as i64;
        let spans = [window / 2, window, 2 * window];
        // One pass over the kept orders for the three windows, newest
        // first: it ends at the first order before the longest window (a
        // 0 before it is an order 32 bits do not hold, after 2106).
        for t in account.recent_orders.map(i64::from) {
            if t == 0 || t >= at.0 {
                continue;
            }
            if t < at.0 - spans[2] {
                break;
            }
            for (orders, span) in book.orders.iter_mut().zip(spans) {
                *orders += u64::from(t >= at.0 - span);
            }
        }
        for (expected, span) in book.expected_orders.iter_mut().zip(spans) {
            *expected +=
                ExpectedOrders::of(span as f64 / DAY as f64 / account.rhythm.gap_mean().max(1.0));
        }
    }
    // A silence the manager keeps visiting through counts at a looser bar
    // than churn: several such accounts in one book tell weeks before each
    // is overdue alone (book churn weighs them against the company's share).
    // Its silence must be past the bar, or its fall in value (which counts
    // only once significant at `book_alpha`, tighter than the loosest
    // bar); a lapsed contract alone counts at the loosest.
    let visited_bars = match (kept_visiting, churning) {
        (false, _) => 0,
        (true, churning) => {
            let leaving_p = if shrinking {
                p_value.min(value_p)
            } else {
                p_value
            };
            Bars::passed(&bars.visited, leaving_p).max(usize::from(churning))
        }
    };
    let visited = visited_bars > 0;
    for count in &mut book.counts.visited[..visited_bars] {
        *count += 1;
    }
    if churning {
        book.counts.churning += 1;
        for count in &mut book.counts.shrinking[..shrinking_bars] {
            *count += 1;
        }
    }
    if churning || visited {
        book.churning_accounts.push(ChurningAccount {
            account_id: account_id.into(),
            p_value: p_value.min(value_p),
            visited,
            churning,
            evidence: cite_leaving(account_id, account, lapsed, shrinking),
        });
    }
    observed
}

/// A leaving account's evidence in its manager's book: its last order, its
/// two latest visits since, a lapsed contract; when its orders fell far
/// below their usual value, the last order says so, with the usual value.
fn cite_leaving(
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
fn cite_kept<'a>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ActivityKind;

    fn event(id: &str, account: &str, day: i64, body: EventBody) -> Event {
        Event {
            event_id: id.into(),
            occurred_at: Timestamp(day * DAY + 43_200),
            manager_id: "kam-1".into(),
            account_id: account.into(),
            team: "t".into(),
            body,
        }
    }

    /// Two opportunity ids whose tags are equal.
    fn ids_sharing_a_tag() -> (String, String) {
        let mut seen: std::collections::HashMap<u16, String> = Default::default();
        for n in 0.. {
            let id = format!("opp-{n}");
            if let Some(first) = seen.insert(tag(&id), id.clone()) {
                return (first, id);
            }
        }
        unreachable!("a 16-bit tag repeats within 65,537 ids")
    }

    #[test]
    fn open_deals_are_found_by_id_when_tags_collide_and_past_the_scan() {
        let (a, b) = ids_sharing_a_tag();
        assert_eq!(tag(&a), tag(&b));
        for others in [2, SCANNED_DEALS + 5] {
            let mut deals = OpenDeals::default();
            let mut ids = vec![a.clone(), b.clone()];
            ids.extend((0..others).map(|n| format!("other-{n}")));
            for (n, id) in ids.iter().enumerate() {
                deals.insert(OpenDeal::new(id, "ev-0", Timestamp(0), n as f64));
            }
            // Sorted by id: the order stalled deals are swept and checkpointed in.
            let held: Vec<&str> = deals.0.iter().map(OpenDeal::opportunity_id).collect();
            let mut sorted = held.clone();
            sorted.sort_unstable();
            assert_eq!(held, sorted);
            assert_eq!(deals.get_mut(&b).map(|d| d.amount), Some(1.0));
            assert_eq!(deals.get_mut(&a).map(|d| d.amount), Some(0.0));
            assert!(deals.get_mut("opp-none").is_none());
            assert_eq!(deals.remove(&a).map(|d| d.amount), Some(0.0));
            assert!(deals.get_mut(&a).is_none());
            assert_eq!(deals.remove(&b).map(|d| d.amount), Some(1.0));
            assert_eq!(deals.len(), others);
        }
        // The tag sits in what was padding: an open deal is no larger.
        assert_eq!(std::mem::size_of::<OpenDeal>(), 48);
    }

    /// An account's inline state with its id, hash and index slot is what
    /// issue 6's 256 bytes per account measure (`memory` bench: 254).
    #[test]
    fn an_account_is_no_larger_inline() {
        assert!(std::mem::size_of::<AccountState>() <= 192);
    }

    /// The latest visit held inline is the latest kept, however the kept
    /// visits came; one 32 bits do not hold, or unknown after a restore,
    /// is read from the kept visits.
    #[test]
    fn the_latest_visit_inline_is_the_latest_kept() {
        let visit = |secs: i64| Kept {
            event_id: format!("ev-{secs}").as_str().into(),
            occurred_at: Timestamp(secs),
            amount: f64::NAN,
        };
        assert_eq!(LatestVisit::of(&[]), LatestVisit::NONE);
        assert_eq!(LatestVisit::NONE.get(&[]), None);
        let kept = [
            visit(1_700_000_500),
            visit(1_700_000_900),
            visit(1_700_000_100),
        ];
        let latest = LatestVisit::of(&kept);
        assert_eq!(latest, LatestVisit(1_700_000_900));
        assert_eq!(latest.get(&kept), Some(Timestamp(1_700_000_900)));
        let far = [visit(5_000_000_000), visit(1_700_000_000)];
        assert_eq!(LatestVisit::of(&far), LatestVisit::UNKNOWN);
        assert_eq!(
            LatestVisit::of(&far).get(&far),
            Some(Timestamp(5_000_000_000))
        );
        assert_eq!(
            LatestVisit::default().get(&kept),
            Some(Timestamp(1_700_000_900))
        );
    }

    /// A visit by kam-1 to `account` on `day`.
    fn visit(id: &str, account: &str, day: i64) -> Event {
        let body = EventBody::ActivityLogged {
            activity: ActivityKind::Visit,
        };
        event(id, account, day, body)
    }

    /// Evaluates `stage` at the start of `day`, forgetting nothing; the
    /// alerts it emits are not looked at.
    fn evaluate_on(
        stage: &mut AccountStage,
        day: i64,
        config: &Config,
        life: &mut Lifecycle,
    ) -> AccountReport {
        let at = Timestamp::from_day(day);
        stage.evaluate(at, Timestamp(0), None, config, life, &mut Vec::new())
    }

    #[test]
    fn each_evaluation_counts_the_gaps_its_day_of_orders_ended() {
        let config = Config::defaults();
        let mut life = Lifecycle::new(1, 1);
        // Orders every ten days to day 90, then one on day 190.
        let mut stage = ordering_every_ten_days("a", &config);
        // The day of the order on day 90: a usual gap, past no level.
        let report = evaluate_on(&mut stage, 91, &config, &mut life);
        assert_eq!(report.tails, TailCounts::of_gap(None));
        // A day without orders counts nothing.
        let report = evaluate_on(&mut stage, 150, &config, &mut life);
        assert_eq!(report.tails, TailCounts::default());
        // A hundred days after a rhythm of ten: past every level.
        let order = EventBody::OrderPlaced {
            order_id: "late".into(),
            amount: 10.0,
        };
        stage.apply(&event("e-late", "a", 190, order), &config, &mut Vec::new());
        let report = evaluate_on(&mut stage, 191, &config, &mut life);
        assert_eq!(report.tails, TailCounts::of_gap(Some(0.0)));
        // A rhythm not yet learnt counts nothing.
        let mut young = ordering_on("b", &[0, 10], &config);
        let report = evaluate_on(&mut young, 11, &config, &mut life);
        assert_eq!(report.tails, TailCounts::default());
    }

    /// A stage holding one account of kam-1's that ordered on days 0, 10, … 90.
    fn ordering_every_ten_days(account: &str, config: &Config) -> AccountStage {
        let days: Vec<i64> = (0..10).map(|i| i * 10).collect();
        ordering_on(account, &days, config)
    }

    /// A stage holding one account of kam-1's that ordered on `days`.
    fn ordering_on(account: &str, days: &[i64], config: &Config) -> AccountStage {
        let orders: Vec<(i64, f64)> = days.iter().map(|day| (*day, 10.0)).collect();
        ordering(account, &orders, config)
    }

    /// A stage holding one account of kam-1's that placed `orders`: (day,
    /// amount).
    fn ordering(account: &str, orders: &[(i64, f64)], config: &Config) -> AccountStage {
        let mut stage = AccountStage::default();
        for (i, (day, amount)) in orders.iter().enumerate() {
            let order = EventBody::OrderPlaced {
                order_id: format!("o{i}").into(),
                amount: *amount,
            };
            let event = event(&format!("e{i}"), account, *day, order);
            stage.apply(&event, config, &mut Vec::new());
        }
        stage
    }

    #[test]
    fn a_book_is_written_with_its_counts_inline_and_reads_as_earlier_versions_wrote_it() {
        #[derive(Serialize)]
        struct Earlier {
            team: &'static str,
            judged: u64,
            churning: u64,
            visited: u64,
            churning_accounts: Vec<()>,
            orders: [u64; 3],
            expected_orders: [u64; 3],
        }
        let earlier = Earlier {
            team: "team-1",
            judged: 9,
            churning: 2,
            visited: 1,
            churning_accounts: Vec::new(),
            orders: [1, 2, 3],
            expected_orders: [0, 0, 0],
        };
        let book: Book =
            rmp_serde::from_slice(&rmp_serde::to_vec_named(&earlier).unwrap()).unwrap();
        assert_eq!(
            (book.team.as_str(), book.counts, book.orders),
            (
                "team-1",
                BookCounts {
                    judged: 9,
                    churning: 2,
                    visited: [1, 0, 0],
                    shrinking: [0, 0, 0],
                },
                [1, 2, 3]
            )
        );
        assert_eq!(book.last_activity, None, "earlier books carry no activity");
        let book = Book {
            last_activity: Some(Timestamp(1_700_000_000)),
            ..book
        };
        let written = rmp_serde::to_vec_named(&book).unwrap();
        let fields: serde_json::Map<String, serde_json::Value> =
            rmp_serde::from_slice(&written).unwrap();
        let keys: Vec<&str> = fields.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "churning",
                "churning_accounts",
                "expected_orders",
                "judged",
                "last_activity",
                "orders",
                "shrinking",
                "team",
                "visited"
            ]
        );
        let again: Book = rmp_serde::from_slice(&written).unwrap();
        assert_eq!(
            (again.counts, again.orders, again.last_activity),
            (book.counts, book.orders, book.last_activity)
        );
    }

    /// A book's orders over half, one and two order windows (15, 30 and 60
    /// days by default) count the account's kept orders in each; orders 32
    /// bits do not hold (after 2106) are not counted, and do not hide the
    /// earlier ones.
    #[test]
    fn a_book_counts_its_accounts_orders_over_the_three_windows() {
        let config = Config::defaults();
        assert_eq!(config.detect.churn.order_window.as_secs(), 30 * 86_400);
        let mut life = Lifecycle::new(3, 7);
        // Every ten days from day 0 to day 150: the twelve latest are kept.
        let days: Vec<i64> = (0..16).map(|i| i * 10).collect();
        let mut stage = ordering_on("acc-1", &days, &config);
        let report = evaluate_on(&mut stage, 155, &config, &mut life);
        assert_eq!(report.books["kam-1"].orders, [2, 3, 6]);
        // The same rhythm ending past 2106 (day 49,710): the last two orders
        // are not counted, the two before them are.
        let days: Vec<i64> = (0..8).map(|i| 49_645 + i * 10).collect();
        let mut stage = ordering_on("acc-2", &days, &config);
        let report = evaluate_on(&mut stage, 49_721, &config, &mut life);
        assert_eq!(report.books["kam-1"].orders, [0, 2, 5]);
    }

    /// A customer who went quiet long enough to page, then came back, has
    /// not changed pace: that absence is not learnt as its rhythm. A second
    /// such gap in a row is the account's new pace, and is.
    #[test]
    fn an_absence_that_paged_is_not_learnt_as_the_rhythm_unless_it_repeats() {
        let config = Config::defaults();
        let mut stage = ordering_every_ten_days("acc-1", &config);
        let learnt = |stage: &AccountStage| {
            let rhythm = &stage.accounts["acc-1"].rhythm;
            (rhythm.gaps, rhythm.gap_mean())
        };
        assert_eq!(learnt(&stage), (9, 10.0));
        let order = |day: i64| {
            let body = EventBody::OrderPlaced {
                order_id: format!("o{day}").into(),
                amount: 10.0,
            };
            event(&format!("e{day}"), "acc-1", day, body)
        };
        // A hundred days after the last order: far past any silence this
        // rhythm allows.
        stage.apply(&order(190), &config, &mut Vec::new());
        assert_eq!(learnt(&stage), (9, 10.0));
        // An ordinary gap after it is learnt as ever.
        stage.apply(&order(200), &config, &mut Vec::new());
        assert_eq!(learnt(&stage), (10, 10.0));
        // Two long gaps in a row: the second is learnt.
        stage.apply(&order(300), &config, &mut Vec::new());
        assert_eq!(learnt(&stage).0, 10);
        stage.apply(&order(400), &config, &mut Vec::new());
        let (gaps, mean) = learnt(&stage);
        assert_eq!(gaps, 11);
        assert!(mean > 10.0, "{mean}");
    }

    /// Order volume judges the accounts still ordering: a churning account's
    /// missing orders are book churn's to count, not volume's again (a
    /// customer who leaves takes all its orders with it, which the Poisson
    /// test of volume would weigh as many improbable absences).
    #[test]
    fn a_churning_account_is_not_counted_again_in_order_volume() {
        let config = Config::defaults();
        let mut life = Lifecycle::new(3, 7);
        let mut stage = ordering_every_ten_days("acc-1", &config);
        let report = evaluate_on(&mut stage, 95, &config, &mut life);
        let book = &report.books["kam-1"];
        assert_eq!(book.orders, [2, 3, 6]);
        assert!(book.expected_orders[1].get() > 0.0);
        // Silent for 110 days: churning.
        let report = evaluate_on(&mut stage, 200, &config, &mut life);
        let book = &report.books["kam-1"];
        assert_eq!(book.counts.churning, 1);
        assert_eq!(book.orders, [0, 0, 0]);
        assert!(book.expected_orders.iter().all(|e| e.get() == 0.0));
    }

    /// A customer who orders at random (exponential gaps of mean 10, drawn
    /// once): no gap in 24 was over 2.2 times the mean, so the moments see
    /// a regular rhythm (shape 2.3), and a 70-day silence (p = e^-7 ≈ 9e-4
    /// in truth) would page. The shortest gaps tell the logarithms
    /// otherwise (shape 1.1), and no alert names the account.
    #[test]
    fn a_customer_ordering_at_random_is_not_believed_regular() {
        let churn = &Config::defaults().detect.churn;
        let gaps = [
            13.3, 12.2, 15.1, 18.3, 0.6, 1.2, 4.8, 12.7, 4.4, 17.7, 0.6, 22.0, 6.8, 17.0, 0.5,
            13.2, 0.5, 13.8, 15.5, 9.7, 17.0, 23.8, 17.0, 2.8,
        ];
        let mut rhythm = Rhythm::default();
        rhythm.add_order(None, 10.0);
        for gap in gaps {
            rhythm.add_order(Some(gap), 10.0);
        }
        let mean = rhythm.gap_mean();
        let moments = account_churn::gamma_shape(mean, f64::from(rhythm.gap_var), 8.0);
        assert!((2.2..2.35).contains(&moments), "{moments}");
        let likeliest =
            account_churn::gamma_shape_from_logs(mean, f64::from(rhythm.gap_log_mean)).unwrap();
        assert!((1.0..1.2).contains(&likeliest), "{likeliest}");
        let survival = |shape: f64| stats::gamma_survival(70.0, shape, mean / shape);
        let shapes = rhythm.shapes(churn.max_shape);
        assert!(survival(shapes.alerting) > churn.alpha, "{shapes:?}");
        // The moments alone, taken toward irregular as the alert's shape
        // is, would have it page; book churn counts by them (see
        // `Shapes::compared`), far below its own bar.
        assert!(survival(shapes.compared) < churn.alpha, "{shapes:?}");
        assert!(rhythm.is_improbable(70.0, churn));
    }

    /// A rhythm checkpointed before its logarithms' mean was kept reads
    /// back with it unknown: judged by its moments alone, until gaps come.
    #[test]
    fn a_rhythm_without_its_logarithms_is_judged_by_its_moments() {
        #[derive(Serialize)]
        struct Before {
            gaps: u32,
            valued: u32,
            gap_mean: f32,
            gap_var: f32,
        }
        let before = Before {
            gaps: 70_000,
            valued: 12,
            gap_mean: 10.0,
            gap_var: 25.0,
        };
        let mut rhythm: Rhythm = rmp_serde::from_slice(&checkpoint::encode(&before)).unwrap();
        assert_eq!((rhythm.gaps, rhythm.valued), (u16::MAX, 12));
        assert!(rhythm.gap_log_mean.is_nan());
        let moments = 4.0 / (1.0 + (2.0 / 30.0f64).sqrt());
        assert_eq!(
            rhythm.shapes(8.0),
            Shapes {
                alerting: moments,
                compared: moments
            }
        );
        rhythm.add_order(Some(10.0), 10.0);
        assert!(rhythm.gap_log_mean.is_finite());
    }

    /// The first day, from `from` on, an account-churn alert about `acc-1`
    /// fires (the lifecycle firing at once), with the alert.
    fn first_churn_alert(stage: &mut AccountStage, from: i64, config: &Config) -> (i64, Alert) {
        let mut life = Lifecycle::new(1, 7);
        for day in from..from + 200 {
            let mut out = Vec::new();
            let at = Timestamp::from_day(day);
            stage.evaluate(at, Timestamp(0), None, config, &mut life, &mut out);
            if let Some(alert) = out.into_iter().find(|a| a.kind == AlertKind::AccountChurn) {
                return (day, alert);
            }
        }
        panic!("no account-churn alert within 200 days of day {from}");
    }

    #[test]
    fn a_silence_no_longer_than_a_recent_gap_does_not_page() {
        let config = Config::defaults();
        // Every ten days, but for one pause of forty days it came back from
        // (too improbable to be learnt as its pace), then every ten again.
        let days: Vec<i64> = (0..10)
            .map(|i| i * 10)
            .chain((13..18).map(|i| i * 10))
            .collect();
        let mut paused = ordering_on("acc-1", &days, &config);
        // The same customer without the pause pages well before it has been
        // quiet forty days ...
        let steady: Vec<i64> = (0..18).map(|i| i * 10).collect();
        let (day, _) = first_churn_alert(&mut ordering_on("acc-1", &steady, &config), 171, &config);
        assert!(day - 170 < 40, "day {day}");
        // ... while the one that paused does not, until it has been quiet
        // longer than that pause: 40.5 days at the start of day 211.
        let (day, alert) = first_churn_alert(&mut paused, 171, &config);
        assert_eq!(day, 211, "{}", alert.summary);
        assert!(
            alert
                .summary
                .contains("usual gap 10 days, longest recent gap 40 days"),
            "{}",
            alert.summary
        );
    }

    #[test]
    fn recent_gaps_are_between_deliveries_and_only_of_times_kept() {
        let mut orders = [0u32; RECENT_ORDERS];
        assert_eq!(RecentGaps::of(&orders), RecentGaps::default());
        let day = DAY as u32;
        orders[0] = 90 * day;
        assert_eq!(RecentGaps::of(&orders), RecentGaps::default());
        // The order an hour before 80 is the same delivery.
        orders[..5].copy_from_slice(&[90 * day, 80 * day, 80 * day - 3600, 50 * day, 40 * day]);
        let gaps = RecentGaps::of(&orders);
        assert_eq!((gaps.count, gaps.sum, gaps.longest), (3, 50.0, 30.0));
        assert!((gaps.log_sum - (10f64.ln() * 2.0 + 30f64.ln())).abs() < 1e-12);
        // Too few to judge a shape by.
        assert_eq!(gaps.believed_shape(8.0), None);
        // A time 32 bits do not hold ends what is known.
        orders[..4].copy_from_slice(&[90 * day, 80 * day, 0, 10 * day]);
        assert_eq!(RecentGaps::of(&orders).longest, 10.0);
    }

    #[test]
    fn recent_gaps_bound_the_shape_by_their_spread() {
        let day = DAY as u32;
        let even: [u32; RECENT_ORDERS] = std::array::from_fn(|i| (200 - 10 * i as u32) * day);
        // No spread bounds nothing (the rhythm's own estimate stands).
        assert_eq!(RecentGaps::of(&even).believed_shape(8.0), None);
        // Ten gaps of 10 days and one of 60, by Thom's approximation.
        let mut paused = even;
        for t in &mut paused[6..] {
            *t -= 50 * day;
        }
        let gaps = RecentGaps::of(&paused);
        assert_eq!((gaps.count, gaps.sum, gaps.longest), (11, 160.0, 60.0));
        let s = (160.0f64 / 11.0).ln() - (10.0 * 10f64.ln() + 60f64.ln()) / 11.0;
        let thom = (3.0 - s + ((s - 3.0) * (s - 3.0) + 24.0 * s).sqrt()) / (12.0 * s);
        let shape = gaps.believed_shape(8.0).unwrap();
        assert!((shape - believed(thom, 11.0, 8.0)).abs() < 1e-12, "{shape}");
        assert!(thom < 4.0, "{thom}");
    }

    #[test]
    fn the_gap_before_is_between_deliveries_and_only_of_times_kept() {
        let mut orders = [0u32; RECENT_ORDERS];
        assert_eq!(gap_before(&orders), None);
        let day = DAY as u32;
        orders[..3].copy_from_slice(&[40 * day, 40 * day - 3600, 30 * day]);
        // The order an hour before the latest is the same delivery.
        assert_eq!(gap_before(&orders), Some(10.0));
        orders[..3].copy_from_slice(&[40 * day, 0, 30 * day]);
        // A time 32 bits do not hold ends what is known.
        assert_eq!(gap_before(&orders), None);
    }

    #[test]
    fn an_account_expects_its_orders_in_the_company_pace_until_it_churns() {
        let config = Config::defaults();
        let mut stage = ordering_every_ten_days("acc-1", &config);
        let mut life = Lifecycle::new(3, 7);
        // One order in ten days, as the account's rhythm has it.
        let report = evaluate_on(&mut stage, 95, &config, &mut life);
        assert_eq!(report.expected_orders, ExpectedOrders::of(0.1));
        // Silent for 110 days: churning, so no longer expected to order, and
        // its silence no longer slows the company's clock.
        let report = evaluate_on(&mut stage, 200, &config, &mut life);
        assert_eq!(report.expected_orders, ExpectedOrders::default());
        let mut sampled = StillOrdering::default();
        for day in stage.company_expected.each_day(95..201) {
            sampled += day;
        }
        assert_eq!(
            (sampled.expected, sampled.samples),
            (ExpectedOrders::of(0.1), 2)
        );
    }

    #[test]
    fn an_account_keeps_its_four_latest_visits_in_room_for_four() {
        let config = Config::defaults();
        let mut stage = ordering_on("acc-1", &[0, 10], &config);
        for day in 11..20 {
            stage.apply(
                &visit(&format!("v{day}"), "acc-1", day),
                &config,
                &mut Vec::new(),
            );
        }
        let account = &stage.accounts["acc-1"];
        assert_eq!(account.visits_since, 9);
        let kept: Vec<&str> = account.recent_visits.iter().map(|v| &*v.event_id).collect();
        assert_eq!(kept, ["v16", "v17", "v18", "v19"]);
        // A fifth pushed before the oldest left would double the vector.
        assert_eq!(account.recent_visits.capacity(), VISITS_KEPT);
    }

    #[test]
    fn an_account_whose_orders_shrink_far_below_its_usual_value_is_churning() {
        let config = Config::defaults();
        assert_eq!(config.detect.churn.value_min_orders, 8);
        // Twelve orders every ten days of 90 to 110, then `tail`.
        let book_after = |tail: &[f64]| {
            let usual = [100.0, 90.0, 110.0, 95.0, 105.0, 100.0];
            let amounts = usual.iter().cycle().take(12).chain(tail);
            let orders: Vec<(i64, f64)> = amounts
                .enumerate()
                .map(|(i, amount)| (10 * i as i64, *amount))
                .collect();
            let mut stage = ordering("a", &orders, &config);
            let mut life = Lifecycle::new(3, 7);
            let day = 10 * orders.len() as i64 - 5;
            let report = evaluate_on(&mut stage, day, &config, &mut life);
            let book = &report.books["kam-1"];
            (book.counts.churning, book.counts.shrinking)
        };
        assert_eq!(book_after(&[]), (0, [0, 0, 0]));
        assert_eq!(
            book_after(&[85.0, 92.0, 88.0]),
            (0, [0, 0, 0]),
            "a dip, not a fall"
        );
        // Orders at a third of the usual value, on time: not overdue, but
        // leaving all the same, and far past every bar (orders of 90 to 110
        // do not fall to 30 by chance).
        assert_eq!(book_after(&[35.0, 30.0]), (1, [1, 1, 1]));
        // Back to the usual value: the fall is over once it is the older
        // orders that were small.
        assert_eq!(
            book_after(&[35.0, 30.0, 100.0, 105.0, 95.0]),
            (0, [0, 0, 0])
        );

        // The evidence: the last order, noted, with the usual value beside it
        // (the geometric mean of the orders before the latest three).
        let usual = [100.0, 90.0, 110.0, 95.0, 105.0, 100.0];
        let amounts: Vec<f64> = usual.iter().cycle().take(12).copied().collect();
        let mut orders: Vec<(i64, f64)> = (0..12).map(|i| (10 * i, amounts[i as usize])).collect();
        orders.extend([(120, 35.0), (130, 30.0)]);
        let mut stage = ordering("a", &orders, &config);
        let report = evaluate_on(&mut stage, 135, &config, &mut Lifecycle::new(3, 7));
        let cited = &report.books["kam-1"].churning_accounts[0].evidence[0];
        assert_eq!((cited.event_type, cited.amount), (ORDER, Some(30.0)));
        assert_eq!(cited.note, Some(NOTE_VALUE_FELL));
        // Moments weighted 1/n: the plain geometric mean of the first 11.
        let geometric = (amounts[..11].iter().map(|a| a.ln()).sum::<f64>() / 11.0).exp();
        let usual_amount = cited.usual_amount.unwrap();
        assert!(
            (usual_amount - geometric).abs() < 0.01,
            "{usual_amount} {geometric}"
        );
    }

    #[test]
    fn a_rhythm_is_judged_once_it_has_two_gaps_spanning_a_month_and_not_on_a_burst() {
        let config = Config::defaults();
        assert_eq!(config.detect.churn.min_gaps, 2);
        assert_eq!(config.detect.churn.min_history.as_secs() / DAY as u64, 30);
        // Whether kam-1's book judges the account (an unjudged, not churning
        // account is not in it).
        let judged_on = |days: &[i64], on: i64| {
            let mut stage = ordering_on("a", days, &config);
            let mut life = Lifecycle::new(3, 7);
            let report = evaluate_on(&mut stage, on, &config, &mut life);
            report.books.get("kam-1").map(|b| b.counts.judged)
        };
        // Six orders in five days are a burst, not a rhythm: 40 days of
        // silence after them say nothing.
        assert_eq!(judged_on(&[0, 1, 2, 3, 4, 5], 45), None);
        // One gap is not enough, however long; two gaps of 14 days are 28.
        assert_eq!(judged_on(&[0, 40], 45), None);
        assert_eq!(judged_on(&[0, 14, 28], 35), None);
        assert_eq!(judged_on(&[0, 15, 30], 35), Some(1));
        assert_eq!(judged_on(&[0, 1, 2, 3, 4, 5, 40], 45), Some(1));
    }

    #[test]
    fn accounts_judged_in_parallel_parts_give_the_books_of_one_pass() {
        // 3000 accounts of 7 managers, interleaved so that every book is
        // split between the parts; a third fall silent after day 60, and
        // every fifth orders a third of its usual amount from day 100.
        let config = Config::defaults();
        let stage = || {
            let mut stage = AccountStage::default();
            for a in 0..3000 {
                let account = format!("a{a}");
                let last = if a % 3 == 0 { 60 } else { 120 };
                for (i, day) in (0..=last).step_by(10).enumerate() {
                    let amount = if a % 5 == 0 && day >= 100 {
                        33.0
                    } else {
                        100.0
                    };
                    let order = EventBody::OrderPlaced {
                        order_id: format!("o{a}-{i}").into(),
                        amount,
                    };
                    let mut event = event(&format!("e{a}-{i}"), &account, day, order);
                    event.manager_id = format!("kam-{}", a % 7).into();
                    stage.apply(&event, &config, &mut Vec::new());
                }
            }
            stage
        };
        let judged_on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut stage = stage();
                let mut life = Lifecycle::new(1, 7);
                let mut alerts = Vec::new();
                let mut books = BTreeMap::new();
                for day in [125, 126] {
                    let at = Timestamp::from_day(day);
                    let report =
                        stage.evaluate(at, Timestamp(0), None, &config, &mut life, &mut alerts);
                    for (manager, book) in report.books {
                        books.insert(
                            (day, manager.to_string()),
                            serde_json::to_string(&book).unwrap(),
                        );
                    }
                }
                let alerts: Vec<String> = alerts.iter().map(|a| a.to_json().to_string()).collect();
                (books, alerts)
            })
        };
        let (books, alerts) = judged_on(1);
        assert_eq!(books.len(), 14, "seven books, judged twice");
        let book: Book = serde_json::from_str(&books[&(125, "kam-0".to_owned())]).unwrap();
        let counts = book.counts;
        assert!(
            counts.churning > 100 && counts.shrinking[0] > 10,
            "{book:?}"
        );
        assert!(!alerts.is_empty());
        assert_eq!(judged_on(4), (books, alerts));
    }

    /// A stage holding one account of kam-1's with one open deal, `o1`,
    /// created on day 0 at 100.
    fn with_a_deal_of_100(config: &Config) -> AccountStage {
        let mut stage = AccountStage::default();
        let created = EventBody::OpportunityCreated {
            opportunity_id: "o1".into(),
            amount: 100.0,
        };
        let mut facts = Vec::new();
        stage.apply(&event("e1", "a", 0, created), config, &mut facts);
        assert!(facts.is_empty(), "a new deal is no fact yet");
        stage
    }

    #[test]
    fn a_rhythm_checkpointed_before_value_moments_and_in_double_precision_restores() {
        // The rhythm as feidan wrote it before 2026-11-29's stop 15.
        #[derive(Serialize)]
        struct Before {
            gaps: u32,
            gap_mean: f64,
            gap_var: f64,
            orders: u32,
            amount_mean: f64,
            recent: [f64; 3],
        }
        let before = Before {
            gaps: 12,
            gap_mean: 10.25,
            gap_var: 4.5,
            orders: 13,
            amount_mean: 1000.0,
            recent: [900.0, 1100.0, 1000.0],
        };
        let rhythm: Rhythm = rmp_serde::from_slice(&checkpoint::encode(&before)).unwrap();
        assert_eq!(
            (rhythm.gaps, rhythm.gap_mean(), rhythm.gap_var),
            (12, 10.25, 4.5)
        );
        // The usual value is learnt again from the orders to come.
        assert_eq!(rhythm.valued, 0);
        assert!(rhythm.value_fall(2, 1.0).is_none());
    }

    #[test]
    fn a_deal_stalls_as_the_watermark_passes_with_no_further_event() {
        let config = Config::defaults();
        let mut stage = with_a_deal_of_100(&config);
        let mut facts = Vec::new();
        let mut life = Lifecycle::new(3, 7);
        let report = evaluate_on(&mut stage, 40, &config, &mut life);
        assert!(report.facts.is_empty(), "not stalled after 40 days");
        let report = evaluate_on(&mut stage, 46, &config, &mut life);
        assert_eq!(report.facts.len(), 1);
        assert_eq!(
            report.facts[0].kind,
            FactKind::DealExited {
                leak: Some(LeakRoute::Stalled)
            }
        );
        assert_eq!(
            report.facts[0].at,
            Timestamp(45 * DAY + 43_200),
            "stalls at its due time"
        );
        // Closing a stalled deal later does not make it leave the pipeline twice.
        let lost = EventBody::OpportunityLost {
            opportunity_id: "o1".into(),
            amount: 100.0,
            reason: LossReason::Price,
            competitor: None,
        };
        stage.apply(&event("e2", "a", 50, lost), &config, &mut facts);
        assert!(facts
            .iter()
            .all(|f| !matches!(f.kind, FactKind::DealExited { .. })));
        assert!(evaluate_on(&mut stage, 60, &config, &mut life)
            .facts
            .is_empty());
    }

    #[test]
    fn an_account_checkpointed_with_full_evidence_and_a_deal_map_restores_the_same() {
        // The account record as feidan wrote it before kept events were
        // compacted: every cited event in full, open deals in a hash map.
        #[derive(Serialize)]
        struct Before<'a> {
            manager_id: &'a str,
            team: &'a str,
            assigned_at: Option<Timestamp>,
            open: Map<String, OpenDealRecord>,
            rhythm: Rhythm,
            last_order: Option<EvidenceRef>,
            visits_since: u32,
            recent_visits: Vec<EvidenceRef>,
            recent_orders: [i64; RECENT_ORDERS],
            lapsed: Option<EvidenceRef>,
            watched: bool,
            churning_since: Option<Timestamp>,
            last_seen: Timestamp,
        }
        let config = Config::defaults();
        let mut stage = ordering_every_ten_days("a", &config);
        let mut facts = Vec::new();
        for body in [
            EventBody::ActivityLogged {
                activity: ActivityKind::Visit,
            },
            EventBody::OpportunityCreated {
                opportunity_id: "o1".into(),
                amount: 70.0,
            },
            EventBody::ContractEnded {
                contract_id: "c1".into(),
                renewed: false,
                amount: 500.0,
            },
        ] {
            let id = format!("x-{}", body.type_name());
            stage.apply(&event(&id, "a", 92, body), &config, &mut facts);
        }
        let now = &stage.accounts["a"];
        let before = Before {
            manager_id: &now.manager_id,
            team: &now.team,
            assigned_at: now.assigned_at.get(),
            open: now
                .open
                .0
                .iter()
                .map(|deal| {
                    let (id, record) = deal.record();
                    (id.to_owned(), record)
                })
                .collect(),
            rhythm: now.rhythm,
            last_order: now.last_order.as_ref().map(|o| o.cite("a", ORDER, None)),
            visits_since: u32::from(now.visits_since),
            recent_visits: cite_kept("a", None, now.recent_visits.iter(), None),
            recent_orders: now.recent_orders.map(i64::from),
            lapsed: now
                .lapsed
                .as_ref()
                .map(|l| l.cite("a", CONTRACT, Some(NOTE_NOT_RENEWED))),
            watched: now.watched,
            churning_since: now.churning_since.get(),
            last_seen: now.last_seen,
        };
        let mut restored = AccountStage::default();
        restored
            .restore_account("a", &checkpoint::encode(&before))
            .unwrap();
        let records = |stage: &AccountStage| {
            let mut out = Vec::new();
            stage.checkpoint(&mut out);
            out
        };
        assert_eq!(records(&restored), records(&stage));
        // And it goes on the same: the deal stalls, citing its event.
        let mut life = Lifecycle::new(3, 7);
        let stalled = |stage: &mut AccountStage, life: &mut Lifecycle| {
            evaluate_on(stage, 140, &config, life).facts
        };
        let facts = stalled(&mut restored, &mut life);
        assert_eq!(facts, stalled(&mut stage, &mut Lifecycle::new(3, 7)));
        assert_eq!(facts.len(), 1);
        assert_eq!(facts[0].evidence.event_id, "x-opportunity_created");
    }

    #[test]
    fn at_the_cap_new_accounts_push_out_idle_ones_not_busy_ones() {
        let mut config = Config::defaults();
        config.engine.max_accounts = 200;
        let mut stage = AccountStage::default();
        let mut facts = Vec::new();
        let mut visit_on = |account: String, day: i64| {
            stage.apply(&visit("v", &account, day), &config, &mut facts);
        };
        // 100 busy accounts first, then 100 that go idle on day 0.
        for i in 0..100 {
            visit_on(format!("busy-{i}"), 0);
        }
        for i in 0..100 {
            visit_on(format!("idle-{i}"), 0);
        }
        // Each day the busy accounts are active and five new ones arrive.
        for day in 1..=20 {
            for i in 0..100 {
                visit_on(format!("busy-{i}"), day);
            }
            for n in 0..5 {
                visit_on(format!("new-{day}-{n}"), day);
            }
        }
        assert_eq!(stage.accounts(), 200);
        let busy = (0..100)
            .filter(|i| stage.owner(&format!("busy-{i}")).is_some())
            .count();
        let idle = (0..100)
            .filter(|i| stage.owner(&format!("idle-{i}")).is_some())
            .count();
        // 100 evictions: sampling at random, nearly all fall on idle accounts.
        assert!(busy >= 95, "only {busy} of 100 busy accounts kept");
        assert!(idle <= 15, "{idle} of 100 idle accounts kept");
        // Every account here names manager kam-1 of team t: two names, held.
        assert_eq!(stage.names.0.len(), 2);
    }

    #[test]
    fn a_flood_of_new_managers_at_the_cap_does_not_grow_the_names_held() {
        let mut config = Config::defaults();
        config.engine.max_accounts = 50;
        let mut stage = AccountStage::default();
        let mut facts = Vec::new();
        for i in 0..1_000 {
            let mut visit = visit("v", &format!("acc-{i}"), 0);
            visit.manager_id = format!("kam-{i}").into();
            stage.apply(&visit, &config, &mut facts);
        }
        assert_eq!(stage.accounts(), 50);
        // 50 managers and the one team, not 1,000 managers.
        assert_eq!(stage.names.0.len(), 51);
    }

    #[test]
    fn a_cut_quote_leaks_even_when_won() {
        let config = Config::defaults();
        let mut stage = with_a_deal_of_100(&config);
        let mut facts = Vec::new();
        let won = EventBody::OpportunityWon {
            opportunity_id: "o1".into(),
            amount: 50.0,
        };
        stage.apply(&event("e2", "a", 10, won), &config, &mut facts);
        assert!(facts.contains(&Fact {
            manager_id: "kam-1".into(),
            team: "t".into(),
            at: Timestamp(10 * DAY + 43_200),
            kind: FactKind::DealExited {
                leak: Some(LeakRoute::Cut)
            },
            evidence: evidence_of(
                &event(
                    "e2",
                    "a",
                    10,
                    EventBody::OpportunityWon {
                        opportunity_id: "o1".into(),
                        amount: 50.0
                    }
                ),
                Some("cut")
            ),
        }));
    }

    #[test]
    fn a_quote_cut_at_an_update_leaks_then_once() {
        let config = Config::defaults();
        let mut stage = with_a_deal_of_100(&config);
        let mut facts = Vec::new();
        let update = |id: &str, day: i64, amount: f64| {
            let body = EventBody::OpportunityUpdated {
                opportunity_id: "o1".into(),
                amount: Some(amount),
                stage: None,
                expected_close: None,
            };
            event(id, "a", day, body)
        };
        // Trimmed by a fifth: not a cut (cut_ratio 0.3).
        stage.apply(&update("e2", 2, 80.0), &config, &mut facts);
        assert!(facts.is_empty());
        let cut = update("e3", 3, 45.0);
        stage.apply(&cut, &config, &mut facts);
        assert_eq!(
            facts,
            vec![Fact {
                manager_id: "kam-1".into(),
                team: "t".into(),
                at: cut.occurred_at,
                kind: FactKind::DealExited {
                    leak: Some(LeakRoute::Cut)
                },
                evidence: evidence_of(&cut, Some("cut")),
            }]
        );
        // Cut again, then won: it left the pipeline once, and closes.
        stage.apply(&update("e4", 5, 30.0), &config, &mut facts);
        let won = EventBody::OpportunityWon {
            opportunity_id: "o1".into(),
            amount: 30.0,
        };
        stage.apply(&event("e5", "a", 20, won), &config, &mut facts);
        let kinds: Vec<&FactKind> = facts.iter().map(|f| &f.kind).collect();
        assert_eq!(
            kinds,
            [
                &FactKind::DealExited {
                    leak: Some(LeakRoute::Cut)
                },
                &FactKind::DealClosed {
                    outcome: DealOutcome::Won
                }
            ]
        );
    }

    #[test]
    fn a_reassigned_account_leaves_its_old_owners_book_and_is_not_counted_in_the_new_one_at_first()
    {
        let config = Config::defaults();
        let mut stage = ordering_every_ten_days("a", &config);
        let mut facts = Vec::new();
        let mut moved = event(
            "m",
            "a",
            95,
            EventBody::AccountAssigned {
                previous_manager_id: Some("kam-1".into()),
            },
        );
        moved.manager_id = "kam-2".into();
        stage.apply(&moved, &config, &mut facts);
        stage.apply(&visit("v", "a", 96), &config, &mut facts);
        assert_eq!(stage.owner("a"), Some("kam-2"));
        let mut life = Lifecycle::new(3, 7);
        let report = evaluate_on(&mut stage, 100, &config, &mut life);
        assert!(
            !report.books.contains_key("kam-1"),
            "the old owner's book no longer has it"
        );
        assert!(
            !report.books.contains_key("kam-2"),
            "the new owner's book counts it only after the grace period"
        );
    }

    #[test]
    fn a_churned_account_counts_in_its_book_for_the_book_window_then_is_gone() {
        let config = Config::defaults();
        let mut stage = ordering_every_ten_days("a", &config);
        let mut facts = Vec::new();
        // Visits since the last order (day 90), the latest on day 100.
        for (i, day) in [95, 98, 100].into_iter().enumerate() {
            stage.apply(&visit(&format!("v{i}"), "a", day), &config, &mut facts);
        }
        let mut life = Lifecycle::new(3, 7);
        let mut book_on = |day: i64| {
            let report = evaluate_on(&mut stage, day, &config, &mut life);
            report
                .books
                .get("kam-1")
                .map(|b| (b.counts.judged, b.counts.churning, b.counts.visited[0]))
        };
        assert_eq!(book_on(95), Some((1, 0, 0)), "within its rhythm");
        // Quiet and visited counts before churning does (see the next test).
        let mut day = 96;
        while book_on(day).is_some_and(|(_, churning, _)| churning == 0) {
            day += 1;
        }
        let overdue = day;
        assert!(
            overdue < 125,
            "a 10-day rhythm silent for 35 days is churning"
        );
        assert_eq!(book_on(overdue), Some((1, 1, 1)), "still visited: day 100");
        let visits_within = config.detect.churn.visits_within.as_secs() as i64 / DAY;
        assert_eq!(
            book_on(101 + visits_within),
            Some((1, 1, 0)),
            "visits stopped {visits_within} days ago: the manager gave up"
        );
        let window = config.detect.churn.book_window.as_secs() as i64 / DAY;
        assert_eq!(book_on(overdue + window), Some((1, 1, 0)));
        assert_eq!(
            book_on(overdue + window + 1),
            None,
            "churning for longer than the book window: gone from the book"
        );

        // The same silence while the manager keeps calling on the account
        // every ten days: still theirs, still in the book, and visited.
        let mut stage = ordering_every_ten_days("a", &config);
        for (i, day) in (95..=overdue + window).step_by(10).enumerate() {
            stage.apply(&visit(&format!("v{i}"), "a", day), &config, &mut facts);
        }
        let report = evaluate_on(&mut stage, overdue + window + 1, &config, &mut life);
        let book = report.books.get("kam-1").map(|b| b.counts);
        assert!(
            book.is_some_and(|b| b.judged == 1 && b.churning == 1 && b.visited[0] == 1),
            "{book:?}"
        );
    }

    #[test]
    fn a_quiet_account_still_visited_counts_before_it_is_churning() {
        let config = Config::defaults();
        // (day, visited past each bar, churning, accounts cited and whether
        // visited).
        type Day = (
            i64,
            crate::detect::book_churn::ByBar,
            u64,
            Vec<(String, bool)>,
        );
        let books = |visits: &[i64]| -> Vec<Day> {
            let mut stage = ordering_every_ten_days("a", &config);
            for (i, day) in visits.iter().enumerate() {
                stage.apply(
                    &visit(&format!("v{i}"), "a", *day),
                    &config,
                    &mut Vec::new(),
                );
            }
            let mut life = Lifecycle::new(3, 7);
            (91..130)
                .map(|day| {
                    let report = evaluate_on(&mut stage, day, &config, &mut life);
                    let book = &report.books["kam-1"];
                    let cited: Vec<(String, bool)> = book
                        .churning_accounts
                        .iter()
                        .map(|a| (a.account_id.to_string(), a.visited))
                        .collect();
                    (day, book.counts.visited, book.counts.churning, cited)
                })
                .collect()
        };
        let visited = books(&[95, 98, 100]);
        let first = |rows: &[Day], churning: bool| {
            rows.iter()
                .find(|(_, quiet, churns, _)| if churning { *churns > 0 } else { quiet[0] > 0 })
                .map(|row| row.0)
        };
        let past =
            |rows: &[Day], bar: usize| rows.iter().find(|row| row.1[bar] > 0).map(|row| row.0);
        let (quiet, churning) = (
            first(&visited, false).unwrap(),
            first(&visited, true).unwrap(),
        );
        assert!(
            quiet < churning,
            "silent past the looser bar (day {quiet}) before churning (day {churning})"
        );
        let row = visited.iter().find(|row| row.0 == quiet).unwrap();
        assert_eq!(row.3, vec![("a".to_owned(), true)], "cited as visited");
        // Past the tighter bars later, each a tenth of the one before: the
        // second is churn's own bar (0.01), the third further still.
        let tighter = (past(&visited, 1).unwrap(), past(&visited, 2).unwrap());
        assert_eq!(tighter.0, churning);
        assert!(tighter.1 > tighter.0, "{tighter:?}");
        // The same silence with no visits since the last order: only churn
        // counts it, once it is overdue at the churn bar.
        let unvisited = books(&[]);
        assert!(unvisited.iter().all(|row| row.1 == [0, 0, 0]));
        assert_eq!(first(&unvisited, true), Some(churning));
        assert!(unvisited
            .iter()
            .find(|row| row.0 == quiet)
            .unwrap()
            .3
            .is_empty());
    }
}

//! The account stage (DESIGN §1): per-account state, keyed by `account_id`.
//!
//! It knows who owns each account now (`account_assigned` moves it, history
//! and all), which deals are open on it, the account's order rhythm, the
//! activities logged on it since its last order, and whether a contract
//! lapsed. From events it makes [`Fact`]s for the manager stage; at each
//! evaluation it fires the event-time timers (deals stalling, accounts going
//! overdue), runs the account-churn detector, and reports each manager's
//! book to the manager stage.
//!
//! Layout: this file holds the stage and an account's state, and applies
//! events; `judge` judges an account at an evaluation, against its
//! `rhythm`; `deals` holds its open deals; `kept` the events it cites
//! as evidence; `book` what it reports per manager; `names` the
//! interned manager and team names.

mod book;
mod deals;
mod judge;
mod kept;
mod names;
mod rhythm;
#[cfg(test)]
mod tests;
mod trace;

pub use book::{Book, ChurningAccount, ExpectedOrders};
pub use kept::{evidence_of, NOTE_ACTIVITY_SINCE_ORDER, NOTE_NOT_RENEWED, NOTE_VALUE_FELL};
pub use trace::{AccountTrace, TracedSilence};

use book::BooksByManager;
use deals::{close, deal_exited, is_cut, sweep_deals, OpenDeal, OpenDeals};
use judge::{completed_gaps, judge_rhythm, CompanyView};
use kept::{cite_kept, cite_leaving, Kept, LatestVisit};
use names::{Name, Names};
use rhythm::{gap_before, judged_shapes, Rhythm, RECENT_ORDERS};

use super::intake::Upcoming;
use super::prefetch::{prefetch, prefetch_line};
use super::{part_size, Map};
use rayon::prelude::*;

use serde::{Deserialize, Serialize};
use thin_vec::ThinVec;

use crate::alert::{Alert, AlertKind};
use crate::config::{ChurnConfig, Config};
use crate::detect::Finding;
use crate::event::{Event, EventBody, Id};
use crate::time::{Timestamp, DAY};

use super::calibration::{Calibration, TailCounts};
use super::checkpoint::{self, RestoreError};
use super::eviction::EvictionSampler;
use super::fact::{DealOutcome, EvidenceRef, Fact, LeakRoute};
use super::lifecycle::{AlertDraft, Lifecycle};
use super::pace::{CompanyOrders, CompanyPace, StillOrdering};
use super::tracer::Tracer;
use super::window::DailyBuckets;

/// Activities kept per account as evidence of visits without orders.
const VISITS_KEPT: usize = 4;

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
    /// Accounts whose judging is kept at every evaluation (`trace`), and
    /// what was kept since it was last taken.
    tracer: Tracer<AccountTrace>,
    /// Where each account was last seen in `accounts`, by a slot its id
    /// hashes to, one slot an account (a power of two): a guess, checked
    /// against the id before it is used, that costs one read where the
    /// index costs two or three, and that can be read ahead of time to
    /// prefetch an account (see `prefetch`). Stale for the accounts moved
    /// when others are forgotten, which the check catches.
    hints: Vec<u32>,
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

/// A time as [`AccountState::deals_due`] holds it: before 1970 is due at
/// once, after 2106 never.
fn due_at(at: i64) -> u32 {
    u32::try_from(at.max(0)).unwrap_or(u32::MAX)
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

/// An optional time in 4 bytes: Unix seconds, `u32::MAX` for none, so
/// 1970 to 2106 (a time outside is held as the nearest end of that range,
/// as an account's order times are). Checkpointed as an option: an account
/// holds two.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "Option<Timestamp>", into = "Option<Timestamp>")]
struct MaybeTime(u32);

impl MaybeTime {
    const NONE: MaybeTime = MaybeTime(u32::MAX);

    fn get(self) -> Option<Timestamp> {
        (self != MaybeTime::NONE).then_some(Timestamp(i64::from(self.0)))
    }
}

impl From<Option<Timestamp>> for MaybeTime {
    fn from(time: Option<Timestamp>) -> MaybeTime {
        time.map_or(MaybeTime::NONE, |t| {
            MaybeTime(t.0.clamp(0, i64::from(u32::MAX) - 1) as u32)
        })
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
    /// The traced accounts' judging.
    traces: Vec<AccountTrace>,
}

impl JudgedPart {
    /// Adds a later part: its facts, books and accounts to observe after
    /// this part's.
    fn absorb(&mut self, mut part: JudgedPart) {
        let mut expected_orders = self.expected_orders;
        expected_orders += part.expected_orders;
        let mut tails = self.tails;
        tails += part.tails;
        let mut traces = std::mem::take(&mut self.traces);
        traces.append(&mut part.traces);
        if self.books.is_empty() && self.facts.is_empty() && self.observed.is_empty() {
            *self = part;
        } else {
            self.facts.extend(part.facts);
            self.books.merge(part.books);
            self.observed.extend(part.observed);
        }
        self.expected_orders = expected_orders;
        self.tails = tails;
        self.traces = traces;
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
        let index = match self.index_of(&event.account_id) {
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
                let index = self
                    .accounts
                    .insert_full(event.account_id.as_str().into(), account)
                    .0;
                self.hint(&event.account_id, index);
                index
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
        let tracer = &self.tracer;
        let company_view = CompanyView {
            pace: &pace,
            calibration: &calibration,
        };
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
                    let mut trace = tracer.wants(account_id).then(|| {
                        AccountTrace::new(account_id, &account.manager_id, &account.team, at)
                    });
                    let silence = judge_rhythm(
                        account_id,
                        account,
                        at,
                        detect,
                        &company_view,
                        &mut part.books,
                        trace.as_mut(),
                    );
                    part.traces.extend(trace);
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
        self.tracer.keep(std::mem::take(&mut judged.traces));
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

    /// Where account `id` is in `accounts`: where its hint says, if the
    /// account there is `id`, else looked up (and the hint set).
    fn index_of(&mut self, id: &str) -> Option<usize> {
        let slot = self.hint_slot(id);
        if let Some(&guess) = slot.and_then(|slot| self.hints.get(slot)) {
            let guess = guess as usize;
            if self
                .accounts
                .get_index(guess)
                .is_some_and(|(key, _)| key == id)
            {
                return Some(guess);
            }
        }
        let index = self.accounts.get_index_of(id)?;
        if let Some(slot) = slot {
            self.hints[slot] = index as u32;
        }
        Some(index)
    }

    /// The hint slot of account `id` (none before the first account).
    fn hint_slot(&self, id: &str) -> Option<usize> {
        hint_slot(&self.accounts, self.hints.len(), id)
    }

    /// Notes that the account `id`, just added, is at `index`, growing the
    /// hints to a slot for every account (a power of two) when there are
    /// more accounts.
    fn hint(&mut self, id: &str, index: usize) {
        if self.accounts.len() > self.hints.len() {
            let slots = self.accounts.len().next_power_of_two().max(1024);
            self.hints = vec![u32::MAX; slots];
            for (index, (id, _)) in self.accounts.iter().enumerate() {
                if let Some(slot) = hint_slot(&self.accounts, slots, id) {
                    self.hints[slot] = index as u32;
                }
            }
        }
        if let Some(slot) = self.hint_slot(id) {
            self.hints[slot] = index as u32;
        }
    }

    /// Asks for the memory the next events will read, a few events ahead
    /// of applying them (see `prefetch`): the hint slot of the account of
    /// the event four ahead, the account of the event two ahead (through
    /// its hint), and the open deals or kept visits of the next one's.
    pub(crate) fn prefetch(&self, upcoming: Upcoming<'_>) {
        if let Some(slot) = upcoming.nth(4).and_then(|e| self.hint_slot(&e.account_id)) {
            prefetch_line(self.hints.as_ptr().wrapping_add(slot));
        }
        if let Some((key, account)) = upcoming.nth(2).and_then(|e| self.hinted(&e.account_id)) {
            prefetch_line(key);
            prefetch(account);
        }
        if let Some(next) = upcoming.nth(1) {
            if let Some((_, account)) = self.hinted(&next.account_id) {
                match next.body {
                    EventBody::ActivityLogged { .. } | EventBody::OrderPlaced { .. } => {
                        prefetch_line(account.recent_visits.as_ptr());
                    }
                    EventBody::OpportunityUpdated { .. }
                    | EventBody::OpportunityWon { .. }
                    | EventBody::OpportunityLost { .. }
                    | EventBody::OpportunityWithdrawn { .. } => {
                        prefetch_line(account.open.0.as_ptr());
                    }
                    _ => {}
                }
            }
        }
    }

    /// The account the hint of `id` names, which may not be `id` (its id is
    /// not compared, so that nothing waits for memory).
    fn hinted(&self, id: &str) -> Option<(&Id, &AccountState)> {
        let slot = self.hint_slot(id)?;
        self.accounts.get_index(self.hints[slot] as usize)
    }

    pub fn accounts(&self) -> usize {
        self.accounts.len()
    }

    /// Keeps the judging of these accounts at every evaluation from now on
    /// (see [`AccountTrace`]), to be taken with
    /// [`AccountStage::take_traces`].
    pub fn trace(&mut self, accounts: impl IntoIterator<Item = Id>) {
        self.tracer.add(accounts);
    }

    /// The traced accounts' judging since the last call, in evaluation order.
    pub fn take_traces(&mut self) -> Vec<AccountTrace> {
        self.tracer.take()
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
        let index = self.accounts.insert_full(id.into(), account).0;
        self.hint(id, index);
        Ok(())
    }
}

/// The slot among `slots` hints (a power of two; none when there are
/// none) that account `id` hashes to.
fn hint_slot(accounts: &Accounts, slots: usize, id: &str) -> Option<usize> {
    let mask = slots.checked_sub(1)?;
    Some(accounts.hasher().hash_one(id) as usize & mask)
}

fn account_record(id: &str, account: &AccountState) -> (String, Vec<u8>) {
    (format!("{ACCOUNT_PREFIX}{id}"), checkpoint::encode(account))
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

//! The manager stage (DESIGN §1): per-manager and per-team statistics, keyed
//! by team, fed by facts and by the account stage's book reports. At each
//! evaluation it runs the manager-level detectors — win rate, leakage, book
//! churn, competitor concentration, and their combination — and hands their
//! findings to the lifecycle.
//!
//! Layout: this file holds the stage and its state, applies facts and
//! books, and runs an evaluation; `judge` judges one manager; `rivals`
//! works out the competitors' usual shares.

mod judge;
mod rivals;
#[cfg(test)]
mod tests;
mod trace;

use judge::{judge, observe_verdict, Verdict, Yardsticks};
use rivals::{tally_rivals, RivalTally, UsualShares};
pub use trace::{ManagerTrace, TracedFinding};

use std::collections::VecDeque;

use super::{part_size, Map};
use rayon::prelude::*;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::alert::{Alert, AlertKind};
use crate::config::{Config, DetectConfig};
use crate::detect::rate::RateInputs;
use crate::event::Id;
use crate::time::{Timestamp, DAY};

use super::account::{Book, ExpectedOrders};
use super::base_rates::{standing_out_in_teams, BaseRates, BookCounts};
use super::checkpoint::{self, RestoreError};
use super::eviction::EvictionSampler;
use super::fact::{keep_largest, DealOutcome, EvidenceRef, Fact, FactKind, LeakRoute};
use super::lifecycle::Lifecycle;
use super::presence::Presence;
use super::tracer::Tracer;
use super::window::{DailyBuckets, Tally};

/// Losses and leaks kept per manager as candidate evidence; the largest are cited.
const EVIDENCE_KEPT: usize = 64;

/// Fewer managers than this are judged on one thread: splitting would cost
/// more than it saves.
const PARALLEL_MIN_MANAGERS: usize = 128;

/// Managers in insertion order, so that which one a cap forgets does not
/// depend on a hash seed.
type Managers = indexmap::IndexMap<Id, ManagerState, ahash::RandomState>;

#[derive(Debug, Default)]
pub struct ManagerStage {
    managers: Managers,
    teams: Map<Id, TeamState>,
    /// Competitor names, interned: losses store an index.
    competitors: Vec<String>,
    competitor_index: Map<String, u32>,
    max_managers: usize,
    /// Chooses what to forget at the cap.
    eviction: EvictionSampler,
    /// Managers forgotten because they were idle past `engine.entity_ttl` ...
    pub expired: u64,
    /// ... or because `engine.max_managers` was reached.
    pub evicted: u64,
    /// Managers whose every verdict is kept (`trace`), and the verdicts
    /// kept since they were last taken.
    tracer: Tracer<ManagerTrace>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ManagerState {
    team: Id,
    /// Won of closed (won + lost) deals, by day.
    closes: DailyBuckets<Tally>,
    /// Leaked of exited deals, by day.
    exits: DailyBuckets<Tally>,
    /// Deals that left by a cut quote (a leak route, among `exits`), by
    /// day. Absent from checkpoints of before 2026-11-30.
    #[serde(default)]
    cuts: DailyBuckets<u64>,
    /// Losses naming a competitor: (day, competitor index), oldest first.
    rivals: VecDeque<(i64, u32)>,
    /// The largest lost and leaked deals, kept as evidence. Deals older than
    /// `evidence_from` no window reaches any more: they are dropped when
    /// room is needed, not at every evaluation, and never cited.
    losses: Vec<EvidenceRef>,
    leaks: Vec<EvidenceRef>,
    /// Where the earliest recent window (win rate, leakage or competitor)
    /// started at the last evaluation: evidence before it is never cited.
    #[serde(default)]
    evidence_from: Timestamp,
    gauges: ManagerGauges,
    /// The days the manager was seen at work, from their books: a deal that
    /// stalls while they are away is not a leak.
    #[serde(default)]
    presence: Presence,
    /// The newest fact or book report about the manager, for expiry.
    last_seen: Timestamp,
    /// Whether the manager changed since the last checkpoint of changes
    /// (new managers have; restored ones have not).
    #[serde(skip)]
    changed: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TeamState {
    closes: DailyBuckets<Tally>,
    exits: DailyBuckets<Tally>,
    #[serde(default)]
    cuts: DailyBuckets<u64>,
    rivals: VecDeque<(i64, u32)>,
    last_win_rate: Option<f64>,
    /// Whether the team changed since the last checkpoint of changes.
    #[serde(skip)]
    changed: bool,
}

/// A manager's statistics at the last evaluation, for the metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ManagerGauges {
    pub win_rate: Option<f64>,
    pub leakage_ratio: Option<f64>,
    pub overdue_accounts: u64,
    /// The diversion-risk score (0–100) when it could be computed.
    pub risk_score: f64,
}

/// Windows of one detect configuration, as day ranges ending at an evaluation.
struct Windows {
    /// Recent windows of the win rate: a third, two thirds and all of `window`.
    win_recent: [Range<i64>; 3],
    /// Its history, before the longest recent window.
    win_history: Range<i64>,
    leak_recent: [Range<i64>; 3],
    leak_history: Range<i64>,
    rivals_from: i64,
}

impl Windows {
    fn new(end_day: i64, detect: &DetectConfig) -> Windows {
        let days = |d: std::time::Duration| (d.as_secs() as i64 + DAY - 1) / DAY;
        let recent = |window: i64| {
            std::array::from_fn(|i| end_day - (window * (i as i64 + 1) / 3).max(1)..end_day)
        };
        let win: [Range<i64>; 3] = recent(days(detect.win_rate.window));
        let leak: [Range<i64>; 3] = recent(days(detect.leakage.window));
        let win_start = win[2].start;
        let leak_start = leak[2].start;
        Windows {
            win_history: win_start - days(detect.win_rate.history)..win_start,
            leak_history: leak_start - days(detect.leakage.history)..leak_start,
            win_recent: win,
            leak_recent: leak,
            rivals_from: end_day - days(detect.competitor.window),
        }
    }

    /// The earliest day any window reaches.
    fn earliest(&self) -> i64 {
        self.win_history
            .start
            .min(self.leak_history.start)
            .min(self.rivals_from)
    }

    /// Drops the closes, exits (and cuts among them) and competitor-named
    /// losses (of a manager or a team) that no window reaches any more.
    fn forget_older(
        &self,
        [closes, exits]: [&mut DailyBuckets<Tally>; 2],
        cuts: &mut DailyBuckets<u64>,
        rivals: &mut VecDeque<(i64, u32)>,
    ) {
        closes.prune_before(self.earliest());
        exits.prune_before(self.earliest());
        cuts.prune_before(self.earliest());
        while rivals
            .front()
            .is_some_and(|(day, _)| *day < self.rivals_from)
        {
            rivals.pop_front();
        }
    }
}

/// Per-window rate inputs: the manager's counts against the rest of the team's.
fn rate_windows(
    own: &DailyBuckets<Tally>,
    team: &[Tally; 4],
    recent: &[Range<i64>; 3],
    history: &Range<i64>,
) -> [(RateInputs, i64); 3] {
    let (own_history, own_recent) = own.sums(history, recent);
    std::array::from_fn(|i| {
        let inputs = RateInputs {
            recent: own_recent[i],
            history: own_history,
            team_recent: team[i] - own_recent[i],
            team_history: team[3] - own_history,
        };
        (inputs, recent[i].end - recent[i].start)
    })
}

/// The leakage windows' inputs with cut quotes as the hits: the deals that
/// left the pipeline are the same (`exits`), and the cuts are among them.
fn cut_windows(
    exits: &[(RateInputs, i64); 3],
    own: &DailyBuckets<u64>,
    team: &[u64; 4],
    w: &Windows,
) -> [(RateInputs, i64); 3] {
    let (own_history, own_recent) = own.sums(&w.leak_history, &w.leak_recent);
    let cuts = |hits: u64, of: Tally| Tally {
        hits: hits.min(of.total),
        total: of.total,
    };
    std::array::from_fn(|i| {
        let (exits, days) = exits[i];
        let inputs = RateInputs {
            recent: cuts(own_recent[i], exits.recent),
            history: cuts(own_history, exits.history),
            team_recent: cuts(team[i].saturating_sub(own_recent[i]), exits.team_recent),
            team_history: cuts(team[3].saturating_sub(own_history), exits.team_history),
        };
        (inputs, days)
    })
}

/// A team's sums over the windows: the three recent ones, then the history.
#[derive(Default, Clone)]
struct TeamSums {
    closes: [Tally; 4],
    exits: [Tally; 4],
    /// Cut quotes among `exits`.
    cuts: [u64; 4],
    rivals: Map<u32, u64>,
    named: u64,
}

/// A series' sums over three recent windows and a history.
fn sums_over<T>(series: &DailyBuckets<T>, recent: &[Range<i64>; 3], history: &Range<i64>) -> [T; 4]
where
    T: Copy + Default + std::ops::AddAssign + std::ops::Sub<Output = T>,
{
    let (history, recent) = series.sums(history, recent);
    [recent[0], recent[1], recent[2], history]
}

/// One team's books summed at an evaluation.
#[derive(Clone, Copy, Debug, Default)]
struct TeamBooks {
    orders: [u64; 3],
    expected: [ExpectedOrders; 3],
    /// The counts of the team's books but those that stand out from the
    /// rest of the team (see `base_rates`).
    counts: BookCounts,
}

/// Key prefixes of manager and team records in a checkpoint.
pub const MANAGER_PREFIX: &str = "manager/";
pub const TEAM_PREFIX: &str = "team/";

/// The manager stage's state besides its managers and teams, as checkpointed.
#[derive(Debug, Serialize, Deserialize)]
pub struct ManagerGlobals {
    competitors: Vec<String>,
    expired: u64,
    evicted: u64,
}

fn manager_record(id: &str, manager: &ManagerState) -> (String, Vec<u8>) {
    (format!("{MANAGER_PREFIX}{id}"), checkpoint::encode(manager))
}

fn team_record(name: &str, team: &TeamState) -> (String, Vec<u8>) {
    (format!("{TEAM_PREFIX}{name}"), checkpoint::encode(team))
}

impl ManagerStage {
    /// Appends one checkpoint record per manager and per team.
    pub fn checkpoint(&self, out: &mut Vec<(String, Vec<u8>)>) {
        for (id, manager) in &self.managers {
            out.push(manager_record(id, manager));
        }
        for (name, team) in &self.teams {
            out.push(team_record(name, team));
        }
    }

    /// Appends the records of the managers and teams changed since the last
    /// call (all of them at the first; every one after an evaluation), and
    /// counts them as saved.
    pub fn checkpoint_changes(&mut self, out: &mut Vec<(String, Vec<u8>)>) {
        for (id, manager) in &mut self.managers {
            if std::mem::take(&mut manager.changed) {
                out.push(manager_record(id, manager));
            }
        }
        for (name, team) in &mut self.teams {
            if std::mem::take(&mut team.changed) {
                out.push(team_record(name, team));
            }
        }
    }

    /// Whether the stage holds the manager or team of checkpoint key `key`.
    pub fn holds(&self, key: &str) -> bool {
        if let Some(id) = key.strip_prefix(MANAGER_PREFIX) {
            self.managers.contains_key(id)
        } else if let Some(name) = key.strip_prefix(TEAM_PREFIX) {
            self.teams.contains_key(name)
        } else {
            false
        }
    }

    /// Takes in checkpoint record `key` if it is a manager's or a team's;
    /// whether it was.
    pub fn restore_record(&mut self, key: &str, payload: &[u8]) -> Result<bool, RestoreError> {
        if let Some(id) = key.strip_prefix(MANAGER_PREFIX) {
            self.restore_manager(id, payload)?;
        } else if let Some(name) = key.strip_prefix(TEAM_PREFIX) {
            self.restore_team(name, payload)?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    pub fn globals(&self) -> ManagerGlobals {
        ManagerGlobals {
            competitors: self.competitors.clone(),
            expired: self.expired,
            evicted: self.evicted,
        }
    }

    pub fn restore_globals(&mut self, globals: ManagerGlobals) {
        self.competitor_index = (0..)
            .zip(&globals.competitors)
            .map(|(i, name)| (name.clone(), i))
            .collect();
        self.competitors = globals.competitors;
        self.expired = globals.expired;
        self.evicted = globals.evicted;
    }

    /// Restores one manager from its checkpoint record.
    fn restore_manager(&mut self, id: &str, payload: &[u8]) -> Result<(), RestoreError> {
        let manager = checkpoint::decode_payload(&format!("{MANAGER_PREFIX}{id}"), payload)?;
        self.managers.insert(id.into(), manager);
        Ok(())
    }

    /// Restores one team from its checkpoint record.
    fn restore_team(&mut self, name: &str, payload: &[u8]) -> Result<(), RestoreError> {
        let team = checkpoint::decode_payload(&format!("{TEAM_PREFIX}{name}"), payload)?;
        self.teams.insert(name.into(), team);
        Ok(())
    }

    /// A stage holding at most `max_managers` managers.
    pub fn with_cap(max_managers: usize) -> ManagerStage {
        ManagerStage {
            max_managers,
            ..ManagerStage::default()
        }
    }

    /// Keeps every verdict about these managers from now on (see
    /// [`ManagerTrace`]), to be taken with [`ManagerStage::take_traces`].
    pub fn trace(&mut self, managers: impl IntoIterator<Item = Id>) {
        self.tracer.add(managers);
    }

    /// The traced managers' verdicts since the last call, in evaluation order.
    pub fn take_traces(&mut self) -> Vec<ManagerTrace> {
        self.tracer.take()
    }

    pub fn apply(&mut self, fact: Fact) {
        if !self.managers.contains_key(fact.manager_id.as_str())
            && self.managers.len() >= self.max_managers.max(1)
        {
            self.evict_one();
        }
        let manager = self.managers.entry(fact.manager_id.clone()).or_default();
        manager.changed = true;
        manager.team.clone_from(&fact.team);
        manager.last_seen = manager.last_seen.max(fact.at);
        let team = self.teams.entry(fact.team.clone()).or_default();
        team.changed = true;
        let day = fact.at.day();
        // Closing a deal is work: a stall is inactivity, and proves nothing.
        if !matches!(
            fact.kind,
            FactKind::DealExited {
                leak: Some(LeakRoute::Stalled)
            }
        ) {
            manager.presence.mark_at_work(day);
        }
        match fact.kind {
            FactKind::DealClosed { outcome } => {
                let counts = match &outcome {
                    DealOutcome::Won => Tally::hit(),
                    DealOutcome::Lost { .. } => Tally::miss(),
                    DealOutcome::Withdrawn => return,
                };
                manager.closes.add(day, counts);
                team.closes.add(day, counts);
                if let DealOutcome::Lost { competitor, .. } = outcome {
                    if let Some(name) = competitor {
                        let next = self.competitors.len() as u32;
                        let index = *self.competitor_index.entry(name.clone()).or_insert(next);
                        if index == next {
                            self.competitors.push(name);
                        }
                        manager.rivals.push_back((day, index));
                        team.rivals.push_back((day, index));
                    }
                    keep_largest(
                        &mut manager.losses,
                        fact.evidence,
                        EVIDENCE_KEPT,
                        manager.evidence_from,
                    );
                }
            }
            FactKind::DealExited { leak } => {
                // A deal that stalled while its manager was away (on leave:
                // no activity on any of their customers for longer than
                // they ever go without) did not leave by their doing: it
                // counts neither as leaked nor as having left.
                let idle = fact.evidence.occurred_at.day()..day + 1;
                if leak == Some(LeakRoute::Stalled) && manager.presence.away_during(idle) {
                    return;
                }
                let counts = if leak.is_some() {
                    Tally::hit()
                } else {
                    Tally::miss()
                };
                manager.exits.add(day, counts);
                team.exits.add(day, counts);
                if leak == Some(LeakRoute::Cut) {
                    manager.cuts.add(day, 1);
                    team.cuts.add(day, 1);
                }
                if leak.is_some() {
                    keep_largest(
                        &mut manager.leaks,
                        fact.evidence,
                        EVIDENCE_KEPT,
                        manager.evidence_from,
                    );
                }
            }
        }
    }

    /// Evaluates every manager at `at` (an evaluation boundary), with the
    /// books the account stage reported.
    /// `base` holds the company's counts over every book (`books`, the
    /// books of this stage's teams, among them) but the ones that stand out.
    #[allow(clippy::too_many_arguments)]
    pub fn evaluate(
        &mut self,
        at: Timestamp,
        books: &Map<Id, Book>,
        base: &BaseRates,
        config: &Config,
        max_evidence: usize,
        lifecycle: &mut Lifecycle,
        out: &mut Vec<Alert>,
    ) {
        let end_day = at.day() + i64::from(at.0 % DAY != 0);
        for (manager_id, book) in books {
            if !self.managers.contains_key(manager_id.as_str())
                && self.managers.len() >= self.max_managers.max(1)
            {
                self.evict_one();
            }
            let manager = self
                .managers
                .entry(manager_id.clone())
                .or_insert_with(|| ManagerState {
                    team: book.team.clone(),
                    ..ManagerState::default()
                });
            manager.last_seen = manager.last_seen.max(at);
            manager
                .presence
                .observe(end_day, book.last_activity.map(Timestamp::day));
        }

        let mut team_sums: Map<Id, TeamSums> = Map::default();
        for (name, team) in self.teams.iter_mut() {
            team.changed = true;
            let w = Windows::new(end_day, config.detect_for(name));
            w.forget_older(
                [&mut team.closes, &mut team.exits],
                &mut team.cuts,
                &mut team.rivals,
            );
            let mut sums = TeamSums {
                closes: sums_over(&team.closes, &w.win_recent, &w.win_history),
                exits: sums_over(&team.exits, &w.leak_recent, &w.leak_history),
                cuts: sums_over(&team.cuts, &w.leak_recent, &w.leak_history),
                ..TeamSums::default()
            };
            for (day, rival) in &team.rivals {
                if *day < end_day {
                    *sums.rivals.entry(*rival).or_default() += 1;
                    sums.named += 1;
                }
            }
            team.last_win_rate = sums.closes[2].rate();
            team_sums.insert(name.clone(), sums);
        }
        // Each team's books: orders and expected orders over the three order
        // windows, and the counts of its accounts.
        let mut team_books: Map<&str, TeamBooks> = Map::default();
        for book in books.values() {
            let entry = team_books.entry(book.team.as_str()).or_default();
            for i in 0..3 {
                entry.orders[i] += book.orders[i];
                entry.expected[i] += book.expected_orders[i];
            }
            entry.counts.add(&book.counts);
        }
        let standing_out = standing_out_in_teams(
            books,
            |team| {
                team_books
                    .get(team)
                    .map_or_else(BookCounts::default, |t| t.counts)
            },
            &config.detect.book_churn,
        );
        for id in &standing_out {
            let book = &books[*id];
            if let Some(team) = team_books.get_mut(book.team.as_str()) {
                team.counts = team.counts.without(&book.counts);
            }
        }

        // Each manager's competitor-named losses in their window (in
        // parallel), and who they are, by team.
        let share = part_size(self.managers.len(), 4, PARALLEL_MIN_MANAGERS);
        let rival_tallies: Vec<(RivalTally, u64)> = self
            .managers
            .par_iter()
            .with_min_len(share)
            .map(|(_, manager)| {
                let from = Windows::new(end_day, config.detect_for(&manager.team)).rivals_from;
                tally_rivals(&manager.rivals, from..end_day)
            })
            .collect();
        let mut members: Map<Id, Vec<usize>> = Map::default();
        for (index, manager) in self.managers.values().enumerate() {
            members.entry(manager.team.clone()).or_default().push(index);
        }
        let yardsticks = Yardsticks {
            at,
            end_day,
            config,
            books,
            base,
            team_sums: &team_sums,
            team_books: &team_books,
            standing_out_in_team: &standing_out,
            usual: UsualShares::new(&members, &rival_tallies, &team_sums),
            competitors: &self.competitors,
            no_team: TeamSums::default(),
        };
        // Every manager is judged on their own state and the shared
        // yardsticks alone, so the judging runs in parallel; the lifecycle
        // then sees the verdicts that can move it, in the managers' order, as
        // if one by one.
        let seen: &Lifecycle = lifecycle;
        let tracer = &self.tracer;
        let verdicts: Vec<(usize, Verdict, bool)> = self
            .managers
            .par_iter_mut()
            .enumerate()
            .with_min_len(share)
            .filter_map(|(index, (manager_id, manager))| {
                let verdict = judge(manager_id, manager, &rival_tallies[index], &yardsticks);
                let moves = verdict.moves(manager_id, seen);
                let kept = moves || tracer.wants(manager_id);
                kept.then_some((index, verdict, moves))
            })
            .collect();
        for (index, verdict, moves) in verdicts {
            let (manager_id, manager) = self
                .managers
                .get_index(index)
                .expect("a manager judged in this evaluation");
            if self.tracer.wants(manager_id) {
                let detect = config.detect_for(&manager.team);
                let trace = ManagerTrace::of(manager_id, &manager.team, at, &verdict, detect);
                self.tracer.keep([trace]);
            }
            if !moves {
                continue;
            }
            observe_verdict(
                manager_id,
                manager,
                &verdict,
                &yardsticks,
                max_evidence,
                lifecycle,
                out,
            );
        }
    }

    pub fn managers(&self) -> usize {
        self.managers.len()
    }

    /// Fills in the manager stage's part of `stats`.
    pub fn fill_stats(&self, stats: &mut super::EngineStats) {
        stats.managers = self.managers.len();
        stats.teams = self.teams.len();
        stats.team_win_rates = self
            .team_win_rates()
            .map(|(t, r)| (t.to_owned(), r))
            .collect();
        stats.managers_detail = self
            .manager_gauges()
            .map(|(m, t, g)| (m.to_owned(), t.to_owned(), g.clone()))
            .collect();
    }

    /// Forgets managers with no fact or book since before `cutoff`, unless
    /// an alert about them is pending or firing.
    pub fn expire_idle(&mut self, cutoff: Timestamp, lifecycle: &Lifecycle) {
        let before = self.managers.len();
        self.managers.retain(|id, m| {
            m.last_seen >= cutoff
                || AlertKind::ALL
                    .iter()
                    .any(|kind| lifecycle.contains(*kind, id))
        });
        self.expired += (before - self.managers.len()) as u64;
    }

    /// Makes room at the cap: forgets the longest idle of a small sample.
    fn evict_one(&mut self) {
        let managers = &self.managers;
        let victim = self
            .eviction
            .pick(managers.len(), |i| managers[i].last_seen);
        if victim
            .and_then(|i| self.managers.swap_remove_index(i))
            .is_some()
        {
            self.evicted += 1;
        }
    }

    pub fn teams(&self) -> usize {
        self.teams.len()
    }

    /// (team, win rate over the window) as of the last evaluation.
    pub fn team_win_rates(&self) -> impl Iterator<Item = (&str, f64)> {
        self.teams
            .iter()
            .filter_map(|(name, team)| team.last_win_rate.map(|rate| (name.as_str(), rate)))
    }

    /// (manager, team, statistics) as of the last evaluation.
    pub fn manager_gauges(&self) -> impl Iterator<Item = (&str, &str, &ManagerGauges)> {
        self.managers
            .iter()
            .map(|(id, manager)| (id.as_str(), manager.team.as_str(), &manager.gauges))
    }
}

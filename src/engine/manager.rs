//! The manager stage (DESIGN §1): per-manager and per-team statistics, keyed
//! by team, fed by facts and by the account stage's book reports. At each
//! evaluation it runs the manager-level detectors — win rate, leakage, book
//! churn, competitor concentration, and their combination — and hands their
//! findings to the lifecycle.

use std::collections::{BTreeSet, VecDeque};

use super::{part_size, Map};
use rayon::prelude::*;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::alert::{Alert, AlertKind};
use crate::config::{Config, DetectConfig};
use crate::detect::book_churn::{self, Bars, BookInputs, Cited};
use crate::detect::competitor::{self, CompetitorCounts};
use crate::detect::diversion_risk::{self, Component};
use crate::detect::rate::RateInputs;
use crate::detect::{leakage, win_rate, Finding};
use crate::event::Id;
use crate::stats;
use crate::time::{Timestamp, DAY};

use super::account::{Book, ExpectedOrders};
use super::base_rates::{standing_out_in_teams, BaseRates, BookCounts};
use super::checkpoint::{self, RestoreError};
use super::eviction::EvictionSampler;
use super::fact::{
    keep_largest, largest_between, DealOutcome, EvidenceRef, Fact, FactKind, LeakRoute,
};
use super::lifecycle::{AlertDraft, Lifecycle};
use super::presence::Presence;
use super::window::{DailyBuckets, Tally};

/// Losses and leaks kept per manager as candidate evidence; the largest are cited.
const EVIDENCE_KEPT: usize = 64;

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
        let verdicts: Vec<(usize, Verdict)> = self
            .managers
            .par_iter_mut()
            .enumerate()
            .with_min_len(share)
            .filter_map(|(index, (manager_id, manager))| {
                let verdict = judge(manager_id, manager, &rival_tallies[index], &yardsticks);
                verdict.moves(manager_id, seen).then_some((index, verdict))
            })
            .collect();
        for (index, verdict) in verdicts {
            let (manager_id, manager) = self
                .managers
                .get_index(index)
                .expect("a manager judged in this evaluation");
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

/// What every manager is judged against at one evaluation.
struct Yardsticks<'a> {
    at: Timestamp,
    /// The day after the last whole day judged.
    end_day: i64,
    config: &'a Config,
    books: &'a Map<Id, Book>,
    base: &'a BaseRates,
    team_sums: &'a Map<Id, TeamSums>,
    team_books: &'a Map<&'a str, TeamBooks>,
    /// The books that stand out from the rest of their team.
    standing_out_in_team: &'a BTreeSet<&'a Id>,
    usual: UsualShares<'a>,
    competitors: &'a [String],
    /// The sums of a team that is not known.
    no_team: TeamSums,
}

/// What one evaluation found about one manager, for the lifecycle.
struct Verdict {
    windows: Windows,
    win: Option<Finding>,
    leak: Option<Finding>,
    /// Whether `leak` is about quotes cut alone.
    leak_cuts: bool,
    churn: Option<Finding>,
    /// Which of the book's accounts `churn` cites.
    churn_cites: Cited,
    /// Competitor concentration, and the competitor's name.
    rival: Option<(Finding, String)>,
    risk: Option<Finding>,
}

impl Verdict {
    /// Whether showing the verdict to the lifecycle can change anything: a
    /// finding alerts, or an alert about the manager is pending or firing.
    fn moves(&self, manager_id: &str, lifecycle: &Lifecycle) -> bool {
        [
            (AlertKind::WinRateDrop, self.win.as_ref()),
            (AlertKind::PipelineLeakage, self.leak.as_ref()),
            (AlertKind::BookChurn, self.churn.as_ref()),
            (
                AlertKind::CompetitorConcentration,
                self.rival.as_ref().map(|(f, _)| f),
            ),
            (AlertKind::DiversionRisk, self.risk.as_ref()),
        ]
        .into_iter()
        .any(|(kind, finding)| {
            finding.is_some_and(|f| f.alerting) || lifecycle.contains(kind, manager_id)
        })
    }
}

/// Fewer managers than this are judged on one thread: splitting would cost
/// more than it saves.
const PARALLEL_MIN_MANAGERS: usize = 128;

/// Judges one manager at an evaluation: drops what fell out of every
/// window, runs every detector and sets the gauges.
fn judge(
    manager_id: &Id,
    manager: &mut ManagerState,
    (own_rivals, named): &(RivalTally, u64),
    ys: &Yardsticks,
) -> Verdict {
    let named = *named;
    manager.changed = true;
    let detect = ys.config.detect_for(&manager.team);
    let w = Windows::new(ys.end_day, detect);
    w.forget_older(
        [&mut manager.closes, &mut manager.exits],
        &mut manager.cuts,
        &mut manager.rivals,
    );
    manager.evidence_from = Timestamp::from_day(
        w.win_recent[2]
            .start
            .min(w.leak_recent[2].start)
            .min(w.rivals_from),
    );

    let team = ys.team_sums.get(&manager.team).unwrap_or(&ys.no_team);
    let team_name = manager.team.clone();

    // Win rate and leakage, each over three recent windows.
    let windows = rate_windows(&manager.closes, &team.closes, &w.win_recent, &w.win_history);
    manager.gauges.win_rate = windows[2].0.recent.rate();
    let win = win_rate::assess(&windows, &detect.win_rate, &team_name);
    let windows = rate_windows(&manager.exits, &team.exits, &w.leak_recent, &w.leak_history);
    manager.gauges.leakage_ratio = windows[2].0.recent.rate();
    let cut_inputs = cut_windows(&windows, &manager.cuts, &team.cuts, &w);
    let (leak, leak_cuts) =
        match leakage::assess(&windows, &cut_inputs, &detect.leakage, &team_name) {
            Some((finding, cuts)) => (Some(finding), cuts),
            None => (None, false),
        };

    // Book churn.
    let book = ys.books.get(manager_id);
    let own_book = book.map_or(BookInputs::default(), |b| {
        // The company's and the rest of the team's counts without the
        // manager's own (already left out where the book stands out).
        let company = if ys.base.stands_out(manager_id) {
            ys.base.company
        } else {
            ys.base.company.without(&b.counts)
        };
        let team_books = ys
            .team_books
            .get(b.team.as_str())
            .copied()
            .unwrap_or_default();
        let team = if ys.standing_out_in_team.contains(manager_id) {
            team_books.counts
        } else {
            team_books.counts.without(&b.counts)
        };
        BookInputs {
            judged: b.counts.judged,
            churning: b.counts.churning,
            visited: b.counts.visited,
            shrinking: b.counts.shrinking,
            company_judged: company.judged,
            company_churning: company.churning,
            company_visited: company.visited,
            company_shrinking: company.shrinking,
            team_judged: team.judged,
            team_churning: team.churning,
            team_visited: team.visited,
            team_shrinking: team.shrinking,
            orders: b.orders,
            expected_orders: b.expected_orders.map(ExpectedOrders::get),
            team_orders: std::array::from_fn(|i| team_books.orders[i].saturating_sub(b.orders[i])),
            team_expected_orders: std::array::from_fn(|i| {
                team_books.expected[i].without(b.expected_orders[i]).get()
            }),
        }
    });
    manager.gauges.overdue_accounts = own_book.churning;
    let bars = Bars::of(&detect.churn);
    let (churn, churn_cites) = match book_churn::assess(&own_book, &bars, &detect.book_churn) {
        Some((finding, cited)) => (Some(finding), cited),
        None => (None, Cited::Churning),
    };

    // Competitor concentration, among enough named losses to judge (with
    // fewer, most managers on most days, the rivals' yardsticks are not
    // worked out at all).
    let rival = if named >= detect.competitor.min_losses {
        let mut counts: Vec<CompetitorCounts> = own_rivals
            .iter()
            .map(|(rival, losses)| {
                let (team_share, team_weight) = ys.usual.without(
                    &team_name,
                    *rival,
                    (*losses, named),
                    team.named.saturating_sub(named),
                );
                CompetitorCounts {
                    competitor: &ys.competitors[*rival as usize],
                    losses: *losses,
                    team_share,
                    team_weight,
                }
            })
            .collect();
        counts.sort_by(|a, b| a.competitor.cmp(b.competitor));
        competitor::assess(
            &counts,
            named,
            team.rivals.len(),
            &detect.competitor,
            ys.end_day - w.rivals_from,
        )
    } else {
        None
    };

    // Diversion risk: the components that could be judged.
    let mut components = Vec::new();
    let mut push = |name: &'static str, finding: Option<&Finding>| {
        if let Some(f) = finding {
            components.push(Component {
                name,
                p_value: f.component_p,
                observed: f.observed,
                expected: f.expected,
            });
        }
    };
    // Win rate and leakage share their lost deals (a no-decision loss
    // counts in both): one component, the stronger, Bonferroni × 2,
    // so Fisher's independence is not assumed where it fails.
    let deals = match (win.as_ref(), leak.as_ref()) {
        (Some(w), Some(l)) => Some(if w.component_p <= l.component_p {
            ("win rate", w)
        } else {
            ("leakage", l)
        }),
        (Some(w), None) => Some(("win rate", w)),
        (None, Some(l)) => Some(("leakage", l)),
        (None, None) => None,
    };
    if let Some((name, finding)) = deals {
        let mut merged = finding.clone();
        merged.component_p = (finding.component_p * 2.0).min(1.0);
        push(name, Some(&merged));
    }
    push("book churn", churn.as_ref());
    push("competitor share", rival.as_ref().map(|(f, _)| f));
    let risk = diversion_risk::assess(&components, &detect.diversion_risk);
    manager.gauges.risk_score = risk.as_ref().map_or(0.0, |r| stats::score(r.p_value));
    Verdict {
        windows: w,
        win,
        leak,
        leak_cuts,
        churn,
        churn_cites,
        rival,
        risk,
    }
}

/// Shows one manager's verdict to the lifecycle, with evidence built only
/// for a transition.
fn observe_verdict(
    manager_id: &Id,
    manager: &ManagerState,
    verdict: &Verdict,
    ys: &Yardsticks,
    max_evidence: usize,
    lifecycle: &mut Lifecycle,
    out: &mut Vec<Alert>,
) {
    let w = &verdict.windows;
    let (win, leak, churn, risk) = (&verdict.win, &verdict.leak, &verdict.churn, &verdict.risk);
    let rival = &verdict.rival;
    let at = ys.at;
    let team_name = &manager.team;
    let book = ys.books.get(manager_id);
    let window_start = |ranges: &[Range<i64>; 3]| Timestamp::from_day(ranges[2].start);
    // Evidence, built only when a transition is emitted.
    let losses = &manager.losses;
    let leaks = &manager.leaks;
    let win_evidence = || {
        largest_between(
            losses,
            window_start(&w.win_recent),
            at,
            max_evidence,
            |_| true,
        )
    };
    // A finding about cut quotes cites the cut deals.
    let cut_note = Some(LeakRoute::Cut.as_str());
    let leak_evidence = || {
        largest_between(leaks, window_start(&w.leak_recent), at, max_evidence, |e| {
            !verdict.leak_cuts || e.note == cut_note
        })
    };
    let churn_evidence = || {
        book.map_or_else(Vec::new, |b| {
            book_evidence(b, verdict.churn_cites, max_evidence)
        })
    };
    let rival_name = rival.as_ref().map(|(_, name)| name.clone());
    let rival_evidence = || {
        largest_between(
            losses,
            Timestamp::from_day(w.rivals_from),
            at,
            max_evidence,
            |e| e.competitor.as_deref() == rival_name.as_deref(),
        )
    };
    let draft = |finding: &Option<Finding>, start: Timestamp, evidence: Vec<serde_json::Value>| {
        finding.clone().map(|finding| AlertDraft {
            manager_id: manager_id.to_string(),
            team: team_name.to_string(),
            account_id: None,
            window_start: start,
            window_end: at,
            finding,
            evidence,
        })
    };
    let subject = manager_id.as_str();
    lifecycle.observe(
        AlertKind::WinRateDrop,
        subject,
        at,
        win.as_ref(),
        || draft(win, window_start(&w.win_recent), win_evidence()),
        out,
    );
    lifecycle.observe(
        AlertKind::PipelineLeakage,
        subject,
        at,
        leak.as_ref(),
        || draft(leak, window_start(&w.leak_recent), leak_evidence()),
        out,
    );
    lifecycle.observe(
        AlertKind::BookChurn,
        subject,
        at,
        churn.as_ref(),
        || draft(churn, at, churn_evidence()),
        out,
    );
    let rival_only = rival.as_ref().map(|(f, _)| f.clone());
    lifecycle.observe(
        AlertKind::CompetitorConcentration,
        subject,
        at,
        rival_only.as_ref(),
        || {
            draft(
                &rival_only,
                Timestamp::from_day(w.rivals_from),
                rival_evidence(),
            )
        },
        out,
    );
    let risk_evidence = || {
        let mut items = churn_evidence();
        items.truncate(max_evidence / 2);
        for source in [win_evidence(), leak_evidence()] {
            items.extend(
                source
                    .into_iter()
                    .take(max_evidence.saturating_sub(items.len()) / 2 + 1),
            );
        }
        items.truncate(max_evidence);
        items
    };
    let risk_start = window_start(&w.win_recent).min(window_start(&w.leak_recent));
    lifecycle.observe(
        AlertKind::DiversionRisk,
        subject,
        at,
        risk.as_ref(),
        || draft(risk, risk_start, risk_evidence()),
        out,
    );
}

/// Each competitor's share of every team member's competitor-named losses
/// (members naming none left out), per team, sorted: worked out once per
/// evaluation, so that a manager's yardstick is one pass over a short list
/// instead of a pass over every teammate's tally.
struct UsualShares<'a> {
    /// Team → (the even split, competitor → members' shares, ascending).
    by_team: Map<&'a str, (f64, Map<u32, Vec<f64>>)>,
}

impl<'a> UsualShares<'a> {
    /// Pseudo-losses smoothing each share toward the even split.
    const PSEUDO: f64 = 2.0;

    /// `members` holds each team's managers as indices into `tallies`, their
    /// competitor-named losses.
    fn new(
        members: &'a Map<Id, Vec<usize>>,
        tallies: &[(RivalTally, u64)],
        team_sums: &Map<Id, TeamSums>,
    ) -> UsualShares<'a> {
        let mut by_team = Map::default();
        for (team, members) in members {
            let candidates = team_sums.get(team).map_or(0, |t| t.rivals.len());
            let even = 1.0 / candidates.max(1) as f64;
            let tallies: Vec<&(RivalTally, u64)> = members.iter().map(|i| &tallies[*i]).collect();
            let mut rivals: Vec<u32> = tallies
                .iter()
                .flat_map(|(tally, _)| tally.iter().map(|(rival, _)| *rival))
                .collect();
            rivals.sort_unstable();
            rivals.dedup();
            let by_rival = rivals
                .into_iter()
                .map(|rival| {
                    let mut shares: Vec<f64> = tallies
                        .iter()
                        .filter(|(_, named)| *named > 0)
                        .map(|(tally, named)| Self::share(rival_losses(tally, rival), *named, even))
                        .collect();
                    shares.sort_by(f64::total_cmp);
                    (rival, shares)
                })
                .collect();
            by_team.insert(team.as_str(), (even, by_rival));
        }
        UsualShares { by_team }
    }

    fn share(losses: u64, named: u64, even: f64) -> f64 {
        (losses as f64 + Self::PSEUDO * even) / (named as f64 + Self::PSEUDO)
    }

    /// A competitor's usual share of competitor-named losses for a manager
    /// who lost `losses` of `named` deals to it, and how many losses that
    /// share rests on (the test's beta weight); `team_named` is the rest of
    /// the team's competitor-named losses.
    ///
    /// The teammates' share is the mean of their own shares (each smoothed
    /// toward an even split by two pseudo-losses), leaving out the teammate
    /// most given to that rival when there are three or more, and the one
    /// least given to it as well when there are four or more. Averaging
    /// shares rather than pooling losses keeps one busy teammate, above all
    /// one diverting to another rival, from setting everyone's yardstick;
    /// trimming both ends keeps the mean unbiased (leaving out only the
    /// largest share biased it low, and an honest manager with an ordinary
    /// run of losses to one rival was accused on it).
    ///
    /// Where that share is below an even split between the rivals the team's
    /// losses name, it is shrunk toward the even split by
    /// [`Self::EVEN_PRIOR`] losses: a few teammates who happened to lose
    /// little to a rival must not make an ordinary share look like
    /// diversion. A share above the even split is left as it is (a rival
    /// that takes much of everyone's business is the market), so the prior
    /// only ever makes the test more lenient. (The company's share would be
    /// the better prior, but a scaled-out manager stage holds only its own
    /// teams.)
    fn without(
        &self,
        team: &str,
        rival: u32,
        (losses, named): (u64, u64),
        team_named: u64,
    ) -> (f64, f64) {
        let even = self.by_team.get(team).map_or(1.0, |(even, _)| *even);
        let teammates = self.teammates(team, rival, losses, named);
        let weight = team_named as f64;
        let shrunk = (teammates * weight + even * Self::EVEN_PRIOR) / (weight + Self::EVEN_PRIOR);
        if shrunk > teammates {
            (shrunk, weight + Self::EVEN_PRIOR)
        } else {
            (teammates, weight)
        }
    }

    /// Weight of the even split in a rival's usual share below it, in losses.
    const EVEN_PRIOR: f64 = 50.0;

    /// The teammates' trimmed mean share of `rival` (see [`Self::without`]).
    fn teammates(&self, team: &str, rival: u32, losses: u64, named: u64) -> f64 {
        // Every manager is on its own team's list.
        let Some((even, by_rival)) = self.by_team.get(team) else {
            return 1.0;
        };
        let all = by_rival.get(&rival).map(Vec::as_slice).unwrap_or_default();
        // The manager's own share is one of `all`: leave one equal value out.
        let own = (named > 0).then(|| Self::share(losses, named, *even));
        let skip = own.and_then(|own| all.iter().position(|s| s.to_bits() == own.to_bits()));
        let teammates = all.len() - usize::from(skip.is_some());
        // `all` is ascending: the least given to the rival come first.
        let (trim_low, trim_high) = match teammates {
            0 => return *even,
            1 | 2 => (0, 0),
            3 => (0, 1),
            _ => (1, 1),
        };
        let kept = teammates - trim_low - trim_high;
        let sum: f64 = all
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .skip(trim_low)
            .take(kept)
            .map(|(_, share)| share)
            .sum();
        sum / kept as f64
    }
}

/// Losses per competitor (index, count), sorted by index: a manager names
/// few rivals, so a short sorted list beats a hash map built every day.
type RivalTally = Vec<(u32, u64)>;

/// The losses in `rivals` on the days in `days`, per competitor, and their total.
fn tally_rivals(rivals: &VecDeque<(i64, u32)>, days: Range<i64>) -> (RivalTally, u64) {
    let mut tally = RivalTally::new();
    let mut named = 0;
    for (day, rival) in rivals {
        if days.contains(day) {
            match tally.binary_search_by_key(rival, |(r, _)| *r) {
                Ok(i) => tally[i].1 += 1,
                Err(i) => tally.insert(i, (*rival, 1)),
            }
            named += 1;
        }
    }
    (tally, named)
}

fn rival_losses(tally: &RivalTally, rival: u32) -> u64 {
    tally
        .binary_search_by_key(&rival, |(r, _)| *r)
        .map_or(0, |i| tally[i].1)
}

/// The churning accounts of a book, or the ones the manager kept visiting
/// (as `cited`), those still visited first, each cited by its last order and
/// latest visits.
fn book_evidence(book: &Book, cited: Cited, max: usize) -> Vec<serde_json::Value> {
    let mut accounts: Vec<_> = book
        .churning_accounts
        .iter()
        .filter(|a| match cited {
            Cited::Churning => a.churning,
            Cited::Visited(None) => a.visited,
            Cited::Visited(Some(bar)) => a.visited && a.p_value < bar,
        })
        .collect();
    accounts.sort_by(|a, b| {
        b.visited
            .cmp(&a.visited)
            .then(a.p_value.total_cmp(&b.p_value))
            .then(a.account_id.cmp(&b.account_id))
    });
    accounts
        .iter()
        .flat_map(|a| a.evidence.iter().map(EvidenceRef::to_json))
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A team of the judged manager (index 0) and teammates who lost
    /// `losses[i]` of 20 competitor-named deals to rival 0, with five
    /// competitors named in the team.
    fn usual_share(own: u64, teammates: &[u64]) -> f64 {
        let tallies: Vec<(RivalTally, u64)> = std::iter::once(own)
            .chain(teammates.iter().copied())
            .map(|losses| (vec![(0, losses), (1, 20 - losses)], 20))
            .collect();
        let team = Id::from("team-1");
        let members: Map<Id, Vec<usize>> = [(team.clone(), (0..tallies.len()).collect())]
            .into_iter()
            .collect();
        let sums = TeamSums {
            rivals: (0..5).map(|rival| (rival, 1)).collect(),
            ..TeamSums::default()
        };
        let team_sums: Map<Id, TeamSums> = [(team.clone(), sums)].into_iter().collect();
        UsualShares::new(&members, &tallies, &team_sums).teammates(&team, 0, own, 20)
    }

    /// A teammate's smoothed share (two pseudo-losses at the even split 1/5).
    fn smoothed(losses: f64) -> f64 {
        (losses + 0.4) / 22.0
    }

    #[test]
    fn usual_competitor_share_trims_both_ends_of_the_team() {
        // Teammates around 4 losses in 20, one given to the rival (12) and
        // one not (1): both ends left out, the mean is the middle's.
        let usual = usual_share(10, &[1, 3, 4, 5, 12]);
        let middle = (smoothed(3.0) + smoothed(4.0) + smoothed(5.0)) / 3.0;
        assert!((usual - middle).abs() < 1e-12, "{usual} vs {middle}");
        // Leaving out only the largest share would put it lower, and make
        // an ordinary run of losses to the rival look like diversion.
        assert!(usual > (smoothed(1.0) + middle * 3.0) / 4.0 + 0.01);
        // The manager's own share never sets the yardstick.
        assert_eq!(usual, usual_share(19, &[1, 3, 4, 5, 12]));
    }

    #[test]
    fn usual_competitor_share_of_small_teams() {
        // Three teammates: the one most given to the rival is left out.
        let usual = usual_share(10, &[2, 4, 15]);
        assert!((usual - (smoothed(2.0) + smoothed(4.0)) / 2.0).abs() < 1e-12);
        // Two: both count.
        let usual = usual_share(10, &[2, 4]);
        assert!((usual - (smoothed(2.0) + smoothed(4.0)) / 2.0).abs() < 1e-12);
        // None: the even split.
        assert_eq!(usual_share(10, &[]), 0.2);
    }

    #[test]
    fn a_usual_competitor_share_below_an_even_split_leans_toward_it() {
        // The judged manager lost 9 of 12 to rival 0; three teammates lost
        // 1 of 10 each to it, and rival 1 took the rest: an even split is 1/2.
        let mut tallies: Vec<(RivalTally, u64)> = vec![(vec![(0, 9), (1, 3)], 12)];
        tallies.extend((0..3).map(|_| (vec![(0, 1), (1, 9)], 10)));
        let team = Id::from("team-1");
        let members: Map<Id, Vec<usize>> = [(team.clone(), (0..4).collect())].into_iter().collect();
        let sums = TeamSums {
            rivals: (0..2).map(|rival| (rival, 1)).collect(),
            ..TeamSums::default()
        };
        let team_sums: Map<Id, TeamSums> = [(team.clone(), sums)].into_iter().collect();
        let usual = UsualShares::new(&members, &tallies, &team_sums);
        let teammates = usual.teammates(&team, 0, 9, 12);
        assert!((teammates - 2.0 / 12.0).abs() < 1e-12, "{teammates}");
        // Below the even split: shrunk toward it by 50 losses.
        let (share, weight) = usual.without(&team, 0, (9, 12), 30);
        let expected = (teammates * 30.0 + 0.5 * 50.0) / 80.0;
        assert!((share - expected).abs() < 1e-12, "{share} vs {expected}");
        assert_eq!(weight, 80.0);
        // Above it (rival 1 takes most of the teammates' losses): as it is.
        let (share, weight) = usual.without(&team, 1, (3, 12), 30);
        assert_eq!(share, usual.teammates(&team, 1, 3, 12));
        assert!(share > 0.5 && weight == 30.0, "{share} {weight}");
    }

    #[test]
    fn a_book_alert_cites_the_accounts_its_test_counted() {
        use crate::engine::account::{evidence_of, ChurningAccount};
        use crate::event::{Event, EventBody};
        // A churns unvisited, B is quiet and visited (not churning yet), C
        // churns and is visited.
        let listed = |id: &str, p_value: f64, visited: bool, churning: bool| {
            let order = Event {
                event_id: format!("order-{id}").into(),
                occurred_at: Timestamp(0),
                manager_id: "kam-1".into(),
                account_id: id.into(),
                team: "t".into(),
                body: EventBody::OrderPlaced {
                    order_id: "o".into(),
                    amount: 1.0,
                },
            };
            ChurningAccount {
                account_id: id.into(),
                p_value,
                visited,
                churning,
                evidence: vec![evidence_of(&order, None)],
            }
        };
        let book = Book {
            churning_accounts: vec![
                listed("A", 0.001, false, true),
                listed("B", 0.05, true, false),
                listed("C", 0.002, true, true),
            ],
            ..Book::default()
        };
        let cited = |cited: Cited| -> Vec<String> {
            book_evidence(&book, cited, 20)
                .iter()
                .map(|item| item["account_id"].as_str().unwrap().to_owned())
                .collect()
        };
        // Visited first, then by p-value.
        assert_eq!(cited(Cited::Churning), ["C", "A"]);
        assert_eq!(cited(Cited::Visited(None)), ["C", "B"]);
        // Past a tighter bar: the visited accounts that far gone, not A
        // (unvisited) nor B (quiet past the loosest bar only).
        assert_eq!(cited(Cited::Visited(Some(0.01))), ["C"]);
    }
}

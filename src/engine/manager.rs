//! The manager stage (DESIGN §1): per-manager and per-team statistics, keyed
//! by team, fed by facts from the account stage. At each evaluation it runs
//! the manager-level detectors and hands their findings to the lifecycle.

use std::collections::HashMap;

use crate::alert::AlertKind;
use crate::config::WinRateConfig;
use crate::detect::win_rate::{self, WinRateInputs};
use crate::time::{Timestamp, DAY};

use super::fact::{DealOutcome, EvidenceRef, Fact, FactKind};
use super::lifecycle::{AlertDraft, Lifecycle};
use super::window::{DailyBuckets, WinLoss};

/// Losses kept per manager as candidate evidence; the largest are cited.
const LOSS_EVIDENCE_KEPT: usize = 64;

#[derive(Debug, Default)]
pub struct ManagerStage {
    managers: HashMap<String, ManagerState>,
    teams: HashMap<String, TeamState>,
}

#[derive(Debug, Default)]
struct ManagerState {
    team: String,
    closes: DailyBuckets<WinLoss>,
    /// The largest recent losses, the evidence a win-rate alert cites.
    losses: Vec<EvidenceRef>,
    /// Win rate over the window at the last evaluation, for the metrics.
    last_win_rate: Option<f64>,
}

#[derive(Debug, Default)]
struct TeamState {
    closes: DailyBuckets<WinLoss>,
    last_win_rate: Option<f64>,
}

/// The settings an evaluation needs.
pub struct EvaluationSettings<'a> {
    pub win_rate: &'a WinRateConfig,
    pub max_evidence: usize,
}

impl ManagerStage {
    pub fn apply(&mut self, fact: Fact) {
        let manager = self.managers.entry(fact.manager_id.clone()).or_default();
        manager.team.clone_from(&fact.team);
        let team = self.teams.entry(fact.team.clone()).or_default();
        let FactKind::DealClosed { outcome, .. } = fact.kind;
        let counts = match outcome {
            DealOutcome::Won => WinLoss { won: 1, lost: 0 },
            DealOutcome::Lost(_) => WinLoss { won: 0, lost: 1 },
            DealOutcome::Withdrawn => return,
        };
        let day = fact.at.day();
        manager.closes.add(day, counts);
        team.closes.add(day, counts);
        if counts.lost > 0 {
            remember_loss(&mut manager.losses, fact.evidence);
        }
    }

    /// Evaluates every manager at `at` (an evaluation boundary).
    pub fn evaluate(
        &mut self,
        at: Timestamp,
        settings: &EvaluationSettings<'_>,
        lifecycle: &mut Lifecycle,
        out: &mut Vec<crate::alert::Alert>,
    ) {
        let config = settings.win_rate;
        let window_days = days(config.window.as_secs());
        let history_days = days(config.history.as_secs());
        let end_day = at.day() + i64::from(at.0 % DAY != 0);
        let recent = end_day - window_days..end_day;
        let history = recent.start - history_days..recent.start;
        let window_start = Timestamp::from_day(recent.start);

        let team_sums: HashMap<&str, (WinLoss, WinLoss)> = self
            .teams
            .iter_mut()
            .map(|(name, team)| {
                team.closes.prune_before(history.start);
                let sums = (
                    team.closes.sum(recent.clone()),
                    team.closes.sum(history.clone()),
                );
                team.last_win_rate = sums.0.rate();
                (name.as_str(), sums)
            })
            .collect();

        for (manager_id, manager) in self.managers.iter_mut() {
            manager.closes.prune_before(history.start);
            manager
                .losses
                .retain(|loss| loss.occurred_at >= window_start);
            let own_recent = manager.closes.sum(recent.clone());
            let own_history = manager.closes.sum(history.clone());
            let (team_recent, team_history) = team_sums
                .get(manager.team.as_str())
                .copied()
                .unwrap_or_default();
            let inputs = WinRateInputs {
                recent: own_recent,
                history: own_history,
                team_recent: team_recent - own_recent,
                team_history: team_history - own_history,
            };
            manager.last_win_rate = own_recent.rate();
            let finding = win_rate::assess(&inputs, config, &manager.team, window_days);
            let draft = || {
                finding.clone().map(|finding| AlertDraft {
                    manager_id: manager_id.clone(),
                    team: manager.team.clone(),
                    account_id: None,
                    window_start,
                    window_end: at,
                    finding,
                    evidence: largest_losses(&manager.losses, at, settings.max_evidence),
                })
            };
            lifecycle.observe(
                AlertKind::WinRateDrop,
                manager_id,
                at,
                finding.as_ref(),
                draft,
                out,
            );
        }
    }

    pub fn managers(&self) -> usize {
        self.managers.len()
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

    /// (manager, team, win rate over the window) as of the last evaluation.
    pub fn manager_win_rates(&self) -> impl Iterator<Item = (&str, &str, f64)> {
        self.managers.iter().filter_map(|(id, manager)| {
            manager
                .last_win_rate
                .map(|rate| (id.as_str(), manager.team.as_str(), rate))
        })
    }
}

fn days(seconds: u64) -> i64 {
    (seconds as i64 + DAY - 1) / DAY
}

/// Keeps the `LOSS_EVIDENCE_KEPT` largest losses, dropping the smallest.
fn remember_loss(losses: &mut Vec<EvidenceRef>, loss: EvidenceRef) {
    losses.push(loss);
    if losses.len() > LOSS_EVIDENCE_KEPT {
        let smallest = losses
            .iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| {
                amount(a)
                    .total_cmp(&amount(b))
                    .then(a.occurred_at.cmp(&b.occurred_at))
            })
            .map(|(i, _)| i);
        if let Some(i) = smallest {
            losses.swap_remove(i);
        }
    }
}

fn amount(evidence: &EvidenceRef) -> f64 {
    evidence.amount.unwrap_or(0.0)
}

/// The largest losses before `until` first, ties by time then id, so
/// evidence is deterministic and never cites an event after the evaluation.
fn largest_losses(losses: &[EvidenceRef], until: Timestamp, max: usize) -> Vec<serde_json::Value> {
    let mut sorted: Vec<&EvidenceRef> = losses
        .iter()
        .filter(|loss| loss.occurred_at < until)
        .collect();
    sorted.sort_by(|a, b| {
        amount(b)
            .total_cmp(&amount(a))
            .then(a.occurred_at.cmp(&b.occurred_at))
            .then(a.event_id.cmp(&b.event_id))
    });
    sorted
        .into_iter()
        .take(max)
        .map(EvidenceRef::to_json)
        .collect()
}

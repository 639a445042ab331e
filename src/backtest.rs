//! Backtest: replays a JSONL event file through the same engine the service
//! runs, writes every alert transition, and with a ground-truth labels file
//! scores the alerts (recall, precision, delay).
//!
//! Only events move event time here, so a backtest is reproducible: the same
//! file and configuration give the same alerts, byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread;

use serde::Deserialize;

use crate::alert::{Alert, AlertKind, Status};
use crate::config::Config;
use crate::engine::exchange::{Exchange, Route};
use crate::engine::shard::Shard;
use crate::engine::source::Source;
use crate::engine::{Engine, EngineStats, Outcome};
use crate::event::{decode, DecodeError, DecodeLimits, Event};
use crate::time::{Timestamp, DAY};

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("cannot read the input at line {line}: {source}")]
    Read { line: u64, source: io::Error },
    #[error("cannot write an alert: {0}")]
    Write(io::Error),
    #[error("labels file is not valid: {0}")]
    Labels(String),
}

/// Counts from one replay.
#[derive(Clone, Debug, Default)]
pub struct BacktestReport {
    /// Non-blank lines read, each one message.
    pub messages: u64,
    /// Messages by outcome label (`processed`, `duplicate`, `late`, `dead_letter`).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Dead letters by reason.
    pub dead_letters: BTreeMap<&'static str, u64>,
    /// Alert transitions by (kind, status).
    pub transitions: BTreeMap<(&'static str, &'static str), u64>,
    /// Every transition, in order.
    pub alerts: Vec<Alert>,
    pub watermark: Option<Timestamp>,
    /// The engine's state at the end: entities held and forgotten.
    pub state: crate::engine::EngineStats,
}

/// Replays `input` (one event per line) through a fresh engine, calling
/// `on_alert` for each transition as it happens.
///
/// The stages run as scaled-out feidan runs them (DESIGN §7), one source
/// and one shard, each on a thread of its own: the account stage on this
/// thread, the manager stage on another, which judges the managers at a
/// boundary while the account stage goes on to the next day's events.
/// Reading and decoding run on a third, a few batches ahead. The
/// transitions are those of one engine, in the same order: each
/// evaluation's, account and manager alike, by alert id.
///
/// # Errors
///
/// Fails only on I/O; invalid lines are counted as dead letters.
pub fn replay(
    config: &Config,
    input: impl BufRead + Send,
    mut on_alert: impl FnMut(&Alert) -> io::Result<()>,
) -> Result<BacktestReport, BacktestError> {
    let limits = Engine::decode_limits(config);
    let (sender, batches) = mpsc::sync_channel(BATCHES_AHEAD);
    let (to_managers, manager_inbox) = mpsc::sync_channel(EVALUATIONS_AHEAD);
    let (manager_results, from_managers) = mpsc::channel();
    thread::scope(|scope| {
        scope.spawn(move || read_and_decode(input, limits, sender));
        let managers = scope.spawn(move || judge_managers(config, manager_inbox, manager_results));
        let mut source = Source::new(config, 0, 1, 1);
        let mut report = BacktestReport::default();
        let mut pending = Evaluations::default();
        let mut emit = |alerts: Vec<Alert>, report: &mut BacktestReport| {
            for alert in alerts {
                on_alert(&alert).map_err(BacktestError::Write)?;
                *report
                    .transitions
                    .entry((alert.kind.as_str(), alert.status.as_str()))
                    .or_default() += 1;
                report.alerts.push(alert);
            }
            Ok::<(), BacktestError>(())
        };
        let mut out = Vec::new();
        'read: for batch in batches {
            for decoded in batch? {
                report.messages += 1;
                let ingested = source.ingest_decoded(decoded, &mut out);
                *report.outcomes.entry(ingested.outcome.label()).or_default() += 1;
                if let Outcome::DeadLetter(reason) = &ingested.outcome {
                    *report.dead_letters.entry(reason.code()).or_default() += 1;
                }
                pending.add(out.drain(..));
                let for_managers: Vec<Exchange> = source
                    .take_outbox()
                    .into_iter()
                    .filter(|envelope| matches!(envelope.to, Route::Shard(_)))
                    .map(|envelope| envelope.message)
                    .collect();
                // The manager stage gone is a panic, raised at the join.
                if !for_managers.is_empty() && to_managers.send(for_managers).is_err() {
                    break 'read;
                }
                for (evaluated, alerts) in from_managers.try_iter() {
                    pending.add(alerts);
                    emit(pending.take_through(evaluated), &mut report)?;
                }
            }
        }
        drop(to_managers);
        let manager_state = managers
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        for (_, alerts) in from_managers.try_iter() {
            pending.add(alerts);
        }
        emit(pending.take_all(), &mut report)?;
        report.watermark = source.watermark();
        report.state = source.stats();
        report.state.merge(manager_state);
        Ok(report)
    })
}

/// Evaluations the account stage may run ahead of the manager stage.
const EVALUATIONS_AHEAD: usize = 4;

/// What the manager stage reports after each evaluation: the last boundary
/// evaluated, and its transitions.
type ManagerResult = (Option<Timestamp>, Vec<Alert>);

/// The manager stage's thread: evaluates each boundary once the account
/// stage's messages for it are in, until the account stage hangs up;
/// returns what the stage holds at the end.
fn judge_managers(
    config: &Config,
    inbox: Receiver<Vec<Exchange>>,
    results: Sender<ManagerResult>,
) -> EngineStats {
    let mut shard = Shard::new(config, 0, 1, 1);
    let mut out = Vec::new();
    for messages in inbox {
        for message in messages {
            shard.receive(message, &mut out);
        }
        if results
            .send((shard.evaluated(), std::mem::take(&mut out)))
            .is_err()
        {
            break;
        }
    }
    shard.stats()
}

/// Transitions held until both stages have evaluated their boundary: the
/// account stage's come first, the manager stage's a little later.
#[derive(Default)]
struct Evaluations(BTreeMap<Timestamp, Vec<Alert>>);

impl Evaluations {
    fn add(&mut self, alerts: impl IntoIterator<Item = Alert>) {
        for alert in alerts {
            self.0.entry(alert.detected_at).or_default().push(alert);
        }
    }

    /// The transitions of the evaluations up to `through`, in order.
    fn take_through(&mut self, through: Option<Timestamp>) -> Vec<Alert> {
        let Some(through) = through else {
            return Vec::new();
        };
        let later = self.0.split_off(&through.plus(1));
        Evaluations::in_order(std::mem::replace(&mut self.0, later))
    }

    fn take_all(&mut self) -> Vec<Alert> {
        Evaluations::in_order(std::mem::take(&mut self.0))
    }

    /// Each evaluation's transitions by alert id, as one engine orders them
    /// (each stage's are in that order already; their kinds differ).
    fn in_order(evaluations: BTreeMap<Timestamp, Vec<Alert>>) -> Vec<Alert> {
        evaluations
            .into_values()
            .flat_map(|mut alerts| {
                alerts.sort_by(|a, b| a.alert_id.cmp(&b.alert_id));
                alerts
            })
            .collect()
    }
}

/// Lines decoded per batch handed to the engine, and batches decoded ahead.
const BATCH_LINES: usize = 1024;
const BATCHES_AHEAD: usize = 8;

type Batch = Vec<Result<Event, DecodeError>>;

/// Reads `input` line by line (blank lines skipped) and sends the decoded
/// lines in batches, then a read error if there is one. Stops when the
/// engine's side hangs up.
fn read_and_decode(
    mut input: impl BufRead,
    limits: DecodeLimits,
    batches: SyncSender<Result<Batch, BacktestError>>,
) {
    let mut line = Vec::new();
    let mut line_number = 0u64;
    let mut batch = Vec::with_capacity(BATCH_LINES);
    loop {
        line.clear();
        line_number += 1;
        match input.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(source) => {
                let _ = batches.send(Ok(std::mem::take(&mut batch)));
                let _ = batches.send(Err(BacktestError::Read {
                    line: line_number,
                    source,
                }));
                return;
            }
        }
        let payload = trim_line(&line);
        if payload.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        batch.push(decode(payload, limits));
        if batch.len() == BATCH_LINES {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_LINES));
            if batches.send(Ok(full)).is_err() {
                return;
            }
        }
    }
    let _ = batches.send(Ok(batch));
}

fn trim_line(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && (line[end - 1] == b'\n' || line[end - 1] == b'\r') {
        end -= 1;
    }
    &line[..end]
}

/// The parts of a simulator labels file the scoring reads.
#[derive(Debug, Deserialize)]
pub struct GroundTruth {
    pub start: String,
    pub days: i64,
    pub managers: Vec<LabelledManager>,
    pub diverters: Vec<LabelledDiverter>,
    #[serde(default)]
    pub churned_accounts: Vec<LabelledChurn>,
}

#[derive(Debug, Deserialize)]
pub struct LabelledChurn {
    pub account_id: String,
    pub at: String,
}

#[derive(Debug, Deserialize)]
pub struct LabelledManager {
    pub manager_id: String,
}

#[derive(Debug, Deserialize)]
pub struct LabelledDiverter {
    pub manager_id: String,
    pub onset: String,
}

impl GroundTruth {
    /// # Errors
    ///
    /// [`BacktestError::Labels`] when the JSON does not have the fields above.
    pub fn parse(text: &str) -> Result<GroundTruth, BacktestError> {
        serde_json::from_str(text).map_err(|e| BacktestError::Labels(e.to_string()))
    }
}

/// How manager-level alerts compare with the ground truth.
#[derive(Clone, Debug, PartialEq)]
pub struct ManagerScore {
    pub diverters: usize,
    /// Diverters with a manager-level alert firing at or after their onset.
    pub detected: usize,
    /// Managers with any manager-level alert firing.
    pub accused: usize,
    /// Accused managers who were not diverting at the time of the alert.
    pub falsely_accused: usize,
    pub recall: f64,
    pub precision: f64,
    /// Honest managers falsely accused per 100 manager-years observed.
    pub false_per_100_manager_years: f64,
    /// Median days from onset to the first alert, over detected diverters.
    pub median_delay_days: Option<f64>,
}

/// Scores the firing manager-level transitions of a replay against labels.
pub fn score_managers(alerts: &[Alert], truth: &GroundTruth) -> ManagerScore {
    let onsets: BTreeMap<&str, Timestamp> = truth
        .diverters
        .iter()
        .filter_map(|d| Timestamp::parse_rfc3339(&d.onset).map(|t| (d.manager_id.as_str(), t)))
        .collect();
    let mut first_true: BTreeMap<&str, Timestamp> = BTreeMap::new();
    let mut accused = BTreeSet::new();
    let mut falsely = BTreeSet::new();
    for alert in alerts {
        if alert.status != Status::Firing || alert.kind == AlertKind::AccountChurn {
            continue;
        }
        let manager = alert.manager_id.as_str();
        accused.insert(manager);
        match onsets.get(manager) {
            Some(onset) if alert.detected_at >= *onset => {
                first_true.entry(manager).or_insert(alert.detected_at);
            }
            _ => {
                falsely.insert(manager);
            }
        }
    }
    let mut delays: Vec<f64> = first_true
        .iter()
        .map(|(m, at)| (at.0 - onsets[m].0) as f64 / DAY as f64)
        .collect();
    delays.sort_by(f64::total_cmp);
    let median_delay_days = (!delays.is_empty()).then(|| {
        let mid = delays.len() / 2;
        if delays.len() % 2 == 1 {
            delays[mid]
        } else {
            (delays[mid - 1] + delays[mid]) / 2.0
        }
    });
    let honest_years =
        (truth.managers.len().saturating_sub(onsets.len())) as f64 * truth.days as f64 / 365.0;
    let true_accused = accused.len() - falsely.len();
    ManagerScore {
        diverters: onsets.len(),
        detected: first_true.len(),
        accused: accused.len(),
        falsely_accused: falsely.len(),
        recall: ratio(first_true.len(), onsets.len()),
        precision: ratio(true_accused, accused.len()),
        false_per_100_manager_years: if honest_years > 0.0 {
            100.0 * falsely.len() as f64 / honest_years
        } else {
            0.0
        },
        median_delay_days,
    }
}

/// How account-churn alerts compare with the ground truth.
#[derive(Clone, Debug, PartialEq)]
pub struct AccountScore {
    /// Churned accounts that churned at least `DETECTABLE_DAYS` before the end.
    pub churned: usize,
    pub detected: usize,
    pub alerts: usize,
    /// Alerts on accounts that had not churned (yet).
    pub false_alerts: usize,
    pub recall: f64,
    pub precision: f64,
}

/// A churn this close to the end of the data cannot be expected to be seen.
const DETECTABLE_DAYS: i64 = 60;

/// Scores the firing account-churn transitions against labelled churn.
pub fn score_accounts(alerts: &[Alert], truth: &GroundTruth) -> AccountScore {
    let churned: BTreeMap<&str, Timestamp> = truth
        .churned_accounts
        .iter()
        .filter_map(|c| Timestamp::parse_rfc3339(&c.at).map(|t| (c.account_id.as_str(), t)))
        .collect();
    let end =
        Timestamp::parse_rfc3339(&truth.start).map_or(Timestamp(0), |s| s.plus(truth.days * DAY));
    let mut detected = BTreeSet::new();
    let (mut total, mut false_alerts) = (0, 0);
    for alert in alerts {
        if alert.status != Status::Firing || alert.kind != AlertKind::AccountChurn {
            continue;
        }
        total += 1;
        let account = alert.account_id.as_deref().unwrap_or_default();
        match churned.get(account) {
            Some(at) if alert.detected_at >= *at => {
                detected.insert(account);
            }
            _ => false_alerts += 1,
        }
    }
    let eligible: BTreeSet<&str> = churned
        .iter()
        .filter(|(_, at)| at.plus(DETECTABLE_DAYS * DAY) <= end)
        .map(|(account, _)| *account)
        .collect();
    let found = eligible.intersection(&detected).count();
    AccountScore {
        churned: eligible.len(),
        detected: found,
        alerts: total,
        false_alerts,
        recall: ratio(found, eligible.len()),
        precision: ratio(total - false_alerts, total),
    }
}

/// a / b, and 1 when there was nothing to find or nothing claimed.
fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_line_once_and_skips_blank_lines() {
        let input = concat!(
            r#"{"event_id":"e1","type":"activity_logged","activity":"visit","occurred_at":"2025-01-01T10:00:00Z","manager_id":"m","account_id":"a"}"#,
            "\n\n",
            r#"{"event_id":"e1","type":"activity_logged","activity":"visit","occurred_at":"2025-01-01T10:00:00Z","manager_id":"m","account_id":"a"}"#,
            "\nnot json\r\n",
        );
        let report = replay(&Config::defaults(), input.as_bytes(), |_| Ok(())).unwrap();
        assert_eq!(report.messages, 3);
        assert_eq!(report.outcomes["processed"], 1);
        assert_eq!(report.outcomes["duplicate"], 1);
        assert_eq!(report.dead_letters["not_json"], 1);
    }
}

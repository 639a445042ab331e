//! Backtest: replays a JSONL event file through the same engine the service
//! runs, writes every alert transition, and with a ground-truth labels file
//! scores the alerts (recall, precision, delay).
//!
//! Only events move event time here, so a backtest is reproducible: the same
//! file and configuration give the same alerts, byte for byte.
//!
//! Layout: this file replays; `score` scores the alerts against labels;
//! `report` writes what a data engineer reads; `sweep` is the grid of
//! configurations `--sweep` replays and its table.

mod report;
mod score;
mod sweep;

pub use report::{write_replay, write_scores, write_traces};
pub use score::{
    score_accounts, score_managers, AccountScore, DiverterOutcome, FalseAccusation, FirstAlert,
    GroundTruth, LabelledChurn, LabelledDiverter, LabelledManager, ManagerScore, StyleScore,
};
pub use sweep::{write_row, SweepError, SweepGrid};

use std::collections::BTreeMap;
use std::io::{self, BufRead};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread;

use crate::alert::Alert;
use crate::config::Config;
use crate::engine::account::AccountTrace;
use crate::engine::exchange::{Exchange, Route};
use crate::engine::manager::ManagerTrace;
use crate::engine::shard::Shard;
use crate::engine::source::Source;
use crate::engine::{Engine, EngineStats, Outcome};
use crate::event::{decode, DecodeError, DecodeLimits, Event, Id};
use crate::time::Timestamp;

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("cannot read the input at line {line}: {source}")]
    Read { line: u64, source: io::Error },
    #[error("cannot write an alert: {0}")]
    Write(io::Error),
    #[error("cannot write a trace: {0}")]
    WriteTrace(io::Error),
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
    on_alert: impl FnMut(&Alert) -> io::Result<()>,
) -> Result<BacktestReport, BacktestError> {
    replay_tracing(config, input, Traced::default(), on_alert, |_| Ok(()))
}

/// The managers and accounts [`replay_tracing`] traces.
#[derive(Clone, Copy, Debug, Default)]
pub struct Traced<'a> {
    pub managers: &'a [Id],
    pub accounts: &'a [Id],
}

/// One traced verdict: on a manager, or on an account.
#[derive(Clone, Debug, PartialEq)]
pub enum Trace {
    Manager(ManagerTrace),
    Account(AccountTrace),
}

impl Trace {
    /// One JSON object (an account's carries `account_id`).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Trace::Manager(trace) => trace.to_json(),
            Trace::Account(trace) => trace.to_json(),
        }
    }

    /// The verdict on a manager, if this is one.
    pub fn manager(&self) -> Option<&ManagerTrace> {
        match self {
            Trace::Manager(trace) => Some(trace),
            Trace::Account(_) => None,
        }
    }

    /// The judging of an account, if this is one.
    pub fn account(&self) -> Option<&AccountTrace> {
        match self {
            Trace::Account(trace) => Some(trace),
            Trace::Manager(_) => None,
        }
    }
}

/// [`replay`], calling `on_trace` with every verdict on the managers and
/// accounts `traced`, alerting or not (see [`ManagerTrace`] and
/// [`AccountTrace`]), each kind in evaluation order, as the stages hand
/// them over.
///
/// # Errors
///
/// As [`replay`], and `on_trace`'s.
pub fn replay_tracing(
    config: &Config,
    input: impl BufRead + Send,
    traced: Traced<'_>,
    mut on_alert: impl FnMut(&Alert) -> io::Result<()>,
    mut on_trace: impl FnMut(Trace) -> io::Result<()>,
) -> Result<BacktestReport, BacktestError> {
    let limits = Engine::decode_limits(config);
    let (sender, batches) = mpsc::sync_channel(BATCHES_AHEAD);
    let (to_managers, manager_inbox) = mpsc::sync_channel(EVALUATIONS_AHEAD);
    let (manager_results, from_managers) = mpsc::channel();
    thread::scope(|scope| {
        scope.spawn(move || read_and_decode(input, limits, sender));
        let managers = scope
            .spawn(move || judge_managers(config, traced.managers, manager_inbox, manager_results));
        let mut source = Source::new(config, 0, 1, 1);
        source.trace(traced.accounts.iter().cloned());
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
                source
                    .take_traces()
                    .into_iter()
                    .map(Trace::Account)
                    .try_for_each(&mut on_trace)
                    .map_err(BacktestError::WriteTrace)?;
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
                for (evaluated, alerts, traces) in from_managers.try_iter() {
                    pending.add(alerts);
                    traces
                        .into_iter()
                        .map(Trace::Manager)
                        .try_for_each(&mut on_trace)
                        .map_err(BacktestError::WriteTrace)?;
                    emit(pending.take_through(evaluated), &mut report)?;
                }
            }
        }
        drop(to_managers);
        let manager_state = managers
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        for (_, alerts, traces) in from_managers.try_iter() {
            pending.add(alerts);
            traces
                .into_iter()
                .map(Trace::Manager)
                .try_for_each(&mut on_trace)
                .map_err(BacktestError::WriteTrace)?;
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
/// evaluated, its transitions, and the traced managers' verdicts.
type ManagerResult = (Option<Timestamp>, Vec<Alert>, Vec<ManagerTrace>);

/// The manager stage's thread: evaluates each boundary once the account
/// stage's messages for it are in, until the account stage hangs up;
/// returns what the stage holds at the end.
fn judge_managers(
    config: &Config,
    traced: &[Id],
    inbox: Receiver<Vec<Exchange>>,
    results: Sender<ManagerResult>,
) -> EngineStats {
    let mut shard = Shard::new(config, 0, 1, 1);
    shard.trace(traced.iter().cloned());
    let mut out = Vec::new();
    for messages in inbox {
        for message in messages {
            shard.receive(message, &mut out);
        }
        let evaluated = (
            shard.evaluated(),
            std::mem::take(&mut out),
            shard.take_traces(),
        );
        if results.send(evaluated).is_err() {
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

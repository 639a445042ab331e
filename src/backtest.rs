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
    /// How the manager diverts (the simulator's `blatant`, `subtle`, …),
    /// when the labels say: the report then scores each style apart.
    #[serde(default)]
    pub style: Option<String>,
}

impl GroundTruth {
    /// # Errors
    ///
    /// [`BacktestError::Labels`] when the JSON does not have the fields above.
    pub fn parse(text: &str) -> Result<GroundTruth, BacktestError> {
        serde_json::from_str(text).map_err(|e| BacktestError::Labels(e.to_string()))
    }

    /// The end of the labelled span: `days` after `start`.
    fn end(&self) -> Timestamp {
        Timestamp::parse_rfc3339(&self.start).map_or(Timestamp(0), |s| s.plus(self.days * DAY))
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
    /// Every labelled diverter, in the labels' order, and what found them.
    pub outcomes: Vec<DiverterOutcome>,
    /// Every manager falsely accused, by id, with the alert that did it.
    pub false_accusations: Vec<FalseAccusation>,
}

/// One labelled diverter and the first manager-level alert firing on them
/// at or after their onset, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct DiverterOutcome {
    pub manager_id: String,
    pub style: Option<String>,
    pub onset: Timestamp,
    /// Days of data from the onset to the end of the labelled span: a
    /// diversion that began near the end had little time to show.
    pub days_observed: i64,
    pub found: Option<FirstAlert>,
}

impl DiverterOutcome {
    /// Days from the onset to the first alert.
    pub fn delay_days(&self) -> Option<f64> {
        self.found
            .as_ref()
            .map(|first| (first.at.0 - self.onset.0) as f64 / DAY as f64)
    }
}

/// A manager accused while not diverting (an honest manager, or a diverter
/// before their onset), and the first such alert.
#[derive(Clone, Debug, PartialEq)]
pub struct FalseAccusation {
    pub manager_id: String,
    pub first: FirstAlert,
}

/// The first firing alert of interest on a manager.
#[derive(Clone, Debug, PartialEq)]
pub struct FirstAlert {
    pub at: Timestamp,
    pub kind: AlertKind,
    pub summary: String,
}

impl FirstAlert {
    fn of(alert: &Alert) -> FirstAlert {
        FirstAlert {
            at: alert.detected_at,
            kind: alert.kind,
            summary: alert.summary.clone(),
        }
    }
}

/// The diverters of one style: how many, how many found, and the median
/// delay of those found.
#[derive(Clone, Debug, PartialEq)]
pub struct StyleScore {
    pub style: String,
    pub diverters: usize,
    pub detected: usize,
    pub median_delay_days: Option<f64>,
}

impl ManagerScore {
    /// The diverters scored by style, in style order; empty when the labels
    /// name no style.
    pub fn by_style(&self) -> Vec<StyleScore> {
        let mut styles: BTreeMap<&str, Vec<&DiverterOutcome>> = BTreeMap::new();
        for outcome in &self.outcomes {
            if let Some(style) = &outcome.style {
                styles.entry(style).or_default().push(outcome);
            }
        }
        styles
            .into_iter()
            .map(|(style, outcomes)| StyleScore {
                style: style.to_owned(),
                diverters: outcomes.len(),
                detected: outcomes.iter().filter(|o| o.found.is_some()).count(),
                median_delay_days: median(outcomes.iter().filter_map(|o| o.delay_days()).collect()),
            })
            .collect()
    }

    /// How many diverters each kind of alert found first, most first (then
    /// by name).
    pub fn found_first_by(&self) -> Vec<(AlertKind, usize)> {
        let mut counts: Vec<(AlertKind, usize)> = AlertKind::ALL
            .iter()
            .map(|kind| {
                let found = self
                    .outcomes
                    .iter()
                    .filter(|o| o.found.as_ref().is_some_and(|f| f.kind == *kind))
                    .count();
                (*kind, found)
            })
            .filter(|(_, found)| *found > 0)
            .collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_str().cmp(b.0.as_str())));
        counts
    }
}

/// The median of `values`, `None` when there are none.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[mid]),
        _ => Some((values[mid - 1] + values[mid]) / 2.0),
    }
}

/// Scores the firing manager-level transitions of a replay against labels.
pub fn score_managers(alerts: &[Alert], truth: &GroundTruth) -> ManagerScore {
    let onsets: BTreeMap<&str, Timestamp> = truth
        .diverters
        .iter()
        .filter_map(|d| Timestamp::parse_rfc3339(&d.onset).map(|t| (d.manager_id.as_str(), t)))
        .collect();
    let mut first_true: BTreeMap<&str, &Alert> = BTreeMap::new();
    let mut accused = BTreeSet::new();
    let mut falsely: BTreeMap<&str, &Alert> = BTreeMap::new();
    for alert in alerts {
        if alert.status != Status::Firing || alert.kind == AlertKind::AccountChurn {
            continue;
        }
        let manager = alert.manager_id.as_str();
        accused.insert(manager);
        match onsets.get(manager) {
            Some(onset) if alert.detected_at >= *onset => {
                first_true.entry(manager).or_insert(alert);
            }
            _ => {
                falsely.entry(manager).or_insert(alert);
            }
        }
    }
    let end = truth.end();
    let outcomes: Vec<DiverterOutcome> = truth
        .diverters
        .iter()
        .filter_map(|d| {
            let onset = *onsets.get(d.manager_id.as_str())?;
            Some(DiverterOutcome {
                manager_id: d.manager_id.clone(),
                style: d.style.clone(),
                onset,
                days_observed: (end.0 - onset.0).div_euclid(DAY),
                found: first_true
                    .get(d.manager_id.as_str())
                    .map(|alert| FirstAlert::of(alert)),
            })
        })
        .collect();
    let median_delay_days = median(
        first_true
            .iter()
            .map(|(m, alert)| (alert.detected_at.0 - onsets[m].0) as f64 / DAY as f64)
            .collect(),
    );
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
        outcomes,
        false_accusations: falsely
            .into_iter()
            .map(|(manager, alert)| FalseAccusation {
                manager_id: manager.to_owned(),
                first: FirstAlert::of(alert),
            })
            .collect(),
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
    let end = truth.end();
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

    /// A firing alert of `kind` on `manager`, `day` days into 2025.
    fn firing(kind: AlertKind, manager: &str, day: i64) -> Alert {
        let at = Timestamp::parse_rfc3339("2025-01-01T00:00:00Z")
            .expect("a time")
            .plus(day * DAY);
        Alert {
            alert_id: format!("{}/{manager}/{day}", kind.as_str()),
            status: Status::Firing,
            kind,
            severity: crate::alert::Severity::Warning,
            manager_id: manager.to_owned(),
            team: "north".to_owned(),
            account_id: (kind == AlertKind::AccountChurn).then(|| "acc-1".to_owned()),
            detected_at: at,
            window_start: at,
            window_end: at,
            observed: 0.0,
            expected: 0.0,
            test: crate::alert::StatTest::BinomialUpper {
                k: 5,
                n: 10,
                p: 0.1,
            },
            p_value: 1e-6,
            evidence: Vec::new(),
            summary: format!("{} on {manager}", kind.as_str()),
        }
    }

    #[test]
    fn each_diverter_is_scored_by_style_with_the_alert_that_found_them() {
        let truth = GroundTruth::parse(
            r#"{"start": "2025-01-01T00:00:00Z", "days": 300,
                "managers": [{"manager_id": "d1"}, {"manager_id": "d2"}, {"manager_id": "d3"},
                             {"manager_id": "h1"}, {"manager_id": "h2"}],
                "diverters": [
                    {"manager_id": "d1", "onset": "2025-03-02T00:00:00Z", "style": "blatant"},
                    {"manager_id": "d2", "onset": "2025-03-02T00:00:00Z", "style": "blatant"},
                    {"manager_id": "d3", "onset": "2025-09-28T00:00:00Z", "style": "subtle"}]}"#,
        )
        .unwrap();
        // Onsets on day 60 (d1, d2) and day 270 (d3).
        let alerts = [
            firing(AlertKind::BookChurn, "d1", 70),
            firing(AlertKind::DiversionRisk, "d1", 80),
            firing(AlertKind::WinRateDrop, "d2", 30),
            firing(AlertKind::DiversionRisk, "d2", 100),
            firing(AlertKind::CompetitorConcentration, "h1", 200),
            firing(AlertKind::AccountChurn, "h2", 50),
        ];
        let score = score_managers(&alerts, &truth);

        let found: Vec<(&str, Option<AlertKind>, Option<f64>, i64)> = score
            .outcomes
            .iter()
            .map(|o| {
                let kind = o.found.as_ref().map(|f| f.kind);
                (o.manager_id.as_str(), kind, o.delay_days(), o.days_observed)
            })
            .collect();
        assert_eq!(
            found,
            [
                ("d1", Some(AlertKind::BookChurn), Some(10.0), 240),
                ("d2", Some(AlertKind::DiversionRisk), Some(40.0), 240),
                ("d3", None, None, 30),
            ]
        );
        assert_eq!(score.median_delay_days, Some(25.0));
        assert_eq!(
            score.by_style(),
            [
                StyleScore {
                    style: "blatant".into(),
                    diverters: 2,
                    detected: 2,
                    median_delay_days: Some(25.0),
                },
                StyleScore {
                    style: "subtle".into(),
                    diverters: 1,
                    detected: 0,
                    median_delay_days: None,
                },
            ]
        );
        assert_eq!(
            score.found_first_by(),
            [(AlertKind::BookChurn, 1), (AlertKind::DiversionRisk, 1)]
        );
        // d2 was accused before the onset, h1 while honest; h2's account
        // alert accuses no manager.
        let accused: Vec<(&str, AlertKind, &str)> = score
            .false_accusations
            .iter()
            .map(|f| {
                (
                    f.manager_id.as_str(),
                    f.first.kind,
                    f.first.summary.as_str(),
                )
            })
            .collect();
        assert_eq!(
            accused,
            [
                ("d2", AlertKind::WinRateDrop, "win_rate_drop on d2"),
                (
                    "h1",
                    AlertKind::CompetitorConcentration,
                    "competitor_concentration on h1"
                ),
            ]
        );
        assert_eq!(score.falsely_accused, 2);
    }

    #[test]
    fn labels_without_styles_score_no_style() {
        let truth = GroundTruth::parse(
            r#"{"start": "2025-01-01T00:00:00Z", "days": 100, "managers": [{"manager_id": "d1"}],
                "diverters": [{"manager_id": "d1", "onset": "2025-02-01T00:00:00Z"}]}"#,
        )
        .unwrap();
        let score = score_managers(&[firing(AlertKind::BookChurn, "d1", 40)], &truth);
        assert_eq!(score.by_style(), []);
        assert_eq!(score.found_first_by(), [(AlertKind::BookChurn, 1)]);
        assert_eq!(score.outcomes[0].style, None);
    }
}

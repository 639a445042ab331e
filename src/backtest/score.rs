//! Scoring a replay's alerts against ground-truth labels (`simulate`'s
//! labels file): for manager-level alerts recall, precision, honest managers
//! falsely accused per 100 manager-years and the delay from onset to first
//! alert, by diversion style too; for account churn precision and recall.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::alert::{Alert, AlertKind, Status};
use crate::time::{Timestamp, DAY};

use super::BacktestError;

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
pub(super) mod tests {
    use super::*;

    /// A firing alert of `kind` on `manager`, `day` days into 2025.
    pub(in crate::backtest) fn firing(kind: AlertKind, manager: &str, day: i64) -> Alert {
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

    /// Five managers over 300 days of 2025, three of them diverting: two
    /// blatant from day 60, one subtle from day 270.
    pub(in crate::backtest) fn three_diverters() -> GroundTruth {
        GroundTruth::parse(
            r#"{"start": "2025-01-01T00:00:00Z", "days": 300,
                "managers": [{"manager_id": "d1"}, {"manager_id": "d2"}, {"manager_id": "d3"},
                             {"manager_id": "h1"}, {"manager_id": "h2"}],
                "diverters": [
                    {"manager_id": "d1", "onset": "2025-03-02T00:00:00Z", "style": "blatant"},
                    {"manager_id": "d2", "onset": "2025-03-02T00:00:00Z", "style": "blatant"},
                    {"manager_id": "d3", "onset": "2025-09-28T00:00:00Z", "style": "subtle"}]}"#,
        )
        .unwrap()
    }

    /// Alerts on [`three_diverters`]: d1 found by book churn 10 days after
    /// its onset, d2 by diversion risk after 40 but accused by win rate
    /// before its onset, d3 missed, the honest h1 accused, and an account of
    /// h2 churning (not an accusation).
    pub(in crate::backtest) fn their_alerts() -> Vec<Alert> {
        vec![
            firing(AlertKind::BookChurn, "d1", 70),
            firing(AlertKind::DiversionRisk, "d1", 80),
            firing(AlertKind::WinRateDrop, "d2", 30),
            firing(AlertKind::DiversionRisk, "d2", 100),
            firing(AlertKind::CompetitorConcentration, "h1", 200),
            firing(AlertKind::AccountChurn, "h2", 50),
        ]
    }

    #[test]
    fn each_diverter_is_scored_by_style_with_the_alert_that_found_them() {
        let truth = three_diverters();
        let alerts = their_alerts();
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

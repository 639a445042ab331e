//! One manager's verdict at each evaluation, for the people who tune
//! thresholds (`feidan backtest --trace MANAGER`): every detector that could
//! judge the manager, its p-value as its bar is applied to it (after the
//! correction for the windows or alternatives it tried), the bar, and its
//! sentence, whether or not anything fired. It answers "why was this
//! manager not flagged, and how close did it come?", which the alerts alone
//! cannot.
//!
//! Only the managers asked for are traced: the others cost nothing when no
//! one is, and a set lookup per evaluation when someone is.

use serde_json::{json, Value};

use crate::alert::{AlertKind, StatTest};
use crate::config::DetectConfig;
use crate::detect::Finding;
use crate::event::Id;
use crate::time::Timestamp;

use super::judge::Verdict;

/// One detector's finding about a traced manager.
#[derive(Clone, Debug, PartialEq)]
pub struct TracedFinding {
    pub kind: AlertKind,
    /// The p-value the bar is applied to: the test's, times the windows or
    /// alternatives tried (diversion risk: the combined p-value itself).
    pub p_value: f64,
    /// The detector's `alpha` for the manager's team.
    pub alpha: f64,
    /// Whether every condition to alert held (the p-value, the effect size,
    /// the samples); an alert also waits out `alerts.for` evaluations.
    pub alerting: bool,
    pub observed: f64,
    pub expected: f64,
    /// The test behind the p-value, with its own (uncorrected) p-value.
    pub test: StatTest,
    pub test_p_value: f64,
    pub summary: String,
}

/// A traced manager's findings at one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct ManagerTrace {
    pub manager_id: Id,
    pub team: Id,
    pub at: Timestamp,
    /// The detectors that had enough data to judge, in the order of
    /// `AlertKind::ALL`.
    pub findings: Vec<TracedFinding>,
}

impl ManagerTrace {
    pub(super) fn of(
        manager_id: &Id,
        team: &Id,
        at: Timestamp,
        verdict: &Verdict,
        detect: &DetectConfig,
    ) -> ManagerTrace {
        let judged = [
            (
                AlertKind::WinRateDrop,
                verdict.win.as_ref(),
                detect.win_rate.alpha,
            ),
            (
                AlertKind::PipelineLeakage,
                verdict.leak.as_ref(),
                detect.leakage.alpha,
            ),
            (
                AlertKind::BookChurn,
                verdict.churn.as_ref(),
                detect.book_churn.alpha,
            ),
            (
                AlertKind::CompetitorConcentration,
                verdict.rival.as_ref().map(|(finding, _)| finding),
                detect.competitor.alpha,
            ),
            (
                AlertKind::DiversionRisk,
                verdict.risk.as_ref(),
                detect.diversion_risk.alpha,
            ),
        ];
        let findings = judged
            .into_iter()
            .filter_map(|(kind, finding, alpha)| {
                finding.map(|f: &Finding| TracedFinding {
                    kind,
                    p_value: f.component_p,
                    alpha,
                    alerting: f.alerting,
                    observed: f.observed,
                    expected: f.expected,
                    test: f.test.clone(),
                    test_p_value: f.p_value,
                    summary: f.summary.text(),
                })
            })
            .collect();
        ManagerTrace {
            manager_id: manager_id.clone(),
            team: team.clone(),
            at,
            findings,
        }
    }

    /// One JSON object: the manager, the evaluation's time, and each
    /// finding with its test as an alert publishes it.
    pub fn to_json(&self) -> Value {
        let findings: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                json!({
                    "kind": f.kind.as_str(),
                    "p_value": f.p_value,
                    "alpha": f.alpha,
                    "alerting": f.alerting,
                    "observed": f.observed,
                    "expected": f.expected,
                    "test": f.test.to_json(f.test_p_value),
                    "summary": f.summary,
                })
            })
            .collect();
        json!({
            "manager_id": self.manager_id.as_str(),
            "team": self.team.as_str(),
            "at": self.at.to_string(),
            "findings": findings,
        })
    }
}

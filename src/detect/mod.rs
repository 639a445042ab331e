//! Detectors: plain functions from windowed statistics to a [`Finding`].
//! They see numbers, not events, state or time, and can be tested with
//! nothing else. One file per detector.

pub mod account_churn;
pub mod book_churn;
pub mod competitor;
pub mod diversion_risk;
pub mod leakage;
pub mod rate;
pub mod win_rate;

use crate::alert::{Severity, StatTest};

/// What a detector concluded about one subject at one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// Whether every condition to alert holds (p-value, effect size, sample).
    pub alerting: bool,
    /// Whether a firing alert should keep firing: a looser condition than
    /// `alerting` (hysteresis), so an alert does not flap on the threshold.
    pub holding: bool,
    pub observed: f64,
    pub expected: f64,
    pub test: StatTest,
    pub p_value: f64,
    /// The p-value this finding brings to diversion risk: `p_value` after
    /// any correction for the several tests behind it.
    pub component_p: f64,
    pub severity: Severity,
    /// One sentence stating observed and expected plainly.
    pub summary: String,
}

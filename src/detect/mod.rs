//! Detectors: plain functions from windowed statistics to a [`Finding`].
//! They see numbers, not events, state or time, and can be tested with
//! nothing else. One file per detector.

pub mod account_churn;
pub mod book_churn;
pub mod competitor;
pub mod diversion_risk;
pub mod leakage;
pub mod rate;
pub mod value_fall;
pub mod win_rate;

use std::fmt;
use std::sync::Arc;

use crate::alert::{Severity, StatTest};

/// A test parameter as an alert publishes it, to six decimals. The p-value
/// is computed from the rounded parameters, so that anyone recomputing it
/// from the alert gets the same number.
pub(crate) fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// As [`round6`], to four decimals (a silence's days, shape and scale).
pub(crate) fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// A finding's sentence, worded only when it is read. Every manager is
/// assessed at every evaluation, and almost no assessment becomes an alert:
/// formatting numbers for all of them was a tenth of the engine's time.
#[derive(Clone)]
pub struct Summary(Arc<dyn Fn() -> String + Send + Sync>);

impl Summary {
    pub fn new(words: impl Fn() -> String + Send + Sync + 'static) -> Summary {
        Summary(Arc::new(words))
    }

    pub fn text(&self) -> String {
        (self.0)()
    }
}

impl fmt::Debug for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text(), f)
    }
}

impl PartialEq for Summary {
    fn eq(&self, other: &Summary) -> bool {
        self.text() == other.text()
    }
}

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
    pub summary: Summary,
}

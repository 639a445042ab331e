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

use std::fmt;
use std::sync::Arc;

use crate::alert::{Severity, StatTest};

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

/// One of several tests a detector tries, whose p-value is computed only
/// when it can matter (see [`settle_the_least`]).
pub trait Tried {
    /// The test and its p-value once computed.
    fn test_and_p_value(&mut self) -> (&StatTest, &mut Option<f64>);
}

/// Computes the p-values needed to find the least of `tried`: a test whose
/// p-value is surely at least one half ([`StatTest::surely_at_least_one_half`])
/// cannot be the least while another is below one half, so its tail is
/// computed only when none is. The least is then the same as if every tail
/// were computed.
pub fn settle_the_least<T: Tried>(tried: &mut [T]) {
    let mut least = f64::INFINITY;
    for one in tried.iter_mut() {
        let (test, p_value) = one.test_and_p_value();
        if !test.surely_at_least_one_half() {
            least = least.min(*p_value.get_or_insert_with(|| test.p_value()));
        }
    }
    if least >= 0.5 {
        for one in tried.iter_mut() {
            let (test, p_value) = one.test_and_p_value();
            p_value.get_or_insert_with(|| test.p_value());
        }
    }
}

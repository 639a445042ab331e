//! A proportion against what was to be expected of this manager: the shared
//! core of the win-rate and leakage detectors.
//!
//! Expected rate:
//! 1. the manager's own history before the window, shrunk toward the team's
//!    historical rate with a weight of at most `prior_strength` deals, and no
//!    more than the team's history rests on (empirical Bayes: a new hire
//!    starts at the team's rate, a veteran at their own), and toward an even
//!    rate by two pseudo-deals, so that a short history with no team to lend
//!    one never makes a rate of 0 or 1 expected;
//! 2. moved by however much the rest of the team moved between its history
//!    and the same window, on the log-odds scale, so a market-wide change is
//!    not counted against one manager. The window's rate is shrunk toward
//!    the history's (two pseudo-deals at it), not toward an even rate: the
//!    window is shorter than the history, so the same pseudo-hit would
//!    weigh more in it, and a rare route seen in neither (a cut quote) would
//!    look like a team four times as prone to it, excusing the manager.
//!
//! Test: the beta-binomial tail in the direction of concern, with a + b the
//! weight of the baseline (capped): the expected rate is itself an estimate,
//! and a thin history must not make a confident accusation. Team figures
//! exclude the manager (leave-one-out), so a manager cannot drag their own
//! yardstick along.

use crate::alert::{Severity, StatTest};
use crate::engine::window::Tally;

use super::{round6, Finding, Summary};

/// However long a manager's history, a rate drifts over years, so the
/// baseline is never treated as exact.
const MAX_BASELINE_WEIGHT: f64 = 200.0;

/// Pseudo-deals at an even rate in every baseline (half hits, half
/// misses: a uniform prior). A manager whose own history is short and whose
/// team has none to lend, a team of one, is not believed never to leak or
/// always to win on a dozen deals: 0 leaks in 12 is an expected share of
/// 1 in 14, not of 0.
const BASELINE_PSEUDO: f64 = 2.0;

/// Which way is suspicious.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The rate fell (win rate).
    Drop,
    /// The rate rose (leakage).
    Rise,
}

/// Thresholds of one rate detector.
#[derive(Clone, Copy, Debug)]
pub struct RateParams {
    pub alpha: f64,
    pub resolve_alpha: f64,
    pub min_change: f64,
    pub min_sample: u64,
    pub prior_strength: f64,
    pub critical_p_value: f64,
}

/// The counts one evaluation needs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RateInputs {
    /// The manager, recent window.
    pub recent: Tally,
    /// The manager, history before the window.
    pub history: Tally,
    /// The rest of the team, same window.
    pub team_recent: Tally,
    /// The rest of the team, same history.
    pub team_history: Tally,
}

/// The numbers of one assessment, before a detector words them.
#[derive(Clone, Debug, PartialEq)]
pub struct RateAssessment {
    pub observed: f64,
    pub expected: f64,
    pub test: StatTest,
    pub p_value: f64,
    /// `p_value` corrected for the windows tried.
    pub component_p: f64,
    /// How far the rate moved in the suspicious direction.
    pub change: f64,
    pub alerting: bool,
    pub holding: bool,
    pub severity: Severity,
    /// The rest of the team's smoothed rate (history, recent) when it moved
    /// the expectation.
    pub team_shift: Option<(f64, f64)>,
}

/// Assesses one manager over several recent windows (inputs and length in
/// days; shortest first, each against the same history before the longest)
/// and keeps the most significant: a short window sees an abrupt change
/// soon, a long one a gradual change at all. Thresholds apply to the
/// p-value times the number of windows (Bonferroni). Returns the assessment
/// and the window's index; `None` when no window has the sample and
/// baseline to judge.
pub fn assess_windows(
    windows: &[(RateInputs, i64)],
    params: &RateParams,
    direction: Direction,
) -> Option<(RateAssessment, usize)> {
    let tests = windows.len() as f64;
    let (index, mut best) = windows
        .iter()
        .enumerate()
        .filter_map(|(i, (inputs, _))| assess(inputs, params, direction).map(|a| (i, a)))
        .min_by(|a, b| a.1.p_value.total_cmp(&b.1.p_value))?;
    let adjusted = (best.p_value * tests).min(1.0);
    best.component_p = adjusted;
    best.alerting = adjusted < params.alpha && best.change >= params.min_change;
    best.holding = adjusted < params.resolve_alpha && best.change >= params.min_change / 2.0;
    best.severity = Severity::for_p_value(adjusted, params.critical_p_value);
    Some((best, index))
}

/// Assesses one manager over one window; `None` when the sample or the
/// baseline is too small to judge.
pub fn assess(
    inputs: &RateInputs,
    params: &RateParams,
    direction: Direction,
) -> Option<RateAssessment> {
    let n = inputs.recent.total;
    if n < params.min_sample {
        return None;
    }
    let k = inputs.recent.hits;
    let observed = k as f64 / n as f64;

    let team_history_rate = smoothed(inputs.team_history, 0.5);
    let team_weight = params.prior_strength.min(inputs.team_history.total as f64);
    let weight = team_weight + inputs.history.total as f64;
    if weight < params.min_sample as f64 {
        // No baseline to speak of yet (a new team of new hires): no judgement.
        return None;
    }
    let baseline =
        (inputs.history.hits as f64 + team_weight * team_history_rate + BASELINE_PSEUDO / 2.0)
            / (weight + BASELINE_PSEUDO);

    let team_moved = inputs.team_recent.total >= params.min_sample
        && inputs.team_history.total >= params.min_sample;
    let team_recent_rate = smoothed(inputs.team_recent, team_history_rate);
    // Only a move of the team's that excuses the manager counts: a team's
    // downturn lowers the bar, but teammates on a lucky streak do not raise
    // it (their luck is not evidence against this manager).
    let shift = if team_moved {
        let shift = logit(team_recent_rate) - logit(team_history_rate);
        match direction {
            Direction::Drop => shift.min(0.0),
            Direction::Rise => shift.max(0.0),
        }
    } else {
        0.0
    };
    let expected = sigmoid(logit(baseline.clamp(1e-6, 1.0 - 1e-6)) + shift).clamp(1e-6, 1.0 - 1e-6);

    let strength = (weight + BASELINE_PSEUDO).min(MAX_BASELINE_WEIGHT);
    let (a, b) = (
        round6(expected * strength),
        round6((1.0 - expected) * strength),
    );
    let (test, change) = match direction {
        Direction::Drop => (StatTest::BetabinomLower { k, n, a, b }, expected - observed),
        Direction::Rise => (StatTest::BetabinomUpper { k, n, a, b }, observed - expected),
    };
    let p_value = test.p_value();
    Some(RateAssessment {
        observed,
        expected,
        component_p: p_value,
        change,
        alerting: p_value < params.alpha && change >= params.min_change,
        holding: p_value < params.resolve_alpha && change >= params.min_change / 2.0,
        severity: Severity::for_p_value(p_value, params.critical_p_value),
        test,
        p_value,
        team_shift: (shift != 0.0).then_some((team_history_rate, team_recent_rate)),
    })
}

/// Hits / total with two pseudo-deals at `prior`'s rate: at an even rate
/// (a pseudo-hit and a pseudo-miss), an empty or perfect record does not
/// give a rate of exactly 0 or 1; at the history's rate, no hits in a
/// window of any length is no higher a rate than the history's.
fn smoothed(counts: Tally, prior: f64) -> f64 {
    (counts.hits as f64 + 2.0 * prior) / (counts.total as f64 + 2.0)
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// A share as a manager reads it: whole percents, but one decimal under
/// 10%, where a rare route's move (cut quotes from 0.4% to 1.2%) would
/// otherwise read as none ("from 0% to 1%").
pub fn percent(share: f64) -> String {
    let percent = 100.0 * share;
    if percent < 9.95 {
        format!("{percent:.1}%")
    } else {
        format!("{percent:.0}%")
    }
}

/// What a detector's summary sentence needs: the chosen window's counts and
/// length, the assessment, and how the team moved (empty when it did not).
pub struct Wording<'a> {
    /// Which of the windows given was chosen.
    pub window: usize,
    pub inputs: &'a RateInputs,
    pub window_days: i64,
    pub assessment: &'a RateAssessment,
    pub team: &'a str,
    pub movement: String,
}

/// Assesses the `windows` (inputs and length in days) and words the result
/// with `summary`: the whole of a rate detector but its sentence. Returns
/// the finding and which window it chose.
pub fn finding(
    windows: &[(RateInputs, i64)],
    params: &RateParams,
    direction: Direction,
    team: &str,
    summary: impl Fn(&Wording<'_>) -> String + Send + Sync + 'static,
) -> Option<(Finding, usize)> {
    let (a, chosen) = assess_windows(windows, params, direction)?;
    let (chosen_inputs, window_days) = windows[chosen];
    let assessment = a.clone();
    // Inline for a team name of up to 24 bytes: no allocation per finding.
    let team = crate::event::Id::from(team);
    let summary = Summary::new(move || {
        let movement = match assessment.team_shift {
            Some((before, now)) => format!(
                ", adjusted for the rest of {team} moving from {} to {}",
                percent(before),
                percent(now)
            ),
            None => String::new(),
        };
        summary(&Wording {
            window: chosen,
            inputs: &chosen_inputs,
            window_days,
            assessment: &assessment,
            team: &team,
            movement,
        })
    });
    let finding = Finding {
        alerting: a.alerting,
        holding: a.holding,
        observed: a.observed,
        expected: a.expected,
        test: a.test,
        p_value: a.p_value,
        component_p: a.component_p,
        severity: a.severity,
        summary,
    };
    Some((finding, chosen))
}

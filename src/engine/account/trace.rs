//! One account's judging at each evaluation, for the people who tune
//! account churn (`feidan backtest --trace-account ACCOUNT`): its silence
//! against its rhythm, the p-value and the bar, whether it alerted and, if
//! not, what held it back; its fall in order value; and how it counted in
//! its owner's book. It answers "why did this customer not page?", which
//! the alerts alone cannot.
//!
//! Only the accounts asked for are traced: the others cost nothing when no
//! one is, and a set lookup per evaluation when someone is.

use serde_json::{json, Value};

use crate::detect::account_churn::OrderSilence;
use crate::event::Id;
use crate::time::Timestamp;

/// A traced account's silence, where its rhythm is learnt and the silence
/// is longer than its usual gap.
#[derive(Clone, Debug, PartialEq)]
pub struct TracedSilence {
    /// The silence as the alert judges it (the calibrated shape).
    pub silence: OrderSilence,
    /// The p-value an alert would carry (at the company's calibrated
    /// tail), and the bar it must be below.
    pub p_value: f64,
    pub bar: f64,
    /// The rhythm's own p-value, before the calibration.
    pub rhythm_p_value: f64,
    pub alerting: bool,
    /// The p-value book churn counts the account by (the rhythm's own).
    pub book_p_value: f64,
}

/// A traced account at one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct AccountTrace {
    pub account_id: Id,
    pub manager_id: Id,
    pub team: Id,
    pub at: Timestamp,
    /// Whether the rhythm is learnt (`churn.min_gaps`, `churn.min_history`).
    pub learnt: bool,
    /// `None` when not learnt, or within the usual gap and `min_silence`.
    pub silence: Option<TracedSilence>,
    /// The value-fall test's p-value, where the latest orders fell below
    /// `churn.value_fall_ratio` of the usual value.
    pub value_fall_p: Option<f64>,
    /// Whether book churn counts it as churning, and past how many of the
    /// visited bars (0: not counted as visited).
    pub churning: bool,
    pub visited_bars: usize,
    /// Why it is left out of its owner's book, if it is.
    pub left_out: Option<&'static str>,
}

impl AccountTrace {
    pub(super) fn new(
        account_id: &Id,
        manager_id: &str,
        team: &str,
        at: Timestamp,
    ) -> AccountTrace {
        AccountTrace {
            account_id: account_id.clone(),
            manager_id: manager_id.into(),
            team: team.into(),
            at,
            learnt: false,
            silence: None,
            value_fall_p: None,
            churning: false,
            visited_bars: 0,
            left_out: None,
        }
    }

    /// One JSON object: the account, its owner, the evaluation's time, and
    /// what judging it saw.
    pub fn to_json(&self) -> Value {
        let silence = self.silence.as_ref().map(|s| {
            json!({
                "elapsed_days": s.silence.elapsed_days,
                "business_days": s.silence.business_days,
                "mean_gap_days": s.silence.mean_gap,
                "shape": s.silence.shape,
                "longest_recent_gap_days": s.silence.longest_recent_gap,
                "visits_since_order": s.silence.visits_since,
                "p_value": s.p_value,
                "bar": s.bar,
                "rhythm_p_value": s.rhythm_p_value,
                "alerting": s.alerting,
                "book_p_value": s.book_p_value,
            })
        });
        json!({
            "account_id": self.account_id.as_str(),
            "manager_id": self.manager_id.as_str(),
            "team": self.team.as_str(),
            "at": self.at.to_string(),
            "learnt": self.learnt,
            "silence": silence,
            "value_fall_p": self.value_fall_p,
            "churning": self.churning,
            "visited_bars": self.visited_bars,
            "left_out_of_book": self.left_out,
        })
    }

    /// One line a person reads.
    pub fn to_line(&self) -> String {
        let mut line = self.at.date_string();
        match (&self.silence, self.learnt) {
            (_, false) => line.push_str("  rhythm not learnt yet"),
            (None, true) => line.push_str("  within its usual gap"),
            (Some(s), true) => {
                let o = &s.silence;
                line.push_str(&format!(
                    "  silent {:.0} d ({:.0} business), usual gap {:.0} d, shape {:.2}: p={:.2e} against {:.0e}",
                    o.elapsed_days, o.business_days, o.mean_gap, o.shape, s.p_value, s.bar
                ));
                if s.alerting {
                    line.push_str(" ALERTING");
                } else if s.p_value < s.bar && o.elapsed_days <= o.longest_recent_gap {
                    line.push_str(&format!(
                        " (not longer than its longest recent gap, {:.0} d)",
                        o.longest_recent_gap
                    ));
                } else if s.rhythm_p_value < s.bar {
                    line.push_str(&format!(
                        " (the rhythm alone: p={:.2e}; the company's returning customers were this late more often)",
                        s.rhythm_p_value
                    ));
                }
                if o.visits_since > 0 {
                    line.push_str(&format!("; {} activities since", o.visits_since));
                }
            }
        }
        if let Some(p) = self.value_fall_p {
            line.push_str(&format!("; value fall p={p:.2e}"));
        }
        if self.churning && self.left_out.is_none() {
            line.push_str("; churning in the book");
        }
        if self.visited_bars > 0 {
            line.push_str(&format!(
                "; visited while quiet, past {} bar(s)",
                self.visited_bars
            ));
        }
        if let Some(reason) = self.left_out {
            line.push_str(&format!("; not in the book ({reason})"));
        }
        line
    }
}

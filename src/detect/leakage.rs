//! Pipeline leakage (DESIGN §4): the share of a manager's deals leaving the
//! pipeline by leak routes — withdrawn, lost with `no_decision`, stalled
//! past `stall_after`, or cut by more than `cut_ratio` before closing — of all
//! deals leaving it, against their own history and their team
//! ([`super::rate`]), tested with the beta-binomial upper tail.

use crate::config::LeakageConfig;

use super::rate::{self, Direction, RateInputs, RateParams};
use super::Finding;

impl LeakageConfig {
    pub fn params(&self) -> RateParams {
        RateParams {
            alpha: self.alpha,
            resolve_alpha: self.resolve_alpha,
            min_change: self.min_rise,
            min_sample: self.min_exits,
            prior_strength: self.prior_strength,
            critical_p_value: self.critical_p_value,
        }
    }
}

/// Assesses one manager over the recent `windows` (inputs and length in
/// days; see [`rate::assess_windows`]). `recent.hits` are leaked deals, `recent.total`
/// every deal that left the pipeline.
pub fn assess(
    windows: &[(RateInputs, i64)],
    config: &LeakageConfig,
    team: &str,
) -> Option<Finding> {
    let inputs: Vec<RateInputs> = windows.iter().map(|(inputs, _)| *inputs).collect();
    let (a, chosen) = rate::assess_windows(&inputs, &config.params(), Direction::Rise)?;
    let (inputs, window_days) = (&windows[chosen].0, windows[chosen].1);
    let movement = match a.team_shift {
        Some((before, now)) => format!(
            ", adjusted for the rest of {team} moving from {:.0}% to {:.0}%",
            100.0 * before,
            100.0 * now
        ),
        None => String::new(),
    };
    let summary = format!(
        "{:.0}% of deals leaving the pipeline leaked ({} of {}: withdrawn, no decision, stalled or cut) over {window_days} days; expected {:.0}% from own history ({} of {} before) and {team}{movement}",
        100.0 * a.observed,
        inputs.recent.hits,
        inputs.recent.total,
        100.0 * a.expected,
        inputs.history.hits,
        inputs.history.total,
    );
    Some(Finding {
        alerting: a.alerting,
        holding: a.holding,
        observed: a.observed,
        expected: a.expected,
        test: a.test,
        p_value: a.p_value,
        component_p: a.component_p,
        severity: a.severity,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::StatTest;
    use crate::config::Config;
    use crate::engine::window::Tally;

    #[test]
    fn a_rise_in_leaks_alerts_with_the_upper_tail() {
        let config = Config::defaults().detect.leakage;
        let inputs = RateInputs {
            recent: Tally {
                hits: 18,
                total: 30,
            },
            history: Tally {
                hits: 15,
                total: 100,
            },
            team_recent: Tally {
                hits: 60,
                total: 400,
            },
            team_history: Tally {
                hits: 240,
                total: 1600,
            },
        };
        let finding = assess(&[(inputs, 90)], &config, "t").unwrap();
        assert!(finding.alerting, "{finding:?}");
        assert!(matches!(
            finding.test,
            StatTest::BetabinomUpper { k: 18, n: 30, .. }
        ));
        assert_eq!(finding.test.p_value(), finding.p_value);
    }
}

//! Pipeline leakage (DESIGN §4): the share of a manager's deals leaving the
//! pipeline by leak routes — withdrawn, lost with `no_decision`, stalled
//! past `stall_after`, or cut by more than `cut_ratio` before closing — of all
//! deals leaving it, against their own history and their team
//! ([`super::rate`]), tested with the beta-binomial upper tail; and the
//! share cut alone, the same way (see [`assess`]).

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

/// Assesses one manager over the recent windows (inputs and length in
/// days; see [`rate::assess_windows`]), twice: `leaks`, whose `hits` are
/// deals that leaked by any route of all that left the pipeline, and
/// `cuts`, whose `hits` are the deals among them whose quote was cut by
/// more than `cut_ratio`. A cut is the one route that is the manager's own
/// act on the deal, and honest books hold few, so a run of them stands out
/// where it would drown among the other routes. The threshold applies to
/// the p-value times every window of both (Bonferroni). Returns the finding
/// and whether it is about cuts.
pub fn assess(
    leaks: &[(RateInputs, i64)],
    cuts: &[(RateInputs, i64)],
    config: &LeakageConfig,
    team: &str,
) -> Option<(Finding, bool)> {
    let windows: Vec<(RateInputs, i64)> = leaks.iter().chain(cuts).copied().collect();
    let first_cut = leaks.len();
    let summary = move |w: &rate::Wording<'_>| {
        let (counted, routes) = if w.window >= first_cut {
            ("had their quote cut", "by more than the cut ratio")
        } else {
            ("leaked", "withdrawn, no decision, stalled or cut")
        };
        format!(
            "{:.0}% of deals leaving the pipeline {counted} ({} of {}: {routes}) over {} days; expected {} from own history ({} of {} before) and {}{}",
            100.0 * w.assessment.observed,
            w.inputs.recent.hits,
            w.inputs.recent.total,
            w.window_days,
            rate::percent(w.assessment.expected),
            w.inputs.history.hits,
            w.inputs.history.total,
            w.team,
            w.movement,
        )
    };
    let (finding, chosen) =
        rate::finding(&windows, &config.params(), Direction::Rise, team, summary)?;
    Some((finding, chosen >= first_cut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::StatTest;
    use crate::config::Config;
    use crate::engine::window::Tally;

    /// The finding of the leaks alone (no cut windows): never about cuts.
    fn leaks_only(windows: &[(RateInputs, i64)]) -> Finding {
        let config = Config::defaults().detect.leakage;
        let (finding, about_cuts) = assess(windows, &[], &config, "t").unwrap();
        assert!(!about_cuts);
        finding
    }

    #[test]
    fn a_rise_in_leaks_alerts_with_the_upper_tail() {
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
        let finding = leaks_only(&[(inputs, 90)]);
        assert!(finding.alerting, "{finding:?}");
        assert!(matches!(
            finding.test,
            StatTest::BetabinomUpper { k: 18, n: 30, .. }
        ));
        assert_eq!(finding.test.p_value(), finding.p_value);
    }

    fn tally(hits: u64, total: u64) -> Tally {
        Tally { hits, total }
    }

    /// The manager's recent window and history, and the team's.
    fn inputs(
        recent: Tally,
        history: Tally,
        team_recent: Tally,
        team_history: Tally,
    ) -> RateInputs {
        RateInputs {
            recent,
            history,
            team_recent,
            team_history,
        }
    }

    #[test]
    fn the_team_leaking_more_excuses_but_leaking_less_does_not_accuse() {
        let manager = inputs(
            tally(12, 30),
            tally(15, 100),
            tally(60, 400),
            tally(240, 1600),
        );
        // No recent team figures: the expectation from history alone.
        let alone = RateInputs {
            team_recent: tally(0, 0),
            ..manager
        };
        let alone = leaks_only(&[(alone, 90)]);
        // The whole team leaks four times as much: the market, not the manager.
        let market = RateInputs {
            team_recent: tally(240, 400),
            ..manager
        };
        let market = leaks_only(&[(market, 90)]);
        assert!(market.expected > 0.4 && !market.alerting, "{market:?}");
        // The rest of the team leaks a third as much as before: no reason to
        // expect less of this manager than their own history.
        let lucky = RateInputs {
            team_recent: tally(20, 400),
            ..manager
        };
        let lucky = leaks_only(&[(lucky, 90)]);
        assert!((lucky.expected - alone.expected).abs() < 1e-12, "{lucky:?}");
    }

    /// The finding on a manager with 7 of 30 deals cut in the window and
    /// none of 66 before, whose leaks are as usual, in a team that cut
    /// `team_recent` and `team_history` of its deals (90-day windows).
    fn cuts_finding(team_recent: Tally, team_history: Tally) -> Finding {
        let config = Config::defaults().detect.leakage;
        let leaks = inputs(
            tally(9, 30),
            tally(20, 66),
            tally(90, 300),
            tally(360, 1200),
        );
        let cuts = inputs(tally(7, 30), tally(0, 66), team_recent, team_history);
        let (finding, about_cuts) = assess(&[(leaks, 90)], &[(cuts, 90)], &config, "t").unwrap();
        assert!(about_cuts, "{finding:?}");
        finding
    }

    #[test]
    fn a_team_that_never_cuts_does_not_raise_the_bar() {
        // No cut in the rest of the team's 1,200 deals of history nor in its
        // 300 of the window: the team did not move, so the expectation is
        // the one from history alone: 0.64%, and 7 cuts of 30 at
        // p = 1.2e-6 for each of the two windows. (Smoothed toward an even
        // rate, the window's 1 in 302 against the history's 1 in 1,202 read
        // as a team four times as prone to cuts: 2.5% expected, p = 1.1e-4,
        // not alerting.)
        let still = cuts_finding(tally(0, 300), tally(0, 1200));
        let alone = cuts_finding(tally(0, 0), tally(0, 1200));
        assert!((still.expected - alone.expected).abs() < 1e-12, "{still:?}");
        assert!(
            still.alerting && still.summary.text().ends_with("and t"),
            "{still:?}"
        );
    }

    #[test]
    fn a_rare_route_moves_in_tenths_of_a_percent() {
        // The rest of the team began cutting quotes: 2 of 1,200 deals
        // before, 6 of 300 in the window. In whole percents that read
        // "from 0% to 2%", and the expectation it raised "6%".
        let summary = cuts_finding(tally(6, 300), tally(2, 1200)).summary.text();
        assert!(
            summary.ends_with(
                "expected 5.7% from own history (0 of 66 before) and t, adjusted for the rest of t moving from 0.2% to 2.0%"
            ),
            "{summary}"
        );
        assert_eq!(rate::percent(0.125), "12%");
        assert_eq!(rate::percent(0.0996), "10%");
    }

    #[test]
    fn a_team_of_one_with_a_spotless_short_history_is_not_expected_never_to_leak() {
        // Alone in the team, no leaks in 12 deals before, then 6 of 15: a
        // uniform prior expects 1 in 14 (scipy: betabinom.sf(5, 15, 1, 13)
        // = 0.0133), not certainty of none (which gave p = 7e-8).
        let alone = inputs(tally(6, 15), tally(0, 12), tally(0, 0), tally(0, 0));
        let finding = leaks_only(&[(alone, 30)]);
        assert!((finding.expected - 1.0 / 14.0).abs() < 1e-6, "{finding:?}");
        assert!((finding.p_value - 0.013285024).abs() < 1e-8, "{finding:?}");
        assert!(!finding.alerting && !finding.holding, "{finding:?}");
    }

    /// A manager whose deals leak a little more than usual, but whose quotes
    /// are now cut where they almost never were: the cuts drown among the
    /// leaks (12 of 30 against a quarter), and stand out alone (9 of 30
    /// against 1 in 100). The threshold carries both windows tried.
    #[test]
    fn cut_quotes_stand_out_where_they_drown_among_the_leaks() {
        let config = Config::defaults().detect.leakage;
        let leaks = inputs(
            tally(12, 30),
            tally(25, 100),
            tally(100, 400),
            tally(400, 1600),
        );
        let cuts = inputs(tally(9, 30), tally(1, 100), tally(4, 400), tally(16, 1600));
        let pooled = leaks_only(&[(leaks, 30)]);
        assert!(!pooled.alerting, "{pooled:?}");
        let (finding, about_cuts) = assess(&[(leaks, 30)], &[(cuts, 30)], &config, "t").unwrap();
        assert!(about_cuts && finding.alerting, "{finding:?}");
        assert!(matches!(
            finding.test,
            StatTest::BetabinomUpper { k: 9, n: 30, .. }
        ));
        assert!((finding.component_p - 2.0 * finding.p_value).abs() < 1e-15);
        let summary = finding.summary.text();
        assert!(
            summary.starts_with("30% of deals leaving the pipeline had their quote cut (9 of 30"),
            "{summary}"
        );
        // No cut among them: the leaks' own finding, held to both windows.
        let none = inputs(tally(0, 30), tally(1, 100), tally(4, 400), tally(16, 1600));
        let (finding, about_cuts) = assess(&[(leaks, 30)], &[(none, 30)], &config, "t").unwrap();
        assert!(!about_cuts);
        assert!((finding.component_p - 2.0 * pooled.p_value).abs() < 1e-15);
    }
}

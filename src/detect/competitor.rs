//! Competitor concentration (DESIGN §4): of a manager's losses that name a
//! competitor, the share going to one competitor, against that competitor's
//! share of the rest of the team's such losses (`binomial_upper`). Every
//! competitor is tested; the smallest p-value is reported and must clear
//! `alpha` divided by the number of competitors tested (Bonferroni).

use crate::alert::{Severity, StatTest};
use crate::config::CompetitorConfig;

use super::Finding;

/// One competitor's counts.
#[derive(Clone, Debug, PartialEq)]
pub struct CompetitorCounts {
    pub competitor: String,
    /// The manager's losses to this competitor in the window.
    pub losses: u64,
    /// The rest of the team's losses to it.
    pub team_losses: u64,
}

/// `named` is the manager's losses naming any competitor; `team_named` the
/// rest of the team's; `candidates` how many competitors the team's losses
/// name (the Bonferroni count: any of them could have been the one).
/// Returns the finding and the competitor it is about.
pub fn assess(
    counts: &[CompetitorCounts],
    named: u64,
    team_named: u64,
    candidates: usize,
    config: &CompetitorConfig,
    window_days: i64,
) -> Option<(Finding, String)> {
    if named < config.min_losses || counts.is_empty() {
        return None;
    }
    let tested = candidates.max(counts.len()) as f64;
    let mut best: Option<(f64, StatTest, &CompetitorCounts, f64)> = None;
    for c in counts {
        let share = (c.team_losses as f64 + 0.5) / (team_named as f64 + 1.0);
        let test = StatTest::BinomialUpper {
            k: c.losses,
            n: named,
            p: round6(share),
        };
        let p = test.p_value();
        if best.as_ref().is_none_or(|(bp, ..)| p < *bp) {
            best = Some((p, test, c, share));
        }
    }
    let (p_value, test, c, team_share) = best?;
    let share = c.losses as f64 / named as f64;
    let summary = format!(
        "{} of {named} losses naming a competitor went to {} ({:.0}%) over {window_days} days; the rest of the team loses {:.0}% of such deals to it",
        c.losses,
        c.competitor,
        100.0 * share,
        100.0 * team_share
    );
    let finding = Finding {
        alerting: p_value * tested < config.alpha && share - team_share >= config.min_excess,
        holding: p_value * tested < config.resolve_alpha,
        observed: share,
        expected: team_share,
        test,
        p_value,
        component_p: (p_value * tested).min(1.0),
        severity: if p_value * tested < config.critical_p_value {
            Severity::Critical
        } else {
            Severity::Warning
        },
        summary,
    };
    Some((finding, c.competitor.clone()))
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn counts(mine: &[u64], team: &[u64]) -> Vec<CompetitorCounts> {
        mine.iter()
            .zip(team)
            .enumerate()
            .map(|(i, (m, t))| CompetitorCounts {
                competitor: format!("c{i}"),
                losses: *m,
                team_losses: *t,
            })
            .collect()
    }

    #[test]
    fn one_competitor_taking_most_losses_alerts() {
        let config = Config::defaults().detect.competitor;
        let c = counts(&[14, 1, 1, 0, 0], &[40, 40, 40, 40, 40]);
        let (f, name) = assess(&c, 16, 200, 5, &config, 180).unwrap();
        assert!(f.alerting, "{f:?}");
        assert_eq!(name, "c0");
        let even = counts(&[4, 3, 3, 3, 3], &[40, 40, 40, 40, 40]);
        assert!(!assess(&even, 16, 200, 5, &config, 180).unwrap().0.alerting);
    }
}

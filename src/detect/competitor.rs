//! Competitor concentration (DESIGN §4): of a manager's losses that name a
//! competitor, the share going to one competitor, against that competitor's
//! usual share in the team: the mean of the teammates' own shares, without
//! the teammates most and least given to that rival, so that one busy or
//! diverting teammate cannot set everyone's yardstick and the mean is not
//! biased low; a share below an even split between the rivals is shrunk
//! toward it (a few teammates' losses say little). The usual share is an
//! estimate
//! from the teammates' losses, so the test is the beta-binomial upper tail
//! (`betabinom_upper`) weighted by how many losses it rests on. Every competitor is
//! tested; the smallest p-value is reported and must clear `alpha` divided by
//! the number of competitors the team's losses name (Bonferroni).

use crate::alert::{Severity, StatTest};
use crate::config::CompetitorConfig;

use super::{round6, Finding, Summary};

/// The most losses the team's share is weighted with: shares drift.
const MAX_WEIGHT: f64 = 200.0;

/// One competitor's counts.
#[derive(Clone, Debug, PartialEq)]
pub struct CompetitorCounts<'a> {
    pub competitor: &'a str,
    /// The manager's losses to this competitor in the window.
    pub losses: u64,
    /// Its usual share of the team's competitor-named losses (see the module).
    pub team_share: f64,
    /// How many of the teammates' losses that share rests on: the test's
    /// beta weight, so a share estimated from few losses accuses less.
    pub team_weight: f64,
}

/// `named` is the manager's losses naming any competitor; `candidates` how
/// many competitors the team's losses name (the Bonferroni count: any of
/// them could have been the one). Returns the finding and the competitor it
/// is about.
pub fn assess(
    counts: &[CompetitorCounts],
    named: u64,
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
        let share = c.team_share.clamp(0.01, 0.99);
        let weight = c.team_weight.clamp(2.0, MAX_WEIGHT);
        let test = StatTest::BetabinomUpper {
            k: c.losses,
            n: named,
            a: round6(share * weight),
            b: round6((1.0 - share) * weight),
        };
        let p = test.p_value();
        if best.as_ref().is_none_or(|(bp, ..)| p < *bp) {
            best = Some((p, test, c, share));
        }
    }
    let (p_value, test, c, team_share) = best?;
    let share = c.losses as f64 / named as f64;
    let (losses, competitor) = (c.losses, c.competitor.to_owned());
    let summary = Summary::new(move || {
        format!(
            "{losses} of {named} losses naming a competitor went to {competitor} ({:.0}%) over {window_days} days; teammates usually lose {:.0}% of such deals to it",
            100.0 * share,
            100.0 * team_share
        )
    });
    let finding = Finding {
        alerting: p_value * tested < config.alpha && share - team_share >= config.min_excess,
        holding: p_value * tested < config.resolve_alpha,
        observed: share,
        expected: team_share,
        test,
        p_value,
        component_p: (p_value * tested).min(1.0),
        severity: Severity::for_p_value(p_value * tested, config.critical_p_value),
        summary,
    };
    Some((finding, c.competitor.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const NAMES: [&str; 5] = ["c0", "c1", "c2", "c3", "c4"];

    fn counts(mine: &[u64], team: &[u64]) -> Vec<CompetitorCounts<'static>> {
        let total: u64 = team.iter().sum();
        mine.iter()
            .zip(team)
            .enumerate()
            .map(|(i, (m, t))| CompetitorCounts {
                competitor: NAMES[i],
                losses: *m,
                team_share: *t as f64 / total as f64,
                team_weight: total as f64,
            })
            .collect()
    }

    #[test]
    fn one_competitor_taking_most_losses_alerts() {
        let config = Config::defaults().detect.competitor;
        let c = counts(&[14, 1, 1, 0, 0], &[40, 40, 40, 40, 40]);
        let (f, name) = assess(&c, 16, 5, &config, 180).unwrap();
        assert!(f.alerting, "{f:?}");
        assert_eq!(name, "c0");
        let even = counts(&[4, 3, 3, 3, 3], &[40, 40, 40, 40, 40]);
        assert!(!assess(&even, 16, 5, &config, 180).unwrap().0.alerting);
    }
}

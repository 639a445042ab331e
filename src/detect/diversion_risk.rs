//! Diversion risk (DESIGN §4): a manager's component p-values combined with
//! Fisher's method, so several moderate signs page together when none alone
//! does. Only components that could be judged take part; at least
//! `min_components` of them must be below `component_p` — two weak signs are
//! not combined into an accusation by one strong one.

use crate::alert::{Severity, StatTest};
use crate::config::DiversionRiskConfig;
use crate::stats;

use super::{Finding, Summary};

/// One component's p-value and a few words on it.
#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    pub name: &'static str,
    pub p_value: f64,
    pub observed: f64,
    pub expected: f64,
}

pub fn assess(components: &[Component], config: &DiversionRiskConfig) -> Option<Finding> {
    if components.len() < 2 {
        return None;
    }
    let p_values: Vec<f64> = components.iter().map(|c| c.p_value).collect();
    let (statistic, p_value) = stats::fisher_combined(&p_values);
    let notable = components
        .iter()
        .filter(|c| c.p_value < config.component_p)
        .count() as u64;
    let named = components.to_vec();
    let summary = Summary::new(move || {
        let parts: Vec<String> = named
            .iter()
            .map(|c| {
                format!(
                    "{} {:.2} vs {:.2} expected (p={:.2e})",
                    c.name, c.observed, c.expected, c.p_value
                )
            })
            .collect();
        format!(
            "{} of {} signals point the same way (combined p={:.1e}): {}",
            notable,
            named.len(),
            p_value,
            parts.join("; ")
        )
    });
    Some(Finding {
        alerting: p_value < config.alpha && notable >= config.min_components,
        holding: p_value < config.resolve_alpha && notable >= 1,
        observed: statistic,
        expected: 2.0 * components.len() as f64,
        test: StatTest::FisherCombined { p_values },
        p_value,
        component_p: p_value,
        severity: Severity::for_p_value(p_value, config.critical_p_value),
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn c(name: &'static str, p: f64) -> Component {
        Component {
            name,
            p_value: p,
            observed: 0.0,
            expected: 0.0,
        }
    }

    #[test]
    fn moderate_signs_together_page() {
        let config = Config::defaults().detect.diversion_risk;
        let f = assess(
            &[
                c("win rate", 0.003),
                c("leakage", 0.002),
                c("book churn", 0.001),
            ],
            &config,
        )
        .unwrap();
        assert!(f.alerting, "{f:?}");
        assert_eq!(f.test.p_value(), f.p_value);
        let one_strong = assess(
            &[c("win rate", 1e-9), c("leakage", 0.6), c("book churn", 0.7)],
            &config,
        )
        .unwrap();
        assert!(
            !one_strong.alerting,
            "one strong sign is its own alert, not a combination"
        );
    }
}

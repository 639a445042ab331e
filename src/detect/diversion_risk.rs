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
                    "{} {} vs {} expected (p={:.2e})",
                    c.name,
                    readable(c.observed),
                    readable(c.expected),
                    c.p_value
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

/// A rate or share for the summary: two decimals, or as many as show its
/// first two digits when it is smaller (a company share of 0.00053 is not
/// "0.00": a manager reading the alert must see what they are held to).
fn readable(x: f64) -> String {
    let decimals = if x == 0.0 || !x.is_finite() || x.abs() >= 0.005 {
        2
    } else {
        ((-x.abs().log10()).ceil() as usize + 1).clamp(2, 8)
    };
    format!("{x:.decimals$}")
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

    #[test]
    fn small_shares_keep_their_first_digits_in_the_summary() {
        assert_eq!(readable(0.6), "0.60");
        assert_eq!(readable(0.0), "0.00");
        assert_eq!(readable(0.03), "0.03");
        assert_eq!(readable(0.00053), "0.00053");
        assert_eq!(readable(0.0041), "0.0041");
        let config = Config::defaults().detect.diversion_risk;
        let components = [
            Component {
                observed: 0.14,
                expected: 0.00053,
                ..c("book churn", 2.6e-4)
            },
            Component {
                observed: 0.10,
                expected: 0.46,
                ..c("win rate", 0.023)
            },
        ];
        let text = assess(&components, &config).unwrap().summary.text();
        assert!(
            text.ends_with("book churn 0.14 vs 0.00053 expected (p=2.60e-4); win rate 0.10 vs 0.46 expected (p=2.30e-2)"),
            "{text}"
        );
    }
}

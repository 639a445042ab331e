//! Book churn (DESIGN §4): how many of a manager's accounts are churning —
//! overdue on their order rhythm, sharply down in order value, or not
//! renewing — against what the company-wide churn rate predicts for a book
//! that size (`binomial_upper`). Accounts that stopped ordering while the
//! manager kept logging visits are tested the same way against the company
//! rate of such accounts; the stronger of the two tests is reported, and
//! must clear `alpha` / 2 (Bonferroni over the two).

use crate::alert::{Severity, StatTest};
use crate::config::BookChurnConfig;

use super::Finding;

/// One manager's book and the company around it (excluding the manager).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BookInputs {
    /// Accounts with a learnt order rhythm, not recently reassigned.
    pub judged: u64,
    pub churning: u64,
    /// Churning accounts the manager kept visiting.
    pub visited: u64,
    pub company_judged: u64,
    pub company_churning: u64,
    pub company_visited: u64,
}

pub fn assess(book: &BookInputs, config: &BookChurnConfig) -> Option<Finding> {
    if book.judged < config.min_accounts || book.churning < config.min_churning {
        return None;
    }
    // Half a pseudo-account so that a company without churn is not certainty.
    let rate = |k: u64, n: u64| (k as f64 + 0.5) / (n as f64 + 1.0);
    let churn_rate = rate(book.company_churning, book.company_judged);
    let visited_rate = rate(book.company_visited, book.company_judged);
    let all = StatTest::BinomialUpper {
        k: book.churning,
        n: book.judged,
        p: round6(churn_rate),
    };
    let visited = StatTest::BinomialUpper {
        k: book.visited,
        n: book.judged,
        p: round6(visited_rate),
    };
    let (p_all, p_visited) = (all.p_value(), visited.p_value());
    let (test, p_value, observed, expected) = if p_visited < p_all && book.visited > 0 {
        (visited, p_visited, book.visited, visited_rate)
    } else {
        (all, p_all, book.churning, churn_rate)
    };
    let share = observed as f64 / book.judged as f64;
    let summary = format!(
        "{} of {} accounts churning ({} of them still visited by the manager); a book this size would have {:.1} churning at the company's rate of {:.1}%{}",
        book.churning,
        book.judged,
        book.visited,
        churn_rate * book.judged as f64,
        100.0 * churn_rate,
        if book.visited > 0 {
            format!(", and {:.1} visited-but-silent at the company's {:.1}%", visited_rate * book.judged as f64, 100.0 * visited_rate)
        } else {
            String::new()
        }
    );
    let excess = share - expected >= config.min_excess;
    Some(Finding {
        alerting: 2.0 * p_value < config.alpha && excess,
        holding: 2.0 * p_value < config.resolve_alpha,
        observed: share,
        expected,
        test,
        p_value,
        severity: if p_value < config.critical_p_value {
            Severity::Critical
        } else {
            Severity::Warning
        },
        summary,
    })
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn a_book_churning_far_above_the_company_alerts() {
        let config = Config::defaults().detect.book_churn;
        let book = BookInputs {
            judged: 10,
            churning: 5,
            visited: 4,
            company_judged: 4000,
            company_churning: 80,
            company_visited: 8,
        };
        let f = assess(&book, &config).unwrap();
        assert!(f.alerting, "{f:?}");
        assert_eq!(f.test.p_value(), f.p_value);
        let ordinary = BookInputs {
            churning: 1,
            visited: 0,
            ..book
        };
        assert!(assess(&ordinary, &config).is_none_or(|f| !f.alerting));
    }
}

//! Book churn (DESIGN §4): is a manager losing their customers faster than
//! the company? Four tests, the strongest reported (Bonferroni over all):
//! 1. churning accounts — overdue on their rhythm, sharply down in order
//!    value, or not renewing — against what the churn share predicts for a
//!    book that size (`binomial_upper`);
//! 2. the same for accounts that stopped ordering while the manager kept
//!    logging visits, the strongest single sign of diversion;
//! 3. the same for accounts whose latest orders fell far below their usual
//!    value (*shrinking*);
//! 4. order volume: the book's orders over half, one and two order windows
//!    against the rest of the team's, each side expected from its accounts'
//!    rhythms — the classic conditional test of two Poisson rates
//!    (`binomial_lower`: k = the manager's orders, n = all orders, p = the
//!    manager's expected share). A company-wide lull or a team's slow season
//!    moves both sides alike and changes nothing.
//!
//! The shares of the first three are the company's, or the rest of the
//! team's where that is higher: a market that takes a team's customers, or
//! shrinks their orders, is not one manager's doing.

use crate::alert::{Severity, StatTest};
use crate::config::BookChurnConfig;

use super::{Finding, Summary};

/// One manager's book and the company and team around it (each excluding
/// the manager).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BookInputs {
    /// Accounts with a learnt order rhythm, not recently reassigned.
    pub judged: u64,
    pub churning: u64,
    /// Churning accounts the manager kept visiting.
    pub visited: u64,
    /// Churning accounts whose latest orders fell far below their usual value.
    pub shrinking: u64,
    pub company_judged: u64,
    pub company_churning: u64,
    pub company_visited: u64,
    pub company_shrinking: u64,
    /// The rest of the team's judged, churning, visited and shrinking
    /// accounts.
    pub team_judged: u64,
    pub team_churning: u64,
    pub team_visited: u64,
    pub team_shrinking: u64,
    /// Orders over half, one and two order windows, and expected ones.
    pub orders: [u64; 3],
    pub expected_orders: [f64; 3],
    pub team_orders: [u64; 3],
    pub team_expected_orders: [f64; 3],
}

/// Weight of the company's share in a team's, in accounts.
const TEAM_PRIOR: f64 = 50.0;

/// Tests behind one finding: three count tests and three order windows.
const TESTS: f64 = 6.0;

pub fn assess(book: &BookInputs, config: &BookChurnConfig) -> Option<Finding> {
    if book.judged < config.min_accounts {
        return None;
    }
    // Half a pseudo-account so that a company without churn is not certainty.
    let rate = |k: u64, n: u64| (k as f64 + 0.5) / (n as f64 + 1.0);
    // Each share is the company's, or the rest of the team's if higher (a
    // market that hits one team's customers is not one manager's doing),
    // the team's shrunk toward the company's by `TEAM_PRIOR` accounts: a
    // small team's few accounts say little.
    let share = |company: u64, team: u64| {
        let company = rate(company, book.company_judged);
        let team = (team as f64 + TEAM_PRIOR * company) / (book.team_judged as f64 + TEAM_PRIOR);
        company.max(team)
    };
    let churn_rate = share(book.company_churning, book.team_churning);
    let visited_rate = share(book.company_visited, book.team_visited);
    let shrinking_rate = share(book.company_shrinking, book.team_shrinking);
    let mut candidates: Vec<Candidate> = Vec::new();
    if book.churning >= config.min_churning {
        let counts = [
            (book.churning, churn_rate),
            (book.visited, visited_rate),
            (book.shrinking, shrinking_rate),
        ];
        for (k, rate) in counts {
            let share = k as f64 / book.judged as f64;
            candidates.push(Candidate::new(
                StatTest::BinomialUpper {
                    k,
                    n: book.judged,
                    p: round6(rate),
                },
                share,
                rate,
                k >= config.min_churning && share - rate >= config.min_excess,
            ));
        }
    }
    for i in 0..3 {
        let (own, rest) = (book.expected_orders[i], book.team_expected_orders[i]);
        let n = book.orders[i] + book.team_orders[i];
        if own < 1.0 || rest < 1.0 || n == 0 {
            continue;
        }
        let p = round6(own / (own + rest));
        let k = book.orders[i];
        // Orders this far below the rhythms' prediction, relative to the team.
        let shortfall = k as f64 / (n as f64 * p);
        candidates.push(Candidate::new(
            StatTest::BinomialLower { k, n, p },
            shortfall,
            1.0,
            shortfall <= 1.0 - 2.0 * config.min_excess,
        ));
    }
    let best = candidates
        .into_iter()
        .min_by(|a, b| a.p_value.total_cmp(&b.p_value))?;
    let adjusted = (best.p_value * TESTS).min(1.0);
    let (book, test, observed) = (*book, best.test.clone(), best.observed);
    let summary = Summary::new(move || {
        match test {
            StatTest::BinomialLower { k, .. } => {
                let i = (0..3).find(|i| book.orders[*i] == k).unwrap_or(1);
                format!(
                    "the book placed {k} orders where its accounts' rhythms predict {:.1} ({:.0}% of normal, against the rest of the team's pace); {} of {} accounts churning, {} of them still visited",
                    book.expected_orders[i],
                    100.0 * observed,
                    book.churning,
                    book.judged,
                    book.visited
                )
            }
            _ => format!(
                "{} of {} accounts churning ({} of them still visited by the manager, {} ordering far below their usual value); a book this size would have {:.1} churning at {:.1}%, {:.1} visited-but-silent at {:.1}% and {:.1} shrinking at {:.1}% (the company's shares, or the rest of the team's where higher)",
                book.churning,
                book.judged,
                book.visited,
                book.shrinking,
                churn_rate * book.judged as f64,
                100.0 * churn_rate,
                visited_rate * book.judged as f64,
                100.0 * visited_rate,
                shrinking_rate * book.judged as f64,
                100.0 * shrinking_rate
            ),
        }
    });
    Some(Finding {
        alerting: adjusted < config.alpha && best.effect,
        holding: adjusted < config.resolve_alpha,
        observed: best.observed,
        expected: best.expected,
        test: best.test,
        p_value: best.p_value,
        component_p: adjusted,
        severity: Severity::for_p_value(adjusted, config.critical_p_value),
        summary,
    })
}

struct Candidate {
    test: StatTest,
    p_value: f64,
    observed: f64,
    expected: f64,
    /// Whether the effect is large enough to matter, besides significant.
    effect: bool,
}

impl Candidate {
    fn new(test: StatTest, observed: f64, expected: f64, effect: bool) -> Candidate {
        Candidate {
            p_value: test.p_value(),
            test,
            observed,
            expected,
            effect,
        }
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn book() -> BookInputs {
        BookInputs {
            judged: 10,
            churning: 1,
            visited: 0,
            shrinking: 0,
            company_judged: 4000,
            company_churning: 80,
            company_visited: 8,
            company_shrinking: 12,
            team_judged: 70,
            team_churning: 1,
            team_visited: 0,
            team_shrinking: 1,
            orders: [8, 15, 30],
            expected_orders: [7.5, 15.0, 30.0],
            team_orders: [50, 100, 200],
            team_expected_orders: [50.0, 100.0, 200.0],
        }
    }

    #[test]
    fn a_book_churning_far_above_the_company_alerts() {
        let config = Config::defaults().detect.book_churn;
        let churning = BookInputs {
            churning: 5,
            visited: 4,
            ..book()
        };
        let f = assess(&churning, &config).unwrap();
        assert!(f.alerting, "{f:?}");
        assert_eq!(f.test.p_value(), f.p_value);
        assert!(!assess(&book(), &config).unwrap().alerting);
        // The rest of the team loses as many (a market hitting the team's
        // customers, who stop ordering and are visited all the same).
        let market = BookInputs {
            team_churning: 35,
            team_visited: 28,
            ..churning
        };
        let f = assess(&market, &config).unwrap();
        assert!(!f.alerting, "{f:?}");
    }

    #[test]
    fn orders_far_below_the_rhythms_alert_and_a_lull_does_not() {
        let config = Config::defaults().detect.book_churn;
        let silent = BookInputs {
            orders: [0, 1, 4],
            ..book()
        };
        let f = assess(&silent, &config).unwrap();
        assert!(f.alerting, "{f:?}");
        assert!(matches!(f.test, StatTest::BinomialLower { .. }));
        // Everyone orders half as much: the team comparison absorbs it.
        let lull = BookInputs {
            orders: [4, 7, 15],
            team_orders: [25, 50, 100],
            ..book()
        };
        assert!(!assess(&lull, &config).unwrap().alerting);
    }

    #[test]
    fn shrinking_accounts_are_judged_against_the_team_when_it_shrinks_more() {
        let config = Config::defaults().detect.book_churn;
        // 4 of 10 accounts ordering far below their usual value, where the
        // company has 0.3% such accounts and the rest of the team none of
        // 70 (0.13%, shrunk toward the company's): an alert, against the
        // higher.
        let shrinking = BookInputs {
            churning: 4,
            shrinking: 4,
            team_shrinking: 0,
            ..book()
        };
        let f = assess(&shrinking, &config).unwrap();
        assert!(f.alerting, "{f:?}");
        assert_eq!(
            f.test,
            StatTest::BinomialUpper {
                k: 4,
                n: 10,
                p: round6(12.5 / 4001.0)
            }
        );
        assert!(f
            .summary
            .text()
            .contains("4 ordering far below their usual value"));
        // The rest of the team shrinks as much (a market hitting the team's
        // customers): not this manager's doing.
        let market = BookInputs {
            team_shrinking: 20,
            ..shrinking
        };
        assert!(!assess(&market, &config).unwrap().alerting);
    }
}

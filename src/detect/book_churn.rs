//! Book churn (DESIGN §4): is a manager losing their customers faster than
//! the company? Four tests, the strongest reported (Bonferroni over all six
//! p-values):
//! 1. churning accounts — overdue on their rhythm, sharply down in order
//!    value, or not renewing — against what the churn share predicts for a
//!    book that size (`binomial_upper`);
//! 2. the same for accounts the manager kept visiting while they churn, or
//!    while they are silent past a looser bar than churn's
//!    (`churn.visited_alpha`, 0.1 against `churn.book_alpha`'s 0.01): an
//!    account that stops ordering while its manager keeps logging visits is
//!    the strongest single sign of diversion, and several at once in one
//!    book tell weeks before each is overdue alone. (With the churn bar
//!    alone, on 42 simulated worlds, diverters were found 4.5 to 9 days later
//!    on average, none fewer, and no honest manager was accused either way.)
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
//! shrinks their orders, or an office whose managers all keep calling on
//! quiet customers, is not one manager's doing.

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
    /// Accounts the manager kept visiting while they churn or are silent
    /// past `churn.visited_alpha`.
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

/// Which of a book's accounts an alert cites: the churning ones, or, when
/// the test reported counts the accounts the manager kept visiting, those
/// (churning or quiet). An alert claims nothing it did not test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cited {
    Churning,
    Visited,
}

/// The book's finding, and which of its accounts the finding's evidence
/// should be.
pub fn assess(book: &BookInputs, config: &BookChurnConfig) -> Option<(Finding, Cited)> {
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
    let rates = Rates {
        churning: share(book.company_churning, book.team_churning),
        visited: share(book.company_visited, book.team_visited),
        shrinking: share(book.company_shrinking, book.team_shrinking),
    };
    let count_test = |tested: Tested, k: u64, rate: f64| {
        let share = k as f64 / book.judged as f64;
        Candidate::new(
            tested,
            StatTest::BinomialUpper {
                k,
                n: book.judged,
                p: round6(rate),
            },
            share,
            rate,
            k >= config.min_churning && share - rate >= config.min_excess,
        )
    };
    let mut candidates: Vec<Candidate> = Vec::new();
    if book.churning >= config.min_churning {
        candidates.push(count_test(Tested::Churning, book.churning, rates.churning));
        candidates.push(count_test(
            Tested::Shrinking,
            book.shrinking,
            rates.shrinking,
        ));
    }
    // Visited accounts are counted at a looser bar than churning ones:
    // tested whether or not enough accounts churn.
    if book.visited >= config.min_churning {
        candidates.push(count_test(Tested::Visited, book.visited, rates.visited));
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
            Tested::Orders(i),
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
    let (book, tested, observed) = (*book, best.tested, best.observed);
    let summary = Summary::new(move || summary(&book, tested, observed, &rates));
    let finding = Finding {
        alerting: adjusted < config.alpha && best.effect,
        holding: adjusted < config.resolve_alpha,
        observed: best.observed,
        expected: best.expected,
        test: best.test,
        p_value: best.p_value,
        component_p: adjusted,
        severity: Severity::for_p_value(adjusted, config.critical_p_value),
        summary,
    };
    let cited = if tested == Tested::Visited {
        Cited::Visited
    } else {
        Cited::Churning
    };
    Some((finding, cited))
}

/// What a test counts: accounts of one sort, or the book's orders over
/// one of the three order windows.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Tested {
    Churning,
    Visited,
    Shrinking,
    Orders(usize),
}

/// The shares a book's counts are judged against.
#[derive(Clone, Copy, Debug)]
struct Rates {
    churning: f64,
    visited: f64,
    shrinking: f64,
}

/// The alert's sentence: the test chosen, in the manager's terms.
fn summary(book: &BookInputs, tested: Tested, observed: f64, rates: &Rates) -> String {
    let judged = book.judged as f64;
    match tested {
        Tested::Orders(i) => format!(
            "the book placed {} orders where its accounts' rhythms predict {:.1} ({:.0}% of normal, against the rest of the team's pace); {} of {} accounts churning, {} quiet or churning accounts still visited",
            book.orders[i],
            book.expected_orders[i],
            100.0 * observed,
            book.churning,
            book.judged,
            book.visited
        ),
        Tested::Visited => format!(
            "{} of {} accounts have gone quiet for longer than their order rhythm makes likely, or churned, while the manager kept visiting them ({} churning in all); a book this size would have {:.1} such accounts at {:.1}% (the company's share, or the rest of the team's where higher)",
            book.visited,
            book.judged,
            book.churning,
            rates.visited * judged,
            100.0 * rates.visited
        ),
        Tested::Churning | Tested::Shrinking => format!(
            "{} of {} accounts churning ({} ordering far below their usual value; {} quiet or churning accounts still visited by the manager); a book this size would have {:.1} churning at {:.1}%, {:.1} shrinking at {:.1}% and {:.1} visited while quiet at {:.1}% (the company's shares, or the rest of the team's where higher)",
            book.churning,
            book.judged,
            book.shrinking,
            book.visited,
            rates.churning * judged,
            100.0 * rates.churning,
            rates.shrinking * judged,
            100.0 * rates.shrinking,
            rates.visited * judged,
            100.0 * rates.visited
        ),
    }
}

struct Candidate {
    tested: Tested,
    test: StatTest,
    p_value: f64,
    observed: f64,
    expected: f64,
    /// Whether the effect is large enough to matter, besides significant.
    effect: bool,
}

impl Candidate {
    fn new(
        tested: Tested,
        test: StatTest,
        observed: f64,
        expected: f64,
        effect: bool,
    ) -> Candidate {
        Candidate {
            tested,
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

    /// The finding alone.
    fn assess(book: &BookInputs, config: &BookChurnConfig) -> Option<Finding> {
        super::assess(book, config).map(|(finding, _)| finding)
    }

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

    #[test]
    fn quiet_accounts_still_visited_alert_before_any_churns() {
        let config = Config::defaults().detect.book_churn;
        // 5 of 10 accounts quiet and visited, none churning yet, where the
        // company has 40 such of 4000 and the rest of the team 1 of 70: the
        // share judged against is the team's, shrunk toward the company's,
        // (1 + 50 · 40.5/4001) / 120 = 0.012551.
        let quiet = BookInputs {
            churning: 0,
            visited: 5,
            company_visited: 40,
            team_visited: 1,
            ..book()
        };
        let f = assess(&quiet, &config).unwrap();
        assert_eq!(
            f.test,
            StatTest::BinomialUpper {
                k: 5,
                n: 10,
                p: 0.012551
            }
        );
        // scipy.stats.binom.sf(4, 10, 0.012551), summed exactly in rational
        // arithmetic.
        let reference = 7.446_885_572_485_5e-8;
        assert!((f.p_value - reference).abs() < 1e-9 * reference, "{f:?}");
        assert!(f.alerting, "{f:?}");
        assert!(f
            .summary
            .text()
            .starts_with("5 of 10 accounts have gone quiet"));
        assert_eq!(super::assess(&quiet, &config).unwrap().1, Cited::Visited);
        // Two are not enough to page at these rates, and a team whose
        // managers all keep calling on quiet customers is the market.
        let few = BookInputs {
            visited: 2,
            ..quiet
        };
        assert!(!assess(&few, &config).unwrap().alerting);
        let market = BookInputs {
            team_visited: 25,
            ..quiet
        };
        assert!(!assess(&market, &config).unwrap().alerting);
    }
}

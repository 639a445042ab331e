//! Book churn (DESIGN §4): is a manager losing their customers faster than
//! the company? Four kinds of test, the strongest reported (Bonferroni over
//! every p-value computed, up to ten):
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
//!
//!    the visited and the shrinking accounts are also counted past tighter
//!    bars, each a tenth of the one before (`book_churn.tighter_bars`): four
//!    customers all but certainly gone while still visited say more than
//!    five merely late, and honest books hold far fewer such accounts;
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
use crate::config::{BookChurnConfig, ChurnConfig};

use super::{round6, Finding, Summary};

/// Most bars the visited and the shrinking accounts are counted past: the
/// loosest and `book_churn.tighter_bars` (at most two) tighter ones.
pub const BARS: usize = 3;

/// Counts of accounts past each bar, loosest first (so each count is at
/// most the one before).
pub type ByBar = [u64; BARS];

/// The bars of the visited and the shrinking counts: the silence (or value
/// fall) p-values below which an account counts, loosest first, each a
/// tenth of the one before.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bars {
    pub visited: [f64; BARS],
    pub shrinking: [f64; BARS],
}

impl Bars {
    /// From `churn.visited_alpha` and `churn.book_alpha`, the loosest bars.
    pub fn of(churn: &ChurnConfig) -> Bars {
        let ladder = |loosest: f64| std::array::from_fn(|i| loosest / 10f64.powi(i as i32));
        Bars {
            visited: ladder(churn.visited_alpha),
            shrinking: ladder(churn.book_alpha),
        }
    }

    /// How many of `bars` a p-value is below.
    pub fn passed(bars: &[f64; BARS], p_value: f64) -> usize {
        bars.iter().take_while(|bar| p_value < **bar).count()
    }
}

/// One manager's book and the company and team around it (each excluding
/// the manager).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BookInputs {
    /// Accounts with a learnt order rhythm, not recently reassigned.
    pub judged: u64,
    pub churning: u64,
    /// Accounts the manager kept visiting while they churn or are silent
    /// past `churn.visited_alpha`, and past each tighter bar.
    pub visited: ByBar,
    /// Churning accounts whose latest orders fell far below their usual
    /// value, past `churn.book_alpha` and each tighter bar.
    pub shrinking: ByBar,
    pub company_judged: u64,
    pub company_churning: u64,
    pub company_visited: ByBar,
    pub company_shrinking: ByBar,
    /// The rest of the team's judged, churning, visited and shrinking
    /// accounts.
    pub team_judged: u64,
    pub team_churning: u64,
    pub team_visited: ByBar,
    pub team_shrinking: ByBar,
    /// Orders over half, one and two order windows, and expected ones.
    pub orders: [u64; 3],
    pub expected_orders: [f64; 3],
    pub team_orders: [u64; 3],
    pub team_expected_orders: [f64; 3],
}

/// The share of `n` accounts that `k` of them make, with half a
/// pseudo-account so that a company without churn is not certainty.
pub fn share_of(k: u64, n: u64) -> f64 {
    (k as f64 + 0.5) / (n as f64 + 1.0)
}

/// Weight of the company's share in a team's, in accounts.
const TEAM_PRIOR: f64 = 50.0;

/// Which of a book's accounts an alert cites: the churning ones, or, when
/// the test reported counts the accounts the manager kept visiting, those
/// (churning or quiet) past the bar it counted at. An alert claims nothing
/// it did not test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cited {
    Churning,
    /// Visited accounts whose silence (or fall in value) is below this
    /// bar; `None` at the loosest, where churning ones count too.
    Visited(Option<f64>),
}

/// The book's finding, and which of its accounts the finding's evidence
/// should be.
pub fn assess(
    book: &BookInputs,
    bars: &Bars,
    config: &BookChurnConfig,
) -> Option<(Finding, Cited)> {
    if book.judged < config.min_accounts {
        return None;
    }
    // Each share is the company's, or the rest of the team's if higher (a
    // market that hits one team's customers is not one manager's doing),
    // the team's shrunk toward the company's by `TEAM_PRIOR` accounts: a
    // small team's few accounts say little.
    let share = |company: u64, team: u64| {
        let company = share_of(company, book.company_judged);
        let team = (team as f64 + TEAM_PRIOR * company) / (book.team_judged as f64 + TEAM_PRIOR);
        company.max(team)
    };
    let rates = Rates {
        churning: share(book.company_churning, book.team_churning),
        visited: std::array::from_fn(|i| share(book.company_visited[i], book.team_visited[i])),
        shrinking: std::array::from_fn(|i| {
            share(book.company_shrinking[i], book.team_shrinking[i])
        }),
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
    let counted = 1 + config.tighter_bars.min(BARS as u64 - 1) as usize;
    let mut candidates: Vec<Candidate> = Vec::new();
    if book.churning >= config.min_churning {
        candidates.push(count_test(Tested::Churning, book.churning, rates.churning));
        for i in 0..counted {
            let k = book.shrinking[i];
            candidates.push(count_test(Tested::Shrinking(i), k, rates.shrinking[i]));
        }
    }
    // Visited accounts are counted at a looser bar than churning ones:
    // tested whether or not enough accounts churn.
    for i in 0..counted {
        if book.visited[i] >= config.min_churning {
            let k = book.visited[i];
            candidates.push(count_test(Tested::Visited(i), k, rates.visited[i]));
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
    // Bonferroni over every test the book could have been given: the
    // churning count, the shrinking and visited counts at each bar counted,
    // and three order windows.
    let tests = (1 + 2 * counted + 3) as f64;
    let adjusted = (best.p_value * tests).min(1.0);
    let (book, tested, observed, bars) = (*book, best.tested, best.observed, *bars);
    let summary = Summary::new(move || summary(&book, tested, observed, &rates, &bars));
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
    let cited = match tested {
        Tested::Visited(0) => Cited::Visited(None),
        Tested::Visited(i) => Cited::Visited(Some(bars.visited[i])),
        _ => Cited::Churning,
    };
    Some((finding, cited))
}

/// What a test counts: accounts of one sort (past the bar of that index),
/// or the book's orders over one of the three order windows.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Tested {
    Churning,
    Visited(usize),
    Shrinking(usize),
    Orders(usize),
}

/// The shares a book's counts are judged against.
#[derive(Clone, Copy, Debug)]
struct Rates {
    churning: f64,
    visited: [f64; BARS],
    shrinking: [f64; BARS],
}

/// The alert's sentence: the test chosen, in the manager's terms.
fn summary(book: &BookInputs, tested: Tested, observed: f64, rates: &Rates, bars: &Bars) -> String {
    let judged = book.judged as f64;
    match tested {
        Tested::Orders(i) => format!(
            "the book placed {} orders where its accounts' rhythms predict {:.1} ({:.0}% of normal, against the rest of the team's pace); {} of {} accounts churning, {} quiet or churning accounts still visited",
            book.orders[i],
            book.expected_orders[i],
            100.0 * observed,
            book.churning,
            book.judged,
            book.visited[0]
        ),
        Tested::Visited(0) => format!(
            "{} of {} accounts have gone quiet for longer than their order rhythm makes likely, or churned, while the manager kept visiting them ({} churning in all); a book this size would have {:.1} such accounts at {:.1}% (the company's share, or the rest of the team's where higher)",
            book.visited[0],
            book.judged,
            book.churning,
            rates.visited[0] * judged,
            100.0 * rates.visited[0]
        ),
        Tested::Visited(i) => format!(
            "{} of {} accounts have gone quiet for far longer than their order rhythm makes likely (p < {}), or their orders fell as far, while the manager kept visiting them ({} churning in all); a book this size would have {:.2} such accounts at {:.2}% (the company's share, or the rest of the team's where higher)",
            book.visited[i],
            book.judged,
            bars.visited[i],
            book.churning,
            rates.visited[i] * judged,
            100.0 * rates.visited[i]
        ),
        Tested::Churning | Tested::Shrinking(_) => {
            let i = match tested {
                Tested::Shrinking(i) => i,
                _ => 0,
            };
            let bar = if i == 0 {
                String::new()
            } else {
                format!(", {} of them significantly so at p < {}", book.shrinking[i], bars.shrinking[i])
            };
            // Shares at a tighter bar are small: one more digit.
            let digits = 1 + usize::from(i > 0);
            format!(
                "{} of {} accounts churning ({} ordering far below their usual value{bar}; {} quiet or churning accounts still visited by the manager); a book this size would have {:.1} churning at {:.1}%, {:.digits$} shrinking at {:.digits$}% and {:.1} visited while quiet at {:.1}% (the company's shares, or the rest of the team's where higher)",
                book.churning,
                book.judged,
                book.shrinking[0],
                book.visited[0],
                rates.churning * judged,
                100.0 * rates.churning,
                rates.shrinking[i] * judged,
                100.0 * rates.shrinking[i],
                rates.visited[0] * judged,
                100.0 * rates.visited[0]
            )
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// The finding alone, at the default bars.
    fn assess(book: &BookInputs, config: &BookChurnConfig) -> Option<Finding> {
        judge(book, config).map(|(finding, _)| finding)
    }

    fn judge(book: &BookInputs, config: &BookChurnConfig) -> Option<(Finding, Cited)> {
        super::assess(book, &Bars::of(&Config::defaults().detect.churn), config)
    }

    /// The count test a finding should cite.
    fn upper_tail(k: u64, n: u64, p: f64) -> StatTest {
        StatTest::BinomialUpper { k, n, p }
    }

    /// A finding's p-value within a billionth of a reference.
    fn assert_close(f: &Finding, reference: f64) {
        assert!((f.p_value - reference).abs() < 1e-9 * reference, "{f:?}");
    }

    /// Counts past the loosest bar only.
    fn loosest(count: u64) -> ByBar {
        [count, 0, 0]
    }

    fn book() -> BookInputs {
        BookInputs {
            judged: 10,
            churning: 1,
            visited: loosest(0),
            shrinking: loosest(0),
            company_judged: 4000,
            company_churning: 80,
            company_visited: [8, 2, 1],
            company_shrinking: [12, 2, 0],
            team_judged: 70,
            team_churning: 1,
            team_visited: loosest(0),
            team_shrinking: loosest(1),
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
            visited: loosest(4),
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
            team_visited: loosest(28),
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
            shrinking: loosest(4),
            team_shrinking: loosest(0),
            ..book()
        };
        let f = assess(&shrinking, &config).unwrap();
        assert!(f.alerting, "{f:?}");
        assert_eq!(f.test, upper_tail(4, 10, round6(12.5 / 4001.0)));
        assert!(f
            .summary
            .text()
            .contains("4 ordering far below their usual value"));
        // The rest of the team shrinks as much (a market hitting the team's
        // customers): not this manager's doing.
        let market = BookInputs {
            team_shrinking: loosest(20),
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
            visited: loosest(5),
            company_visited: [40, 4, 1],
            team_visited: loosest(1),
            ..book()
        };
        let f = assess(&quiet, &config).unwrap();
        assert_eq!(f.test, upper_tail(5, 10, 0.012551));
        // scipy.stats.binom.sf(4, 10, 0.012551), summed exactly in rational
        // arithmetic.
        let reference = 7.446_885_572_485_5e-8;
        assert_close(&f, reference);
        assert!(f.alerting, "{f:?}");
        assert!(f
            .summary
            .text()
            .starts_with("5 of 10 accounts have gone quiet"));
        assert_eq!(judge(&quiet, &config).unwrap().1, Cited::Visited(None));
        // Two are not enough to page at these rates, and a team whose
        // managers all keep calling on quiet customers is the market.
        let few = BookInputs {
            visited: loosest(2),
            ..quiet
        };
        assert!(!assess(&few, &config).unwrap().alerting);
        let market = BookInputs {
            team_visited: loosest(25),
            ..quiet
        };
        assert!(!assess(&market, &config).unwrap().alerting);
    }

    #[test]
    fn accounts_far_past_a_tighter_bar_alert_where_the_loosest_does_not() {
        let config = Config::defaults().detect.book_churn;
        // 4 of 10 accounts visited while quiet, all four past p < 0.01,
        // where 3% of the company's accounts are so at the loosest bar and
        // 0.3% past the tighter one.
        let quiet = BookInputs {
            churning: 0,
            visited: [4, 4, 0],
            company_visited: [120, 12, 4],
            ..book()
        };
        let (f, cited) = judge(&quiet, &config).unwrap();
        assert_eq!(f.test, upper_tail(4, 10, 0.003124));
        // scipy.stats.binom.sf(3, 10, 0.003124), summed exactly in rational
        // arithmetic.
        let reference = 1.970_355_618_593_850_5e-8;
        assert_close(&f, reference);
        assert!(f.alerting, "{f:?}");
        // Bonferroni over ten tests: churning, three bars of shrinking and
        // of visited, three order windows.
        assert!((f.component_p - 10.0 * reference).abs() < 1e-9 * reference);
        assert_eq!(cited, Cited::Visited(Some(0.01)));
        assert!(f.summary.text().contains("(p < 0.01)"), "{f:?}");
        // At the loosest bar alone the same book is 4 of 10 against 3%:
        // 1.5e-4, not an alert.
        let loosest_only = BookChurnConfig {
            tighter_bars: 0,
            ..config.clone()
        };
        let f = assess(&quiet, &loosest_only).unwrap();
        assert!(!f.alerting, "{f:?}");
        // scipy.stats.binom.sf(3, 10, 0.030117), exactly as above.
        assert!(
            (f.p_value - 1.493_075_338_068_638e-4).abs() < 1e-15,
            "{f:?}"
        );
        assert!((f.component_p - 6.0 * f.p_value).abs() < 1e-12);
        // A company whose accounts are as often that far gone is the market.
        let market = BookInputs {
            company_visited: [400, 400, 200],
            ..quiet
        };
        assert!(!assess(&market, &config).unwrap().alerting);
    }
}

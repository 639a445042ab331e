//! The base rates book churn holds a book to (DESIGN §4): the company's
//! counts of judged, churning, visited and shrinking accounts, reckoned
//! without the books that stand out from them.
//!
//! A diverter's book is full of quiet accounts the manager keeps visiting.
//! Counted into the company's shares, a few diverters raise the bar every
//! book is held to and hide one another: on a simulated world of 80
//! managers, the company's share of accounts visited while silent past
//! p < 0.01 was 2–4% with the diverters' books, 0.3–0.9% without them.
//!
//! So a book whose counts are improbable under the company's shares
//! (binomial upper tail below `book_churn.outlier_p`, on at least
//! `book_churn.min_churning` accounts) is left out of the company's counts,
//! and the shares are reckoned again without it, until no other book stands
//! out (at most [`ROUNDS`] times). A book that stands out is still judged,
//! against the shares of the books that do not.
//!
//! A team's counts are reckoned the same way, but a book is left out of
//! them only when it stands out from the rest of its team: where a market
//! takes a whole team's customers, every book of it stands out from the
//! company, none from the others, and the team's share is what says it is
//! the market.
//!
//! An honest company loses little by it: a single account never makes a
//! book stand out, so the bulk of the honest churn stays counted, and the
//! books left out are the few in the far tail. The same books are left out
//! in one process and scaled out: every shard reckons from every manager's
//! counts (see [`super::exchange`]), and the sums are of integers.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::config::BookChurnConfig;
use crate::detect::book_churn::{share_of, ByBar, BARS};
use crate::event::Id;
use crate::stats;

use super::account::Book;
use super::Map;

/// Most times the shares are reckoned again without the books that stood
/// out: each round can only find books that stood out less.
pub const ROUNDS: usize = 4;

/// The accounts judged, churning, churning or quiet while visited, and
/// ordering far less than they used to, summed over books: over the
/// company's or a team's, the base rates book churn is judged against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookCounts {
    pub judged: u64,
    pub churning: u64,
    #[serde(deserialize_with = "count_or_by_bar")]
    pub visited: ByBar,
    #[serde(default, deserialize_with = "count_or_by_bar")]
    pub shrinking: ByBar,
}

impl<'a> std::iter::Sum<&'a BookCounts> for BookCounts {
    fn sum<I: Iterator<Item = &'a BookCounts>>(counts: I) -> BookCounts {
        let mut sum = BookCounts::default();
        for part in counts {
            sum.add(part);
        }
        sum
    }
}

/// Counts by bar as written, or one count as books and counts of earlier
/// versions held it (a shard's checkpoint may hold their parts): the
/// loosest bar's, the tighter ones counting none for that evaluation.
/// Read by a visitor of its own: serde's untagged enums buffer every value
/// first, and scaled out a shard reads these for every book of every part.
pub fn count_or_by_bar<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ByBar, D::Error> {
    use serde::de::{Error, IgnoredAny, SeqAccess, Visitor};
    struct CountOrByBar;
    impl<'de> Visitor<'de> for CountOrByBar {
        type Value = ByBar;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a count, or {BARS} counts by bar")
        }
        fn visit_u64<E: Error>(self, count: u64) -> Result<ByBar, E> {
            let mut counts = ByBar::default();
            counts[0] = count;
            Ok(counts)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByBar, A::Error> {
            let mut counts = ByBar::default();
            for (i, count) in counts.iter_mut().enumerate() {
                *count = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(i, &self))?;
            }
            if seq.next_element::<IgnoredAny>()?.is_some() {
                return Err(A::Error::invalid_length(BARS + 1, &self));
            }
            Ok(counts)
        }
    }
    d.deserialize_any(CountOrByBar)
}

impl BookCounts {
    pub fn of<'a>(books: impl IntoIterator<Item = &'a Book>) -> BookCounts {
        books.into_iter().map(|book| &book.counts).sum()
    }

    pub fn add(&mut self, other: &BookCounts) {
        self.judged += other.judged;
        self.churning += other.churning;
        for i in 0..BARS {
            self.visited[i] += other.visited[i];
            self.shrinking[i] += other.shrinking[i];
        }
    }

    /// These counts less `part`'s (never below zero).
    pub fn without(&self, part: &BookCounts) -> BookCounts {
        let less = |all: &ByBar, own: &ByBar| -> ByBar {
            std::array::from_fn(|i| all[i].saturating_sub(own[i]))
        };
        BookCounts {
            judged: self.judged.saturating_sub(part.judged),
            churning: self.churning.saturating_sub(part.churning),
            visited: less(&self.visited, &part.visited),
            shrinking: less(&self.shrinking, &part.shrinking),
        }
    }

    /// Whether any count `BookCounts::stands_out` tests is large enough to
    /// be tested at all: a book with none never stands out, whatever the
    /// company's shares.
    pub fn could_stand_out(&self, config: &BookChurnConfig) -> bool {
        self.tested().any(|k| k >= config.min_churning)
    }

    /// The counts a book is tested on for standing out: churning, then
    /// visited and shrinking at each bar.
    fn tested(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(&self.churning)
            .chain(&self.visited)
            .chain(&self.shrinking)
            .copied()
    }

    /// Whether a book with these counts stands out from the shares of
    /// `company` (as book churn reckons them): one of its counts, of at
    /// least `min_churning` accounts, has a binomial upper tail below
    /// `outlier_p`.
    fn stands_out(&self, company: &BookCounts, config: &BookChurnConfig) -> bool {
        let improbable = |k: u64, company_k: u64| {
            k >= config.min_churning
                && stats::binomial_upper(k, self.judged, share_of(company_k, company.judged))
                    < config.outlier_p
        };
        self.judged > 0
            && self
                .tested()
                .zip(company.tested())
                .any(|(k, company_k)| improbable(k, company_k))
    }
}

/// The company's counts without the books that stand out, and which books
/// those are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BaseRates {
    pub company: BookCounts,
    pub outliers: BTreeSet<Id>,
}

impl BaseRates {
    /// Reckons the base rates from every manager's counts (`company`, their
    /// sum).
    pub fn reckon(
        books: &Map<Id, BookCounts>,
        company: &BookCounts,
        config: &BookChurnConfig,
    ) -> BaseRates {
        let mut rates = BaseRates {
            company: *company,
            outliers: Default::default(),
        };
        for _ in 0..ROUNDS {
            let held_to = rates.company;
            let outliers: BTreeSet<Id> = books
                .iter()
                .filter(|(_, counts)| counts.stands_out(&held_to, config))
                .map(|(id, _)| id.clone())
                .collect();
            if outliers == rates.outliers {
                break;
            }
            rates.company = outliers
                .iter()
                .fold(*company, |left, id| left.without(&books[id]));
            rates.outliers = outliers;
        }
        rates
    }

    /// From every manager's whole book (one process).
    pub fn of_books(books: &Map<Id, Book>, config: &BookChurnConfig) -> BaseRates {
        let counts: Map<Id, BookCounts> = books
            .iter()
            .map(|(id, book)| (id.clone(), book.counts))
            .collect();
        let company = BookCounts::of(books.values());
        BaseRates::reckon(&counts, &company, config)
    }

    pub fn stands_out(&self, manager_id: &Id) -> bool {
        self.outliers.contains(manager_id)
    }
}

/// The books (of whole teams) that stand out from the rest of their
/// team, given each team's counts over all its books, in one round: a
/// team is a few books, and every one of them is held to all the others.
pub fn standing_out_in_teams<'a>(
    books: &'a Map<Id, Book>,
    team_counts: impl Fn(&str) -> BookCounts,
    config: &BookChurnConfig,
) -> BTreeSet<&'a Id> {
    books
        .iter()
        .filter(|(_, book)| {
            let rest = team_counts(&book.team).without(&book.counts);
            book.counts.stands_out(&rest, config)
        })
        .map(|(id, _)| id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A book of ten judged accounts with `visited` visited while quiet.
    fn book(visited: u64) -> BookCounts {
        BookCounts {
            judged: 10,
            visited: [visited, 0, 0],
            ..BookCounts::default()
        }
    }

    /// `honest` books of which `with_one` have one visited account, and
    /// the books given.
    fn company(
        honest: usize,
        with_one: usize,
        others: &[(&str, BookCounts)],
    ) -> Map<Id, BookCounts> {
        let mut books: Map<Id, BookCounts> = (0..honest)
            .map(|i| {
                (
                    Id::from(format!("kam-{i}").as_str()),
                    book(u64::from(i < with_one)),
                )
            })
            .collect();
        books.extend(others.iter().map(|(id, counts)| (Id::from(*id), *counts)));
        books
    }

    fn sum(books: &Map<Id, BookCounts>) -> BookCounts {
        books.values().sum()
    }

    fn reckon(books: &Map<Id, BookCounts>) -> BaseRates {
        BaseRates::reckon(books, &sum(books), &Config::defaults().detect.book_churn)
    }

    #[test]
    fn a_book_that_stands_out_is_left_out_of_the_company() {
        // 98 honest books, 20 of them with one quiet account still visited,
        // and a diverter with six of ten.
        let books = company(98, 20, &[("diverter", book(6))]);
        let rates = reckon(&books);
        assert_eq!(rates.outliers.iter().collect::<Vec<_>>(), ["diverter"]);
        assert_eq!(rates.company.judged, 980);
        assert_eq!(rates.company.visited, [20, 0, 0]);
        assert!(rates.stands_out(&Id::from("diverter")));
        assert!(!rates.stands_out(&Id::from("kam-0")));
    }

    #[test]
    fn a_single_account_never_makes_a_book_stand_out() {
        // One quiet account in a company with no other: improbable under a
        // share of half a pseudo-account, but one account is chance.
        let books = company(200, 1, &[]);
        let rates = reckon(&books);
        assert!(rates.outliers.is_empty());
        assert_eq!(rates.company.visited, [1, 0, 0]);
    }

    #[test]
    fn a_book_hidden_by_another_stands_out_once_that_one_is_left_out() {
        // Two of ten is within chance at the company's 2.9% (29 of 1000
        // accounts: P = 0.034) but not once the diverter's six are left out
        // (23 of 990, 2.3%: P = 0.022).
        let books = company(98, 21, &[("diverter", book(6)), ("hidden", book(2))]);
        let rates = reckon(&books);
        assert_eq!(
            rates.outliers.iter().collect::<Vec<_>>(),
            ["diverter", "hidden"]
        );
        assert_eq!(rates.company.visited, [21, 0, 0]);
        assert_eq!(rates.company.judged, 980);
        // Every count is a test: two of ten is chance at the loosest bar
        // where 4% of accounts are quiet and visited (P = 0.06), not past a
        // tighter one where none but these two are; and five churning of
        // ten is not chance either.
        let tight = BookCounts {
            judged: 10,
            visited: [2, 2, 2],
            ..BookCounts::default()
        };
        let churning = BookCounts {
            judged: 10,
            churning: 5,
            ..BookCounts::default()
        };
        let books = company(98, 40, &[("tight", tight), ("churning", churning)]);
        assert_eq!(
            reckon(&books).outliers.iter().collect::<Vec<_>>(),
            ["churning", "tight"]
        );
    }

    #[test]
    fn an_honest_company_keeps_nearly_all_of_its_churn() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        // A thousand honest books of ten, each account churning at 6% and
        // visited while quiet at 4%, independently: the books in the far
        // tail are left out, and with them a little of the shares.
        let mut rng = StdRng::seed_from_u64(7);
        let mut draw = |p: f64| (0..10).filter(|_| rng.gen_bool(p)).count() as u64;
        let books: Map<Id, BookCounts> = (0..1000)
            .map(|i| {
                let counts = BookCounts {
                    judged: 10,
                    churning: draw(0.06),
                    visited: [draw(0.04), 0, 0],
                    ..BookCounts::default()
                };
                (Id::from(format!("kam-{i}").as_str()), counts)
            })
            .collect();
        let total = sum(&books);
        let rates = reckon(&books);
        let share = |k: u64, counts: &BookCounts| k as f64 / counts.judged as f64;
        assert!(
            rates.outliers.len() < 30,
            "{} books left out",
            rates.outliers.len()
        );
        let kept = share(rates.company.churning, &rates.company) / share(total.churning, &total);
        assert!(kept > 0.9, "churning share kept {kept}");
        let kept =
            share(rates.company.visited[0], &rates.company) / share(total.visited[0], &total);
        assert!(kept > 0.9, "visited share kept {kept}");
    }

    #[test]
    fn in_a_team_only_a_book_apart_from_its_teammates_stands_out() {
        let config = Config::defaults().detect.book_churn;
        let team_of = |team: &str, visited: &[u64]| -> Vec<(Id, Book)> {
            visited
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let book = Book {
                        team: Id::from(team),
                        counts: book(*v),
                        ..Book::default()
                    };
                    (Id::from(format!("{team}-{i}").as_str()), book)
                })
                .collect()
        };
        // East: a market took half of every book's customers, who are still
        // visited; west: one manager's book is half gone among teammates who
        // lose none or one.
        let mut books: Map<Id, Book> = Map::default();
        books.extend(team_of("east", &[5, 4, 6, 5, 5, 4, 6, 5]));
        books.extend(team_of("west", &[5, 0, 1, 0, 0, 1, 0, 0]));
        // The rest of the company: 80 books, ten of them with one.
        let north: Vec<u64> = (0..80).map(|i| u64::from(i % 8 == 0)).collect();
        books.extend(team_of("north", &north));
        let team_counts = |team: &str| {
            books
                .values()
                .filter(|book| book.team.as_str() == team)
                .map(|book| &book.counts)
                .sum()
        };
        let out: Vec<&str> = standing_out_in_teams(&books, team_counts, &config)
            .into_iter()
            .map(|id| id.as_str())
            .collect();
        assert_eq!(out, ["west-0"]);
        // From the company, every book of the east stands out.
        let counts: Map<Id, BookCounts> = books
            .iter()
            .map(|(id, book)| (id.clone(), book.counts))
            .collect();
        let rates = reckon(&counts);
        assert!((0..8).all(|i| rates.stands_out(&Id::from(format!("east-{i}").as_str()))));
        assert!(rates.stands_out(&Id::from("west-0")));
        assert_eq!(rates.outliers.len(), 9);
        assert_eq!(rates.company.visited, [12, 0, 0]);
        assert_eq!(rates.company.judged, 870);
    }

    #[test]
    fn counts_of_earlier_versions_read_as_the_loosest_bars() {
        #[derive(Serialize)]
        struct Earlier {
            judged: u64,
            churning: u64,
            visited: u64,
        }
        let bytes = rmp_serde::to_vec_named(&Earlier {
            judged: 10,
            churning: 2,
            visited: 3,
        })
        .unwrap();
        let counts: BookCounts = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            counts,
            BookCounts {
                judged: 10,
                churning: 2,
                visited: [3, 0, 0],
                shrinking: [0, 0, 0],
            }
        );
        let now = rmp_serde::to_vec_named(&counts).unwrap();
        assert_eq!(rmp_serde::from_slice::<BookCounts>(&now).unwrap(), counts);
        // Neither a count of another kind nor too many bars reads.
        #[derive(Serialize)]
        struct Wrong<T> {
            judged: u64,
            churning: u64,
            visited: T,
        }
        let text = rmp_serde::to_vec_named(&Wrong {
            judged: 1,
            churning: 0,
            visited: "three",
        })
        .unwrap();
        assert!(rmp_serde::from_slice::<BookCounts>(&text).is_err());
        let four = rmp_serde::to_vec_named(&Wrong {
            judged: 1,
            churning: 0,
            visited: [1u64, 2, 3, 4],
        })
        .unwrap();
        assert!(rmp_serde::from_slice::<BookCounts>(&four).is_err());
    }
}

//! A manager's book as the account stage reports it to the manager stage
//! at each evaluation: its accounts' churn counts, the churning accounts
//! cited, and its order volume.

use std::collections::hash_map::Entry;

use serde::{Deserialize, Serialize};

use crate::detect::book_churn::ByBar;
use crate::event::Id;
use crate::time::Timestamp;

use crate::engine::base_rates::BookCounts;
use crate::engine::fact::EvidenceRef;
use crate::engine::Map;

use super::Name;

/// One manager's book as the account stage sees it at an evaluation.
/// Written with its counts' fields beside the others, as before the counts
/// were a type of their own (see `BookWire`).
#[derive(Debug, Default, Clone)]
pub struct Book {
    pub team: Id,
    /// Accounts with a learnt rhythm, not recently reassigned; churning;
    /// kept visited while they churn, or while their silence is past
    /// `churn.visited_alpha` (not churning yet), and past each tighter bar
    /// ([`Bars`](crate::detect::book_churn::Bars)); churning with their latest orders far below their usual
    /// value, past `churn.book_alpha` and each tighter bar.
    pub counts: BookCounts,
    /// The churning and the visited accounts, for evidence.
    pub churning_accounts: Vec<ChurningAccount>,
    /// Orders placed by the judged accounts over the order windows
    /// (half, one and two `order_window`s back from the evaluation) ...
    pub orders: [u64; 3],
    /// ... and how many their rhythms would have placed.
    pub expected_orders: [ExpectedOrders; 3],
    /// The latest activity logged on the judged accounts since their last
    /// orders: whether the manager is at work (see `presence`).
    pub last_activity: Option<Timestamp>,
}

/// A book as written: the counts' fields inline. Spelt out rather than
/// `#[serde(flatten)]`, which makes serde buffer every field of every book
/// before reading it (scaled out, a shard reads every source's part of
/// every book at every evaluation).
#[derive(Serialize, Deserialize)]
pub(super) struct BookWire<T, A> {
    pub(super) team: T,
    pub(super) judged: u64,
    pub(super) churning: u64,
    #[serde(deserialize_with = "crate::engine::base_rates::count_or_by_bar")]
    pub(super) visited: ByBar,
    #[serde(
        default,
        deserialize_with = "crate::engine::base_rates::count_or_by_bar"
    )]
    pub(super) shrinking: ByBar,
    pub(super) churning_accounts: A,
    pub(super) orders: [u64; 3],
    pub(super) expected_orders: [ExpectedOrders; 3],
    /// Absent from books of before 2026-11-30.
    #[serde(default)]
    pub(super) last_activity: Option<Timestamp>,
}

impl Serialize for Book {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        BookWire {
            team: &self.team,
            judged: self.counts.judged,
            churning: self.counts.churning,
            visited: self.counts.visited,
            shrinking: self.counts.shrinking,
            churning_accounts: &self.churning_accounts,
            orders: self.orders,
            expected_orders: self.expected_orders,
            last_activity: self.last_activity,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Book {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Book, D::Error> {
        let wire = BookWire::<Id, Vec<ChurningAccount>>::deserialize(deserializer)?;
        Ok(Book {
            team: wire.team,
            counts: BookCounts {
                judged: wire.judged,
                churning: wire.churning,
                visited: wire.visited,
                shrinking: wire.shrinking,
            },
            churning_accounts: wire.churning_accounts,
            orders: wire.orders,
            expected_orders: wire.expected_orders,
            last_activity: wire.last_activity,
        })
    }
}

impl Book {
    /// Adds the part of a book another account stage holds (scaled out, a
    /// manager's accounts are spread over the input partitions). Every sum
    /// is exact, so the parts give the book one stage would have given.
    pub fn merge(&mut self, part: Book) {
        self.counts.add(&part.counts);
        self.churning_accounts.extend(part.churning_accounts);
        for i in 0..3 {
            self.orders[i] += part.orders[i];
            self.expected_orders[i] += part.expected_orders[i];
        }
        self.last_activity = self.last_activity.max(part.last_activity);
    }
}

/// A number of orders expected, summed exactly: in units of 2⁻²⁴ order, so
/// that a sum over accounts is the same in whatever order they are added,
/// in one process or gathered from several (DESIGN §7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExpectedOrders(u64);

impl ExpectedOrders {
    pub(super) const UNIT: f64 = (1u64 << 24) as f64;

    pub fn of(orders: f64) -> ExpectedOrders {
        // Rounded half up by truncation: `f64::round` is a call into libm
        // on baseline x86-64, made for every judged account at every
        // evaluation.
        ExpectedOrders((orders.max(0.0) * Self::UNIT + 0.5) as u64)
    }

    pub fn get(self) -> f64 {
        self.0 as f64 / Self::UNIT
    }

    /// What is left of `self` without `part` (never below zero).
    pub fn without(self, part: ExpectedOrders) -> ExpectedOrders {
        ExpectedOrders(self.0.saturating_sub(part.0))
    }
}

impl std::ops::AddAssign for ExpectedOrders {
    fn add_assign(&mut self, other: ExpectedOrders) {
        self.0 += other.0;
    }
}

pub(super) fn churning_by_default() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChurningAccount {
    pub account_id: Id,
    /// The stronger of its silence and its fall in order value.
    pub p_value: f64,
    pub visited: bool,
    /// Whether it churns (else it is listed as quiet and visited). Books
    /// of older versions listed churning accounts only.
    #[serde(default = "churning_by_default")]
    pub churning: bool,
    /// The last order, the latest visits, a lapsed contract.
    pub evidence: Vec<EvidenceRef>,
}

/// The books gathered in one evaluation, found by the address of the
/// interned manager id: every account of a manager holds the same `Arc`
/// (see [`Names`]), so finding the book hashes a pointer, not the id. The
/// table holds only where each book is in `books`: a few bytes a manager,
/// so it stays in the caches while the accounts are judged, where a table
/// of the books themselves (two hundred bytes each) did not.
#[derive(Default)]
pub(super) struct BooksByManager {
    at: Map<usize, u32>,
    books: Vec<(Name, Book)>,
}

impl BooksByManager {
    pub(super) fn of(&mut self, manager_id: &Name, team: &str) -> &mut Book {
        let next = self.books.len() as u32;
        let index = *self.at.entry(manager_id.address()).or_insert(next);
        if index == next {
            let book = Book {
                team: Id::from(team),
                ..Book::default()
            };
            self.books.push((manager_id.clone(), book));
        }
        &mut self.books[index as usize].1
    }

    pub(super) fn is_empty(&self) -> bool {
        self.books.is_empty()
    }

    /// Adds the books another thread gathered.
    pub(super) fn merge(&mut self, other: BooksByManager) {
        for (manager_id, part) in other.books {
            let next = self.books.len() as u32;
            match self.at.entry(manager_id.address()) {
                Entry::Occupied(held) => self.books[*held.get() as usize].1.merge(part),
                Entry::Vacant(free) => {
                    free.insert(next);
                    self.books.push((manager_id, part));
                }
            }
        }
    }

    pub(super) fn by_id(self) -> Map<Id, Book> {
        self.books
            .into_iter()
            .map(|(manager_id, book)| (Id::from(&*manager_id), book))
            .collect()
    }
}

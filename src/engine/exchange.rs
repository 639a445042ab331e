//! What the stages tell each other when feidan is scaled out (DESIGN §1,
//! §7): the messages between the account stages of the input partitions
//! ([`Source`](super::source::Source)s) and the manager stages of the facts
//! partitions ([`Shard`](super::shard::Shard)s), and where each goes.
//!
//! An evaluation at a boundary is a barrier in two rounds, so that a
//! scaled-out feidan raises exactly the alerts one process would:
//!
//! 1. Every source shares its orders before its next boundary once its
//!    watermark passes it ([`Exchange::Pace`], to every source), with the
//!    orders its accounts still ordering expected at its last evaluation:
//!    business time runs at the whole company's pace, and each source
//!    holds only part of the company. A source judges its accounts at a
//!    boundary once it has every source's share for it.
//! 2. Every source then sends each shard the facts of its teams, the
//!    stalled deals and the parts of their managers' books
//!    ([`Exchange::Part`]), and an [`Exchange::End`] with its company-wide
//!    counts.
//! 3. A shard with every source's end and every part before it sends every
//!    other shard the whole counts of its books that could stand out from
//!    the company ([`Exchange::Standing`]), and evaluates its managers once
//!    it has every other shard's: the base rates leave out the books one
//!    process would. (Until 2026-11-30 every source sent every shard the
//!    counts of every other shard's book, many times the bytes.)
//!
//! Before the first boundary the sources agree on it ([`Exchange::Start`]):
//! the earliest any of them proposes.
//!
//! Every message names its source and boundary, so one received twice (a
//! source replaying input after a restart sends the same messages again)
//! changes nothing. Payloads are MessagePack with named fields.

use serde::{Deserialize, Serialize};

use crate::event::Id;
use crate::time::Timestamp;

use super::account::{Book, ExpectedOrders};
use super::base_rates::BookCounts;
use super::calibration::TailCounts;
use super::fact::Fact;
use crate::detect::book_churn::ByBar;

/// Facts per [`Exchange::Part`], books per part and books' counts per
/// part: parts stay well under the 1 MB a Kafka record may hold by default.
pub const FACTS_PER_PART: usize = 1_000;
pub const BOOKS_PER_PART: usize = 100;
pub const COUNTS_PER_PART: usize = 5_000;

/// A message between scaled-out stages.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Exchange {
    /// The first boundary `source` would evaluate at (`None`: its input is
    /// idle and it will follow the others). To every source.
    Start {
        source: i32,
        first: Option<Timestamp>,
    },
    /// Orders per day `source` admitted before `boundary` and not in its
    /// previous shares (late ones among them). To every source.
    Pace {
        source: i32,
        boundary: Timestamp,
        orders: Vec<(i64, u64)>,
        /// The orders per day the source's accounts still ordering expected
        /// at its evaluation before `boundary`, and its time: business time
        /// runs slow only for the fall in orders they do not explain.
        /// `None` before a source's first evaluation, and from a feidan of
        /// before 2026-11-30.
        #[serde(default)]
        expected: Option<(Timestamp, ExpectedOrders)>,
        /// The source's tail count at its last evaluation before
        /// `boundary` (the gaps its accounts' orders ended since the
        /// evaluation before; see `calibration`), with that evaluation's
        /// time. `None` before a source's first evaluation, and from a
        /// feidan of before 2026-12-01.
        #[serde(default)]
        tails: Option<(Timestamp, TailCounts)>,
    },
    /// Part `seq` of what `source` sends one shard for `boundary`.
    Part {
        source: i32,
        boundary: Timestamp,
        seq: u32,
        body: PartBody,
    },
    /// The last of it: how many parts came before, and the source's counts
    /// over every book it holds (the company's base rates).
    End {
        source: i32,
        boundary: Timestamp,
        parts: u32,
        company: BookCounts,
    },
    /// Part `seq` of `parts` of the whole counts of the books of `shard`'s
    /// managers that could stand out from the company (a tested count of
    /// at least `book_churn.min_churning`), once every source's parts for
    /// `boundary` reached it. To every other shard: each then finds the
    /// books one process would leave out of the company's base rates.
    Standing {
        shard: u32,
        boundary: Timestamp,
        seq: u32,
        parts: u32,
        counts: BookTallies,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PartBody {
    /// Facts of the events applied before the boundary, in the order applied.
    Facts(Vec<Fact>),
    /// Deals found stalled at the boundary.
    Stalls(Vec<Fact>),
    /// The source's part of its managers' books, by manager.
    Books(Vec<(Id, Book)>),
    /// The counts of the source's part of the other shards' managers'
    /// books, by manager, as feidan sent them before 2026-11-30 (named, then
    /// packed): a shard's checkpoint may hold them. They are read and
    /// ignored: the shards now tell one another the books that could stand
    /// out ([`Exchange::Standing`]), a fraction of the bytes.
    Counts(Vec<(Id, BookCounts)>),
    Tallies(BookTallies),
}

/// Books' counts as [`PartBody::Tallies`] carries them: the books with no
/// churning, visited or shrinking account (most) as their judged count
/// alone, the others in full, each as a plain tuple.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BookTallies {
    pub judged_only: Vec<(Id, u64)>,
    pub counted: Vec<(Id, u64, u64, ByBar, ByBar)>,
}

impl BookTallies {
    pub fn of(counts: impl IntoIterator<Item = (Id, BookCounts)>) -> BookTallies {
        let mut tallies = BookTallies::default();
        for (id, c) in counts {
            if c.churning == 0 && c.visited == ByBar::default() && c.shrinking == ByBar::default() {
                tallies.judged_only.push((id, c.judged));
            } else {
                tallies
                    .counted
                    .push((id, c.judged, c.churning, c.visited, c.shrinking));
            }
        }
        tallies
    }

    /// Every book's counts, as [`BookTallies::of`] was given them (the
    /// judged-only books first).
    pub fn into_counts(self) -> impl Iterator<Item = (Id, BookCounts)> {
        let judged_only = self.judged_only.into_iter().map(|(id, judged)| {
            let counts = BookCounts {
                judged,
                ..BookCounts::default()
            };
            (id, counts)
        });
        let counted = self
            .counted
            .into_iter()
            .map(|(id, judged, churning, visited, shrinking)| {
                let counts = BookCounts {
                    judged,
                    churning,
                    visited,
                    shrinking,
                };
                (id, counts)
            });
        judged_only.chain(counted)
    }
}

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Every source (every input partition's account stage).
    Sources,
    /// The shard (facts partition) with this number.
    Shard(u32),
}

/// A message and where it goes.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub to: Route,
    pub message: Exchange,
}

impl Exchange {
    pub fn encode(&self) -> Vec<u8> {
        super::checkpoint::encode(self)
    }

    /// # Errors
    ///
    /// Bytes that are not a message of this feidan's exchange.
    pub fn decode(bytes: &[u8]) -> Result<Exchange, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }
}

/// The shard a team's managers belong to, out of `shards`: FNV-1a of the
/// name, fixed across processes, builds and platforms.
pub fn shard_of(team: &str, shards: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in team.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(shards.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_team_always_goes_to_the_same_shard_and_teams_spread() {
        // Reference values of FNV-1a 64: "" and "a".
        assert_eq!(
            shard_of("", u32::MAX),
            (0xcbf2_9ce4_8422_2325u64 % u64::from(u32::MAX)) as u32
        );
        assert_eq!(
            shard_of("a", 1 << 31),
            (0xaf63_dc4c_8601_ec8cu64 % (1u64 << 31)) as u32
        );
        let mut counts = [0; 4];
        for team in 0..400 {
            counts[shard_of(&format!("team-{team}"), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (70..130).contains(c)), "{counts:?}");
    }

    #[test]
    fn messages_read_back_as_written() {
        let message = Exchange::Pace {
            source: 2,
            boundary: Timestamp(86_400),
            orders: vec![(1, 3), (2, 0)],
            expected: Some((Timestamp(0), ExpectedOrders::of(1.5))),
            tails: Some((
                Timestamp(0),
                TailCounts {
                    gaps: 40,
                    past: [3, 1, 0, 0],
                },
            )),
        };
        let read = Exchange::decode(&message.encode()).unwrap();
        assert_eq!(read.encode(), message.encode());
        assert!(matches!(read, Exchange::Pace { source: 2, .. }));
        assert!(Exchange::decode(b"not msgpack at all").is_err());
    }

    #[test]
    fn tallies_carry_every_books_counts_in_fewer_bytes() {
        let counts: Vec<(Id, BookCounts)> = (0..100u64)
            .map(|i| {
                let counts = BookCounts {
                    judged: 10 + i % 7,
                    churning: u64::from(i % 10 == 0),
                    visited: if i % 25 == 0 { [2, 1, 0] } else { [0; 3] },
                    shrinking: if i % 30 == 0 { [1, 0, 0] } else { [0; 3] },
                };
                (Id::from(format!("kam-{i:04}")), counts)
            })
            .collect();
        let packed = PartBody::Tallies(BookTallies::of(counts.clone()));
        let bytes = super::super::checkpoint::encode(&packed);
        let named = super::super::checkpoint::encode(&PartBody::Counts(counts.clone()));
        assert!(
            bytes.len() * 3 < named.len(),
            "{} vs {}",
            bytes.len(),
            named.len()
        );
        let Ok(PartBody::Tallies(read)) = rmp_serde::from_slice::<PartBody>(&bytes) else {
            panic!("tallies read back as tallies");
        };
        let mut read: Vec<(Id, BookCounts)> = read.into_counts().collect();
        read.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(read, counts);
    }

    #[test]
    fn a_share_from_a_feidan_without_expected_orders_reads_as_none() {
        #[derive(Serialize)]
        enum Before {
            Pace {
                source: i32,
                boundary: Timestamp,
                orders: Vec<(i64, u64)>,
            },
        }
        let old = super::super::checkpoint::encode(&Before::Pace {
            source: 1,
            boundary: Timestamp(86_400),
            orders: vec![(0, 7)],
        });
        match Exchange::decode(&old).unwrap() {
            Exchange::Pace {
                orders,
                expected,
                tails,
                ..
            } => assert_eq!((orders, expected, tails), (vec![(0, 7)], None, None)),
            other => panic!("{other:?}"),
        }
    }
}

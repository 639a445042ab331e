//! Where a consumed message stands against the state: the next one it
//! needs (applied), one the restored checkpoint holds (consumed again after
//! a restart), one this run has applied (read again), or one past the next
//! (the partition jumped ahead, and is fetched again).
//!
//! A partition jumps ahead when messages fetched before a seek arrive after
//! it, and on a broker that answers a fetch from an offset inside a record
//! batch with the batches after it. Kafka returns the batch that holds the
//! offset and the client drops the records before it; tansu 0.6 skips the
//! rest of the batch, and a restart from a checkpoint lands inside a batch
//! whenever the producer batched. So a partition that jumps ahead is
//! fetched again from the next offset, then, while the broker's answer
//! jumps to the same place again, from ever further back (1, 2, 4, …
//! offsets before it), until a record before the next offset arrives: the
//! broker then serves the log from before the next offset, and the records
//! up to it are read again and skipped. (The rest of an answer already
//! acted on, past the record that jumped, asks for nothing more.) A
//! partition that still jumps after that has a real gap (compaction,
//! transaction markers), which is accepted and logged.
//!
//! When the skipped batch is the partition's last, nothing comes to show
//! the jump. So a partition started from a checkpoint, or fetched again,
//! that stays silent for [`QUIET`] without a record at or before its next
//! offset is fetched from further back in the same way; on Kafka that costs
//! one record read again per partition that was already at its end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, ConsumerContext};
use tracing::{debug, warn};

use crate::kafka::sink::SourceRecord;

/// What to do with a consumed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Gate {
    Apply,
    /// Below where this run started its partition: the restored checkpoint
    /// holds it (consumed again after a restart).
    Replayed,
    /// Not applied otherwise: ahead of the next offset, read again while
    /// its partition is fetched from before that offset, or applied by this
    /// run already (tansu, for one, hands out a partition's last batch
    /// again when asked for what follows it).
    Refetched,
}

/// The partitions the gate watches, by topic and partition.
#[derive(Debug, Default)]
pub(super) struct Refetches {
    partitions: HashMap<String, HashMap<i32, Watch>>,
    /// Partitions being fetched again: with none, the next offset's record
    /// is applied without a lookup.
    active: usize,
}

/// One partition started where its state ended.
#[derive(Debug, Default)]
struct Watch {
    /// The state's next offset when this run started the partition: the
    /// restored checkpoint holds the records below it.
    started_at: i64,
    refetch: Option<Refetch>,
}

/// A partition being fetched from before its next offset.
#[derive(Debug)]
struct Refetch {
    /// The offset the state needs next.
    next: i64,
    /// How many offsets before it the last fetch started.
    back: i64,
    /// Where the last fetch asked for started, if the gate asked for one.
    asked_from: Option<i64>,
    /// The first record of the last answer that jumped past it.
    got: Option<i64>,
    /// Whether a record before it came since: the broker serves the log
    /// from before it, so a jump now is a real gap.
    reached: bool,
    /// When the partition was last started or sought.
    since: Instant,
}

impl Refetch {
    fn new(next: i64, now: Instant) -> Refetch {
        Refetch {
            next,
            back: 0,
            asked_from: None,
            got: None,
            reached: false,
            since: now,
        }
    }

    /// Fetches from further back, twice as far as last time (1 offset
    /// before `next` at first); `None` once the last fetch was from the
    /// start.
    fn further_back(&mut self, now: Instant) -> Option<i64> {
        if self.asked_from == Some(0) {
            return None;
        }
        self.back = (self.back * 2).max(1);
        self.since = now;
        let from = (self.next - self.back).max(0);
        self.asked_from = Some(from);
        Some(from)
    }
}

/// A message's verdict, and the offset to fetch its partition from again.
#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    gate: Gate,
    fetch_from: Option<i64>,
}

impl Verdict {
    fn just(gate: Gate) -> Verdict {
        Verdict {
            gate,
            fetch_from: None,
        }
    }
}

/// How long a partition started or fetched again may stay silent before
/// it is fetched from further back: the broker may be skipping the batch
/// that holds its next offset, with no batch after it to show the jump.
pub(super) const QUIET: Duration = Duration::from_secs(2);

impl Refetches {
    pub(super) fn clear(&mut self) {
        self.partitions.clear();
        self.active = 0;
    }

    /// `topic`'s `partition` starts at `next`, where the state ends: until
    /// a record at or before it arrives, it may stand inside a batch the
    /// broker skips.
    pub(super) fn started(&mut self, topic: &str, partition: i32, next: i64, now: Instant) {
        self.active += 1;
        let watch = Watch {
            started_at: next,
            refetch: Some(Refetch::new(next, now)),
        };
        let replaced = self
            .partitions
            .entry(topic.to_owned())
            .or_default()
            .insert(partition, watch);
        if replaced.is_some_and(|w| w.refetch.is_some()) {
            self.active -= 1;
        }
    }

    /// The partitions silent for [`QUIET`] since they were started or
    /// fetched again, with no record at or before their next offset: each
    /// with where to fetch it from now, further back.
    pub(super) fn overdue(&mut self, now: Instant) -> Vec<(String, i32, i64)> {
        let mut seeks = Vec::new();
        if self.active == 0 {
            return seeks;
        }
        for (topic, partitions) in &mut self.partitions {
            for (partition, watch) in partitions.iter_mut() {
                let Some(refetch) = &mut watch.refetch else {
                    continue;
                };
                if refetch.reached || now.duration_since(refetch.since) < QUIET {
                    continue;
                }
                match refetch.further_back(now) {
                    Some(from) => seeks.push((topic.clone(), *partition, from)),
                    // Fetched from the start, and still nothing: the log is
                    // empty up to the next offset.
                    None => {
                        watch.refetch = None;
                        self.active -= 1;
                    }
                }
            }
        }
        seeks
    }

    /// The verdict on the message at `offset` of `topic`'s `partition`,
    /// whose state needs `next` (`None`: any offset will do).
    fn judge(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        next: Option<i64>,
        now: Instant,
    ) -> Verdict {
        let Some(next) = next else {
            return Verdict::just(Gate::Apply);
        };
        if offset == next && self.active == 0 {
            return Verdict::just(Gate::Apply);
        }
        let watch = match self.partitions.get_mut(topic) {
            Some(partitions) => partitions.entry(partition).or_default(),
            None => self
                .partitions
                .entry(topic.to_owned())
                .or_default()
                .entry(partition)
                .or_default(),
        };
        match (offset.cmp(&next), &mut watch.refetch) {
            (std::cmp::Ordering::Equal, refetch) => {
                if refetch.take().is_some() {
                    self.active -= 1;
                }
                Verdict::just(Gate::Apply)
            }
            // Consumed from below where the run started the partition
            // before the gate asked for anything: a replay after a restart.
            (std::cmp::Ordering::Less, Some(refetch))
                if refetch.asked_from.is_none() && offset < watch.started_at =>
            {
                refetch.reached = true;
                Verdict::just(Gate::Replayed)
            }
            (std::cmp::Ordering::Less, Some(refetch)) => {
                refetch.reached = true;
                Verdict::just(Gate::Refetched)
            }
            (std::cmp::Ordering::Less, None) if offset < watch.started_at => {
                Verdict::just(Gate::Replayed)
            }
            (std::cmp::Ordering::Less, None) => Verdict::just(Gate::Refetched),
            (std::cmp::Ordering::Greater, None) => {
                let mut refetch = Refetch::new(next, now);
                refetch.got = Some(offset);
                refetch.asked_from = Some(next);
                watch.refetch = Some(refetch);
                self.active += 1;
                Verdict {
                    gate: Gate::Refetched,
                    fetch_from: Some(next),
                }
            }
            // The rest of an answer already acted on.
            (std::cmp::Ordering::Greater, Some(refetch))
                if !refetch.reached && refetch.got.is_some_and(|got| offset > got) =>
            {
                Verdict::just(Gate::Refetched)
            }
            (std::cmp::Ordering::Greater, Some(refetch)) => {
                let again = if refetch.reached {
                    None
                } else {
                    refetch.got = Some(offset);
                    refetch.further_back(now)
                };
                if again.is_some() {
                    return Verdict {
                        gate: Gate::Refetched,
                        fetch_from: again,
                    };
                }
                watch.refetch = None;
                self.active -= 1;
                warn!(
                    topic,
                    partition,
                    missing_from = next,
                    missing_to = offset - 1,
                    "The partition has a gap (compaction or transaction markers): going on after it."
                );
                Verdict::just(Gate::Apply)
            }
        }
    }
}

/// The verdict on `record`, whose partition's state needs `next`; a
/// partition that jumped ahead is fetched again (see the module docs).
pub(super) fn gate<X: ConsumerContext>(
    consumer: &impl Consumer<X>,
    refetches: &mut Refetches,
    record: &SourceRecord<'_>,
    next: Option<i64>,
) -> Gate {
    let verdict = refetches.judge(
        record.topic,
        record.partition,
        record.offset,
        next,
        Instant::now(),
    );
    if let Some(from) = verdict.fetch_from {
        warn!(
            topic = record.topic,
            partition = record.partition,
            expected = next,
            got = record.offset,
            fetching_from = from,
            "A partition jumped ahead; fetching it again from before the expected offset."
        );
        fetch_from(consumer, record.topic, record.partition, from);
    }
    verdict.gate
}

/// Fetches a partition [`Refetches::overdue`] found silent again from
/// `from`, before where its state ends.
pub(super) fn fetch_silent<X: ConsumerContext>(
    consumer: &impl Consumer<X>,
    topic: &str,
    partition: i32,
    from: i64,
) {
    debug!(
        topic,
        partition,
        fetching_from = from,
        "A partition started where its state ends is silent; fetching it from before there, in case the broker skips the batch that holds it."
    );
    fetch_from(consumer, topic, partition, from);
}

/// Fetches `topic`'s `partition` again from `from`.
fn fetch_from<X: ConsumerContext>(
    consumer: &impl Consumer<X>,
    topic: &str,
    partition: i32,
    from: i64,
) {
    let start = rdkafka::Offset::Offset(from);
    if let Err(error) = consumer.seek(topic, partition, start, Duration::from_secs(5)) {
        warn!(topic, partition, error = %error, "Cannot fetch again.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    /// How a broker answers a fetch from an offset of a log of record
    /// batches (each a list of offsets; compaction leaves holes).
    #[derive(Clone, Copy, Debug)]
    enum Broker {
        /// Kafka: the batch holding the offset and those after it, the
        /// records before the offset dropped by the client.
        Kafka,
        /// tansu 0.6: the batches starting at or after the offset.
        SkipsInsideBatch,
    }

    impl Broker {
        fn fetch(self, batches: &[Vec<i64>], from: i64) -> Vec<i64> {
            batches
                .iter()
                .filter(|batch| match self {
                    Broker::Kafka => batch.last().is_some_and(|last| *last >= from),
                    Broker::SkipsInsideBatch => batch.first().is_some_and(|first| *first >= from),
                })
                .flatten()
                .copied()
                .filter(|offset| *offset >= from)
                .collect()
        }
    }

    /// Consumes `batches` from `start` with the state needing `next` on,
    /// as the service does: the partition registered as started, every
    /// record gated, and a silent partition probed once it is overdue.
    /// After each seek, up to `stale` more records of the answer in hand
    /// still arrive (fetched before the seek). The offsets applied, and
    /// how many fetches it took.
    fn consume(
        broker: Broker,
        batches: &[Vec<i64>],
        (start, next): (i64, i64),
        stale: usize,
    ) -> (Vec<i64>, usize) {
        let mut refetches = Refetches::default();
        let mut now = Instant::now();
        refetches.started("input", 0, next, now);
        let mut next = next;
        let mut applied = Vec::new();
        let mut answer: VecDeque<i64> = broker.fetch(batches, start).into();
        let mut fetches = 1;
        loop {
            assert!(fetches < 1_000, "no end of fetches");
            let Some(offset) = answer.pop_front() else {
                // Nothing more comes: time passes.
                now += QUIET;
                match refetches.overdue(now).as_slice() {
                    [] => return (applied, fetches),
                    [(_, _, again)] => {
                        answer = broker.fetch(batches, *again).into();
                        fetches += 1;
                        continue;
                    }
                    more => panic!("one partition, {} seeks", more.len()),
                }
            };
            let verdict = refetches.judge("input", 0, offset, Some(next), now);
            if verdict.gate == Gate::Apply {
                applied.push(offset);
                next = offset + 1;
            }
            if let Some(again) = verdict.fetch_from {
                let rest: Vec<i64> = answer.drain(..).take(stale).collect();
                answer = rest
                    .into_iter()
                    .chain(broker.fetch(batches, again))
                    .collect();
                fetches += 1;
            }
        }
    }

    /// Batches of the given sizes, with the offsets in `holes` compacted away.
    fn log(sizes: &[i64], holes: &[i64]) -> Vec<Vec<i64>> {
        let mut base = 0;
        sizes
            .iter()
            .map(|size| {
                let batch = (base..base + size).filter(|o| !holes.contains(o)).collect();
                base += size;
                batch
            })
            .collect()
    }

    fn after(batches: &[Vec<i64>], next: i64) -> Vec<i64> {
        batches
            .iter()
            .flatten()
            .copied()
            .filter(|o| *o >= next)
            .collect()
    }

    #[test]
    fn a_restart_inside_a_batch_loses_nothing_on_a_broker_that_skips_the_rest_of_it() {
        // The record at 16 is in the batch 10..=37: tansu answers a fetch
        // from 16 with 38 on. Fetched again from 15, 14, 12, then 8, before
        // the batch: 10..=15 read again, and 16 on applied.
        let batches = log(&[10, 28, 5], &[]);
        let (applied, fetches) = consume(Broker::SkipsInsideBatch, &batches, (16, 16), 0);
        assert_eq!(applied, (16..43).collect::<Vec<_>>());
        assert_eq!(fetches, 5);
        // The same when the rest of each answer still arrives after a seek.
        let stale = consume(Broker::SkipsInsideBatch, &batches, (16, 16), 3);
        assert_eq!(stale, (applied.clone(), 5));
        // On Kafka, one fetch.
        assert_eq!(consume(Broker::Kafka, &batches, (16, 16), 0), (applied, 1));
    }

    #[test]
    fn a_restart_inside_the_last_batch_is_found_by_the_silence() {
        // Nothing after the batch 10..=37 shows the jump: the silent
        // partition is fetched from 15, 14, 12 and 8, then it is served.
        let batches = log(&[10, 28], &[]);
        let (applied, fetches) = consume(Broker::SkipsInsideBatch, &batches, (16, 16), 0);
        assert_eq!(applied, (16..38).collect::<Vec<_>>());
        assert_eq!(fetches, 5);
        // On Kafka, a partition already at its end: one record read again.
        let (applied, fetches) = consume(Broker::Kafka, &batches, (38, 38), 0);
        assert_eq!((applied, fetches), (vec![], 2));
    }

    #[test]
    fn a_gap_the_broker_shows_again_from_before_it_is_accepted() {
        // 5..=7 compacted away: the fetch from 5 jumps to 8; the one from 4
        // reads 4 again and jumps to 8 too, which is then applied.
        let batches = log(&[4, 8], &[5, 6, 7]);
        let (applied, fetches) = consume(Broker::Kafka, &batches, (5, 5), 0);
        assert_eq!(applied, vec![8, 9, 10, 11]);
        assert_eq!(fetches, 2);
    }

    #[test]
    fn a_record_the_checkpoint_held_is_a_replay_and_one_this_run_applied_is_read_again() {
        let mut refetches = Refetches::default();
        let now = Instant::now();
        refetches.started("t", 0, 5, now);
        let mut judge = |offset, next| refetches.judge("t", 0, offset, next, now).gate;
        assert_eq!(judge(5, Some(5)), Gate::Apply);
        assert_eq!(judge(6, Some(6)), Gate::Apply);
        assert_eq!(judge(3, Some(7)), Gate::Replayed);
        assert_eq!(judge(5, Some(7)), Gate::Refetched);
        assert_eq!(judge(3, None), Gate::Apply);
        // A partition this run started from its beginning has no replays.
        assert_eq!(
            refetches.judge("t", 1, 3, Some(5), now).gate,
            Gate::Refetched
        );
        // A consumer that starts below where the state ends (a committed
        // offset behind the checkpoint) replays; what the gate asks for
        // again is read again.
        refetches.started("t", 2, 5, now);
        assert_eq!(
            refetches.judge("t", 2, 4, Some(5), now).gate,
            Gate::Replayed
        );
        refetches.started("t", 3, 5, now);
        let jumped = refetches.judge("t", 3, 9, Some(5), now);
        assert_eq!(jumped.fetch_from, Some(4));
        assert_eq!(
            refetches.judge("t", 3, 4, Some(5), now).gate,
            Gate::Refetched
        );
    }

    #[test]
    fn the_rest_of_an_answer_already_acted_on_asks_for_nothing_more() {
        let mut refetches = Refetches::default();
        let now = Instant::now();
        let mut judge = |offset| refetches.judge("t", 0, offset, Some(5), now);
        let again = |from| Verdict {
            gate: Gate::Refetched,
            fetch_from: Some(from),
        };
        assert_eq!(judge(9), again(5));
        assert_eq!(judge(10), Verdict::just(Gate::Refetched));
        // The broker's answer jumps to the same record again.
        assert_eq!(judge(9), again(4));
        assert_eq!(judge(4), Verdict::just(Gate::Refetched));
        assert_eq!(judge(5), Verdict::just(Gate::Apply));
    }

    #[test]
    fn a_partition_that_answers_is_not_probed() {
        let mut refetches = Refetches::default();
        let now = Instant::now();
        refetches.started("t", 0, 5, now);
        refetches.started("t", 1, 5, now);
        assert_eq!(refetches.judge("t", 0, 5, Some(5), now).gate, Gate::Apply);
        assert!(refetches.overdue(now + QUIET / 2).is_empty());
        // Partition 1 stays silent.
        assert_eq!(refetches.overdue(now + QUIET), vec![("t".to_owned(), 1, 4)]);
        // A partition started at its beginning and silent is asked for it
        // once, in case the consumer stands elsewhere.
        refetches.started("t", 2, 0, now);
        let later = now + QUIET;
        assert_eq!(refetches.overdue(later), vec![("t".to_owned(), 2, 0)]);
        let again = refetches.overdue(later + QUIET);
        assert!(again.iter().all(|(_, partition, _)| *partition != 2));
    }

    proptest! {
        /// Whatever the batches, holes and restart offset, and whichever
        /// way the broker answers, every record from the next offset on is
        /// applied once, in order.
        #[test]
        fn every_record_from_the_next_offset_is_applied_once(
            sizes in proptest::collection::vec(1i64..60, 1..12),
            holes in proptest::collection::vec(0i64..400, 0..20),
            next_share in 0.0f64..1.0,
            start_shift in -5i64..5,
            skips in any::<bool>(),
            stale in 0usize..4,
        ) {
            let batches = log(&sizes, &holes);
            let end: i64 = sizes.iter().sum();
            let next = ((end as f64 * next_share) as i64).min(end);
            // The consumer may start a little before or after the state's
            // offset (a committed offset, a stale fetch).
            let start = (next + start_shift).clamp(0, end);
            let broker = if skips { Broker::SkipsInsideBatch } else { Broker::Kafka };
            let (applied, _) = consume(broker, &batches, (start, next), stale);
            prop_assert_eq!(applied, after(&batches, next));
        }
    }
}

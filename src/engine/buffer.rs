//! The intake's buffer of on-time events waiting for the watermark, released
//! in event-time order (then event id).
//!
//! Input is nearly always in order already (a partition's events come as
//! they happened; partitions interleave a little), so the buffer keeps two
//! parts: a run of events in order, to which an arrival no earlier than the
//! newest one is appended, and a heap for the few that arrive out of order.
//! The earliest event is at the front of one of the two. An in-order event
//! then costs a push and a pop at the ends of a ring, with no sift through a
//! heap of an hour's events, no comparison of ids, and no allocation: the
//! run holds its events in place, read and written in sequence, where a
//! boxed event was copied into a fresh allocation and freed an hour later.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};

use crate::event::Event;
use crate::time::Timestamp;

/// An event ordered by event time, then id (ids are unique once deduplicated).
/// Boxed, so that the heap moves a pointer and not the event; its time is
/// held beside it, so that most comparisons do not follow the pointer.
struct InEventTime(Timestamp, Box<Event>);

impl InEventTime {
    fn of(event: Event) -> InEventTime {
        InEventTime(event.occurred_at, Box::new(event))
    }
}

impl PartialEq for InEventTime {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for InEventTime {}

impl PartialOrd for InEventTime {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InEventTime {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .cmp(&other.0)
            .then_with(|| self.1.event_id.cmp(&other.1.event_id))
    }
}

/// Buffered events, earliest first out.
#[derive(Default)]
pub(crate) struct EventBuffer {
    /// Events in ascending order, each no earlier than the one before.
    run: VecDeque<Event>,
    /// Events that arrived earlier than the newest of `run`.
    out_of_order: BinaryHeap<Reverse<InEventTime>>,
}

/// What buffered events are ordered by: event time, then id.
pub(crate) fn order_of(event: &Event) -> (Timestamp, &str) {
    (event.occurred_at, &event.event_id)
}

impl EventBuffer {
    pub(crate) fn push(&mut self, event: Event) {
        match self.run.back() {
            Some(newest) if order_of(&event) < order_of(newest) => {
                self.out_of_order.push(Reverse(InEventTime::of(event)));
            }
            _ => self.run.push_back(event),
        }
    }

    /// The event time of the earliest event.
    pub(crate) fn earliest(&self) -> Option<Timestamp> {
        match (self.run.front(), self.out_of_order.peek()) {
            (None, None) => None,
            (Some(first), None) => Some(first.occurred_at),
            (None, Some(Reverse(other))) => Some(other.0),
            (Some(first), Some(Reverse(other))) => Some(first.occurred_at.min(other.0)),
        }
    }

    /// Takes the earliest event.
    pub(crate) fn pop(&mut self) -> Option<Event> {
        let in_run = match (self.run.front(), self.out_of_order.peek()) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(first), Some(Reverse(other))) => order_of(first) <= order_of(&other.1),
        };
        if in_run {
            self.run.pop_front()
        } else {
            self.out_of_order
                .pop()
                .map(|Reverse(InEventTime(_, event))| *event)
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.run.len() + self.out_of_order.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.run.is_empty() && self.out_of_order.is_empty()
    }

    /// The event `n` places behind the earliest in the in-order run: nearly
    /// always the event released `n` pops from now (one that arrived out of
    /// order may come first), for a look ahead that need not be exact.
    pub(crate) fn upcoming(&self, n: usize) -> Option<&Event> {
        self.run.get(n)
    }

    /// Every buffered event, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Event> {
        let out_of_order = self.out_of_order.iter().map(|Reverse(e)| &*e.1);
        self.run.iter().chain(out_of_order)
    }

    /// Gives back the memory of a burst once it is applied.
    pub(crate) fn shrink_if_idle(&mut self) {
        if self.is_empty() && self.run.capacity() + self.out_of_order.capacity() > 4096 {
            self.run.shrink_to_fit();
            self.out_of_order.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode, DecodeLimits};
    use proptest::prelude::*;

    fn event(second: i64, id: u32) -> Event {
        let at = chrono::DateTime::from_timestamp(1_735_689_600 + second, 0)
            .expect("a time")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let json = format!(
            r#"{{"event_id":"ev-{id}","type":"activity_logged","occurred_at":"{at}","account_id":"acc-1","manager_id":"kam-1","team":"t","activity":"call"}}"#
        );
        decode(json.as_bytes(), DecodeLimits::default()).expect("a valid event")
    }

    fn drain(buffer: &mut EventBuffer) -> Vec<(Timestamp, String)> {
        let mut out = Vec::new();
        while let Some(at) = buffer.earliest() {
            let e = buffer.pop().expect("an event where one is earliest");
            assert_eq!(e.occurred_at, at, "earliest names the event popped next");
            out.push((e.occurred_at, e.event_id.to_string()));
        }
        out
    }

    #[test]
    fn events_come_out_in_time_then_id_order_however_they_arrived() {
        let mut buffer = EventBuffer::default();
        for (second, id) in [(5, 1), (7, 2), (6, 3), (7, 0), (9, 4), (1, 5), (9, 4_0)] {
            buffer.push(event(second, id));
        }
        assert_eq!(buffer.len(), 7);
        assert_eq!(buffer.iter().count(), 7);
        let order: Vec<String> = drain(&mut buffer).into_iter().map(|(_, id)| id).collect();
        assert_eq!(
            order,
            ["ev-5", "ev-1", "ev-3", "ev-0", "ev-2", "ev-4", "ev-40"]
        );
        assert!(buffer.is_empty());
        assert!(buffer.pop().is_none());
    }

    proptest! {
        /// Whatever the arrival order and however pushes and pops
        /// interleave, what comes out is what a heap of the same events gives.
        #[test]
        fn the_buffer_releases_what_a_heap_would(
            arrivals in prop::collection::vec((0i64..50, any::<bool>()), 0..200),
        ) {
            let mut buffer = EventBuffer::default();
            let mut heap: BinaryHeap<Reverse<InEventTime>> = BinaryHeap::new();
            let mut from_buffer = Vec::new();
            let mut from_heap = Vec::new();
            for (id, (second, pop_after)) in arrivals.into_iter().enumerate() {
                buffer.push(event(second, id as u32));
                heap.push(Reverse(InEventTime::of(event(second, id as u32))));
                if pop_after {
                    from_buffer.extend(buffer.pop().map(|e| e.event_id.to_string()));
                    from_heap.extend(heap.pop().map(|Reverse(e)| e.1.event_id.to_string()));
                }
                prop_assert_eq!(buffer.len(), heap.len());
            }
            from_buffer.extend(drain(&mut buffer).into_iter().map(|(_, id)| id));
            while let Some(Reverse(e)) = heap.pop() {
                from_heap.push(e.1.event_id.to_string());
            }
            prop_assert_eq!(from_buffer, from_heap);
        }
    }
}

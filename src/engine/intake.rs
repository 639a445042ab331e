//! The engine's event-time front: what happens to an event between decoding
//! and the stages. It rejects duplicates and events too late to matter,
//! holds on-time events until the watermark passes them, releases them in
//! event-time order, and says when an evaluation boundary is due (DESIGN §5).
//!
//! The single-process [`Engine`](super::Engine) and the scaled-out
//! [`Source`](super::source::Source) share it, so an event's life up to the
//! account stage is the same in both.

use crate::config::Config;
use crate::event::Event;
use crate::time::Timestamp;

use super::buffer::EventBuffer;
use super::dedup::Dedup;
use super::watermark::WatermarkTracker;
use super::{DeadLetter, Outcome};

/// The events waiting in the intake's buffer, as a stage looking ahead
/// sees them.
#[derive(Clone, Copy)]
pub(crate) struct Upcoming<'a>(&'a EventBuffer);

impl<'a> Upcoming<'a> {
    /// The event `n` releases from now (1: the next), as near as the buffer
    /// tells without sorting: a hint, not a promise.
    pub(crate) fn nth(self, n: usize) -> Option<&'a Event> {
        self.0.upcoming(n.checked_sub(1)?)
    }
}

pub(crate) struct Intake {
    pub(crate) late_horizon: i64,
    pub(crate) evaluate_every: i64,
    pub(crate) watermark: WatermarkTracker,
    pub(crate) dedup: Dedup,
    /// The next evaluation boundary the watermark has not yet passed.
    pub(crate) next_evaluation: Option<Timestamp>,
    /// On-time events not yet behind the watermark, released in event-time
    /// order as it passes them.
    pub(crate) pending: EventBuffer,
    max_buffered: usize,
    /// Events applied ahead of the watermark because the buffer was full.
    pub(crate) forced: u64,
}

impl Intake {
    pub(crate) fn new(config: &Config) -> Intake {
        let engine = &config.engine;
        Intake {
            late_horizon: engine.late_horizon.as_secs() as i64,
            evaluate_every: config.alerts.evaluate_every.as_secs() as i64,
            watermark: WatermarkTracker::new(engine.allowed_lateness.as_secs() as i64),
            dedup: Dedup::new(engine.dedup_capacity, engine.dedup_horizon.as_secs() as i64),
            next_evaluation: None,
            pending: EventBuffer::default(),
            max_buffered: engine.max_buffered_events,
            forced: 0,
        }
    }

    /// Admits one decoded event from input `partition`. An event behind the
    /// watermark (late) goes to `apply` at once; an on-time one waits in the
    /// buffer, unless the buffer is full, when its oldest event goes to
    /// `apply` ahead of time. Returns what became of the event, and whether
    /// the watermark moved (evaluations may be due: see [`Intake::next_due`]).
    pub(crate) fn admit(
        &mut self,
        event: Event,
        partition: i32,
        mut apply: impl FnMut(&Event),
    ) -> (Outcome, bool) {
        let watermark = self.watermark.current();
        let late = watermark.is_some_and(|w| event.occurred_at < w);
        if let Some(w) = watermark {
            if event.occurred_at < w.plus(-self.late_horizon) {
                let dead = DeadLetter::TooLate {
                    occurred_at: event.occurred_at,
                    watermark: w,
                };
                return (Outcome::DeadLetter(dead), false);
            }
        }
        if !self.dedup.insert(&event.event_id, event.occurred_at) {
            return (Outcome::Duplicate, false);
        }

        let at = event.occurred_at;
        if late {
            apply(&event);
        } else {
            self.pending.push(event);
            if self.pending.len() > self.max_buffered {
                if let Some(oldest) = self.pending.pop() {
                    self.forced += 1;
                    apply(&oldest);
                }
            }
        }
        let moved = self.watermark.observe(partition, at).is_some();
        let outcome = if late {
            Outcome::Late
        } else {
            Outcome::Processed
        };
        (outcome, moved)
    }

    /// Releases to `apply`, in event-time order, the buffered events before
    /// both the watermark and the next evaluation boundary; returns that
    /// boundary if the watermark has passed it. The caller evaluates at it,
    /// then calls [`Intake::passed`] and asks again: so every evaluation
    /// sees exactly the events before its boundary, however the input was
    /// partitioned or interleaved.
    ///
    /// `apply` is shown, beside each event, the events buffered after it
    /// (see [`Upcoming`]), so that the stage can ask for their state's
    /// memory before it applies this one.
    pub(crate) fn next_due(
        &mut self,
        mut apply: impl FnMut(&Event, Upcoming<'_>),
    ) -> Option<Timestamp> {
        let watermark = self.watermark.current()?;
        let first = self.first_boundary(watermark);
        let boundary = *self.next_evaluation.get_or_insert(first);
        let until = boundary.min(watermark);
        while self.pending.earliest().is_some_and(|at| at < until) {
            if let Some(event) = self.pending.pop() {
                apply(&event, Upcoming(&self.pending));
            }
        }
        if boundary <= watermark {
            return Some(boundary);
        }
        // A burst (a partition far ahead, a backlog) must not hold its
        // memory once applied.
        self.pending.shrink_if_idle();
        None
    }

    /// The last evaluation boundary passed.
    pub(crate) fn evaluated(&self) -> Option<Timestamp> {
        self.next_evaluation
            .map(|next| next.plus(-self.evaluate_every))
    }

    /// The first evaluation boundary after `watermark`.
    pub(crate) fn first_boundary(&self, watermark: Timestamp) -> Timestamp {
        let step = self.evaluate_every;
        Timestamp(watermark.0.div_euclid(step) * step + step)
    }

    /// The evaluation at `boundary` is done: the next one is a step later,
    /// and event ids older than the dedup horizon are forgotten.
    pub(crate) fn passed(&mut self, boundary: Timestamp) {
        self.next_evaluation = Some(boundary.plus(self.evaluate_every));
        self.dedup.expire(boundary);
    }
}

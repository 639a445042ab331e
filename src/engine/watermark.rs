//! Event-time watermark (DESIGN §5): the newest event time seen on each input
//! partition, the least of them over the partitions that are not idle, minus
//! the allowed lateness. It never moves back.
//!
//! Idle handling follows Arroyo's `WatermarkHolder`: a partition the source
//! marks idle does not hold the others back. When the whole input is idle the
//! caller may advance event time by the wall-clock time that passed
//! ([`WatermarkTracker::advance_idle`]); the tracker itself reads no clock.

use std::collections::BTreeMap;

use crate::time::Timestamp;

/// Tracks the watermark over the partitions of one input.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct WatermarkTracker {
    allowed_lateness: i64,
    /// Newest event time per partition, and whether that partition is idle.
    partitions: BTreeMap<i32, PartitionTime>,
    current: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
struct PartitionTime {
    /// `None` for an assigned partition that has not delivered an event yet:
    /// it holds the watermark back until it does or is marked idle, so that
    /// the first partition to deliver cannot make the others' events late.
    newest: Option<Timestamp>,
    idle: bool,
    /// Whether this instance reads the partition now. A revoked partition
    /// keeps its newest time, so that when it comes back (a rebalance after
    /// a broker outage hands the same partitions back) it does not hold the
    /// watermark until it delivers again: an exhausted partition never
    /// would, and every evaluation behind it would wait for the idle timeout.
    #[serde(default = "assigned_by_default")]
    assigned: bool,
}

/// Checkpoints from before `assigned` only held assigned partitions.
fn assigned_by_default() -> bool {
    true
}

impl WatermarkTracker {
    pub fn new(allowed_lateness_secs: i64) -> Self {
        WatermarkTracker {
            allowed_lateness: allowed_lateness_secs,
            partitions: BTreeMap::new(),
            current: None,
        }
    }

    /// This tracker with another allowed lateness (a restart may change it);
    /// the watermark already reached does not move back.
    pub fn with_lateness(mut self, allowed_lateness_secs: i64) -> Self {
        self.allowed_lateness = allowed_lateness_secs;
        self.recompute();
        self
    }

    /// The watermark, or `None` before the first event.
    pub fn current(&self) -> Option<Timestamp> {
        self.current
    }

    /// Records an event time seen on `partition`; returns the new watermark.
    pub fn observe(&mut self, partition: i32, at: Timestamp) -> Option<Timestamp> {
        let entry = self.partitions.entry(partition).or_insert(PartitionTime {
            newest: None,
            idle: false,
            assigned: true,
        });
        let counted = !entry.idle && entry.assigned;
        let before = entry.newest;
        entry.newest = Some(before.map_or(at, |newest| newest.max(at)));
        entry.idle = false;
        entry.assigned = true;
        // The usual case, on every event: a partition already counted that
        // did not move on, or the only one, which alone sets the watermark.
        match before {
            Some(newest) if counted && at <= newest => self.current,
            Some(_) if counted && self.partitions.len() == 1 => {
                self.raise_to(at.plus(-self.allowed_lateness))
            }
            _ => self.recompute(),
        }
    }

    /// Declares the partitions this instance now reads: ones never seen
    /// hold the watermark until they deliver or go idle; ones seen before
    /// resume from their newest time; ones no longer listed stop counting
    /// (their newest time is kept for their return).
    pub fn assign(&mut self, partitions: &[i32]) -> Option<Timestamp> {
        for (partition, time) in self.partitions.iter_mut() {
            time.assigned = partitions.contains(partition);
        }
        for partition in partitions {
            self.partitions.entry(*partition).or_insert(PartitionTime {
                newest: None,
                idle: false,
                assigned: true,
            });
        }
        self.recompute()
    }

    /// Marks a partition idle (it stops holding the watermark back) or active.
    pub fn set_idle(&mut self, partition: i32, idle: bool) -> Option<Timestamp> {
        if let Some(entry) = self.partitions.get_mut(&partition) {
            entry.idle = idle;
        }
        self.recompute()
    }

    /// Moves event time on by `seconds` on every partition, as if that much
    /// time had passed with nothing happening. Used while the input is idle.
    pub fn advance_idle(&mut self, seconds: i64) -> Option<Timestamp> {
        for entry in self.partitions.values_mut() {
            entry.newest = entry.newest.map(|newest| newest.plus(seconds));
        }
        self.recompute()
    }

    /// Raises the watermark to at least `at`, whatever the partitions say:
    /// for an idle input whose event time is set by others (a scaled-out
    /// source following the rest of the company). It never moves back.
    pub fn raise_to(&mut self, at: Timestamp) -> Option<Timestamp> {
        self.current = Some(self.current.map_or(at, |c| c.max(at)));
        self.current
    }

    fn recompute(&mut self) -> Option<Timestamp> {
        let (mut least_active, mut newest_any) = (None::<Timestamp>, None::<Timestamp>);
        let (mut any_active, mut waiting) = (false, false);
        for partition in self.partitions.values().filter(|p| p.assigned) {
            if let Some(newest) = partition.newest {
                newest_any = Some(newest_any.map_or(newest, |n| n.max(newest)));
            }
            if !partition.idle {
                any_active = true;
                match partition.newest {
                    Some(newest) => {
                        least_active = Some(least_active.map_or(newest, |n| n.min(newest)))
                    }
                    None => waiting = true,
                }
            }
        }
        let newest = match (any_active, waiting) {
            (false, _) => newest_any,
            (true, true) => None,
            (true, false) => least_active,
        };
        if let Some(newest) = newest {
            let candidate = newest.plus(-self.allowed_lateness);
            self.current = Some(self.current.map_or(candidate, |c| c.max(candidate)));
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_partition_minus_lateness_and_never_back() {
        let mut w = WatermarkTracker::new(10);
        assert_eq!(w.current(), None);
        assert_eq!(w.observe(0, Timestamp(100)), Some(Timestamp(90)));
        assert_eq!(
            w.observe(1, Timestamp(50)),
            Some(Timestamp(90)),
            "never moves back"
        );
        assert_eq!(w.observe(1, Timestamp(200)), Some(Timestamp(90)));
        assert_eq!(w.observe(0, Timestamp(150)), Some(Timestamp(140)));
        assert_eq!(w.observe(0, Timestamp(120)), Some(Timestamp(140)));
    }

    #[test]
    fn an_assigned_partition_holds_back_until_it_delivers_or_idles() {
        let mut w = WatermarkTracker::new(0);
        w.assign(&[0, 1]);
        assert_eq!(w.observe(0, Timestamp(100)), None);
        assert_eq!(w.observe(1, Timestamp(50)), Some(Timestamp(50)));
        w.assign(&[0, 1, 2]);
        assert_eq!(w.observe(0, Timestamp(200)), Some(Timestamp(50)));
        assert_eq!(w.set_idle(2, true), Some(Timestamp(50)));
        assert_eq!(w.observe(1, Timestamp(300)), Some(Timestamp(200)));
        w.assign(&[1]);
        assert_eq!(w.observe(1, Timestamp(400)), Some(Timestamp(400)));
    }

    #[test]
    fn a_partition_handed_back_resumes_from_its_newest_time() {
        let mut w = WatermarkTracker::new(0);
        w.assign(&[0, 1]);
        w.observe(0, Timestamp(100)); // partition 0 is exhausted here
        w.observe(1, Timestamp(50));
        assert_eq!(w.current(), Some(Timestamp(50)));
        // The broker goes away; the group revokes everything, then hands
        // the same partitions back.
        w.assign(&[]);
        w.assign(&[0, 1]);
        assert_eq!(
            w.observe(1, Timestamp(80)),
            Some(Timestamp(80)),
            "partition 0 delivers nothing more, and must not hold the watermark"
        );
        assert_eq!(w.observe(1, Timestamp(300)), Some(Timestamp(100)));
    }

    #[test]
    fn idle_partitions_do_not_hold_back() {
        let mut w = WatermarkTracker::new(0);
        w.observe(0, Timestamp(100));
        w.observe(1, Timestamp(500));
        assert_eq!(w.current(), Some(Timestamp(100)));
        assert_eq!(w.set_idle(0, true), Some(Timestamp(500)));
        assert_eq!(w.advance_idle(60), Some(Timestamp(560)));
    }
}

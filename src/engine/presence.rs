//! Whether a manager was at work, day by day: the days on which they logged
//! an activity on one of their customers, as the account stage's books
//! report them at each evaluation (a book carries its accounts' latest
//! visit), or closed a deal. The manager stage asks it whether a deal that
//! stalled did so while its manager was away (DESIGN §4: a manager on leave
//! must not be accused): a deal cannot move while nobody is there to move
//! it.
//!
//! A manager is away through a run of days without any activity that is
//! improbable for them: at least [`MIN_AWAY_DAYS`], and long enough that a
//! manager who is present on their usual share of days would go that long
//! without an activity less than once in [`AWAY_CHANCE`]. A manager who
//! has logged no activity at all is never called away.

use serde::{Deserialize, Serialize};

/// Days without activity below which nobody is called away: a quiet week
/// or two is work, not absence.
pub const MIN_AWAY_DAYS: i64 = 14;

/// The chance, for a manager at work on their usual share of days, of a run
/// of days without activity as long as the one called away.
pub const AWAY_CHANCE: f64 = 1e-3;

/// Days remembered: longer than any stall period they are asked about (a
/// day further back is not known, and counts as at work).
const DAYS_KEPT: i64 = 128;

/// The days of the last `DAYS_KEPT` a manager was seen at work, among
/// the days reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    /// Bit `i` is the day `end - 1 - i`: an activity was reported for it,
    /// or a deal closed on it ...
    at_work: u128,
    /// ... and the manager's book was reported for it (a manager with no
    /// account judged that day has no book, and nothing is known of them).
    known: u128,
    /// The day after the last day reported; 0 before the first report.
    end: i64,
}

impl Presence {
    /// Records that the manager acted on `day` (closed a deal): at work,
    /// whatever their books say. The day becomes known at the next
    /// evaluation that reports it.
    pub fn mark_at_work(&mut self, day: i64) {
        self.advance(day + 1);
        if let Some(bit) = self.bit(day) {
            self.at_work |= 1 << bit;
        }
    }

    /// Moves the last day held to `end - 1`: the days since are not yet
    /// known.
    fn advance(&mut self, end: i64) {
        if end > self.end {
            let shift = end - self.end;
            (self.at_work, self.known) = if shift >= DAYS_KEPT || self.end == 0 {
                (0, 0)
            } else {
                (self.at_work << shift, self.known << shift)
            };
            self.end = end;
        }
    }

    /// Records the manager's book at an evaluation that reports the days
    /// before `end`, with the day of the book's latest activity, if any. The
    /// last of those days becomes known (evaluations are daily: a day
    /// between two evaluations further apart stays unknown).
    pub fn observe(&mut self, end: i64, latest_activity_day: Option<i64>) {
        self.advance(end);
        if let Some(bit) = self.bit(end - 1) {
            self.known |= 1 << bit;
        }
        if let Some(bit) = latest_activity_day.and_then(|day| self.bit(day)) {
            self.at_work |= 1 << bit;
        }
    }

    fn bit(&self, day: i64) -> Option<u32> {
        let back = self.end - 1 - day;
        (0..DAYS_KEPT).contains(&back).then_some(back as u32)
    }

    /// Whether the manager was at work on `day`: `None` when it is not known.
    fn at_work(&self, day: i64) -> Option<bool> {
        let bit = self.bit(day)?;
        (self.known & (1 << bit) != 0).then(|| self.at_work & (1 << bit) != 0)
    }

    /// The shortest run of days without activity that calls this manager
    /// away; `None` when they have never been seen at work.
    fn away_after(&self) -> Option<i64> {
        let known = self.known.count_ones();
        let at_work = (self.at_work & self.known).count_ones();
        if at_work == 0 {
            return None;
        }
        let share = f64::from(at_work) / f64::from(known);
        let run = if share >= 1.0 {
            0.0
        } else {
            AWAY_CHANCE.ln() / (1.0 - share).ln()
        };
        Some((run.ceil() as i64).max(MIN_AWAY_DAYS))
    }

    /// Whether the manager was away during some of the days `days` (a run of
    /// days known to be without activity, at least `away_after`
    /// long, overlapping them). Days not known count as at work.
    pub fn away_during(&self, days: std::ops::Range<i64>) -> bool {
        let Some(away_after) = self.away_after() else {
            return false;
        };
        // A run that overlaps `days` may begin before them or end after.
        let mut run_from = None;
        for day in days.start - away_after + 1..days.end + away_after - 1 {
            if self.at_work(day) == Some(false) {
                let from = *run_from.get_or_insert(day);
                if day - from + 1 >= away_after && day >= days.start && from < days.end {
                    return true;
                }
            } else {
                run_from = None;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manager at work on the days `at_work` says, reported daily up to `end`.
    fn presence(end: i64, at_work: impl Fn(i64) -> bool) -> Presence {
        let mut p = Presence::default();
        for day in 0..end {
            p.observe(day + 1, at_work(day).then_some(day));
        }
        p
    }

    #[test]
    fn a_leave_inside_a_stall_period_is_away() {
        // At work every other day, then away for days 60 to 99.
        let p = presence(110, |d| d % 2 == 0 && !(60..100).contains(&d));
        assert!(p.away_during(55..100));
        assert!(p.away_during(90..105), "a run that began before the period");
        assert!(!p.away_during(20..59));
        assert!(!p.away_during(101..110));
    }

    #[test]
    fn a_quiet_week_is_not_away_but_a_rare_worker_needs_longer() {
        let busy = presence(100, |d| !(50..62).contains(&d));
        assert!(
            !busy.away_during(40..90),
            "12 quiet days are under the minimum"
        );
        let busy = presence(100, |d| !(50..64).contains(&d));
        assert!(busy.away_during(40..90));
        // At work one day in ten, but for a month: quiet fortnights are
        // usual for them, and the run that calls them away is
        // ln(0.001) / ln(1 - share) days long, share being 10 days of 127.
        let rare = presence(127, |d| d % 10 == 0 && !(20..50).contains(&d));
        let share = 10.0_f64 / 127.0;
        let run = (0.001_f64.ln() / (1.0 - share).ln()).ceil() as i64;
        assert_eq!(run, 85);
        assert_eq!(rare.away_after(), Some(run));
        assert!(!rare.away_during(10..60));
    }

    #[test]
    fn days_not_known_count_as_at_work() {
        // Reported from day 40 on only: the days before are not known.
        let mut p = Presence::default();
        for day in 40..70 {
            p.observe(day + 1, (day % 2 == 0).then_some(day));
        }
        assert!(!p.away_during(0..45));
        // Not reported from day 70 to 99 (no book): not known either.
        for day in 100..110 {
            p.observe(day + 1, Some(day));
        }
        assert!(!p.away_during(60..110));
        // Nothing ever logged: never away.
        let never = presence(100, |_| false);
        assert!(!never.away_during(0..100));
        // Beyond the days kept.
        let old = presence(300, |d| !(100..150).contains(&d));
        assert!(!old.away_during(100..150));
        assert!(presence(200, |d| !(100..150).contains(&d)).away_during(100..150));
    }

    /// Closing a deal is work: a manager whose books show no activity for
    /// weeks but who closed deals meanwhile was not away, and a day marked
    /// before its evaluation reports it counts once that evaluation does.
    #[test]
    fn a_manager_closing_deals_is_at_work_whatever_the_books_say() {
        let away = presence(110, |d| !(60..100).contains(&d));
        assert!(away.away_during(55..100));
        let mut closing = Presence::default();
        for day in 0..110 {
            if (60..100).contains(&day) && day % 10 == 5 {
                closing.mark_at_work(day);
            }
            closing.observe(day + 1, (!(60..100).contains(&day)).then_some(day));
        }
        assert!(!closing.away_during(55..100));
        assert_eq!(closing.at_work(75), Some(true));
        assert_eq!(closing.at_work(76), Some(false));
    }
}

//! Alert lifecycle per (kind, subject) (DESIGN §4): `ok → pending` when the
//! condition first holds, `→ firing` once it has held for `for` evaluations,
//! `→ resolved` once it has been clear for `resolve_after` evaluations.
//! Only the firing and resolved transitions are emitted; a firing alert is
//! not re-sent while it holds.
//!
//! The alert id is `kind/subject/episode-start`, where the episode starts at
//! the evaluation that made it pending: deterministic, so a replay or a
//! restart yields the same ids.

use super::Map;

use crate::alert::{Alert, AlertKind, Severity, Status};
use crate::detect::Finding;
use crate::time::{Timestamp, DAY};

use super::checkpoint::{self, RestoreError};

/// Key prefix of alert records in a checkpoint.
pub const ALERT_PREFIX: &str = "alert/";

/// Everything an alert says besides its id, status and time.
#[derive(Clone, Debug)]
pub struct AlertDraft {
    pub manager_id: String,
    pub team: String,
    pub account_id: Option<String>,
    pub window_start: Timestamp,
    pub window_end: Timestamp,
    pub finding: Finding,
    pub evidence: Vec<serde_json::Value>,
}

/// One alert currently firing, for the metrics.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ActiveAlert {
    pub kind: AlertKind,
    pub severity: Severity,
    pub manager_id: String,
    pub team: String,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Phase {
    Pending {
        since: Timestamp,
        held: u32,
    },
    Firing {
        /// Boxed: most subjects are pending, a phase a few words long.
        alert: Box<Alert>,
        clear_for: u32,
        /// Evaluations in a row the detector could not judge (too small a
        /// sample): not evidence of innocence, so they neither clear nor
        /// hold, until so many pass that the alert is stale.
        unjudged: u32,
    },
}

/// A firing alert the detector cannot judge for `resolve_after` times this
/// many evaluations resolves: its data has gone.
const STALE_AFTER: u32 = 10;

#[derive(Debug)]
pub struct Lifecycle {
    for_evaluations: u32,
    resolve_after: u32,
    /// Per kind, the subjects pending or firing: looked up by `&str`, so
    /// the many evaluations of subjects with nothing pending cost no
    /// allocation.
    entries: Vec<(AlertKind, Map<String, Phase>)>,
}

impl Lifecycle {
    pub fn new(for_evaluations: u32, resolve_after: u32) -> Self {
        Lifecycle {
            for_evaluations,
            resolve_after,
            entries: Vec::new(),
        }
    }

    fn subjects(&self, kind: AlertKind) -> Option<&Map<String, Phase>> {
        self.entries
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, subjects)| subjects)
    }

    fn subjects_mut(&mut self, kind: AlertKind) -> &mut Map<String, Phase> {
        let index = match self.entries.iter().position(|(k, _)| *k == kind) {
            Some(index) => index,
            None => {
                self.entries.push((kind, Map::default()));
                self.entries.len() - 1
            }
        };
        &mut self.entries[index].1
    }

    fn phases(&self) -> impl Iterator<Item = (AlertKind, &String, &Phase)> + '_ {
        self.entries.iter().flat_map(|(kind, subjects)| {
            subjects
                .iter()
                .map(move |(subject, phase)| (*kind, subject, phase))
        })
    }

    /// Appends one checkpoint record per pending or firing alert:
    /// `alert/<kind>/<subject>`.
    pub fn checkpoint(&self, out: &mut Vec<(String, Vec<u8>)>) {
        for (kind, subject, phase) in self.phases() {
            out.push((
                format!("{ALERT_PREFIX}{}/{subject}", kind.as_str()),
                checkpoint::encode(&(kind, subject, phase)),
            ));
        }
    }

    /// Takes in checkpoint record `key` if it is an alert's; whether it was.
    pub fn restore_record(&mut self, key: &str, payload: &[u8]) -> Result<bool, RestoreError> {
        if !key.starts_with(ALERT_PREFIX) {
            return Ok(false);
        }
        self.restore_entry(key, payload)?;
        Ok(true)
    }

    /// Restores one entry from its checkpoint record.
    fn restore_entry(&mut self, key: &str, payload: &[u8]) -> Result<(), RestoreError> {
        let (kind, subject, phase): (AlertKind, String, Phase) =
            checkpoint::decode_payload(key, payload)?;
        self.subjects_mut(kind).insert(subject, phase);
        Ok(())
    }

    /// Feeds one evaluation of `subject` for `kind` at `at`. `finding` is
    /// `None` when the detector could not judge (too small a sample), which
    /// counts as clear. `draft` is called only when a transition is emitted.
    pub fn observe(
        &mut self,
        kind: AlertKind,
        subject: &str,
        at: Timestamp,
        finding: Option<&Finding>,
        draft: impl FnOnce() -> Option<AlertDraft>,
        out: &mut Vec<Alert>,
    ) {
        let alerting = finding.is_some_and(|f| f.alerting);
        let holding = finding.is_some_and(|f| f.alerting || f.holding);
        let mut draft = Some(draft);
        let mut take_draft = || draft.take().and_then(|d| d());
        let (for_evaluations, resolve_after) = (self.for_evaluations, self.resolve_after);
        let subjects = self.subjects_mut(kind);
        let (key, current) = match subjects.remove_entry(subject) {
            Some((key, phase)) => (key, Some(phase)),
            None if !alerting => return,
            None => (subject.to_owned(), None),
        };
        let next = match (current, alerting) {
            (None, false) => None,
            (None, true) => Some(Phase::Pending { since: at, held: 1 }),
            (Some(Phase::Pending { since, held }), true) => Some(Phase::Pending {
                since,
                held: held + 1,
            }),
            (Some(Phase::Pending { .. }), false) => None,
            (Some(Phase::Firing { alert, .. }), _) if holding => Some(Phase::Firing {
                alert,
                clear_for: 0,
                unjudged: 0,
            }),
            (
                Some(Phase::Firing {
                    alert,
                    clear_for,
                    unjudged,
                }),
                _,
            ) if finding.is_none() => {
                if unjudged + 1 >= resolve_after * STALE_AFTER {
                    out.push(resolved(*alert, at, take_draft()));
                    None
                } else {
                    Some(Phase::Firing {
                        alert,
                        clear_for,
                        unjudged: unjudged + 1,
                    })
                }
            }
            (
                Some(Phase::Firing {
                    alert, clear_for, ..
                }),
                _,
            ) => {
                if clear_for + 1 >= resolve_after {
                    out.push(resolved(*alert, at, take_draft()));
                    None
                } else {
                    Some(Phase::Firing {
                        alert,
                        clear_for: clear_for + 1,
                        unjudged: 0,
                    })
                }
            }
        };
        let next = match next {
            Some(Phase::Pending { since, held }) if held >= for_evaluations => match take_draft() {
                Some(draft) => {
                    let alert = firing(kind, subject, since, at, draft);
                    out.push(alert.clone());
                    Some(Phase::Firing {
                        alert: Box::new(alert),
                        clear_for: 0,
                        unjudged: 0,
                    })
                }
                None => Some(Phase::Pending { since, held }),
            },
            other => other,
        };
        if let Some(phase) = next {
            subjects.insert(key, phase);
        }
    }

    /// Whether `subject` is pending or firing for `kind`.
    pub fn contains(&self, kind: AlertKind, subject: &str) -> bool {
        self.subjects(kind)
            .is_some_and(|subjects| subjects.contains_key(subject))
    }

    /// Alerts firing now.
    pub fn active(&self) -> impl Iterator<Item = ActiveAlert> + '_ {
        self.phases().filter_map(|(_, _, phase)| match phase {
            Phase::Firing { alert, .. } => Some(ActiveAlert {
                kind: alert.kind,
                severity: alert.severity,
                manager_id: alert.manager_id.clone(),
                team: alert.team.clone(),
            }),
            Phase::Pending { .. } => None,
        })
    }

    /// Subjects pending or firing.
    pub fn len(&self) -> usize {
        self.entries
            .iter()
            .map(|(_, subjects)| subjects.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn firing(
    kind: AlertKind,
    subject: &str,
    since: Timestamp,
    at: Timestamp,
    draft: AlertDraft,
) -> Alert {
    let episode = if since.0 % DAY == 0 {
        since.date_string()
    } else {
        since.to_string()
    };
    Alert {
        alert_id: format!("{}/{subject}/{episode}", kind.as_str()),
        status: Status::Firing,
        kind,
        severity: draft.finding.severity,
        manager_id: draft.manager_id,
        team: draft.team,
        account_id: draft.account_id,
        detected_at: at,
        window_start: draft.window_start,
        window_end: draft.window_end,
        observed: draft.finding.observed,
        expected: draft.finding.expected,
        test: draft.finding.test,
        p_value: draft.finding.p_value,
        evidence: draft.evidence,
        summary: draft.finding.summary.text(),
    }
}

/// The resolved transition: same id, kind, severity and subject as the
/// firing one; the latest numbers when the detector could still judge.
fn resolved(fired: Alert, at: Timestamp, latest: Option<AlertDraft>) -> Alert {
    let mut alert = fired;
    alert.status = Status::Resolved;
    alert.detected_at = at;
    match latest {
        Some(draft) => {
            alert.window_start = draft.window_start;
            alert.window_end = draft.window_end;
            alert.observed = draft.finding.observed;
            alert.expected = draft.finding.expected;
            alert.test = draft.finding.test;
            alert.p_value = draft.finding.p_value;
            alert.evidence = draft.evidence;
            alert.summary = format!("resolved: {}", draft.finding.summary.text());
        }
        None => {
            alert.summary = format!(
                "resolved: no longer enough data to judge; was: {}",
                alert.summary
            )
        }
    }
    alert
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::StatTest;

    fn finding(alerting: bool) -> Finding {
        Finding {
            alerting,
            holding: false,
            observed: 0.1,
            expected: 0.5,
            test: StatTest::BinomialLower {
                k: 3,
                n: 30,
                p: 0.5,
            },
            p_value: 1e-5,
            component_p: 1e-5,
            severity: Severity::Warning,
            summary: crate::detect::Summary::new(|| "s".into()),
        }
    }

    fn draft(f: &Finding) -> Option<AlertDraft> {
        Some(AlertDraft {
            manager_id: "m".into(),
            team: "t".into(),
            account_id: None,
            window_start: Timestamp(0),
            window_end: Timestamp(DAY),
            finding: f.clone(),
            evidence: vec![],
        })
    }

    /// Runs a condition sequence, one evaluation a day; returns (day, status, id).
    fn run(conditions: &[bool]) -> Vec<(usize, Status, String)> {
        let mut life = Lifecycle::new(3, 2);
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for (day, c) in conditions.iter().enumerate() {
            let f = finding(*c);
            life.observe(
                AlertKind::WinRateDrop,
                "m",
                Timestamp(day as i64 * DAY),
                Some(&f),
                || draft(&f),
                &mut out,
            );
            seen.extend(out.drain(..).map(|a| (day, a.status, a.alert_id)));
        }
        seen
    }

    #[test]
    fn fires_after_for_evaluations_and_resolves_after_clear() {
        let got = run(&[
            false, true, true, true, true, false, true, false, false, true,
        ]);
        assert_eq!(
            got,
            vec![
                (3, Status::Firing, "win_rate_drop/m/1970-01-02".to_string()),
                (
                    8,
                    Status::Resolved,
                    "win_rate_drop/m/1970-01-02".to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_blip_shorter_than_for_never_fires() {
        assert!(run(&[true, true, false, true, true, false]).is_empty());
    }

    #[test]
    fn a_holding_condition_keeps_a_firing_alert() {
        let mut life = Lifecycle::new(1, 1);
        let mut out = Vec::new();
        let mut hold = finding(false);
        hold.holding = true;
        life.observe(
            AlertKind::WinRateDrop,
            "m",
            Timestamp(0),
            Some(&finding(true)),
            || draft(&finding(true)),
            &mut out,
        );
        life.observe(
            AlertKind::WinRateDrop,
            "m",
            Timestamp(DAY),
            Some(&hold),
            || draft(&hold),
            &mut out,
        );
        assert_eq!(out.len(), 1, "still firing");
        life.observe(
            AlertKind::WinRateDrop,
            "m",
            Timestamp(2 * DAY),
            Some(&finding(false)),
            || draft(&finding(false)),
            &mut out,
        );
        assert_eq!(out[1].status, Status::Resolved);
        assert!(life.is_empty());
    }

    #[test]
    fn a_firing_alert_the_detector_cannot_judge_stays_until_stale() {
        let mut life = Lifecycle::new(1, 2);
        let mut out = Vec::new();
        life.observe(
            AlertKind::WinRateDrop,
            "m",
            Timestamp(0),
            Some(&finding(true)),
            || draft(&finding(true)),
            &mut out,
        );
        for day in 1..20 {
            life.observe(
                AlertKind::WinRateDrop,
                "m",
                Timestamp(day * DAY),
                None,
                || None,
                &mut out,
            );
        }
        assert_eq!(out.len(), 1, "a thin sample is not innocence");
        life.observe(
            AlertKind::WinRateDrop,
            "m",
            Timestamp(20 * DAY),
            None,
            || None,
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].status, Status::Resolved);
        assert!(out[1]
            .summary
            .starts_with("resolved: no longer enough data"));
    }

    #[test]
    fn a_new_episode_gets_a_new_id() {
        let got = run(&[true, true, true, false, false, true, true, true]);
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].2, "win_rate_drop/m/1970-01-06");
    }
}

//! The backtest's report as a data engineer reads it: what was replayed and
//! how fast, the engine's state at the end, the transitions by kind; and,
//! against ground-truth labels, the scores, each diversion style's recall
//! and delay, which detector found the diverters first, and by name the
//! diverters missed and the managers falsely accused; and the verdicts on
//! the managers and accounts traced, evaluation by evaluation.
//!
//! Plain text on any writer; the binary passes standard output.

use std::io::{self, Write};
use std::time::Duration;

use super::{
    score_accounts, score_managers, BacktestReport, DiverterOutcome, GroundTruth, ManagerScore,
    Trace, Traced,
};
use crate::alert::AlertKind;
use crate::engine::account::AccountTrace;
use crate::engine::manager::ManagerTrace;
use crate::event::Id;

/// At most this many missed diverters, and as many false accusations, are
/// listed by name.
const LISTED: usize = 20;

/// The replay: messages and rate, outcomes, the state at the end, dead
/// letters and transitions.
///
/// # Errors
///
/// Only the writer's.
pub fn write_replay(
    out: &mut impl Write,
    report: &BacktestReport,
    elapsed: Duration,
) -> io::Result<()> {
    let elapsed = elapsed.as_secs_f64();
    writeln!(
        out,
        "Replayed {} messages in {elapsed:.2} s ({:.0}/s); watermark {}.",
        report.messages,
        report.messages as f64 / elapsed.max(1e-9),
        report
            .watermark
            .map_or("none".to_owned(), |w| w.to_string())
    )?;
    for (outcome, count) in &report.outcomes {
        writeln!(out, "  {outcome:<12} {count}")?;
    }
    let state = &report.state;
    let forgotten: Vec<String> = state
        .evictions
        .iter()
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect();
    writeln!(
        out,
        "State at the end: {} accounts, {} open opportunities, {} managers, {} event ids, {} events not yet behind the watermark; forgotten (TTL or cap): {}.",
        state.accounts,
        state.open_opportunities,
        state.managers,
        state.remembered_event_ids,
        state.buffered_events,
        forgotten.join(", ")
    )?;
    for (reason, count) in &report.dead_letters {
        writeln!(out, "  dead letter: {reason:<14} {count}")?;
    }
    if report.transitions.is_empty() {
        writeln!(out, "No alerts.")?;
    }
    for ((kind, status), count) in &report.transitions {
        writeln!(out, "  alerts {kind:<26} {status:<9} {count}")?;
    }
    Ok(())
}

/// The scores of the replay's alerts against `truth`: managers, accounts,
/// and the diverters in detail.
///
/// # Errors
///
/// Only the writer's.
pub fn write_scores(
    out: &mut impl Write,
    report: &BacktestReport,
    truth: &GroundTruth,
) -> io::Result<()> {
    let score = score_managers(&report.alerts, truth);
    writeln!(
        out,
        "Managers: {} of {} diverters detected (recall {:.2}); {} accused, {} falsely (precision {:.2}, {:.2} per 100 manager-years); median delay {}.",
        score.detected,
        score.diverters,
        score.recall,
        score.accused,
        score.falsely_accused,
        score.precision,
        score.false_per_100_manager_years,
        days(score.median_delay_days)
    )?;
    let accounts = score_accounts(&report.alerts, truth);
    writeln!(
        out,
        "Accounts: {} of {} churned accounts detected (recall {:.2}); {} alerts, {} false (precision {:.2}).",
        accounts.detected, accounts.churned, accounts.recall, accounts.alerts, accounts.false_alerts, accounts.precision
    )?;
    write_diverters(out, &score)
}

fn days(d: Option<f64>) -> String {
    d.map_or("n/a".to_owned(), |d| format!("{d:.0} days"))
}

/// Each diversion style's recall and delay, which detector found the
/// diverters first, and by name the diverters missed and the managers
/// falsely accused, each with the alert that accused them.
fn write_diverters(out: &mut impl Write, score: &ManagerScore) -> io::Result<()> {
    let styles = score.by_style();
    if !styles.is_empty() {
        writeln!(
            out,
            "Diverters by style (found; median delay from the onset to the first alert):"
        )?;
        for style in &styles {
            writeln!(
                out,
                "  {:<18} {} of {}; {}",
                style.style,
                style.detected,
                style.diverters,
                days(style.median_delay_days)
            )?;
        }
    }
    let first = score.found_first_by();
    if !first.is_empty() {
        let kinds: Vec<String> = first
            .iter()
            .map(|(kind, found)| format!("{} {found}", kind.as_str()))
            .collect();
        writeln!(
            out,
            "First alert on each diverter found, by kind: {}.",
            kinds.join(", ")
        )?;
    }
    let missed: Vec<&DiverterOutcome> = score
        .outcomes
        .iter()
        .filter(|o| o.found.is_none())
        .collect();
    if !missed.is_empty() {
        writeln!(out, "Diverters missed ({}):", missed.len())?;
        for outcome in missed.iter().take(LISTED) {
            let style = outcome
                .style
                .as_deref()
                .map_or(String::new(), |style| format!("{style}, "));
            writeln!(
                out,
                "  {} ({style}onset {}, {} days of data after it)",
                outcome.manager_id, outcome.onset, outcome.days_observed
            )?;
        }
        write_more(out, missed.len())?;
    }
    if !score.false_accusations.is_empty() {
        writeln!(
            out,
            "Managers falsely accused ({}), each with the first alert that did it:",
            score.false_accusations.len()
        )?;
        for accused in score.false_accusations.iter().take(LISTED) {
            let first = &accused.first;
            writeln!(
                out,
                "  {} at {}, {}: {}",
                accused.manager_id,
                first.at,
                first.kind.as_str(),
                first.summary
            )?;
        }
        write_more(out, score.false_accusations.len())?;
    }
    Ok(())
}

/// The line that says how many of a list were not written.
fn write_more(out: &mut impl Write, listed: usize) -> io::Result<()> {
    if listed > LISTED {
        writeln!(out, "  … and {} more", listed - LISTED)?;
    }
    Ok(())
}

/// The traced verdicts (`--trace`, `--trace-account`). Manager by manager:
/// one line per evaluation with each detector's p-value as its bar is
/// applied to it (`*` where every condition to alert held), then, for each
/// detector, the evaluation that came closest to its bar, with its
/// sentence. Account by account: one line per evaluation, its silence
/// against its rhythm and bar, and how it counted in its owner's book.
/// Those asked for and never judged are named.
///
/// # Errors
///
/// Only the writer's.
pub fn write_traces(out: &mut impl Write, traces: &[Trace], asked: Traced) -> io::Result<()> {
    for manager in asked.managers {
        let own: Vec<&ManagerTrace> = traces
            .iter()
            .filter_map(Trace::manager)
            .filter(|t| t.manager_id == *manager)
            .collect();
        write_manager_trace(out, manager, &own)?;
    }
    for account in asked.accounts {
        let own: Vec<&AccountTrace> = traces
            .iter()
            .filter_map(Trace::account)
            .filter(|t| t.account_id == *account)
            .collect();
        let Some(first) = own.first() else {
            writeln!(
                out,
                "Trace of account {account}: never judged (not in the input, or forgotten before an evaluation)."
            )?;
            continue;
        };
        writeln!(
            out,
            "Trace of account {account} ({} of {} at the first evaluation): its silence against its rhythm and the bar, at each evaluation.",
            first.manager_id, first.team
        )?;
        for trace in &own {
            writeln!(out, "{}", trace.to_line())?;
        }
        // The first day it alerted, or else the day it came closest.
        let silences = || {
            own.iter()
                .filter_map(|t| t.silence.as_ref().map(|s| (t.at, s)))
        };
        let first_alerting = silences().find(|(_, s)| s.alerting);
        let closest =
            silences().min_by(|(_, a), (_, b)| (a.p_value / a.bar).total_cmp(&(b.p_value / b.bar)));
        match (first_alerting, closest) {
            (Some((at, s)), _) => writeln!(
                out,
                "First alerting: {}, p={:.2e} against {:.0e}.",
                at.date_string(),
                s.p_value,
                s.bar
            )?,
            (None, Some((at, s))) => writeln!(
                out,
                "Never alerting; closest to its bar: {}, p={:.2e} against {:.0e}.",
                at.date_string(),
                s.p_value,
                s.bar
            )?,
            (None, None) => writeln!(out, "Never silent past its usual gap while judged.")?,
        }
    }
    Ok(())
}

fn write_manager_trace(
    out: &mut impl Write,
    manager: &Id,
    own: &[&ManagerTrace],
) -> io::Result<()> {
    let Some(first) = own.first() else {
        return writeln!(
            out,
            "Trace of {manager}: never judged (not in the input, or no book, deal or loss of theirs by an evaluation)."
        );
    };
    writeln!(
        out,
        "Trace of {manager} ({}): each detector's p-value (corrected for the windows or alternatives tried) at each evaluation; * where every condition to alert held.",
        first.team
    )?;
    for trace in own {
        let mut line = trace.at.date_string();
        if trace.findings.is_empty() {
            line.push_str("  nothing judged");
        }
        for f in &trace.findings {
            let mark = if f.alerting { "*" } else { "" };
            line.push_str(&format!("  {} {:.2e}{mark}", f.kind.as_str(), f.p_value));
        }
        writeln!(out, "{line}")?;
    }
    writeln!(out, "Closest to each bar:")?;
    for kind in AlertKind::ALL {
        let closest = own
            .iter()
            .flat_map(|t| t.findings.iter().map(move |f| (t.at, f)))
            .filter(|(_, f)| f.kind == kind)
            .min_by(|(_, a), (_, b)| (a.p_value / a.alpha).total_cmp(&(b.p_value / b.alpha)));
        if let Some((at, f)) = closest {
            writeln!(
                out,
                "  {} on {}: p={:.2e} against alpha {:.0e}: {}",
                kind.as_str(),
                at.date_string(),
                f.p_value,
                f.alpha,
                f.summary
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::score::tests::{their_alerts, three_diverters};
    use super::*;

    #[test]
    fn the_scores_name_the_missed_and_the_falsely_accused() {
        let report = BacktestReport {
            alerts: their_alerts(),
            ..BacktestReport::default()
        };
        let mut text = Vec::new();
        write_scores(&mut text, &report, &three_diverters()).unwrap();
        let text = String::from_utf8(text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "Managers: 2 of 3 diverters detected (recall 0.67); 3 accused, 2 falsely (precision 0.33, 121.67 per 100 manager-years); median delay 25 days."
        );
        assert!(lines[1].starts_with("Accounts: "), "{text}");
        assert_eq!(
            lines[2..],
            [
                "Diverters by style (found; median delay from the onset to the first alert):",
                "  blatant            2 of 2; 25 days",
                "  subtle             0 of 1; n/a",
                "First alert on each diverter found, by kind: book_churn 1, diversion_risk 1.",
                "Diverters missed (1):",
                "  d3 (subtle, onset 2025-09-28T00:00:00Z, 30 days of data after it)",
                "Managers falsely accused (2), each with the first alert that did it:",
                "  d2 at 2025-01-31T00:00:00Z, win_rate_drop: win_rate_drop on d2",
                "  h1 at 2025-07-20T00:00:00Z, competitor_concentration: competitor_concentration on h1",
            ]
        );
    }

    #[test]
    fn a_trace_lists_each_verdict_and_the_closest_to_each_bar() {
        use crate::alert::StatTest;
        use crate::engine::manager::TracedFinding;
        use crate::time::Timestamp;

        let finding = |p_value: f64, alerting: bool, summary: &str| TracedFinding {
            kind: AlertKind::BookChurn,
            p_value,
            alpha: 2e-5,
            alerting,
            observed: 0.3,
            expected: 0.01,
            test: StatTest::BinomialUpper {
                k: 3,
                n: 10,
                p: 0.01,
            },
            test_p_value: p_value / 10.0,
            summary: summary.into(),
        };
        let day = |d: i64, findings: Vec<TracedFinding>| ManagerTrace {
            manager_id: "m1".into(),
            team: "t1".into(),
            at: Timestamp::from_day(20_000 + d),
            findings,
        };
        let traces = [
            day(0, vec![]),
            day(1, vec![finding(1e-3, false, "far")]),
            day(2, vec![finding(1e-5, true, "closest")]),
            day(3, vec![finding(4e-4, false, "again")]),
        ]
        .map(Trace::Manager);
        let asked = Traced {
            managers: &["m1".into(), "m2".into()],
            accounts: &["a1".into()],
        };
        let mut text = Vec::new();
        write_traces(&mut text, &traces, asked).unwrap();
        let text = String::from_utf8(text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("Trace of m1 (t1): "), "{text}");
        assert_eq!(
            lines[1..],
            [
                "2024-10-04  nothing judged",
                "2024-10-05  book_churn 1.00e-3",
                "2024-10-06  book_churn 1.00e-5*",
                "2024-10-07  book_churn 4.00e-4",
                "Closest to each bar:",
                "  book_churn on 2024-10-06: p=1.00e-5 against alpha 2e-5: closest",
                "Trace of m2: never judged (not in the input, or no book, deal or loss of theirs by an evaluation).",
                "Trace of account a1: never judged (not in the input, or forgotten before an evaluation).",
            ]
        );
    }

    #[test]
    fn a_replay_without_alerts_says_so() {
        let report = BacktestReport {
            messages: 3,
            ..BacktestReport::default()
        };
        let mut text = Vec::new();
        write_replay(&mut text, &report, Duration::from_secs(2)).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.starts_with("Replayed 3 messages in 2.00 s (2/s); watermark none.\n"),
            "{text}"
        );
        assert!(text.ends_with("No alerts.\n"), "{text}");
    }
}

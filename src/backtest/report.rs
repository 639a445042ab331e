//! The backtest's report as a data engineer reads it: what was replayed and
//! how fast, the engine's state at the end, the transitions by kind; and,
//! against ground-truth labels, the scores, each diversion style's recall
//! and delay, which detector found the diverters first, and by name the
//! diverters missed and the managers falsely accused.
//!
//! Plain text on any writer; the binary passes standard output.

use std::io::{self, Write};
use std::time::Duration;

use super::{
    score_accounts, score_managers, BacktestReport, DiverterOutcome, GroundTruth, ManagerScore,
};

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

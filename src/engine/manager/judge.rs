//! Judging one manager at an evaluation: the yardsticks every manager is
//! judged against, each detector's finding on the manager's windows and
//! book, their combination, and the lifecycle's view of them with the
//! evidence cited.

use std::collections::BTreeSet;
use std::ops::Range;

use crate::alert::{Alert, AlertKind};
use crate::config::Config;
use crate::detect::book_churn::{self, Bars, BookInputs, Cited};
use crate::detect::competitor::{self, CompetitorCounts};
use crate::detect::diversion_risk::{self, Component};
use crate::detect::{leakage, win_rate, Finding};
use crate::event::Id;
use crate::stats;
use crate::time::Timestamp;

use crate::engine::account::{Book, ExpectedOrders};
use crate::engine::base_rates::BaseRates;
use crate::engine::fact::{largest_between, EvidenceRef, LeakRoute};
use crate::engine::lifecycle::{AlertDraft, Lifecycle};
use crate::engine::Map;

use super::{
    cut_windows, rate_windows, ManagerState, RivalTally, TeamBooks, TeamSums, UsualShares, Windows,
};

/// What every manager is judged against at one evaluation.
pub(super) struct Yardsticks<'a> {
    pub(super) at: Timestamp,
    /// The day after the last whole day judged.
    pub(super) end_day: i64,
    pub(super) config: &'a Config,
    pub(super) books: &'a Map<Id, Book>,
    pub(super) base: &'a BaseRates,
    pub(super) team_sums: &'a Map<Id, TeamSums>,
    pub(super) team_books: &'a Map<&'a str, TeamBooks>,
    /// The books that stand out from the rest of their team.
    pub(super) standing_out_in_team: &'a BTreeSet<&'a Id>,
    pub(super) usual: UsualShares<'a>,
    pub(super) competitors: &'a [String],
    /// The sums of a team that is not known.
    pub(super) no_team: TeamSums,
}

/// What one evaluation found about one manager, for the lifecycle.
pub(super) struct Verdict {
    pub(super) windows: Windows,
    pub(super) win: Option<Finding>,
    pub(super) leak: Option<Finding>,
    /// Whether `leak` is about quotes cut alone.
    pub(super) leak_cuts: bool,
    pub(super) churn: Option<Finding>,
    /// Which of the book's accounts `churn` cites.
    pub(super) churn_cites: Cited,
    /// Competitor concentration, and the competitor's name.
    pub(super) rival: Option<(Finding, String)>,
    pub(super) risk: Option<Finding>,
}

impl Verdict {
    /// Whether showing the verdict to the lifecycle can change anything: a
    /// finding alerts, or an alert about the manager is pending or firing.
    pub(super) fn moves(&self, manager_id: &str, lifecycle: &Lifecycle) -> bool {
        [
            (AlertKind::WinRateDrop, self.win.as_ref()),
            (AlertKind::PipelineLeakage, self.leak.as_ref()),
            (AlertKind::BookChurn, self.churn.as_ref()),
            (
                AlertKind::CompetitorConcentration,
                self.rival.as_ref().map(|(f, _)| f),
            ),
            (AlertKind::DiversionRisk, self.risk.as_ref()),
        ]
        .into_iter()
        .any(|(kind, finding)| {
            finding.is_some_and(|f| f.alerting) || lifecycle.contains(kind, manager_id)
        })
    }
}

/// Judges one manager at an evaluation: drops what fell out of every
/// window, runs every detector and sets the gauges.
pub(super) fn judge(
    manager_id: &Id,
    manager: &mut ManagerState,
    (own_rivals, named): &(RivalTally, u64),
    ys: &Yardsticks,
) -> Verdict {
    let named = *named;
    manager.changed = true;
    let detect = ys.config.detect_for(&manager.team);
    let w = Windows::new(ys.end_day, detect);
    w.forget_older(
        [&mut manager.closes, &mut manager.exits],
        &mut manager.cuts,
        &mut manager.rivals,
    );
    manager.evidence_from = Timestamp::from_day(
        w.win_recent[2]
            .start
            .min(w.leak_recent[2].start)
            .min(w.rivals_from),
    );

    let team = ys.team_sums.get(&manager.team).unwrap_or(&ys.no_team);
    let team_name = manager.team.clone();

    // Win rate and leakage, each over three recent windows.
    let windows = rate_windows(&manager.closes, &team.closes, &w.win_recent, &w.win_history);
    manager.gauges.win_rate = windows[2].0.recent.rate();
    let win = win_rate::assess(&windows, &detect.win_rate, &team_name);
    let windows = rate_windows(&manager.exits, &team.exits, &w.leak_recent, &w.leak_history);
    manager.gauges.leakage_ratio = windows[2].0.recent.rate();
    let cut_inputs = cut_windows(&windows, &manager.cuts, &team.cuts, &w);
    let (leak, leak_cuts) =
        match leakage::assess(&windows, &cut_inputs, &detect.leakage, &team_name) {
            Some((finding, cuts)) => (Some(finding), cuts),
            None => (None, false),
        };

    // Book churn.
    let book = ys.books.get(manager_id);
    let own_book = book.map_or(BookInputs::default(), |b| {
        // The company's and the rest of the team's counts without the
        // manager's own (already left out where the book stands out).
        let company = if ys.base.stands_out(manager_id) {
            ys.base.company
        } else {
            ys.base.company.without(&b.counts)
        };
        let team_books = ys
            .team_books
            .get(b.team.as_str())
            .copied()
            .unwrap_or_default();
        let team = if ys.standing_out_in_team.contains(manager_id) {
            team_books.counts
        } else {
            team_books.counts.without(&b.counts)
        };
        BookInputs {
            judged: b.counts.judged,
            churning: b.counts.churning,
            visited: b.counts.visited,
            shrinking: b.counts.shrinking,
            company_judged: company.judged,
            company_churning: company.churning,
            company_visited: company.visited,
            company_shrinking: company.shrinking,
            team_judged: team.judged,
            team_churning: team.churning,
            team_visited: team.visited,
            team_shrinking: team.shrinking,
            orders: b.orders,
            expected_orders: b.expected_orders.map(ExpectedOrders::get),
            team_orders: std::array::from_fn(|i| team_books.orders[i].saturating_sub(b.orders[i])),
            team_expected_orders: std::array::from_fn(|i| {
                team_books.expected[i].without(b.expected_orders[i]).get()
            }),
        }
    });
    manager.gauges.overdue_accounts = own_book.churning;
    let bars = Bars::of(&detect.churn);
    let (churn, churn_cites) = match book_churn::assess(&own_book, &bars, &detect.book_churn) {
        Some((finding, cited)) => (Some(finding), cited),
        None => (None, Cited::Churning),
    };

    // Competitor concentration, among enough named losses to judge (with
    // fewer, most managers on most days, the rivals' yardsticks are not
    // worked out at all).
    let rival = if named >= detect.competitor.min_losses {
        let mut counts: Vec<CompetitorCounts> = own_rivals
            .iter()
            .map(|(rival, losses)| {
                let (team_share, team_weight) = ys.usual.without(
                    &team_name,
                    *rival,
                    (*losses, named),
                    team.named.saturating_sub(named),
                );
                CompetitorCounts {
                    competitor: &ys.competitors[*rival as usize],
                    losses: *losses,
                    team_share,
                    team_weight,
                }
            })
            .collect();
        counts.sort_by(|a, b| a.competitor.cmp(b.competitor));
        competitor::assess(
            &counts,
            named,
            team.rivals.len(),
            &detect.competitor,
            ys.end_day - w.rivals_from,
        )
    } else {
        None
    };

    // Diversion risk: the components that could be judged.
    let mut components = Vec::new();
    let mut push = |name: &'static str, finding: Option<&Finding>| {
        if let Some(f) = finding {
            components.push(Component {
                name,
                p_value: f.component_p,
                observed: f.observed,
                expected: f.expected,
            });
        }
    };
    // Win rate and leakage share their lost deals (a no-decision loss
    // counts in both): one component, the stronger, Bonferroni × 2,
    // so Fisher's independence is not assumed where it fails.
    let deals = match (win.as_ref(), leak.as_ref()) {
        (Some(w), Some(l)) => Some(if w.component_p <= l.component_p {
            ("win rate", w)
        } else {
            ("leakage", l)
        }),
        (Some(w), None) => Some(("win rate", w)),
        (None, Some(l)) => Some(("leakage", l)),
        (None, None) => None,
    };
    if let Some((name, finding)) = deals {
        let mut merged = finding.clone();
        merged.component_p = (finding.component_p * 2.0).min(1.0);
        push(name, Some(&merged));
    }
    push("book churn", churn.as_ref());
    push("competitor share", rival.as_ref().map(|(f, _)| f));
    let risk = diversion_risk::assess(&components, &detect.diversion_risk);
    manager.gauges.risk_score = risk.as_ref().map_or(0.0, |r| stats::score(r.p_value));
    Verdict {
        windows: w,
        win,
        leak,
        leak_cuts,
        churn,
        churn_cites,
        rival,
        risk,
    }
}

/// Shows one manager's verdict to the lifecycle, with evidence built only
/// for a transition.
pub(super) fn observe_verdict(
    manager_id: &Id,
    manager: &ManagerState,
    verdict: &Verdict,
    ys: &Yardsticks,
    max_evidence: usize,
    lifecycle: &mut Lifecycle,
    out: &mut Vec<Alert>,
) {
    let w = &verdict.windows;
    let (win, leak, churn, risk) = (&verdict.win, &verdict.leak, &verdict.churn, &verdict.risk);
    let rival = &verdict.rival;
    let at = ys.at;
    let team_name = &manager.team;
    let book = ys.books.get(manager_id);
    let window_start = |ranges: &[Range<i64>; 3]| Timestamp::from_day(ranges[2].start);
    // Evidence, built only when a transition is emitted.
    let losses = &manager.losses;
    let leaks = &manager.leaks;
    let win_evidence = || {
        largest_between(
            losses,
            window_start(&w.win_recent),
            at,
            max_evidence,
            |_| true,
        )
    };
    // A finding about cut quotes cites the cut deals.
    let cut_note = Some(LeakRoute::Cut.as_str());
    let leak_evidence = || {
        largest_between(leaks, window_start(&w.leak_recent), at, max_evidence, |e| {
            !verdict.leak_cuts || e.note == cut_note
        })
    };
    let churn_evidence = || {
        book.map_or_else(Vec::new, |b| {
            book_evidence(b, verdict.churn_cites, max_evidence)
        })
    };
    let rival_name = rival.as_ref().map(|(_, name)| name.clone());
    let rival_evidence = || {
        largest_between(
            losses,
            Timestamp::from_day(w.rivals_from),
            at,
            max_evidence,
            |e| e.competitor.as_deref() == rival_name.as_deref(),
        )
    };
    let draft = |finding: &Option<Finding>, start: Timestamp, evidence: Vec<serde_json::Value>| {
        finding.clone().map(|finding| AlertDraft {
            manager_id: manager_id.to_string(),
            team: team_name.to_string(),
            account_id: None,
            window_start: start,
            window_end: at,
            finding,
            evidence,
        })
    };
    let subject = manager_id.as_str();
    lifecycle.observe(
        AlertKind::WinRateDrop,
        subject,
        at,
        win.as_ref(),
        || draft(win, window_start(&w.win_recent), win_evidence()),
        out,
    );
    lifecycle.observe(
        AlertKind::PipelineLeakage,
        subject,
        at,
        leak.as_ref(),
        || draft(leak, window_start(&w.leak_recent), leak_evidence()),
        out,
    );
    lifecycle.observe(
        AlertKind::BookChurn,
        subject,
        at,
        churn.as_ref(),
        || draft(churn, at, churn_evidence()),
        out,
    );
    let rival_only = rival.as_ref().map(|(f, _)| f.clone());
    lifecycle.observe(
        AlertKind::CompetitorConcentration,
        subject,
        at,
        rival_only.as_ref(),
        || {
            draft(
                &rival_only,
                Timestamp::from_day(w.rivals_from),
                rival_evidence(),
            )
        },
        out,
    );
    let risk_evidence = || {
        let mut items = churn_evidence();
        items.truncate(max_evidence / 2);
        for source in [win_evidence(), leak_evidence()] {
            items.extend(
                source
                    .into_iter()
                    .take(max_evidence.saturating_sub(items.len()) / 2 + 1),
            );
        }
        items.truncate(max_evidence);
        items
    };
    let risk_start = window_start(&w.win_recent).min(window_start(&w.leak_recent));
    lifecycle.observe(
        AlertKind::DiversionRisk,
        subject,
        at,
        risk.as_ref(),
        || draft(risk, risk_start, risk_evidence()),
        out,
    );
}

/// The churning accounts of a book, or the ones the manager kept visiting
/// (as `cited`), those still visited first, each cited by its last order and
/// latest visits.
pub(super) fn book_evidence(book: &Book, cited: Cited, max: usize) -> Vec<serde_json::Value> {
    let mut accounts: Vec<_> = book
        .churning_accounts
        .iter()
        .filter(|a| match cited {
            Cited::Churning => a.churning,
            Cited::Visited(None) => a.visited,
            Cited::Visited(Some(bar)) => a.visited && a.p_value < bar,
        })
        .collect();
    accounts.sort_by(|a, b| {
        b.visited
            .cmp(&a.visited)
            .then(a.p_value.total_cmp(&b.p_value))
            .then(a.account_id.cmp(&b.account_id))
    });
    accounts
        .iter()
        .flat_map(|a| a.evidence.iter().map(EvidenceRef::to_json))
        .take(max)
        .collect()
}

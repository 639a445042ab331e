//! Judging one account at an evaluation: its silence against its rhythm
//! (account churn), its fall in order value, and its place in its owner's
//! book; and the gaps its latest orders ended, for the calibration.

use crate::config::{ChurnConfig, DetectConfig};
use crate::detect::account_churn::{self, OrderSilence};
use crate::detect::book_churn::Bars;
use crate::detect::Finding;
use crate::stats;
use crate::time::{Timestamp, DAY};

use crate::engine::calibration::{Calibration, TailCounts};
use crate::engine::pace::CompanyPace;

use super::trace::{AccountTrace, TracedSilence};
use super::{
    cite_leaving, judged_shapes, lapsed_contract, AccountState, BooksByManager, ChurningAccount,
    ExpectedOrders, MaybeTime, RECENT_ORDERS,
};

/// The gaps ended by the account's orders placed within `window` (the day
/// an evaluation closes), each with its survival, in business time, under
/// the rhythm an alert judges the account's silences by (see
/// `calibration`). Only an account with a learnt rhythm counts; a gap no
/// longer than the mean passes no tail level and costs no survival.
pub(super) fn completed_gaps(
    account: &AccountState,
    window: std::ops::Range<Timestamp>,
    churn: &ChurnConfig,
    pace: &CompanyPace,
) -> TailCounts {
    let mut counts = TailCounts::default();
    let newest = i64::from(account.recent_orders[0]);
    if !(window.start.0..window.end.0).contains(&newest)
        || !account.rhythm.learnt(churn.min_gaps, churn.min_history)
    {
        return counts;
    }
    let mean = account.rhythm.gap_mean();
    // The shape as it was before these orders: the latest gaps' spread
    // without the gaps they ended (a long one would excuse itself).
    let mut shape = None;
    let judged_shape = || {
        let mut before = [0u32; RECENT_ORDERS];
        let in_window = account
            .recent_orders
            .iter()
            .take_while(|t| i64::from(**t) >= window.start.0)
            .count();
        before[..RECENT_ORDERS - in_window].copy_from_slice(&account.recent_orders[in_window..]);
        judged_shapes(&account.rhythm, &before, churn.max_shape)
            .0
            .alerting
    };
    let mut newer = newest;
    for older in account.recent_orders[1..].iter().map(|t| i64::from(*t)) {
        if older == 0 || newer < window.start.0 {
            break;
        }
        // Orders on the same day are one delivery (see `delivery_gaps`).
        if newer - older < DAY / 2 {
            continue;
        }
        let days = (newer - older) as f64 / DAY as f64;
        let business_days = days * pace.ratio(Timestamp(older).day(), Timestamp(newer).day());
        let survival = (business_days > mean).then(|| {
            let shape = *shape.get_or_insert_with(judged_shape);
            stats::gamma_survival(business_days, shape, mean / shape)
        });
        counts += TailCounts::of_gap(survival);
        newer = older;
    }
    counts
}

/// What the company tells the judging of each of its accounts at an
/// evaluation: its pace (business time) and how late its returning
/// customers' gaps ran (the calibrated tail).
pub(super) struct CompanyView<'a> {
    pub(super) pace: &'a CompanyPace,
    pub(super) calibration: &'a Calibration,
}

/// Judges one account's silence and value and adds the account to its
/// owner's book; returns the silence's finding when the account-churn
/// lifecycle must see it (it alerts, or the account is watched). A traced
/// account's judging is also kept in `trace`.
pub(super) fn judge_rhythm(
    account_id: &str,
    account: &mut AccountState,
    at: Timestamp,
    detect: &DetectConfig,
    company: &CompanyView,
    books: &mut BooksByManager,
    mut trace: Option<&mut AccountTrace>,
) -> Option<Finding> {
    let CompanyView { pace, calibration } = *company;
    let churn = &detect.churn;
    let lapsed = lapsed_contract(account.lapsed.as_deref(), at, churn);
    let judged = account.rhythm.learnt(churn.min_gaps, churn.min_history);
    // Looked up once: the kept visits are a pointer away.
    let last_visit_days = account.days_since_visit(at, churn);
    let recently_assigned = account
        .assigned_at
        .get()
        .is_some_and(|t| at.0 - t.0 < churn.reassign_grace.as_secs() as i64);

    let mut p_value = 1.0;
    let mut observed = None;
    if let (true, Some(last_order)) = (judged, &account.last_order) {
        let elapsed_days = (at.0 - last_order.occurred_at.0) as f64 / DAY as f64;
        // Cheap first: an account within its usual gap is not overdue.
        let min_silence = churn.min_silence.as_secs() as f64 / DAY as f64;
        if (elapsed_days > account.rhythm.gap_mean() && elapsed_days >= min_silence)
            || account.watched
        {
            let business_days = elapsed_days * pace.ratio(last_order.occurred_at.day(), at.day());
            let (shapes, recent) =
                judged_shapes(&account.rhythm, &account.recent_orders, churn.max_shape);
            let mut silence = OrderSilence {
                elapsed_days,
                business_days,
                mean_gap: account.rhythm.gap_mean(),
                shape: shapes.alerting,
                visits_since: u32::from(account.visits_since),
                last_visit_days,
                contract_lapsed: lapsed.is_some(),
                last_order: last_order.occurred_at,
                longest_recent_gap: recent.longest,
                tail_scale: 1.0,
            };
            let mut judgement = account_churn::judge(&silence, churn);
            p_value = if shapes.compared == shapes.alerting {
                judgement.p_value
            } else {
                let silence = OrderSilence {
                    shape: shapes.compared,
                    ..silence
                };
                account_churn::silence_test(&silence).p_value()
            };
            // An alert judges the silence at the company's calibrated tail,
            // as likely as returning customers' gaps say (`calibration`):
            // under a less regular shape that gives that, which its test
            // then publishes (sought only where the lifecycle must see the
            // silence). Book churn, which holds a book to the company's own
            // shares of churning accounts, keeps the rhythm's p-value.
            let rhythm_p = judgement.p_value;
            let calibrated = calibration.p_value(judgement.p_value);
            if calibrated > judgement.p_value {
                if calibrated < account_churn::alerting_bar(&silence, churn) || account.watched {
                    silence.shape = account_churn::shape_with_survival(
                        silence.business_days / silence.mean_gap,
                        calibrated,
                        silence.shape,
                        judgement.p_value,
                    );
                    silence.tail_scale = calibrated / judgement.p_value;
                    judgement = account_churn::judge(&silence, churn);
                } else {
                    judgement.alerting = false;
                }
            }
            if let Some(trace) = trace.as_deref_mut() {
                trace.silence = Some(TracedSilence {
                    silence,
                    // Where the calibrated tail kept the silence above the
                    // bar, the judgement still holds the rhythm's own.
                    p_value: judgement.p_value.max(calibrated),
                    rhythm_p_value: rhythm_p,
                    bar: account_churn::alerting_bar(&silence, churn),
                    alerting: judgement.alerting,
                    book_p_value: p_value,
                });
            }
            // Worded only for the lifecycle: most overdue accounts are
            // neither past the bar nor watched.
            if judgement.alerting || account.watched {
                observed = Some(judgement.finding(&silence, churn));
            }
        }
    }

    if let Some(trace) = trace.as_deref_mut() {
        trace.learnt = judged;
        trace.left_out = recently_assigned.then_some("assigned within churn.reassign_grace");
    }
    if recently_assigned {
        return observed;
    }
    let fall = account
        .rhythm
        .value_fall(churn.value_min_orders, churn.value_fall_ratio);
    let value_p = fall.map_or(1.0, |fall| fall.p_value);
    let bars = Bars::of(churn);
    let shrinking_bars = Bars::passed(&bars.shrinking, value_p);
    let shrinking = shrinking_bars > 0;
    let churning = p_value < churn.book_alpha || shrinking || lapsed.is_some();
    account.churning_since =
        MaybeTime::from(churning.then(|| account.churning_since.get().unwrap_or(at)));
    if let Some(trace) = trace.as_deref_mut() {
        trace.value_fall_p = fall.map(|fall| fall.p_value);
        trace.churning = churning;
    }
    if !judged && !churning {
        if let Some(trace) = trace {
            trace.left_out = Some("rhythm not learnt, and not churning");
        }
        return observed;
    }
    let kept_visiting =
        account_churn::kept_visiting(u32::from(account.visits_since), last_visit_days, churn);
    // A customer lost for longer than the book window is no longer news,
    // unless the manager still calls on it.
    let gone = !kept_visiting
        && account
            .churning_since
            .get()
            .is_some_and(|since| at.0 - since.0 > churn.book_window.as_secs() as i64);
    if gone {
        if let Some(trace) = trace {
            trace.left_out = Some("churning for longer than churn.book_window, not visited");
        }
        return observed;
    }
    let book = books.of(&account.manager_id, &account.team);
    book.counts.judged += 1;
    book.last_activity = book
        .last_activity
        .max(account.latest_visit.get(&account.recent_visits));
    // Order volume judges the accounts still ordering: a churning account's
    // missing orders are counted by book churn, and a customer who leaves
    // takes all its orders with it at once, which volume's Poisson test
    // would weigh as many improbable absences (one cause counted twice).
    if judged && !churning {
        let window = churn.order_window.as_secs() as i64;
        let spans = [window / 2, window, 2 * window];
        // One pass over the kept orders for the three windows, newest
        // first: it ends at the first order before the longest window (a
        // 0 before it is an order 32 bits do not hold, after 2106).
        for t in account.recent_orders.map(i64::from) {
            if t == 0 || t >= at.0 {
                continue;
            }
            if t < at.0 - spans[2] {
                break;
            }
            for (orders, span) in book.orders.iter_mut().zip(spans) {
                *orders += u64::from(t >= at.0 - span);
            }
        }
        for (expected, span) in book.expected_orders.iter_mut().zip(spans) {
            *expected +=
                ExpectedOrders::of(span as f64 / DAY as f64 / account.rhythm.gap_mean().max(1.0));
        }
    }
    // A silence the manager keeps visiting through counts at a looser bar
    // than churn: several such accounts in one book tell weeks before each
    // is overdue alone (book churn weighs them against the company's share).
    // Its silence must be past the bar, or its fall in value (which counts
    // only once significant at `book_alpha`, tighter than the loosest
    // bar); a lapsed contract alone counts at the loosest.
    let visited_bars = match (kept_visiting, churning) {
        (false, _) => 0,
        (true, churning) => {
            let leaving_p = if shrinking {
                p_value.min(value_p)
            } else {
                p_value
            };
            Bars::passed(&bars.visited, leaving_p).max(usize::from(churning))
        }
    };
    let visited = visited_bars > 0;
    if let Some(trace) = trace {
        trace.visited_bars = visited_bars;
    }
    for count in &mut book.counts.visited[..visited_bars] {
        *count += 1;
    }
    if churning {
        book.counts.churning += 1;
        for count in &mut book.counts.shrinking[..shrinking_bars] {
            *count += 1;
        }
    }
    if churning || visited {
        book.churning_accounts.push(ChurningAccount {
            account_id: account_id.into(),
            p_value: p_value.min(value_p),
            visited,
            churning,
            evidence: cite_leaving(account_id, account, lapsed, shrinking),
        });
    }
    observed
}

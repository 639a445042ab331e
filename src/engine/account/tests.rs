//! Tests of the account stage: the events it applies, the timers it fires,
//! the silences it judges and the books it reports.

use std::collections::BTreeMap;

use super::deals::{tag, OpenDealRecord, SCANNED_DEALS};
use super::kept::{CONTRACT, ORDER};
use super::rhythm::{believed, RecentGaps, Shapes};
use super::*;
use crate::detect::account_churn;
use crate::engine::base_rates::BookCounts;
use crate::engine::fact::FactKind;
use crate::event::ActivityKind;
use crate::event::LossReason;
use crate::stats;

fn event(id: &str, account: &str, day: i64, body: EventBody) -> Event {
    Event {
        event_id: id.into(),
        occurred_at: Timestamp(day * DAY + 43_200),
        manager_id: "kam-1".into(),
        account_id: account.into(),
        team: "t".into(),
        body,
    }
}

/// Two opportunity ids whose tags are equal.
fn ids_sharing_a_tag() -> (String, String) {
    let mut seen: std::collections::HashMap<u16, String> = Default::default();
    for n in 0.. {
        let id = format!("opp-{n}");
        if let Some(first) = seen.insert(tag(&id), id.clone()) {
            return (first, id);
        }
    }
    unreachable!("a 16-bit tag repeats within 65,537 ids")
}

#[test]
fn open_deals_are_found_by_id_when_tags_collide_and_past_the_scan() {
    let (a, b) = ids_sharing_a_tag();
    assert_eq!(tag(&a), tag(&b));
    for others in [2, SCANNED_DEALS + 5] {
        let mut deals = OpenDeals::default();
        let mut ids = vec![a.clone(), b.clone()];
        ids.extend((0..others).map(|n| format!("other-{n}")));
        for (n, id) in ids.iter().enumerate() {
            deals.insert(OpenDeal::new(id, "ev-0", Timestamp(0), n as f64));
        }
        // Sorted by id: the order stalled deals are swept and checkpointed in.
        let held: Vec<&str> = deals.0.iter().map(OpenDeal::opportunity_id).collect();
        let mut sorted = held.clone();
        sorted.sort_unstable();
        assert_eq!(held, sorted);
        assert_eq!(deals.get_mut(&b).map(|d| d.amount), Some(1.0));
        assert_eq!(deals.get_mut(&a).map(|d| d.amount), Some(0.0));
        assert!(deals.get_mut("opp-none").is_none());
        assert_eq!(deals.remove(&a).map(|d| d.amount), Some(0.0));
        assert!(deals.get_mut(&a).is_none());
        assert_eq!(deals.remove(&b).map(|d| d.amount), Some(1.0));
        assert_eq!(deals.len(), others);
    }
    // The tag sits in what was padding: an open deal is no larger.
    assert_eq!(std::mem::size_of::<OpenDeal>(), 48);
}

/// An account's inline state with its id, hash, index slot and hint is
/// what issue 6's 256 bytes per account measure (`memory` bench: 254 with
/// 192 bytes inline and no hint).
#[test]
fn an_account_is_no_larger_inline() {
    assert!(std::mem::size_of::<AccountState>() <= 184);
}

/// An optional time is held in 32 bits: none stays none, a time in 1970 to
/// 2106 is kept exactly, one outside is held at the nearest end.
#[test]
fn an_optional_time_keeps_what_32_bits_hold() {
    let round_trip = |time: Option<i64>| MaybeTime::from(time.map(Timestamp)).get().map(|t| t.0);
    assert_eq!(round_trip(None), None);
    assert_eq!(round_trip(Some(0)), Some(0));
    assert_eq!(round_trip(Some(1_735_689_600)), Some(1_735_689_600));
    assert_eq!(round_trip(Some(-86_400)), Some(0));
    assert_eq!(round_trip(Some(i64::MAX)), Some(i64::from(u32::MAX) - 1));
}

/// The latest visit held inline is the latest kept, however the kept
/// visits came; one 32 bits do not hold, or unknown after a restore,
/// is read from the kept visits.
#[test]
fn the_latest_visit_inline_is_the_latest_kept() {
    let visit = |secs: i64| Kept {
        event_id: format!("ev-{secs}").as_str().into(),
        occurred_at: Timestamp(secs),
        amount: f64::NAN,
    };
    assert_eq!(LatestVisit::of(&[]), LatestVisit::NONE);
    assert_eq!(LatestVisit::NONE.get(&[]), None);
    let kept = [
        visit(1_700_000_500),
        visit(1_700_000_900),
        visit(1_700_000_100),
    ];
    let latest = LatestVisit::of(&kept);
    assert_eq!(latest, LatestVisit(1_700_000_900));
    assert_eq!(latest.get(&kept), Some(Timestamp(1_700_000_900)));
    let far = [visit(5_000_000_000), visit(1_700_000_000)];
    assert_eq!(LatestVisit::of(&far), LatestVisit::UNKNOWN);
    assert_eq!(
        LatestVisit::of(&far).get(&far),
        Some(Timestamp(5_000_000_000))
    );
    assert_eq!(
        LatestVisit::default().get(&kept),
        Some(Timestamp(1_700_000_900))
    );
}

/// A visit by kam-1 to `account` on `day`.
fn visit(id: &str, account: &str, day: i64) -> Event {
    let body = EventBody::ActivityLogged {
        activity: ActivityKind::Visit,
    };
    event(id, account, day, body)
}

/// Evaluates `stage` at the start of `day`, forgetting nothing; the
/// alerts it emits are not looked at.
fn evaluate_on(
    stage: &mut AccountStage,
    day: i64,
    config: &Config,
    life: &mut Lifecycle,
) -> AccountReport {
    let at = Timestamp::from_day(day);
    stage.evaluate(at, Timestamp(0), None, config, life, &mut Vec::new())
}

#[test]
fn each_evaluation_counts_the_gaps_its_day_of_orders_ended() {
    let config = Config::defaults();
    let mut life = Lifecycle::new(1, 1);
    // Orders every ten days to day 90, then one on day 190.
    let mut stage = ordering_every_ten_days("a", &config);
    // The day of the order on day 90: a usual gap, past no level.
    let report = evaluate_on(&mut stage, 91, &config, &mut life);
    assert_eq!(report.tails, TailCounts::of_gap(None));
    // A day without orders counts nothing.
    let report = evaluate_on(&mut stage, 150, &config, &mut life);
    assert_eq!(report.tails, TailCounts::default());
    // A hundred days after a rhythm of ten: past every level.
    let order = EventBody::OrderPlaced {
        order_id: "late".into(),
        amount: 10.0,
    };
    stage.apply(&event("e-late", "a", 190, order), &config, &mut Vec::new());
    let report = evaluate_on(&mut stage, 191, &config, &mut life);
    assert_eq!(report.tails, TailCounts::of_gap(Some(0.0)));
    // A rhythm not yet learnt counts nothing.
    let mut young = ordering_on("b", &[0, 10], &config);
    let report = evaluate_on(&mut young, 11, &config, &mut life);
    assert_eq!(report.tails, TailCounts::default());
}

/// A stage holding one account of kam-1's that ordered on days 0, 10, … 90.
fn ordering_every_ten_days(account: &str, config: &Config) -> AccountStage {
    let days: Vec<i64> = (0..10).map(|i| i * 10).collect();
    ordering_on(account, &days, config)
}

/// A stage holding one account of kam-1's that ordered on `days`.
fn ordering_on(account: &str, days: &[i64], config: &Config) -> AccountStage {
    let orders: Vec<(i64, f64)> = days.iter().map(|day| (*day, 10.0)).collect();
    ordering(account, &orders, config)
}

/// A stage holding one account of kam-1's that placed `orders`: (day,
/// amount).
fn ordering(account: &str, orders: &[(i64, f64)], config: &Config) -> AccountStage {
    let mut stage = AccountStage::default();
    for (i, (day, amount)) in orders.iter().enumerate() {
        let order = EventBody::OrderPlaced {
            order_id: format!("o{i}").into(),
            amount: *amount,
        };
        let event = event(&format!("e{i}"), account, *day, order);
        stage.apply(&event, config, &mut Vec::new());
    }
    stage
}

#[test]
fn a_book_is_written_with_its_counts_inline_and_reads_as_earlier_versions_wrote_it() {
    #[derive(Serialize)]
    struct Earlier {
        team: &'static str,
        judged: u64,
        churning: u64,
        visited: u64,
        churning_accounts: Vec<()>,
        orders: [u64; 3],
        expected_orders: [u64; 3],
    }
    let earlier = Earlier {
        team: "team-1",
        judged: 9,
        churning: 2,
        visited: 1,
        churning_accounts: Vec::new(),
        orders: [1, 2, 3],
        expected_orders: [0, 0, 0],
    };
    let book: Book = rmp_serde::from_slice(&rmp_serde::to_vec_named(&earlier).unwrap()).unwrap();
    assert_eq!(
        (book.team.as_str(), book.counts, book.orders),
        (
            "team-1",
            BookCounts {
                judged: 9,
                churning: 2,
                visited: [1, 0, 0],
                shrinking: [0, 0, 0],
            },
            [1, 2, 3]
        )
    );
    assert_eq!(book.last_activity, None, "earlier books carry no activity");
    let book = Book {
        last_activity: Some(Timestamp(1_700_000_000)),
        ..book
    };
    let written = rmp_serde::to_vec_named(&book).unwrap();
    let fields: serde_json::Map<String, serde_json::Value> =
        rmp_serde::from_slice(&written).unwrap();
    let keys: Vec<&str> = fields.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "churning",
            "churning_accounts",
            "expected_orders",
            "judged",
            "last_activity",
            "orders",
            "shrinking",
            "team",
            "visited"
        ]
    );
    let again: Book = rmp_serde::from_slice(&written).unwrap();
    assert_eq!(
        (again.counts, again.orders, again.last_activity),
        (book.counts, book.orders, book.last_activity)
    );
}

/// A book's orders over half, one and two order windows (15, 30 and 60
/// days by default) count the account's kept orders in each; orders 32
/// bits do not hold (after 2106) are not counted, and do not hide the
/// earlier ones.
#[test]
fn a_book_counts_its_accounts_orders_over_the_three_windows() {
    let config = Config::defaults();
    assert_eq!(config.detect.churn.order_window.as_secs(), 30 * 86_400);
    let mut life = Lifecycle::new(3, 7);
    // Every ten days from day 0 to day 150: the twelve latest are kept.
    let days: Vec<i64> = (0..16).map(|i| i * 10).collect();
    let mut stage = ordering_on("acc-1", &days, &config);
    let report = evaluate_on(&mut stage, 155, &config, &mut life);
    assert_eq!(report.books["kam-1"].orders, [2, 3, 6]);
    // The same rhythm ending past 2106 (day 49,710): the last two orders
    // are not counted, the two before them are.
    let days: Vec<i64> = (0..8).map(|i| 49_645 + i * 10).collect();
    let mut stage = ordering_on("acc-2", &days, &config);
    let report = evaluate_on(&mut stage, 49_721, &config, &mut life);
    assert_eq!(report.books["kam-1"].orders, [0, 2, 5]);
}

/// A customer who went quiet long enough to page, then came back, has
/// not changed pace: that absence is not learnt as its rhythm. A second
/// such gap in a row is the account's new pace, and is.
#[test]
fn an_absence_that_paged_is_not_learnt_as_the_rhythm_unless_it_repeats() {
    let config = Config::defaults();
    let mut stage = ordering_every_ten_days("acc-1", &config);
    let learnt = |stage: &AccountStage| {
        let rhythm = &stage.accounts["acc-1"].rhythm;
        (rhythm.gaps, rhythm.gap_mean())
    };
    assert_eq!(learnt(&stage), (9, 10.0));
    let order = |day: i64| {
        let body = EventBody::OrderPlaced {
            order_id: format!("o{day}").into(),
            amount: 10.0,
        };
        event(&format!("e{day}"), "acc-1", day, body)
    };
    // A hundred days after the last order: far past any silence this
    // rhythm allows.
    stage.apply(&order(190), &config, &mut Vec::new());
    assert_eq!(learnt(&stage), (9, 10.0));
    // An ordinary gap after it is learnt as ever.
    stage.apply(&order(200), &config, &mut Vec::new());
    assert_eq!(learnt(&stage), (10, 10.0));
    // Two long gaps in a row: the second is learnt.
    stage.apply(&order(300), &config, &mut Vec::new());
    assert_eq!(learnt(&stage).0, 10);
    stage.apply(&order(400), &config, &mut Vec::new());
    let (gaps, mean) = learnt(&stage);
    assert_eq!(gaps, 11);
    assert!(mean > 10.0, "{mean}");
}

/// Order volume judges the accounts still ordering: a churning account's
/// missing orders are book churn's to count, not volume's again (a
/// customer who leaves takes all its orders with it, which the Poisson
/// test of volume would weigh as many improbable absences).
#[test]
fn a_churning_account_is_not_counted_again_in_order_volume() {
    let config = Config::defaults();
    let mut life = Lifecycle::new(3, 7);
    let mut stage = ordering_every_ten_days("acc-1", &config);
    let report = evaluate_on(&mut stage, 95, &config, &mut life);
    let book = &report.books["kam-1"];
    assert_eq!(book.orders, [2, 3, 6]);
    assert!(book.expected_orders[1].get() > 0.0);
    // Silent for 110 days: churning.
    let report = evaluate_on(&mut stage, 200, &config, &mut life);
    let book = &report.books["kam-1"];
    assert_eq!(book.counts.churning, 1);
    assert_eq!(book.orders, [0, 0, 0]);
    assert!(book.expected_orders.iter().all(|e| e.get() == 0.0));
}

/// A customer who orders at random (exponential gaps of mean 10, drawn
/// once): no gap in 24 was over 2.2 times the mean, so the moments see
/// a regular rhythm (shape 2.3), and a 70-day silence (p = e^-7 ≈ 9e-4
/// in truth) would page. The shortest gaps tell the logarithms
/// otherwise (shape 1.1), and no alert names the account.
#[test]
fn a_customer_ordering_at_random_is_not_believed_regular() {
    let churn = &Config::defaults().detect.churn;
    let gaps = [
        13.3, 12.2, 15.1, 18.3, 0.6, 1.2, 4.8, 12.7, 4.4, 17.7, 0.6, 22.0, 6.8, 17.0, 0.5, 13.2,
        0.5, 13.8, 15.5, 9.7, 17.0, 23.8, 17.0, 2.8,
    ];
    let mut rhythm = Rhythm::default();
    rhythm.add_order(None, 10.0);
    for gap in gaps {
        rhythm.add_order(Some(gap), 10.0);
    }
    let mean = rhythm.gap_mean();
    let moments = account_churn::gamma_shape(mean, f64::from(rhythm.gap_var), 8.0);
    assert!((2.2..2.35).contains(&moments), "{moments}");
    let likeliest =
        account_churn::gamma_shape_from_logs(mean, f64::from(rhythm.gap_log_mean)).unwrap();
    assert!((1.0..1.2).contains(&likeliest), "{likeliest}");
    let survival = |shape: f64| stats::gamma_survival(70.0, shape, mean / shape);
    let shapes = rhythm.shapes(churn.max_shape);
    assert!(survival(shapes.alerting) > churn.alpha, "{shapes:?}");
    // The moments alone, taken toward irregular as the alert's shape
    // is, would have it page; book churn counts by them (see
    // `Shapes::compared`), far below its own bar.
    assert!(survival(shapes.compared) < churn.alpha, "{shapes:?}");
    assert!(rhythm.is_improbable(70.0, churn));
}

/// A rhythm checkpointed before its logarithms' mean was kept reads
/// back with it unknown: judged by its moments alone, until gaps come.
#[test]
fn a_rhythm_without_its_logarithms_is_judged_by_its_moments() {
    #[derive(Serialize)]
    struct Before {
        gaps: u32,
        valued: u32,
        gap_mean: f32,
        gap_var: f32,
    }
    let before = Before {
        gaps: 70_000,
        valued: 12,
        gap_mean: 10.0,
        gap_var: 25.0,
    };
    let mut rhythm: Rhythm = rmp_serde::from_slice(&checkpoint::encode(&before)).unwrap();
    assert_eq!((rhythm.gaps, rhythm.valued), (u16::MAX, 12));
    assert!(rhythm.gap_log_mean.is_nan());
    let moments = 4.0 / (1.0 + (2.0 / 30.0f64).sqrt());
    assert_eq!(
        rhythm.shapes(8.0),
        Shapes {
            alerting: moments,
            compared: moments
        }
    );
    rhythm.add_order(Some(10.0), 10.0);
    assert!(rhythm.gap_log_mean.is_finite());
}

/// The first day, from `from` on, an account-churn alert about `acc-1`
/// fires (the lifecycle firing at once), with the alert.
fn first_churn_alert(stage: &mut AccountStage, from: i64, config: &Config) -> (i64, Alert) {
    let mut life = Lifecycle::new(1, 7);
    for day in from..from + 200 {
        let mut out = Vec::new();
        let at = Timestamp::from_day(day);
        stage.evaluate(at, Timestamp(0), None, config, &mut life, &mut out);
        if let Some(alert) = out.into_iter().find(|a| a.kind == AlertKind::AccountChurn) {
            return (day, alert);
        }
    }
    panic!("no account-churn alert within 200 days of day {from}");
}

#[test]
fn a_silence_no_longer_than_a_recent_gap_does_not_page() {
    let config = Config::defaults();
    // Every ten days, but for one pause of forty days it came back from
    // (too improbable to be learnt as its pace), then every ten again.
    let days: Vec<i64> = (0..10)
        .map(|i| i * 10)
        .chain((13..18).map(|i| i * 10))
        .collect();
    let mut paused = ordering_on("acc-1", &days, &config);
    // The same customer without the pause pages well before it has been
    // quiet forty days ...
    let steady: Vec<i64> = (0..18).map(|i| i * 10).collect();
    let (day, _) = first_churn_alert(&mut ordering_on("acc-1", &steady, &config), 171, &config);
    assert!(day - 170 < 40, "day {day}");
    // ... while the one that paused does not, until it has been quiet
    // longer than that pause: 40.5 days at the start of day 211.
    let (day, alert) = first_churn_alert(&mut paused, 171, &config);
    assert_eq!(day, 211, "{}", alert.summary);
    assert!(
        alert
            .summary
            .contains("usual gap 10 days, longest recent gap 40 days"),
        "{}",
        alert.summary
    );
}

#[test]
fn recent_gaps_are_between_deliveries_and_only_of_times_kept() {
    let mut orders = [0u32; RECENT_ORDERS];
    assert_eq!(RecentGaps::of(&orders), RecentGaps::default());
    let day = DAY as u32;
    orders[0] = 90 * day;
    assert_eq!(RecentGaps::of(&orders), RecentGaps::default());
    // The order an hour before 80 is the same delivery.
    orders[..5].copy_from_slice(&[90 * day, 80 * day, 80 * day - 3600, 50 * day, 40 * day]);
    let gaps = RecentGaps::of(&orders);
    assert_eq!((gaps.count, gaps.sum, gaps.longest), (3, 50.0, 30.0));
    assert!((gaps.log_sum - (10f64.ln() * 2.0 + 30f64.ln())).abs() < 1e-12);
    // Too few to judge a shape by.
    assert_eq!(gaps.believed_shape(8.0), None);
    // A time 32 bits do not hold ends what is known.
    orders[..4].copy_from_slice(&[90 * day, 80 * day, 0, 10 * day]);
    assert_eq!(RecentGaps::of(&orders).longest, 10.0);
}

#[test]
fn recent_gaps_bound_the_shape_by_their_spread() {
    let day = DAY as u32;
    let even: [u32; RECENT_ORDERS] = std::array::from_fn(|i| (200 - 10 * i as u32) * day);
    // No spread bounds nothing (the rhythm's own estimate stands).
    assert_eq!(RecentGaps::of(&even).believed_shape(8.0), None);
    // Ten gaps of 10 days and one of 60, by Thom's approximation.
    let mut paused = even;
    for t in &mut paused[6..] {
        *t -= 50 * day;
    }
    let gaps = RecentGaps::of(&paused);
    assert_eq!((gaps.count, gaps.sum, gaps.longest), (11, 160.0, 60.0));
    let s = (160.0f64 / 11.0).ln() - (10.0 * 10f64.ln() + 60f64.ln()) / 11.0;
    let thom = (3.0 - s + ((s - 3.0) * (s - 3.0) + 24.0 * s).sqrt()) / (12.0 * s);
    let shape = gaps.believed_shape(8.0).unwrap();
    assert!((shape - believed(thom, 11.0, 8.0)).abs() < 1e-12, "{shape}");
    assert!(thom < 4.0, "{thom}");
}

#[test]
fn the_gap_before_is_between_deliveries_and_only_of_times_kept() {
    let mut orders = [0u32; RECENT_ORDERS];
    assert_eq!(gap_before(&orders), None);
    let day = DAY as u32;
    orders[..3].copy_from_slice(&[40 * day, 40 * day - 3600, 30 * day]);
    // The order an hour before the latest is the same delivery.
    assert_eq!(gap_before(&orders), Some(10.0));
    orders[..3].copy_from_slice(&[40 * day, 0, 30 * day]);
    // A time 32 bits do not hold ends what is known.
    assert_eq!(gap_before(&orders), None);
}

#[test]
fn an_account_expects_its_orders_in_the_company_pace_until_it_churns() {
    let config = Config::defaults();
    let mut stage = ordering_every_ten_days("acc-1", &config);
    let mut life = Lifecycle::new(3, 7);
    // One order in ten days, as the account's rhythm has it.
    let report = evaluate_on(&mut stage, 95, &config, &mut life);
    assert_eq!(report.expected_orders, ExpectedOrders::of(0.1));
    // Silent for 110 days: churning, so no longer expected to order, and
    // its silence no longer slows the company's clock.
    let report = evaluate_on(&mut stage, 200, &config, &mut life);
    assert_eq!(report.expected_orders, ExpectedOrders::default());
    let mut sampled = StillOrdering::default();
    for day in stage.company_expected.each_day(95..201) {
        sampled += day;
    }
    assert_eq!(
        (sampled.expected, sampled.samples),
        (ExpectedOrders::of(0.1), 2)
    );
}

#[test]
fn an_account_keeps_its_four_latest_visits_in_room_for_four() {
    let config = Config::defaults();
    let mut stage = ordering_on("acc-1", &[0, 10], &config);
    for day in 11..20 {
        stage.apply(
            &visit(&format!("v{day}"), "acc-1", day),
            &config,
            &mut Vec::new(),
        );
    }
    let account = &stage.accounts["acc-1"];
    assert_eq!(account.visits_since, 9);
    let kept: Vec<&str> = account.recent_visits.iter().map(|v| &*v.event_id).collect();
    assert_eq!(kept, ["v16", "v17", "v18", "v19"]);
    // A fifth pushed before the oldest left would double the vector.
    assert_eq!(account.recent_visits.capacity(), VISITS_KEPT);
}

#[test]
fn an_account_whose_orders_shrink_far_below_its_usual_value_is_churning() {
    let config = Config::defaults();
    assert_eq!(config.detect.churn.value_min_orders, 8);
    // Twelve orders every ten days of 90 to 110, then `tail`.
    let book_after = |tail: &[f64]| {
        let usual = [100.0, 90.0, 110.0, 95.0, 105.0, 100.0];
        let amounts = usual.iter().cycle().take(12).chain(tail);
        let orders: Vec<(i64, f64)> = amounts
            .enumerate()
            .map(|(i, amount)| (10 * i as i64, *amount))
            .collect();
        let mut stage = ordering("a", &orders, &config);
        let mut life = Lifecycle::new(3, 7);
        let day = 10 * orders.len() as i64 - 5;
        let report = evaluate_on(&mut stage, day, &config, &mut life);
        let book = &report.books["kam-1"];
        (book.counts.churning, book.counts.shrinking)
    };
    assert_eq!(book_after(&[]), (0, [0, 0, 0]));
    assert_eq!(
        book_after(&[85.0, 92.0, 88.0]),
        (0, [0, 0, 0]),
        "a dip, not a fall"
    );
    // Orders at a third of the usual value, on time: not overdue, but
    // leaving all the same, and far past every bar (orders of 90 to 110
    // do not fall to 30 by chance).
    assert_eq!(book_after(&[35.0, 30.0]), (1, [1, 1, 1]));
    // Back to the usual value: the fall is over once it is the older
    // orders that were small.
    assert_eq!(
        book_after(&[35.0, 30.0, 100.0, 105.0, 95.0]),
        (0, [0, 0, 0])
    );

    // The evidence: the last order, noted, with the usual value beside it
    // (the geometric mean of the orders before the latest three).
    let usual = [100.0, 90.0, 110.0, 95.0, 105.0, 100.0];
    let amounts: Vec<f64> = usual.iter().cycle().take(12).copied().collect();
    let mut orders: Vec<(i64, f64)> = (0..12).map(|i| (10 * i, amounts[i as usize])).collect();
    orders.extend([(120, 35.0), (130, 30.0)]);
    let mut stage = ordering("a", &orders, &config);
    let report = evaluate_on(&mut stage, 135, &config, &mut Lifecycle::new(3, 7));
    let cited = &report.books["kam-1"].churning_accounts[0].evidence[0];
    assert_eq!((cited.event_type, cited.amount), (ORDER, Some(30.0)));
    assert_eq!(cited.note, Some(NOTE_VALUE_FELL));
    // Moments weighted 1/n: the plain geometric mean of the first 11.
    let geometric = (amounts[..11].iter().map(|a| a.ln()).sum::<f64>() / 11.0).exp();
    let usual_amount = cited.usual_amount.unwrap();
    assert!(
        (usual_amount - geometric).abs() < 0.01,
        "{usual_amount} {geometric}"
    );
}

#[test]
fn a_rhythm_is_judged_once_it_has_two_gaps_spanning_a_month_and_not_on_a_burst() {
    let config = Config::defaults();
    assert_eq!(config.detect.churn.min_gaps, 2);
    assert_eq!(config.detect.churn.min_history.as_secs() / DAY as u64, 30);
    // Whether kam-1's book judges the account (an unjudged, not churning
    // account is not in it).
    let judged_on = |days: &[i64], on: i64| {
        let mut stage = ordering_on("a", days, &config);
        let mut life = Lifecycle::new(3, 7);
        let report = evaluate_on(&mut stage, on, &config, &mut life);
        report.books.get("kam-1").map(|b| b.counts.judged)
    };
    // Six orders in five days are a burst, not a rhythm: 40 days of
    // silence after them say nothing.
    assert_eq!(judged_on(&[0, 1, 2, 3, 4, 5], 45), None);
    // One gap is not enough, however long; two gaps of 14 days are 28.
    assert_eq!(judged_on(&[0, 40], 45), None);
    assert_eq!(judged_on(&[0, 14, 28], 35), None);
    assert_eq!(judged_on(&[0, 15, 30], 35), Some(1));
    assert_eq!(judged_on(&[0, 1, 2, 3, 4, 5, 40], 45), Some(1));
}

#[test]
fn accounts_judged_in_parallel_parts_give_the_books_of_one_pass() {
    // 3000 accounts of 7 managers, interleaved so that every book is
    // split between the parts; a third fall silent after day 60, and
    // every fifth orders a third of its usual amount from day 100.
    let config = Config::defaults();
    let stage = || {
        let mut stage = AccountStage::default();
        for a in 0..3000 {
            let account = format!("a{a}");
            let last = if a % 3 == 0 { 60 } else { 120 };
            for (i, day) in (0..=last).step_by(10).enumerate() {
                let amount = if a % 5 == 0 && day >= 100 {
                    33.0
                } else {
                    100.0
                };
                let order = EventBody::OrderPlaced {
                    order_id: format!("o{a}-{i}").into(),
                    amount,
                };
                let mut event = event(&format!("e{a}-{i}"), &account, day, order);
                event.manager_id = format!("kam-{}", a % 7).into();
                stage.apply(&event, &config, &mut Vec::new());
            }
        }
        stage
    };
    let judged_on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut stage = stage();
            let mut life = Lifecycle::new(1, 7);
            let mut alerts = Vec::new();
            let mut books = BTreeMap::new();
            for day in [125, 126] {
                let at = Timestamp::from_day(day);
                let report =
                    stage.evaluate(at, Timestamp(0), None, &config, &mut life, &mut alerts);
                for (manager, book) in report.books {
                    books.insert(
                        (day, manager.to_string()),
                        serde_json::to_string(&book).unwrap(),
                    );
                }
            }
            let alerts: Vec<String> = alerts.iter().map(|a| a.to_json().to_string()).collect();
            (books, alerts)
        })
    };
    let (books, alerts) = judged_on(1);
    assert_eq!(books.len(), 14, "seven books, judged twice");
    let book: Book = serde_json::from_str(&books[&(125, "kam-0".to_owned())]).unwrap();
    let counts = book.counts;
    assert!(
        counts.churning > 100 && counts.shrinking[0] > 10,
        "{book:?}"
    );
    assert!(!alerts.is_empty());
    assert_eq!(judged_on(4), (books, alerts));
}

/// A stage holding one account of kam-1's with one open deal, `o1`,
/// created on day 0 at 100.
fn with_a_deal_of_100(config: &Config) -> AccountStage {
    let mut stage = AccountStage::default();
    let created = EventBody::OpportunityCreated {
        opportunity_id: "o1".into(),
        amount: 100.0,
    };
    let mut facts = Vec::new();
    stage.apply(&event("e1", "a", 0, created), config, &mut facts);
    assert!(facts.is_empty(), "a new deal is no fact yet");
    stage
}

#[test]
fn a_rhythm_checkpointed_before_value_moments_and_in_double_precision_restores() {
    // The rhythm as feidan wrote it before 2026-11-29's stop 15.
    #[derive(Serialize)]
    struct Before {
        gaps: u32,
        gap_mean: f64,
        gap_var: f64,
        orders: u32,
        amount_mean: f64,
        recent: [f64; 3],
    }
    let before = Before {
        gaps: 12,
        gap_mean: 10.25,
        gap_var: 4.5,
        orders: 13,
        amount_mean: 1000.0,
        recent: [900.0, 1100.0, 1000.0],
    };
    let rhythm: Rhythm = rmp_serde::from_slice(&checkpoint::encode(&before)).unwrap();
    assert_eq!(
        (rhythm.gaps, rhythm.gap_mean(), rhythm.gap_var),
        (12, 10.25, 4.5)
    );
    // The usual value is learnt again from the orders to come.
    assert_eq!(rhythm.valued, 0);
    assert!(rhythm.value_fall(2, 1.0).is_none());
}

#[test]
fn a_deal_stalls_as_the_watermark_passes_with_no_further_event() {
    let config = Config::defaults();
    let mut stage = with_a_deal_of_100(&config);
    let mut facts = Vec::new();
    let mut life = Lifecycle::new(3, 7);
    let report = evaluate_on(&mut stage, 40, &config, &mut life);
    assert!(report.facts.is_empty(), "not stalled after 40 days");
    let report = evaluate_on(&mut stage, 46, &config, &mut life);
    assert_eq!(report.facts.len(), 1);
    assert_eq!(
        report.facts[0].kind,
        FactKind::DealExited {
            leak: Some(LeakRoute::Stalled)
        }
    );
    assert_eq!(
        report.facts[0].at,
        Timestamp(45 * DAY + 43_200),
        "stalls at its due time"
    );
    // Closing a stalled deal later does not make it leave the pipeline twice.
    let lost = EventBody::OpportunityLost {
        opportunity_id: "o1".into(),
        amount: 100.0,
        reason: LossReason::Price,
        competitor: None,
    };
    stage.apply(&event("e2", "a", 50, lost), &config, &mut facts);
    assert!(facts
        .iter()
        .all(|f| !matches!(f.kind, FactKind::DealExited { .. })));
    assert!(evaluate_on(&mut stage, 60, &config, &mut life)
        .facts
        .is_empty());
}

#[test]
fn an_account_checkpointed_with_full_evidence_and_a_deal_map_restores_the_same() {
    // The account record as feidan wrote it before kept events were
    // compacted: every cited event in full, open deals in a hash map.
    #[derive(Serialize)]
    struct Before<'a> {
        manager_id: &'a str,
        team: &'a str,
        assigned_at: Option<Timestamp>,
        open: Map<String, OpenDealRecord>,
        rhythm: Rhythm,
        last_order: Option<EvidenceRef>,
        visits_since: u32,
        recent_visits: Vec<EvidenceRef>,
        recent_orders: [i64; RECENT_ORDERS],
        lapsed: Option<EvidenceRef>,
        watched: bool,
        churning_since: Option<Timestamp>,
        last_seen: Timestamp,
    }
    let config = Config::defaults();
    let mut stage = ordering_every_ten_days("a", &config);
    let mut facts = Vec::new();
    for body in [
        EventBody::ActivityLogged {
            activity: ActivityKind::Visit,
        },
        EventBody::OpportunityCreated {
            opportunity_id: "o1".into(),
            amount: 70.0,
        },
        EventBody::ContractEnded {
            contract_id: "c1".into(),
            renewed: false,
            amount: 500.0,
        },
    ] {
        let id = format!("x-{}", body.type_name());
        stage.apply(&event(&id, "a", 92, body), &config, &mut facts);
    }
    let now = &stage.accounts["a"];
    let before = Before {
        manager_id: &now.manager_id,
        team: &now.team,
        assigned_at: now.assigned_at.get(),
        open: now
            .open
            .0
            .iter()
            .map(|deal| {
                let (id, record) = deal.record();
                (id.to_owned(), record)
            })
            .collect(),
        rhythm: now.rhythm,
        last_order: now.last_order.as_ref().map(|o| o.cite("a", ORDER, None)),
        visits_since: u32::from(now.visits_since),
        recent_visits: cite_kept("a", None, now.recent_visits.iter(), None),
        recent_orders: now.recent_orders.map(i64::from),
        lapsed: now
            .lapsed
            .as_ref()
            .map(|l| l.cite("a", CONTRACT, Some(NOTE_NOT_RENEWED))),
        watched: now.watched,
        churning_since: now.churning_since.get(),
        last_seen: now.last_seen,
    };
    let mut restored = AccountStage::default();
    restored
        .restore_account("a", &checkpoint::encode(&before))
        .unwrap();
    let records = |stage: &AccountStage| {
        let mut out = Vec::new();
        stage.checkpoint(&mut out);
        out
    };
    assert_eq!(records(&restored), records(&stage));
    // And it goes on the same: the deal stalls, citing its event.
    let mut life = Lifecycle::new(3, 7);
    let stalled = |stage: &mut AccountStage, life: &mut Lifecycle| {
        evaluate_on(stage, 140, &config, life).facts
    };
    let facts = stalled(&mut restored, &mut life);
    assert_eq!(facts, stalled(&mut stage, &mut Lifecycle::new(3, 7)));
    assert_eq!(facts.len(), 1);
    assert_eq!(facts[0].evidence.event_id, "x-opportunity_created");
}

#[test]
fn at_the_cap_new_accounts_push_out_idle_ones_not_busy_ones() {
    let mut config = Config::defaults();
    config.engine.max_accounts = 200;
    let mut stage = AccountStage::default();
    let mut facts = Vec::new();
    let mut visit_on = |account: String, day: i64| {
        stage.apply(&visit("v", &account, day), &config, &mut facts);
    };
    // 100 busy accounts first, then 100 that go idle on day 0.
    for i in 0..100 {
        visit_on(format!("busy-{i}"), 0);
    }
    for i in 0..100 {
        visit_on(format!("idle-{i}"), 0);
    }
    // Each day the busy accounts are active and five new ones arrive.
    for day in 1..=20 {
        for i in 0..100 {
            visit_on(format!("busy-{i}"), day);
        }
        for n in 0..5 {
            visit_on(format!("new-{day}-{n}"), day);
        }
    }
    assert_eq!(stage.accounts(), 200);
    let busy = (0..100)
        .filter(|i| stage.owner(&format!("busy-{i}")).is_some())
        .count();
    let idle = (0..100)
        .filter(|i| stage.owner(&format!("idle-{i}")).is_some())
        .count();
    // 100 evictions: sampling at random, nearly all fall on idle accounts.
    assert!(busy >= 95, "only {busy} of 100 busy accounts kept");
    assert!(idle <= 15, "{idle} of 100 idle accounts kept");
    // Every account here names manager kam-1 of team t: two names, held.
    assert_eq!(stage.names.0.len(), 2);
}

/// Accounts are found through hints that go stale as accounts are
/// forgotten (which moves others in the stage's vector): an event still
/// reaches its own account, never the one its hint last named.
#[test]
fn events_reach_their_own_accounts_after_others_are_forgotten() {
    let mut config = Config::defaults();
    config.engine.max_accounts = 3_000;
    let mut stage = AccountStage::default();
    let mut facts = Vec::new();
    let assign = |account: &str, manager: String, day: i64| {
        let mut event = event(
            "a",
            account,
            day,
            EventBody::AccountAssigned {
                previous_manager_id: None,
            },
        );
        event.manager_id = manager.into();
        event
    };
    // 4,000 accounts at a cap of 3,000 (evictions move the last account
    // into the evicted one's place), the first 2,000 idle since day 0 ...
    for i in 0..4_000 {
        let day = if i < 2_000 { 0 } else { 100 };
        stage.apply(
            &assign(&format!("acc-{i}"), format!("kam-{i}"), day),
            &config,
            &mut facts,
        );
    }
    // ... and those still held forgotten as idle since before day 50: the
    // rest move down.
    stage.expire_idle(Timestamp(50 * DAY));
    let held: Vec<usize> = (0..4_000)
        .filter(|i| stage.holds(&format!("acc-{i}")))
        .collect();
    assert!(held.len() >= 1_500, "{} accounts held", held.len());
    // Every held account is handed to a new manager by an event: each must
    // land on its own account.
    for &i in &held {
        stage.apply(
            &assign(&format!("acc-{i}"), format!("new-{i}"), 160),
            &config,
            &mut facts,
        );
    }
    for &i in &held {
        let name = format!("new-{i}");
        assert_eq!(stage.owner(&format!("acc-{i}")), Some(name.as_str()));
    }
    assert_eq!(stage.accounts(), held.len());
}

#[test]
fn a_flood_of_new_managers_at_the_cap_does_not_grow_the_names_held() {
    let mut config = Config::defaults();
    config.engine.max_accounts = 50;
    let mut stage = AccountStage::default();
    let mut facts = Vec::new();
    for i in 0..1_000 {
        let mut visit = visit("v", &format!("acc-{i}"), 0);
        visit.manager_id = format!("kam-{i}").into();
        stage.apply(&visit, &config, &mut facts);
    }
    assert_eq!(stage.accounts(), 50);
    // 50 managers and the one team, not 1,000 managers.
    assert_eq!(stage.names.0.len(), 51);
}

#[test]
fn a_cut_quote_leaks_even_when_won() {
    let config = Config::defaults();
    let mut stage = with_a_deal_of_100(&config);
    let mut facts = Vec::new();
    let won = EventBody::OpportunityWon {
        opportunity_id: "o1".into(),
        amount: 50.0,
    };
    stage.apply(&event("e2", "a", 10, won), &config, &mut facts);
    assert!(facts.contains(&Fact {
        manager_id: "kam-1".into(),
        team: "t".into(),
        at: Timestamp(10 * DAY + 43_200),
        kind: FactKind::DealExited {
            leak: Some(LeakRoute::Cut)
        },
        evidence: evidence_of(
            &event(
                "e2",
                "a",
                10,
                EventBody::OpportunityWon {
                    opportunity_id: "o1".into(),
                    amount: 50.0
                }
            ),
            Some("cut")
        ),
    }));
}

#[test]
fn a_quote_cut_at_an_update_leaks_then_once() {
    let config = Config::defaults();
    let mut stage = with_a_deal_of_100(&config);
    let mut facts = Vec::new();
    let update = |id: &str, day: i64, amount: f64| {
        let body = EventBody::OpportunityUpdated {
            opportunity_id: "o1".into(),
            amount: Some(amount),
            stage: None,
            expected_close: None,
        };
        event(id, "a", day, body)
    };
    // Trimmed by a fifth: not a cut (cut_ratio 0.3).
    stage.apply(&update("e2", 2, 80.0), &config, &mut facts);
    assert!(facts.is_empty());
    let cut = update("e3", 3, 45.0);
    stage.apply(&cut, &config, &mut facts);
    assert_eq!(
        facts,
        vec![Fact {
            manager_id: "kam-1".into(),
            team: "t".into(),
            at: cut.occurred_at,
            kind: FactKind::DealExited {
                leak: Some(LeakRoute::Cut)
            },
            evidence: evidence_of(&cut, Some("cut")),
        }]
    );
    // Cut again, then won: it left the pipeline once, and closes.
    stage.apply(&update("e4", 5, 30.0), &config, &mut facts);
    let won = EventBody::OpportunityWon {
        opportunity_id: "o1".into(),
        amount: 30.0,
    };
    stage.apply(&event("e5", "a", 20, won), &config, &mut facts);
    let kinds: Vec<&FactKind> = facts.iter().map(|f| &f.kind).collect();
    assert_eq!(
        kinds,
        [
            &FactKind::DealExited {
                leak: Some(LeakRoute::Cut)
            },
            &FactKind::DealClosed {
                outcome: DealOutcome::Won
            }
        ]
    );
}

#[test]
fn a_reassigned_account_leaves_its_old_owners_book_and_is_not_counted_in_the_new_one_at_first() {
    let config = Config::defaults();
    let mut stage = ordering_every_ten_days("a", &config);
    let mut facts = Vec::new();
    let mut moved = event(
        "m",
        "a",
        95,
        EventBody::AccountAssigned {
            previous_manager_id: Some("kam-1".into()),
        },
    );
    moved.manager_id = "kam-2".into();
    stage.apply(&moved, &config, &mut facts);
    stage.apply(&visit("v", "a", 96), &config, &mut facts);
    assert_eq!(stage.owner("a"), Some("kam-2"));
    let mut life = Lifecycle::new(3, 7);
    let report = evaluate_on(&mut stage, 100, &config, &mut life);
    assert!(
        !report.books.contains_key("kam-1"),
        "the old owner's book no longer has it"
    );
    assert!(
        !report.books.contains_key("kam-2"),
        "the new owner's book counts it only after the grace period"
    );
}

#[test]
fn a_churned_account_counts_in_its_book_for_the_book_window_then_is_gone() {
    let config = Config::defaults();
    let mut stage = ordering_every_ten_days("a", &config);
    let mut facts = Vec::new();
    // Visits since the last order (day 90), the latest on day 100.
    for (i, day) in [95, 98, 100].into_iter().enumerate() {
        stage.apply(&visit(&format!("v{i}"), "a", day), &config, &mut facts);
    }
    let mut life = Lifecycle::new(3, 7);
    let mut book_on = |day: i64| {
        let report = evaluate_on(&mut stage, day, &config, &mut life);
        report
            .books
            .get("kam-1")
            .map(|b| (b.counts.judged, b.counts.churning, b.counts.visited[0]))
    };
    assert_eq!(book_on(95), Some((1, 0, 0)), "within its rhythm");
    // Quiet and visited counts before churning does (see the next test).
    let mut day = 96;
    while book_on(day).is_some_and(|(_, churning, _)| churning == 0) {
        day += 1;
    }
    let overdue = day;
    assert!(
        overdue < 125,
        "a 10-day rhythm silent for 35 days is churning"
    );
    assert_eq!(book_on(overdue), Some((1, 1, 1)), "still visited: day 100");
    let visits_within = config.detect.churn.visits_within.as_secs() as i64 / DAY;
    assert_eq!(
        book_on(101 + visits_within),
        Some((1, 1, 0)),
        "visits stopped {visits_within} days ago: the manager gave up"
    );
    let window = config.detect.churn.book_window.as_secs() as i64 / DAY;
    assert_eq!(book_on(overdue + window), Some((1, 1, 0)));
    assert_eq!(
        book_on(overdue + window + 1),
        None,
        "churning for longer than the book window: gone from the book"
    );

    // The same silence while the manager keeps calling on the account
    // every ten days: still theirs, still in the book, and visited.
    let mut stage = ordering_every_ten_days("a", &config);
    for (i, day) in (95..=overdue + window).step_by(10).enumerate() {
        stage.apply(&visit(&format!("v{i}"), "a", day), &config, &mut facts);
    }
    let report = evaluate_on(&mut stage, overdue + window + 1, &config, &mut life);
    let book = report.books.get("kam-1").map(|b| b.counts);
    assert!(
        book.is_some_and(|b| b.judged == 1 && b.churning == 1 && b.visited[0] == 1),
        "{book:?}"
    );
}

#[test]
fn a_quiet_account_still_visited_counts_before_it_is_churning() {
    let config = Config::defaults();
    // (day, visited past each bar, churning, accounts cited and whether
    // visited).
    type Day = (
        i64,
        crate::detect::book_churn::ByBar,
        u64,
        Vec<(String, bool)>,
    );
    let books = |visits: &[i64]| -> Vec<Day> {
        let mut stage = ordering_every_ten_days("a", &config);
        for (i, day) in visits.iter().enumerate() {
            stage.apply(
                &visit(&format!("v{i}"), "a", *day),
                &config,
                &mut Vec::new(),
            );
        }
        let mut life = Lifecycle::new(3, 7);
        (91..130)
            .map(|day| {
                let report = evaluate_on(&mut stage, day, &config, &mut life);
                let book = &report.books["kam-1"];
                let cited: Vec<(String, bool)> = book
                    .churning_accounts
                    .iter()
                    .map(|a| (a.account_id.to_string(), a.visited))
                    .collect();
                (day, book.counts.visited, book.counts.churning, cited)
            })
            .collect()
    };
    let visited = books(&[95, 98, 100]);
    let first = |rows: &[Day], churning: bool| {
        rows.iter()
            .find(|(_, quiet, churns, _)| if churning { *churns > 0 } else { quiet[0] > 0 })
            .map(|row| row.0)
    };
    let past = |rows: &[Day], bar: usize| rows.iter().find(|row| row.1[bar] > 0).map(|row| row.0);
    let (quiet, churning) = (
        first(&visited, false).unwrap(),
        first(&visited, true).unwrap(),
    );
    assert!(
        quiet < churning,
        "silent past the looser bar (day {quiet}) before churning (day {churning})"
    );
    let row = visited.iter().find(|row| row.0 == quiet).unwrap();
    assert_eq!(row.3, vec![("a".to_owned(), true)], "cited as visited");
    // Past the tighter bars later, each a tenth of the one before: the
    // second is churn's own bar (0.01), the third further still.
    let tighter = (past(&visited, 1).unwrap(), past(&visited, 2).unwrap());
    assert_eq!(tighter.0, churning);
    assert!(tighter.1 > tighter.0, "{tighter:?}");
    // The same silence with no visits since the last order: only churn
    // counts it, once it is overdue at the churn bar.
    let unvisited = books(&[]);
    assert!(unvisited.iter().all(|row| row.1 == [0, 0, 0]));
    assert_eq!(first(&unvisited, true), Some(churning));
    assert!(unvisited
        .iter()
        .find(|row| row.0 == quiet)
        .unwrap()
        .3
        .is_empty());
}

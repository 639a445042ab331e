//! Customers who keep ordering, but far less than they used to, through the
//! whole engine: one manager's shrinking accounts accuse that manager, while
//! a market that shrinks the orders of a whole team's customers accuses no
//! one (book churn holds its counts to the rest of the team's share too).

mod common;

use feidan::alert::{Alert, AlertKind, Status};
use feidan::backtest::replay;
use feidan::config::Config;
use serde_json::json;

const TEAMS: usize = 6;
const MANAGERS_PER_TEAM: usize = 5;
const ACCOUNTS_PER_MANAGER: usize = 10;
const DAYS: i64 = 330;
/// From this day the chosen accounts' orders are worth `FALL` of usual.
const FALL_FROM: i64 = 240;
const FALL: f64 = 0.3;

/// A company whose every account orders every 9 to 11 days, worth 900 to
/// 1100, with a visit a week; `shrinks(team, manager, account)` picks the
/// accounts whose orders fall to a third from `FALL_FROM`. JSONL, in
/// event-time order.
fn company(shrinks: impl Fn(usize, usize, usize) -> bool) -> Vec<u8> {
    let mut events: Vec<(i64, serde_json::Value)> = Vec::new();
    let start = 1_735_689_600; // 2025-01-01T00:00:00Z
    for t in 0..TEAMS {
        for m in 0..MANAGERS_PER_TEAM {
            for a in 0..ACCOUNTS_PER_MANAGER {
                let account = format!("acc-{t}-{m}-{a}");
                let owner = json!({
                    "manager_id": format!("kam-{t}-{m}"),
                    "team": format!("team-{t}"),
                    "account_id": account,
                });
                let seed = t * 100 + m * 10 + a;
                let mut day = (seed % 10) as i64;
                let mut i = 0;
                while day < DAYS {
                    let mut amount = 1000.0 + 100.0 * ((seed + i) as f64 * 2.4).sin();
                    if day >= FALL_FROM && shrinks(t, m, a) {
                        amount *= FALL;
                    }
                    let at = start + day * 86_400 + 36_000 + (seed as i64) * 60;
                    let mut order = owner.clone();
                    let fields = order.as_object_mut().unwrap();
                    fields.insert("event_id".into(), json!(format!("o-{account}-{i}")));
                    fields.insert("type".into(), json!("order_placed"));
                    fields.insert("order_id".into(), json!(format!("ord-{account}-{i}")));
                    fields.insert("amount".into(), json!((amount * 100.0).round() / 100.0));
                    events.push((at, order));
                    let mut visit = owner.clone();
                    let fields = visit.as_object_mut().unwrap();
                    fields.insert("event_id".into(), json!(format!("v-{account}-{i}")));
                    fields.insert("type".into(), json!("activity_logged"));
                    fields.insert("activity".into(), json!("visit"));
                    events.push((at + 3 * 86_400, visit));
                    day += 9 + ((seed + i) % 3) as i64;
                    i += 1;
                }
            }
        }
    }
    common::jsonl_in_time_order(events)
}

/// The managers a manager-level alert fired for.
fn accused(world: &[u8]) -> Vec<String> {
    let report = replay(&Config::defaults(), world, |_| Ok(())).unwrap();
    assert_eq!(report.dead_letters.values().sum::<u64>(), 0);
    let mut managers: Vec<String> = report
        .alerts
        .iter()
        .filter(|a: &&Alert| a.kind != AlertKind::AccountChurn && a.status == Status::Firing)
        .map(|a| a.manager_id.clone())
        .collect();
    managers.sort();
    managers.dedup();
    managers
}

#[test]
fn a_manager_whose_customers_order_a_third_of_their_usual_is_accused() {
    let world = company(|t, m, a| t == 0 && m == 0 && a < 4);
    assert_eq!(accused(&world), vec!["kam-0-0".to_owned()]);
}

#[test]
fn a_market_that_shrinks_a_whole_teams_orders_accuses_no_one() {
    let world = company(|t, _, _| t == 0);
    assert_eq!(accused(&world), Vec::<String>::new());
}

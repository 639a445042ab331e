//! A manager on leave, through the whole engine: their open deals get no
//! update while they are away and stall, which must not accuse them of
//! leaking deals (DESIGN §4: leave is a confounder that must not page),
//! while a manager who is at work, calling on their customers, and lets the
//! same deals stall is accused.

mod common;

use feidan::alert::{AlertKind, Status};
use feidan::backtest::replay;
use feidan::config::Config;
use serde_json::{json, Value};

const TEAMS: usize = 2;
const MANAGERS_PER_TEAM: usize = 5;
const ACCOUNTS_PER_MANAGER: usize = 8;
const DAYS: i64 = 330;
/// The chosen manager does nothing with their deals from this day ...
const IDLE_FROM: i64 = 200;
/// ... to this one: the deals open on `IDLE_FROM` stall 45 days after their
/// last update, around the day the manager comes back.
const IDLE_UNTIL: i64 = 242;

/// Whether a manager logs activities through their idle days (at work,
/// neglecting their deals) or not (away).
#[derive(Clone, Copy, PartialEq)]
enum Idle {
    Away,
    AtWork,
}

/// A company of two teams whose accounts order every 9 to 11 days with a
/// call every 3 days, and whose managers open a deal every 2 days, update
/// it 10 days on and close it 20 days on (won, lost or, one in ten,
/// withdrawn). Manager `kam-0-0` does nothing with deals from `IDLE_FROM`
/// to `IDLE_UNTIL` (no new deal, no update, no close), calling on customers
/// through it or not as `idle` says. JSONL in event-time order.
fn company(idle: Idle) -> Vec<u8> {
    let start = 1_735_689_600; // 2025-01-01T00:00:00Z
    let mut events: Vec<(i64, Value)> = Vec::new();
    let mut push = |at: i64, owner: &Value, id: String, body: Value| {
        let mut event = owner.clone();
        let fields = event.as_object_mut().unwrap();
        fields.insert("event_id".into(), json!(id));
        fields.extend(body.as_object().unwrap().clone());
        events.push((at, event));
    };
    for t in 0..TEAMS {
        for m in 0..MANAGERS_PER_TEAM {
            let manager = format!("kam-{t}-{m}");
            let chosen = (t, m) == (0, 0);
            let idle_day = |day: i64| chosen && (IDLE_FROM..IDLE_UNTIL).contains(&day);
            let owner_of = |a: usize| {
                json!({
                    "manager_id": manager,
                    "team": format!("team-{t}"),
                    "account_id": format!("acc-{t}-{m}-{a}"),
                })
            };
            for a in 0..ACCOUNTS_PER_MANAGER {
                let owner = owner_of(a);
                let seed = t * 100 + m * 10 + a;
                let mut day = (seed % 10) as i64;
                let mut i = 0;
                while day < DAYS {
                    let at = start + day * 86_400 + 36_000 + (seed as i64) * 60;
                    let body = json!({"type": "order_placed", "order_id": format!("ord-{seed}-{i}"), "amount": 1000.0});
                    push(at, &owner, format!("o-{seed}-{i}"), body);
                    day += 9 + ((seed + i) % 3) as i64;
                    i += 1;
                }
                let mut day = (seed % 3) as i64;
                while day < DAYS {
                    if !(idle_day(day) && idle == Idle::Away) {
                        let at = start + day * 86_400 + 50_000 + (seed as i64) * 60;
                        let body = json!({"type": "activity_logged", "activity": "call"});
                        push(at, &owner, format!("v-{seed}-{day}"), body);
                    }
                    day += 3;
                }
            }
            let mut created = 0;
            while created < DAYS {
                let n = created / 2;
                let deal = format!("opp-{t}-{m}-{n}");
                let owner = owner_of((n as usize) % ACCOUNTS_PER_MANAGER);
                let at = |day: i64| start + day * 86_400 + 40_000 + (m as i64) * 60;
                let amount = 5000.0;
                if !idle_day(created) {
                    let body = json!({"type": "opportunity_created", "opportunity_id": deal, "amount": amount});
                    push(at(created), &owner, format!("c-{deal}"), body);
                    if !idle_day(created + 10) {
                        let body = json!({"type": "opportunity_updated", "opportunity_id": deal, "stage": "proposal"});
                        push(at(created + 10), &owner, format!("u-{deal}"), body);
                        if !idle_day(created + 20) {
                            let close = match (n + m as i64) % 10 {
                                0..=3 => {
                                    json!({"type": "opportunity_won", "opportunity_id": deal, "amount": amount})
                                }
                                4..=8 => {
                                    json!({"type": "opportunity_lost", "opportunity_id": deal, "amount": amount, "reason": "price"})
                                }
                                _ => {
                                    json!({"type": "opportunity_withdrawn", "opportunity_id": deal, "amount": amount})
                                }
                            };
                            push(at(created + 20), &owner, format!("x-{deal}"), close);
                        }
                    }
                }
                created += 2;
            }
        }
    }
    common::jsonl_in_time_order(events)
}

/// The kinds of the manager-level alerts that fired, all of them for
/// `kam-0-0` (no other manager is accused).
fn fired_for_chosen(idle: Idle) -> Vec<AlertKind> {
    let report = replay(&Config::defaults(), company(idle).as_slice(), |_| Ok(())).unwrap();
    assert_eq!(report.dead_letters.values().sum::<u64>(), 0);
    let mut kinds: Vec<AlertKind> = report
        .alerts
        .iter()
        .filter(|a| a.status == Status::Firing && a.account_id.is_none())
        .inspect(|a| assert_eq!(a.manager_id, "kam-0-0", "{}", a.summary))
        .map(|a| a.kind)
        .collect();
    kinds.dedup();
    kinds
}

#[test]
fn deals_stalled_through_a_leave_do_not_accuse_the_manager() {
    assert_eq!(fired_for_chosen(Idle::Away), Vec::<AlertKind>::new());
}

#[test]
fn deals_stalled_by_a_manager_at_work_do() {
    let kinds = fired_for_chosen(Idle::AtWork);
    assert!(kinds.contains(&AlertKind::PipelineLeakage), "{kinds:?}");
}

//! Quotes cut before the deal is lost, through the whole engine, in a
//! company where a third of all deals leak anyway (withdrawn or no
//! decision): the manager who cuts quotes is accused of it, by the cuts
//! alone, with the cut deals as evidence, and nobody else is accused.

mod common;

use feidan::alert::{AlertKind, Status};
use feidan::backtest::replay;
use feidan::config::Config;
use serde_json::{json, Value};

const TEAMS: usize = 2;
const MANAGERS_PER_TEAM: usize = 5;
const ACCOUNTS_PER_MANAGER: usize = 4;
const DAYS: i64 = 330;
/// From this day `kam-0-0` cuts the quote of one deal in three by half at
/// its update, and loses it.
const CUTS_FROM: i64 = 220;

/// Each manager opens a deal every 2 days, updates it 10 days on and closes
/// it 20 days on: won, lost on price, withdrawn or without a decision, by
/// turns (a third leak). JSONL in event-time order.
fn company() -> Vec<u8> {
    let start = 1_735_689_600; // 2025-01-01T00:00:00Z
    let mut events: Vec<(i64, Value)> = Vec::new();
    for t in 0..TEAMS {
        for m in 0..MANAGERS_PER_TEAM {
            let cutter = (t, m) == (0, 0);
            for n in 0..DAYS / 2 {
                let created = 2 * n;
                let deal = format!("opp-{t}-{m}-{n}");
                let fields = json!({
                    "manager_id": format!("kam-{t}-{m}"),
                    "team": format!("team-{t}"),
                    "account_id": format!("acc-{t}-{m}-{}", n as usize % ACCOUNTS_PER_MANAGER),
                    "opportunity_id": deal,
                });
                let at = |day: i64| start + day * 86_400 + 40_000 + (m as i64) * 60;
                let cut = cutter && created + 10 >= CUTS_FROM && n % 3 == 0;
                let amount = 5000.0;
                let steps = [
                    (
                        created,
                        "c",
                        json!({"type": "opportunity_created", "amount": amount}),
                    ),
                    (
                        created + 10,
                        "u",
                        if cut {
                            json!({"type": "opportunity_updated", "stage": "negotiation", "amount": amount / 2.0})
                        } else {
                            json!({"type": "opportunity_updated", "stage": "proposal"})
                        },
                    ),
                    (
                        created + 20,
                        "x",
                        match (cut, (n + m as i64) % 6) {
                            (true, _) | (false, 2) => {
                                json!({"type": "opportunity_lost", "amount": amount, "reason": "price"})
                            }
                            (false, 0 | 1) => json!({"type": "opportunity_won", "amount": amount}),
                            (false, 3) => {
                                json!({"type": "opportunity_withdrawn", "amount": amount})
                            }
                            (false, _) => {
                                json!({"type": "opportunity_lost", "amount": amount, "reason": "no_decision"})
                            }
                        },
                    ),
                ];
                for (day, step, body) in steps {
                    if day < DAYS {
                        let mut event = fields.clone();
                        let object = event.as_object_mut().unwrap();
                        object.extend(body.as_object().unwrap().clone());
                        object.insert("event_id".into(), json!(format!("{step}-{deal}")));
                        events.push((at(day), event));
                    }
                }
            }
        }
    }
    common::jsonl_in_time_order(events)
}

#[test]
fn the_manager_cutting_quotes_is_accused_by_the_cuts_with_the_cut_deals() {
    let report = replay(&Config::defaults(), company().as_slice(), |_| Ok(())).unwrap();
    assert_eq!(report.dead_letters.values().sum::<u64>(), 0);
    let fired: Vec<_> = report
        .alerts
        .iter()
        .filter(|a| a.status == Status::Firing && a.account_id.is_none())
        .collect();
    assert!(!fired.is_empty(), "the cutter must be accused");
    for alert in &fired {
        assert_eq!(alert.manager_id, "kam-0-0", "{}", alert.summary);
    }
    let leakage = fired
        .iter()
        .find(|a| a.kind == AlertKind::PipelineLeakage)
        .expect("a pipeline leakage alert");
    assert!(
        leakage.summary.contains("had their quote cut"),
        "{}",
        leakage.summary
    );
    assert!(!leakage.evidence.is_empty());
    for item in &leakage.evidence {
        assert_eq!(item["note"], "cut", "{item}");
    }
}

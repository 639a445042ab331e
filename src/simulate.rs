//! A simulated sales organisation with planted diversion: the input of the
//! demo, of the integration tests and of threshold tuning by backtest.
//!
//! Teams of key account managers of different skill own accounts of different
//! size and order rhythm. Each simulated day accounts order, managers log
//! visits and calls, deals enter the pipeline, move and close. Planted on top:
//! - diversion: from an onset day a diverting manager steers a share of the
//!   book away — deals on those accounts are lost ("competitor",
//!   "no_decision") or withdrawn, orders stop — while visits go on;
//! - a team-wide market downturn: every win rate in one team falls for a
//!   season (not anyone's doing: must not page);
//! - a company-wide holiday lull each year when orders halve;
//! - occasional reassignments of accounts between managers.
//!
//! Deterministic for a given [`SimConfig`] (seeded `StdRng`). The ground truth
//! is in [`Labels`].

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma, LogNormal};
use serde::Serialize;

use crate::event::{ActivityKind, Event, EventBody, FeedbackKind, LossReason};
use crate::time::{Timestamp, DAY};

/// The size and shape of the simulated organisation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub managers: usize,
    pub managers_per_team: usize,
    pub accounts_per_manager: usize,
    pub days: i64,
    /// Day 0 of the simulation.
    pub start: Timestamp,
    /// Share of managers who divert (at least one when > 0).
    pub diverter_share: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 7,
            managers: 40,
            managers_per_team: 8,
            accounts_per_manager: 10,
            days: 540,
            start: Timestamp::parse_rfc3339("2025-01-01T00:00:00Z").unwrap_or_default(),
            diverter_share: 0.1,
        }
    }
}

/// Ground truth of one simulated world, written beside its events.
#[derive(Clone, Debug, Serialize)]
pub struct Labels {
    pub seed: u64,
    pub start: String,
    pub days: i64,
    pub managers: Vec<ManagerLabel>,
    pub diverters: Vec<DiverterLabel>,
    pub downturns: Vec<DownturnLabel>,
    pub reassignments: Vec<ReassignmentLabel>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ManagerLabel {
    pub manager_id: String,
    pub team: String,
    pub win_rate: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DiverterLabel {
    pub manager_id: String,
    pub team: String,
    pub onset: String,
    pub style: &'static str,
    pub diverted_accounts: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DownturnLabel {
    pub team: String,
    pub start: String,
    pub end: String,
    pub win_rate_factor: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReassignmentLabel {
    pub account_id: String,
    pub from: String,
    pub to: String,
    pub at: String,
}

const COMPETITORS: [&str; 5] = ["Acme", "Globex", "Initech", "Umbrella", "Hooli"];

struct Manager {
    id: String,
    team: usize,
    win_rate: f64,
    /// The day diversion starts, if this manager diverts.
    onset: Option<i64>,
    /// A rival firm the diverted deals go to.
    accomplice: &'static str,
}

struct Account {
    id: String,
    manager: usize,
    order_size: f64,
    mean_order_gap: f64,
    next_order_day: f64,
    /// Expected new deals per 30 days.
    deal_rate: f64,
    diverted: bool,
}

struct OpenDeal {
    id: String,
    account: usize,
    amount: f64,
    close_day: i64,
    update_day: i64,
}

struct Downturn {
    team: usize,
    start: i64,
    end: i64,
    factor: f64,
}

/// The simulated organisation, one day at a time.
pub struct Simulation {
    config: SimConfig,
    rng: StdRng,
    managers: Vec<Manager>,
    accounts: Vec<Account>,
    open: Vec<OpenDeal>,
    downturn: Option<Downturn>,
    day: i64,
    next_event: u64,
    next_deal: u64,
    labels: Labels,
}

impl Simulation {
    pub fn new(config: SimConfig) -> Simulation {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let teams = config
            .managers
            .div_ceil(config.managers_per_team.max(1))
            .max(1);
        let diverters = if config.diverter_share > 0.0 {
            ((config.managers as f64 * config.diverter_share).round() as usize)
                .clamp(1, config.managers)
        } else {
            0
        };
        let mut order: Vec<usize> = (0..config.managers).collect();
        order.shuffle(&mut rng);
        let diverting: Vec<usize> = order.into_iter().take(diverters).collect();

        let earliest_onset = (config.days / 3).max(1);
        let latest_onset = (config.days - 120).max(earliest_onset + 1);
        let managers: Vec<Manager> = (0..config.managers)
            .map(|i| Manager {
                id: format!("kam-{:04}", i + 1),
                team: i % teams,
                win_rate: rng.gen_range(0.35..0.6),
                onset: diverting
                    .contains(&i)
                    .then(|| rng.gen_range(earliest_onset..latest_onset)),
                accomplice: COMPETITORS[rng.gen_range(0..COMPETITORS.len())],
            })
            .collect();

        let size = LogNormal::new(9.0, 0.8).expect("valid lognormal");
        let mut accounts = Vec::new();
        for (m, manager) in managers.iter().enumerate() {
            let share = if manager.onset.is_some() {
                rng.gen_range(0.5..1.0)
            } else {
                0.0
            };
            for _ in 0..config.accounts_per_manager {
                let mean_order_gap = rng.gen_range(7.0..40.0);
                accounts.push(Account {
                    id: format!("acc-{:05}", accounts.len() + 1),
                    manager: m,
                    order_size: size.sample(&mut rng),
                    mean_order_gap,
                    next_order_day: rng.gen_range(0.0..mean_order_gap),
                    deal_rate: rng.gen_range(0.6..1.6),
                    diverted: rng.gen_bool(share),
                });
            }
        }

        let downturn = (teams > 1).then(|| {
            let start =
                rng.gen_range(config.days / 3..(config.days * 2 / 3).max(config.days / 3 + 1));
            Downturn {
                team: rng.gen_range(0..teams),
                start,
                end: start + 120,
                factor: 0.5,
            }
        });

        let day_text = |day: i64| config.start.plus(day * DAY).to_string();
        let labels = Labels {
            seed: config.seed,
            start: config.start.to_string(),
            days: config.days,
            managers: managers
                .iter()
                .map(|m| ManagerLabel {
                    manager_id: m.id.clone(),
                    team: team_name(m.team),
                    win_rate: m.win_rate,
                })
                .collect(),
            diverters: managers
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    m.onset.map(|onset| DiverterLabel {
                        manager_id: m.id.clone(),
                        team: team_name(m.team),
                        onset: day_text(onset),
                        style: "deals_to_competitor_and_silent_orders",
                        diverted_accounts: accounts
                            .iter()
                            .filter(|a| a.manager == i && a.diverted)
                            .map(|a| a.id.clone())
                            .collect(),
                    })
                })
                .collect(),
            downturns: downturn
                .iter()
                .map(|d| DownturnLabel {
                    team: team_name(d.team),
                    start: day_text(d.start),
                    end: day_text(d.end),
                    win_rate_factor: d.factor,
                })
                .collect(),
            reassignments: Vec::new(),
        };

        Simulation {
            config,
            rng,
            managers,
            accounts,
            open: Vec::new(),
            downturn,
            day: 0,
            next_event: 0,
            next_deal: 0,
            labels,
        }
    }

    /// The ground truth so far (reassignments are added as they happen).
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// The events of the next simulated day in time order, or `None` at the end.
    pub fn next_day(&mut self) -> Option<Vec<Event>> {
        if self.day >= self.config.days {
            return None;
        }
        let day = self.day;
        self.day += 1;
        let mut events = Vec::new();
        let lull = self.holiday_lull(day);

        for a in 0..self.accounts.len() {
            let m = self.accounts[a].manager;
            let diverting = self.accounts[a].diverted
                && self.managers[m].onset.is_some_and(|onset| day >= onset);

            if day as f64 >= self.accounts[a].next_order_day {
                let gap = Gamma::new(4.0, self.accounts[a].mean_order_gap / 4.0)
                    .map(|g| g.sample(&mut self.rng))
                    .unwrap_or(self.accounts[a].mean_order_gap);
                let gap = if lull { gap * 2.0 } else { gap };
                self.accounts[a].next_order_day = day as f64 + gap.max(1.0);
                if !diverting {
                    let amount = round2(self.accounts[a].order_size * self.rng.gen_range(0.6..1.4));
                    let order_id = format!("ord-{}", self.next_event);
                    events.push(self.event(day, a, EventBody::OrderPlaced { order_id, amount }));
                }
            }
            if self.rng.gen_bool(1.0 / 10.0) {
                let activity = *[
                    ActivityKind::Visit,
                    ActivityKind::Call,
                    ActivityKind::Email,
                    ActivityKind::Meeting,
                ]
                .choose(&mut self.rng)
                .unwrap_or(&ActivityKind::Call);
                events.push(self.event(day, a, EventBody::ActivityLogged { activity }));
            }
            if self
                .rng
                .gen_bool((self.accounts[a].deal_rate / 30.0).min(1.0))
            {
                self.next_deal += 1;
                let deal = OpenDeal {
                    id: format!("opp-{}", self.next_deal),
                    account: a,
                    amount: round2(self.accounts[a].order_size * self.rng.gen_range(3.0..12.0)),
                    close_day: day + self.rng.gen_range(10..60),
                    update_day: day + self.rng.gen_range(3..10),
                };
                let body = EventBody::OpportunityCreated {
                    opportunity_id: deal.id.clone(),
                    amount: deal.amount,
                };
                events.push(self.event(day, a, body));
                self.open.push(deal);
            }
            if self.rng.gen_bool(1.0 / 400.0) {
                let kind = if self.rng.gen_bool(0.3) {
                    FeedbackKind::Complaint
                } else {
                    FeedbackKind::Revisit
                };
                let score = Some(self.rng.gen_range(1..=5));
                events.push(self.event(day, a, EventBody::CustomerFeedback { kind, score }));
            }
        }

        let mut still_open = Vec::with_capacity(self.open.len());
        for deal in std::mem::take(&mut self.open) {
            if deal.update_day == day {
                let body = EventBody::OpportunityUpdated {
                    opportunity_id: deal.id.clone(),
                    amount: None,
                    stage: Some("proposal".to_owned()),
                    expected_close: Some(self.config.start.plus(deal.close_day * DAY)),
                };
                events.push(self.event(day, deal.account, body));
            }
            if deal.close_day == day {
                let body = self.close(&deal, day);
                events.push(self.event(day, deal.account, body));
            } else {
                still_open.push(deal);
            }
        }
        self.open = still_open;

        if self.rng.gen_bool(0.02) && self.managers.len() > 1 {
            self.reassign(day, &mut events);
        }

        events.sort_by_key(|e| e.occurred_at);
        Some(events)
    }

    /// How a deal ends: won at the manager's rate (lower in a downturn); on a
    /// diverted account, almost never.
    fn close(&mut self, deal: &OpenDeal, day: i64) -> EventBody {
        let account = &self.accounts[deal.account];
        let manager = &self.managers[account.manager];
        let diverting = account.diverted && manager.onset.is_some_and(|onset| day >= onset);
        let mut win_rate = manager.win_rate;
        if let Some(d) = &self.downturn {
            if d.team == manager.team && (d.start..d.end).contains(&day) {
                win_rate *= d.factor;
            }
        }
        if diverting {
            win_rate = 0.05;
        }
        let opportunity_id = deal.id.clone();
        let amount = deal.amount;
        if self.rng.gen_bool(win_rate) {
            return EventBody::OpportunityWon {
                opportunity_id,
                amount,
            };
        }
        if diverting {
            if self.rng.gen_bool(0.2) {
                return EventBody::OpportunityWithdrawn {
                    opportunity_id,
                    amount,
                };
            }
            let (reason, competitor) = if self.rng.gen_bool(0.6) {
                (LossReason::Competitor, Some(manager.accomplice.to_owned()))
            } else {
                (LossReason::NoDecision, None)
            };
            return EventBody::OpportunityLost {
                opportunity_id,
                amount,
                reason,
                competitor,
            };
        }
        if self.rng.gen_bool(0.05) {
            return EventBody::OpportunityWithdrawn {
                opportunity_id,
                amount,
            };
        }
        let roll: f64 = self.rng.gen();
        let (reason, competitor) = if roll < 0.35 {
            (LossReason::Price, None)
        } else if roll < 0.7 {
            let competitor = COMPETITORS[self.rng.gen_range(0..COMPETITORS.len())];
            (LossReason::Competitor, Some(competitor.to_owned()))
        } else if roll < 0.9 {
            (LossReason::NoDecision, None)
        } else {
            (LossReason::Other, None)
        };
        EventBody::OpportunityLost {
            opportunity_id,
            amount,
            reason,
            competitor,
        }
    }

    /// Moves one honest manager's account to another honest manager.
    fn reassign(&mut self, day: i64, events: &mut Vec<Event>) {
        let a = self.rng.gen_range(0..self.accounts.len());
        let from = self.accounts[a].manager;
        if self.accounts[a].diverted || self.managers[from].onset.is_some() {
            return;
        }
        let to = self.rng.gen_range(0..self.managers.len());
        if to == from || self.managers[to].onset.is_some() {
            return;
        }
        self.accounts[a].manager = to;
        let previous = self.managers[from].id.clone();
        let event = self.event(
            day,
            a,
            EventBody::AccountAssigned {
                previous_manager_id: Some(previous.clone()),
            },
        );
        self.labels.reassignments.push(ReassignmentLabel {
            account_id: self.accounts[a].id.clone(),
            from: previous,
            to: self.managers[to].id.clone(),
            at: event.occurred_at.to_string(),
        });
        events.push(event);
    }

    /// Orders halve for three weeks from mid-January each year.
    fn holiday_lull(&self, day: i64) -> bool {
        (14..35).contains(&(day.rem_euclid(365)))
    }

    fn event(&mut self, day: i64, account: usize, body: EventBody) -> Event {
        self.next_event += 1;
        let manager = &self.managers[self.accounts[account].manager];
        let second = self.rng.gen_range(8 * 3600..18 * 3600);
        Event {
            event_id: format!("ev-{}", self.next_event),
            occurred_at: self.config.start.plus(day * DAY + second),
            manager_id: manager.id.clone(),
            account_id: self.accounts[account].id.clone(),
            team: team_name(manager.team),
            body,
        }
    }
}

impl Iterator for Simulation {
    type Item = Vec<Event>;

    fn next(&mut self) -> Option<Vec<Event>> {
        self.next_day()
    }
}

fn team_name(team: usize) -> String {
    format!("team-{}", team + 1)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SimConfig {
        SimConfig {
            managers: 16,
            days: 200,
            ..SimConfig::default()
        }
    }

    #[test]
    fn same_seed_same_world() {
        let a: Vec<Event> = Simulation::new(small()).flatten().collect();
        let b: Vec<Event> = Simulation::new(small()).flatten().collect();
        assert_eq!(a, b);
        assert!(a.len() > 5_000, "{}", a.len());
    }

    #[test]
    fn events_are_in_time_order_with_unique_ids() {
        let events: Vec<Event> = Simulation::new(small()).flatten().collect();
        assert!(events
            .windows(2)
            .all(|w| w[0].occurred_at <= w[1].occurred_at));
        let ids: std::collections::HashSet<&str> =
            events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids.len(), events.len());
    }

    #[test]
    fn plants_at_least_one_diverter() {
        let sim = Simulation::new(small());
        assert!(!sim.labels().diverters.is_empty());
        assert!(sim
            .labels()
            .diverters
            .iter()
            .all(|d| !d.diverted_accounts.is_empty()));
    }
}

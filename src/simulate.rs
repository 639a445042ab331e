//! A simulated sales organisation with planted diversion: the input of the
//! demo, of the integration tests and of threshold tuning by backtest.
//!
//! Teams of key account managers of different skill own accounts of
//! different size and order rhythm. Each simulated day accounts order,
//! managers log visits and calls, deals enter the pipeline, move and close,
//! contracts come up for renewal. Planted on top, with the ground truth in
//! [`Labels`]:
//! - diversion from an onset day, in four styles: `blatant` (the biggest
//!   accounts go silent at once), `subtle` (a quarter to two fifths of the
//!   book fades over three months), `competitor` (deals go to one rival) and
//!   `shrinking_quotes` (quotes are cut, then lost) — while the manager keeps
//!   visiting;
//! - honest churn: accounts that stop ordering for good, visits dying away;
//! - confounders that must not page: a company-wide holiday lull each year,
//!   a team-wide market downturn, managers on leave, new hires with new
//!   accounts, accounts reassigned between managers.
//!
//! Deterministic for a given [`SimConfig`] (seeded `StdRng`).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma, LogNormal};
use serde::Serialize;

use crate::event::{ActivityKind, Event, EventBody, FeedbackKind, Id, LossReason};
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
    /// Share of managers who divert (at least one when above 0).
    pub diverter_share: f64,
    /// Share of honest accounts that stop ordering for good per year.
    pub churn_per_year: f64,
    /// Share of honest managers who take a month's leave.
    pub leave_share: f64,
    /// Share of managers hired partway, with new accounts.
    pub new_hire_share: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 7,
            managers: 40,
            managers_per_team: 8,
            accounts_per_manager: 10,
            days: 540,
            start: Timestamp(1_735_689_600), // 2025-01-01T00:00:00Z
            diverter_share: 0.1,
            churn_per_year: 0.08,
            leave_share: 0.1,
            new_hire_share: 0.05,
        }
    }
}

/// How a manager diverts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    Blatant,
    Subtle,
    Competitor,
    ShrinkingQuotes,
}

const STYLES: [Style; 4] = [
    Style::Blatant,
    Style::Subtle,
    Style::Competitor,
    Style::ShrinkingQuotes,
];

/// Ground truth of one simulated world, written beside its events.
#[derive(Clone, Debug, Serialize)]
pub struct Labels {
    pub seed: u64,
    pub start: String,
    pub days: i64,
    pub managers: Vec<ManagerLabel>,
    pub diverters: Vec<DiverterLabel>,
    /// Accounts that stopped ordering: honestly, or diverted.
    pub churned_accounts: Vec<ChurnLabel>,
    pub downturns: Vec<DownturnLabel>,
    pub leaves: Vec<LeaveLabel>,
    pub new_hires: Vec<ManagerLabel>,
    pub reassignments: Vec<ReassignmentLabel>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ManagerLabel {
    pub manager_id: String,
    pub team: String,
    pub win_rate: f64,
    /// When the manager started (the simulation's start for most).
    pub hired: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DiverterLabel {
    pub manager_id: String,
    pub team: String,
    pub onset: String,
    pub style: Style,
    pub diverted_accounts: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChurnLabel {
    pub account_id: String,
    pub manager_id: String,
    pub at: String,
    /// `natural` or `diversion`.
    pub cause: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct DownturnLabel {
    pub team: String,
    pub start: String,
    pub end: String,
    pub win_rate_factor: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LeaveLabel {
    pub manager_id: String,
    pub start: String,
    pub end: String,
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
    /// The day diversion starts and its style, if this manager diverts.
    diversion: Option<(i64, Style)>,
    /// A rival firm the diverted deals go to.
    accomplice: &'static str,
    leave: Option<(i64, i64)>,
    hired: i64,
}

struct Account {
    id: String,
    manager: usize,
    order_size: f64,
    mean_gap: f64,
    next_order_day: f64,
    /// Expected new deals per 30 days.
    deal_rate: f64,
    diverted: bool,
    /// The day the account stops ordering for good, honestly.
    churn_day: Option<i64>,
    /// Days after `active_from` at which the yearly contract comes up.
    contract_offset: i64,
    active_from: i64,
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

/// What a diverting manager is doing to one account on one day.
#[derive(Clone, Copy, PartialEq)]
enum Diversion {
    None,
    /// Fraction of the way into a subtle fade (0–1).
    Fading(f64),
    Stopped(Style),
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
        let days = config.days.max(1);
        let teams = config
            .managers
            .div_ceil(config.managers_per_team.max(1))
            .max(1);
        let count = |share: f64| (config.managers as f64 * share).round() as usize;
        let mut order: Vec<usize> = (0..config.managers).collect();
        order.shuffle(&mut rng);
        let diverters = if config.diverter_share > 0.0 {
            count(config.diverter_share).clamp(1, config.managers)
        } else {
            0
        };
        let (diverting, honest) = order.split_at(diverters);
        let new_hires: Vec<usize> = honest
            .iter()
            .copied()
            .take(count(config.new_hire_share))
            .collect();
        let on_leave: Vec<usize> = honest
            .iter()
            .copied()
            .skip(new_hires.len())
            .take(count(config.leave_share))
            .collect();

        let earliest_onset = (days / 3).max(1);
        let latest_onset = (days - 120).max(earliest_onset + 1);
        let mut managers = Vec::with_capacity(config.managers);
        for i in 0..config.managers {
            let style = STYLES[diverting.iter().position(|d| *d == i).unwrap_or(0) % STYLES.len()];
            let diversion = diverting
                .contains(&i)
                .then(|| (rng.gen_range(earliest_onset..latest_onset), style));
            let leave = on_leave.contains(&i).then(|| {
                let start = rng.gen_range(60..(days - 60).max(61));
                (start, start + rng.gen_range(25..36))
            });
            let hired = if new_hires.contains(&i) {
                rng.gen_range(days / 4..(days / 2).max(days / 4 + 1))
            } else {
                0
            };
            managers.push(Manager {
                id: format!("kam-{:04}", i + 1),
                team: i % teams,
                win_rate: rng.gen_range(0.35..0.6),
                diversion,
                accomplice: COMPETITORS[rng.gen_range(0..COMPETITORS.len())],
                leave,
                hired,
            });
        }

        let size = LogNormal::new(9.0, 0.8).expect("valid lognormal");
        let mut accounts: Vec<Account> = Vec::new();
        for (m, manager) in managers.iter().enumerate() {
            let first = accounts.len();
            // A new hire's accounts churn at the same yearly rate, over the
            // part of the run they are theirs.
            let active_days = days - manager.hired;
            for _ in 0..config.accounts_per_manager {
                let mean_gap = rng.gen_range(7.0..40.0);
                let churn_day = (rng
                    .gen_bool((config.churn_per_year * active_days as f64 / 365.0).min(1.0)))
                .then(|| rng.gen_range((manager.hired + 90).min(days - 1)..days));
                accounts.push(Account {
                    id: format!("acc-{:05}", accounts.len() + 1),
                    manager: m,
                    order_size: size.sample(&mut rng),
                    mean_gap,
                    next_order_day: manager.hired as f64 + rng.gen_range(0.0..mean_gap),
                    deal_rate: rng.gen_range(0.6..1.6),
                    diverted: false,
                    churn_day,
                    contract_offset: rng.gen_range(30..365),
                    active_from: manager.hired,
                });
            }
            if let Some((_, style)) = manager.diversion {
                let book = &mut accounts[first..];
                let share = match style {
                    Style::Subtle => rng.gen_range(0.25..0.4),
                    _ => rng.gen_range(0.5..0.8),
                };
                let n = ((book.len() as f64 * share).round() as usize)
                    .clamp(2.min(book.len()), book.len());
                if style == Style::Blatant {
                    book.sort_by(|a, b| b.order_size.total_cmp(&a.order_size));
                } else {
                    book.shuffle(&mut rng);
                }
                for account in book.iter_mut().take(n) {
                    account.diverted = true;
                    account.churn_day = None;
                }
                book.sort_by(|a, b| a.id.cmp(&b.id));
            }
        }

        let downturn = (teams > 1).then(|| {
            let start = rng.gen_range(days / 3..(days * 2 / 3).max(days / 3 + 1));
            Downturn {
                team: rng.gen_range(0..teams),
                start,
                end: start + 120,
                factor: 0.5,
            }
        });

        let day_text = |day: i64| config.start.plus(day * DAY).to_string();
        let manager_label = |m: &Manager| ManagerLabel {
            manager_id: m.id.clone(),
            team: team_name(m.team),
            win_rate: m.win_rate,
            hired: day_text(m.hired),
        };
        let mut churned_accounts = Vec::new();
        for account in &accounts {
            let manager = &managers[account.manager];
            if let Some(day) = account.churn_day {
                churned_accounts.push(ChurnLabel {
                    account_id: account.id.clone(),
                    manager_id: manager.id.clone(),
                    at: day_text(day),
                    cause: "natural",
                });
            }
            if let (true, Some((onset, _))) = (account.diverted, manager.diversion) {
                churned_accounts.push(ChurnLabel {
                    account_id: account.id.clone(),
                    manager_id: manager.id.clone(),
                    at: day_text(onset),
                    cause: "diversion",
                });
            }
        }
        let labels = Labels {
            seed: config.seed,
            start: config.start.to_string(),
            days,
            managers: managers.iter().map(manager_label).collect(),
            diverters: managers
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    m.diversion.map(|(onset, style)| DiverterLabel {
                        manager_id: m.id.clone(),
                        team: team_name(m.team),
                        onset: day_text(onset),
                        style,
                        diverted_accounts: accounts
                            .iter()
                            .filter(|a| a.manager == i && a.diverted)
                            .map(|a| a.id.clone())
                            .collect(),
                    })
                })
                .collect(),
            churned_accounts,
            downturns: downturn
                .iter()
                .map(|d| DownturnLabel {
                    team: team_name(d.team),
                    start: day_text(d.start),
                    end: day_text(d.end),
                    win_rate_factor: d.factor,
                })
                .collect(),
            leaves: managers
                .iter()
                .filter_map(|m| {
                    m.leave.map(|(start, end)| LeaveLabel {
                        manager_id: m.id.clone(),
                        start: day_text(start),
                        end: day_text(end),
                    })
                })
                .collect(),
            new_hires: managers
                .iter()
                .filter(|m| m.hired > 0)
                .map(manager_label)
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
        let lull = holiday_lull(day);

        for a in 0..self.accounts.len() {
            if day < self.accounts[a].active_from {
                continue;
            }
            let m = self.accounts[a].manager;
            let diversion = self.diversion(a, day);
            let churned_for = self.accounts[a]
                .churn_day
                .filter(|c| day >= *c)
                .map(|c| day - c);
            let on_leave = self.managers[m]
                .leave
                .is_some_and(|(s, e)| (s..e).contains(&day));

            if day as f64 >= self.accounts[a].next_order_day {
                let mean = self.accounts[a].mean_gap;
                let mut gap = Gamma::new(4.0, mean / 4.0)
                    .map(|g| g.sample(&mut self.rng))
                    .unwrap_or(mean);
                let mut amount_factor = 1.0;
                if let Diversion::Fading(progress) = diversion {
                    gap *= 1.0 + 3.0 * progress;
                    amount_factor = 1.0 - 0.7 * progress;
                }
                self.accounts[a].next_order_day = after_business_days(day as f64, gap.max(1.0));
                let stopped = matches!(diversion, Diversion::Stopped(_)) || churned_for.is_some();
                if !stopped {
                    let amount = round2(
                        self.accounts[a].order_size * amount_factor * self.rng.gen_range(0.6..1.4),
                    );
                    let order_id = format!("ord-{}", self.next_event + 1);
                    events.push(self.event(
                        day,
                        a,
                        EventBody::OrderPlaced {
                            order_id: order_id.into(),
                            amount,
                        },
                    ));
                }
            }

            // Visits: a diverting manager keeps them up; a lost customer's fade away.
            let mut visit_rate = if lull { 0.05 } else { 0.1 };
            if let Some(days_gone) = churned_for {
                visit_rate *= (1.0 - days_gone as f64 / 45.0).max(0.0);
            }
            if on_leave {
                visit_rate = 0.0;
            }
            if visit_rate > 0.0 && self.rng.gen_bool(visit_rate) {
                let kinds = [
                    ActivityKind::Visit,
                    ActivityKind::Call,
                    ActivityKind::Email,
                    ActivityKind::Meeting,
                ];
                let activity = kinds[self.rng.gen_range(0..kinds.len())];
                events.push(self.event(day, a, EventBody::ActivityLogged { activity }));
            }

            let deal_rate = self.accounts[a].deal_rate / 30.0 * if lull { 0.5 } else { 1.0 };
            if !on_leave && churned_for.is_none() && self.rng.gen_bool(deal_rate.min(1.0)) {
                self.next_deal += 1;
                let deal = OpenDeal {
                    id: format!("opp-{}", self.next_deal),
                    account: a,
                    amount: round2(self.accounts[a].order_size * self.rng.gen_range(3.0..12.0)),
                    close_day: day + self.rng.gen_range(10..60),
                    update_day: day + self.rng.gen_range(3..10),
                };
                let body = EventBody::OpportunityCreated {
                    opportunity_id: deal.id.as_str().into(),
                    amount: deal.amount,
                };
                events.push(self.event(day, a, body));
                self.open.push(deal);
            }

            let account = &self.accounts[a];
            let contract_due = day > account.active_from + 30
                && (day - account.active_from) % 365 == account.contract_offset;
            if contract_due {
                let leaving = churned_for.is_some() || matches!(diversion, Diversion::Stopped(_));
                let renewed = !(leaving && self.rng.gen_bool(0.7));
                let body = EventBody::ContractEnded {
                    contract_id: format!("ctr-{}-{}", account.id, day).into(),
                    renewed,
                    amount: round2(account.order_size * 12.0),
                };
                events.push(self.event(day, a, body));
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
        for mut deal in std::mem::take(&mut self.open) {
            if deal.update_day == day {
                // Shrinking quotes: the diverting manager cuts the quote first.
                let mut amount = None;
                if self.diversion(deal.account, day) == Diversion::Stopped(Style::ShrinkingQuotes) {
                    deal.amount = round2(deal.amount * self.rng.gen_range(0.3..0.6));
                    amount = Some(deal.amount);
                }
                let body = EventBody::OpportunityUpdated {
                    opportunity_id: deal.id.as_str().into(),
                    amount,
                    stage: Some(Id::const_new("proposal")),
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

    fn diversion(&self, account: usize, day: i64) -> Diversion {
        let account = &self.accounts[account];
        match self.managers[account.manager].diversion {
            Some((onset, style)) if account.diverted && day >= onset => match style {
                Style::Subtle => Diversion::Fading(((day - onset) as f64 / 90.0).min(1.0)),
                other => Diversion::Stopped(other),
            },
            _ => Diversion::None,
        }
    }

    /// How a deal ends: won at the manager's rate (lower in a downturn); on a
    /// diverted account, as the diversion style has it.
    fn close(&mut self, deal: &OpenDeal, day: i64) -> EventBody {
        let account = &self.accounts[deal.account];
        let manager = &self.managers[account.manager];
        let mut win_rate = manager.win_rate;
        if let Some(d) = &self.downturn {
            if d.team == manager.team && (d.start..d.end).contains(&day) {
                win_rate *= d.factor;
            }
        }
        let accomplice = manager.accomplice;
        let churned = account.churn_day.is_some_and(|c| day >= c);
        let diversion = self.diversion(deal.account, day);
        let opportunity_id = Id::from(deal.id.as_str());
        let amount = deal.amount;
        let lost = |reason: LossReason, competitor: Option<&str>| EventBody::OpportunityLost {
            opportunity_id: opportunity_id.clone(),
            amount,
            reason,
            competitor: competitor.map(Id::from),
        };
        let roll: f64 = self.rng.gen();
        match diversion {
            Diversion::Stopped(Style::Blatant) => {
                return match roll {
                    r if r < 0.05 => EventBody::OpportunityWon {
                        opportunity_id,
                        amount,
                    },
                    r if r < 0.25 => EventBody::OpportunityWithdrawn {
                        opportunity_id,
                        amount,
                    },
                    r if r < 0.6 => lost(LossReason::Competitor, Some(accomplice)),
                    _ => lost(LossReason::NoDecision, None),
                }
            }
            Diversion::Stopped(Style::Competitor) => {
                return match roll {
                    r if r < 0.05 => EventBody::OpportunityWon {
                        opportunity_id,
                        amount,
                    },
                    r if r < 0.85 => lost(LossReason::Competitor, Some(accomplice)),
                    _ => lost(LossReason::Other, None),
                }
            }
            Diversion::Stopped(Style::ShrinkingQuotes) => {
                return match roll {
                    r if r < 0.1 => EventBody::OpportunityWon {
                        opportunity_id,
                        amount,
                    },
                    r if r < 0.55 => lost(LossReason::Price, None),
                    _ => lost(LossReason::NoDecision, None),
                }
            }
            Diversion::Fading(progress) => {
                win_rate *= 1.0 - 0.7 * progress;
                if roll >= win_rate && self.rng.gen_bool(0.5 * progress) {
                    return lost(LossReason::Competitor, Some(accomplice));
                }
            }
            Diversion::Stopped(Style::Subtle) | Diversion::None => {}
        }
        if churned {
            win_rate *= 0.3;
        }
        if roll < win_rate {
            return EventBody::OpportunityWon {
                opportunity_id,
                amount,
            };
        }
        if self.rng.gen_bool(0.05) {
            return EventBody::OpportunityWithdrawn {
                opportunity_id,
                amount,
            };
        }
        let reason_roll: f64 = self.rng.gen();
        if reason_roll < 0.35 {
            lost(LossReason::Price, None)
        } else if reason_roll < 0.7 {
            let competitor = COMPETITORS[self.rng.gen_range(0..COMPETITORS.len())];
            lost(LossReason::Competitor, Some(competitor))
        } else if reason_roll < 0.9 {
            lost(LossReason::NoDecision, None)
        } else {
            lost(LossReason::Other, None)
        }
    }

    /// Moves one honest manager's ordering account to another honest manager.
    fn reassign(&mut self, day: i64, events: &mut Vec<Event>) {
        let a = self.rng.gen_range(0..self.accounts.len());
        let from = self.accounts[a].manager;
        let account = &self.accounts[a];
        if account.diverted
            || account.churn_day.is_some()
            || day < account.active_from
            || self.managers[from].diversion.is_some()
        {
            return;
        }
        let to = self.rng.gen_range(0..self.managers.len());
        if to == from || self.managers[to].diversion.is_some() || day < self.managers[to].hired {
            return;
        }
        self.accounts[a].manager = to;
        let previous = self.managers[from].id.clone();
        let event = self.event(
            day,
            a,
            EventBody::AccountAssigned {
                previous_manager_id: Some(previous.as_str().into()),
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

    fn event(&mut self, day: i64, account: usize, body: EventBody) -> Event {
        self.next_event += 1;
        let manager = &self.managers[self.accounts[account].manager];
        let second = self.rng.gen_range(8 * 3600..18 * 3600);
        Event {
            event_id: format!("ev-{}", self.next_event).into(),
            occurred_at: self.config.start.plus(day * DAY + second),
            manager_id: manager.id.as_str().into(),
            account_id: self.accounts[account].id.as_str().into(),
            team: team_name(manager.team).into(),
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

/// Orders, visits and new deals halve for three weeks from mid-January each year.
fn holiday_lull(day: i64) -> bool {
    (14..35).contains(&(day.rem_euclid(365)))
}

/// The day `business` business days after `from`, where a day of the
/// holiday lull counts half: ordering runs at half its pace through the
/// lull, so orders halve there and a gap that spans it grows by half the
/// lull days it spans, not twofold (which turned a January order into a
/// pause of months).
fn after_business_days(from: f64, business: f64) -> f64 {
    let (mut at, mut left) = (from, business);
    loop {
        let day_end = at.floor() + 1.0;
        let pace = if holiday_lull(at.floor() as i64) {
            0.5
        } else {
            1.0
        };
        let in_this_day = (day_end - at) * pace;
        if left <= in_this_day {
            return at + left / pace;
        }
        left -= in_this_day;
        at = day_end;
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

    #[test]
    fn the_holiday_lull_halves_the_pace_of_ordering_only_while_it_lasts() {
        // Outside the lull a business day is a day.
        assert_eq!(after_business_days(100.0, 30.0), 130.0);
        // Inside it (days 14..35), half a business day per day.
        assert_eq!(after_business_days(20.0, 5.0), 30.0);
        // A 45-day gap from day 19: its 16 lull days count 8, so it ends 8
        // days later than without the lull (72, not 64), not 45 days later.
        assert_eq!(after_business_days(19.0, 45.0), 72.0);
        // Within a year's lull again.
        assert_eq!(after_business_days(365.0 + 34.5, 1.0), 365.0 + 35.75);
    }

    #[test]
    fn new_hires_lose_customers_at_the_yearly_rate_of_everyone_else() {
        let config = SimConfig {
            managers: 400,
            new_hire_share: 0.5,
            churn_per_year: 0.3,
            diverter_share: 0.0,
            ..SimConfig::default()
        };
        let days = config.days;
        let simulation = Simulation::new(config);
        // Churned accounts per account-year, of new hires and of the rest.
        let mut churned = [0.0; 2];
        let mut years = [0.0; 2];
        for account in &simulation.accounts {
            let hired = simulation.managers[account.manager].hired;
            let new = usize::from(hired > 0);
            churned[new] += f64::from(u8::from(account.churn_day.is_some()));
            years[new] += (days - hired) as f64 / 365.0;
        }
        let (veterans, new_hires) = (churned[0] / years[0], churned[1] / years[1]);
        // Drawn at 0.3 a year over a run of 540 days (the first 90 days of
        // an account's owner excepted) for either; new hires' accounts
        // churned about twice as fast when drawn over the whole run.
        assert!(
            (new_hires / veterans - 1.0).abs() < 0.25,
            "new hires {new_hires:.3}, veterans {veterans:.3} a year"
        );
    }

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
    fn plants_diverters_of_every_style_and_the_confounders() {
        let sim = Simulation::new(SimConfig {
            managers: 40,
            ..SimConfig::default()
        });
        let labels = sim.labels();
        assert_eq!(labels.diverters.len(), 4);
        for style in STYLES {
            assert!(
                labels.diverters.iter().any(|d| d.style == style),
                "{style:?}"
            );
        }
        assert!(labels
            .diverters
            .iter()
            .all(|d| d.diverted_accounts.len() >= 2));
        assert!(!labels.leaves.is_empty());
        assert!(!labels.new_hires.is_empty());
        assert_eq!(labels.downturns.len(), 1);
        assert!(labels.churned_accounts.iter().any(|c| c.cause == "natural"));
    }
}

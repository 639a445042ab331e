//! The account stage (DESIGN §1): per-account state, keyed by `account_id`.
//!
//! It knows who owns each account now (`account_assigned` moves it), which
//! opportunities are open on it, and turns events into [`Fact`]s for the
//! manager stage. It runs no detector itself and never looks at another
//! account.

use std::collections::HashMap;

use crate::event::{Event, EventBody};
use crate::time::Timestamp;

use super::fact::{DealOutcome, EvidenceRef, Fact, FactKind};

/// All accounts this instance owns.
#[derive(Debug, Default)]
pub struct AccountStage {
    accounts: HashMap<String, AccountState>,
}

#[derive(Debug)]
struct AccountState {
    manager_id: String,
    team: String,
    last_event: Timestamp,
    /// Open deals by opportunity id: what each was worth when it entered the
    /// pipeline and when it last moved.
    open: HashMap<String, OpenOpportunity>,
}

#[derive(Debug, Clone, Copy)]
struct OpenOpportunity {
    created_at: Timestamp,
    amount: f64,
    last_update: Timestamp,
}

impl AccountStage {
    /// Applies one event to its account and appends the facts it yields.
    pub fn apply(&mut self, event: &Event, facts: &mut Vec<Fact>) {
        let account = self
            .accounts
            .entry(event.account_id.clone())
            .or_insert_with(|| AccountState {
                manager_id: event.manager_id.clone(),
                team: event.team.clone(),
                last_event: event.occurred_at,
                open: HashMap::new(),
            });
        account.last_event = account.last_event.max(event.occurred_at);

        let closed = match &event.body {
            EventBody::AccountAssigned { .. } => {
                account.manager_id.clone_from(&event.manager_id);
                account.team.clone_from(&event.team);
                None
            }
            EventBody::OpportunityCreated {
                opportunity_id,
                amount,
            } => {
                account.open.insert(
                    opportunity_id.clone(),
                    OpenOpportunity {
                        created_at: event.occurred_at,
                        amount: *amount,
                        last_update: event.occurred_at,
                    },
                );
                None
            }
            EventBody::OpportunityUpdated {
                opportunity_id,
                amount,
                ..
            } => {
                if let Some(open) = account.open.get_mut(opportunity_id) {
                    open.last_update = open.last_update.max(event.occurred_at);
                    if let Some(amount) = amount {
                        open.amount = *amount;
                    }
                }
                None
            }
            EventBody::OpportunityWon {
                opportunity_id,
                amount,
            } => Some((opportunity_id, *amount, DealOutcome::Won)),
            EventBody::OpportunityLost {
                opportunity_id,
                amount,
                reason,
                ..
            } => Some((opportunity_id, *amount, DealOutcome::Lost(*reason))),
            EventBody::OpportunityWithdrawn {
                opportunity_id,
                amount,
            } => Some((opportunity_id, *amount, DealOutcome::Withdrawn)),
            EventBody::OrderPlaced { .. }
            | EventBody::ActivityLogged { .. }
            | EventBody::ContractEnded { .. }
            | EventBody::CustomerFeedback { .. } => None,
        };

        if let Some((opportunity_id, amount, outcome)) = closed {
            account.open.remove(opportunity_id);
            facts.push(Fact {
                manager_id: event.manager_id.clone(),
                team: event.team.clone(),
                at: event.occurred_at,
                kind: FactKind::DealClosed { outcome, amount },
                evidence: evidence_of(event),
            });
        }
    }

    pub fn accounts(&self) -> usize {
        self.accounts.len()
    }

    pub fn open_opportunities(&self) -> usize {
        self.accounts.values().map(|a| a.open.len()).sum()
    }

    /// The manager who owns `account_id` now, if the account is known.
    pub fn owner(&self, account_id: &str) -> Option<&str> {
        self.accounts.get(account_id).map(|a| a.manager_id.as_str())
    }

    /// Drops open deals that have not moved since before `cutoff`, so an
    /// opportunity the CRM never closes cannot hold memory forever.
    pub fn expire_open_before(&mut self, cutoff: Timestamp) {
        for account in self.accounts.values_mut() {
            account
                .open
                .retain(|_, open| open.last_update >= cutoff || open.created_at >= cutoff);
        }
    }
}

/// The evidence reference of an event.
pub fn evidence_of(event: &Event) -> EvidenceRef {
    let (opportunity_id, amount, reason, competitor) = match &event.body {
        EventBody::OpportunityCreated {
            opportunity_id,
            amount,
        }
        | EventBody::OpportunityWon {
            opportunity_id,
            amount,
        }
        | EventBody::OpportunityWithdrawn {
            opportunity_id,
            amount,
        } => (Some(opportunity_id.clone()), Some(*amount), None, None),
        EventBody::OpportunityUpdated {
            opportunity_id,
            amount,
            ..
        } => (Some(opportunity_id.clone()), *amount, None, None),
        EventBody::OpportunityLost {
            opportunity_id,
            amount,
            reason,
            competitor,
        } => (
            Some(opportunity_id.clone()),
            Some(*amount),
            Some(reason.as_str()),
            competitor.clone(),
        ),
        EventBody::OrderPlaced { amount, .. } | EventBody::ContractEnded { amount, .. } => {
            (None, Some(*amount), None, None)
        }
        EventBody::ActivityLogged { .. }
        | EventBody::AccountAssigned { .. }
        | EventBody::CustomerFeedback { .. } => (None, None, None, None),
    };
    EvidenceRef {
        event_id: event.event_id.clone(),
        event_type: event.body.type_name(),
        occurred_at: event.occurred_at,
        account_id: event.account_id.clone(),
        opportunity_id,
        amount,
        reason,
        competitor,
    }
}

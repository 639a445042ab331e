//! Importers of public CRM data into schema-v1 events, for replaying real
//! pipelines through feidan. One today: Maven Analytics' "CRM + Sales +
//! Opportunities" sample (`../shared/data/maven-crm`, see its README).
//!
//! Mapping (each choice is forced by what the data has):
//! - a `sales_agent` is the key account manager (`manager_id`, the agent's
//!   name), their `regional_office` the team;
//! - each opportunity row gives `opportunity_created` at `engage_date`, then
//!   `opportunity_won` or `opportunity_lost` at `close_date`; open rows only
//!   the creation; rows without an account or an engage date are skipped and
//!   counted (the schema needs both);
//! - the amount of a deal is the product's list price (`close_value` for won
//!   deals); lost deals have no recorded reason, so `other`;
//! - the data has no orders: a won deal is the account's revenue, so it also
//!   gives an `order_placed` of its `close_value` on its close date;
//! - days only in the source: every event is at 12:00 UTC.

use std::collections::HashMap;
use std::path::Path;

use crate::event::{Event, EventBody, LossReason};
use crate::time::{Timestamp, DAY};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: csv::Error },
    #[error("{path} line {line}: {problem}")]
    Row {
        path: String,
        line: u64,
        problem: String,
    },
}

/// The events and what was left out, by reason.
#[derive(Debug, Default)]
pub struct Imported {
    pub events: Vec<Event>,
    pub rows: u64,
    pub skipped_no_account: u64,
    pub skipped_no_engage_date: u64,
}

/// Reads `sales_pipeline.csv`, `sales_teams.csv` and `products.csv` from `dir`.
///
/// # Errors
///
/// When a file cannot be read or a row has an unreadable date or amount.
pub fn maven_crm(dir: &Path) -> Result<Imported, ImportError> {
    let teams: HashMap<String, String> = rows(&dir.join("sales_teams.csv"))?
        .into_iter()
        .map(|(_, r)| (r["sales_agent"].clone(), r["regional_office"].clone()))
        .collect();
    let prices: HashMap<String, f64> = rows(&dir.join("products.csv"))?
        .into_iter()
        .filter_map(|(_, r)| {
            Some((
                r["product"].replace(' ', ""),
                r["sales_price"].parse().ok()?,
            ))
        })
        .collect();

    let path = dir.join("sales_pipeline.csv");
    let mut imported = Imported::default();
    for (line, row) in rows(&path)? {
        imported.rows += 1;
        let bad = |problem: String| ImportError::Row {
            path: path.display().to_string(),
            line,
            problem,
        };
        let (opportunity, agent, account) =
            (&row["opportunity_id"], &row["sales_agent"], &row["account"]);
        if account.is_empty() {
            imported.skipped_no_account += 1;
            continue;
        }
        let Some(engaged) = date(&row["engage_date"]) else {
            imported.skipped_no_engage_date += 1;
            continue;
        };
        let price = prices.get(&row["product"].replace(' ', "")).copied();
        let close_value: Option<f64> = row["close_value"].parse().ok();
        let amount = price
            .or(close_value)
            .ok_or_else(|| bad(format!("no price for product `{}`", row["product"])))?;
        let team = teams
            .get(agent)
            .cloned()
            .unwrap_or_else(|| "default".to_owned());
        let event = |suffix: &str, at: Timestamp, body: EventBody| Event {
            event_id: format!("{opportunity}-{suffix}").into(),
            occurred_at: at,
            manager_id: agent.as_str().into(),
            account_id: account.as_str().into(),
            team: team.as_str().into(),
            body,
        };
        imported.events.push(event(
            "created",
            engaged,
            EventBody::OpportunityCreated {
                opportunity_id: opportunity.as_str().into(),
                amount,
            },
        ));
        let stage = row["deal_stage"].as_str();
        if stage != "Won" && stage != "Lost" {
            continue;
        }
        let closed =
            date(&row["close_date"]).ok_or_else(|| bad(format!("{stage} without a close date")))?;
        if stage == "Won" {
            let value = close_value.ok_or_else(|| bad("Won without a close value".to_owned()))?;
            imported.events.push(event(
                "won",
                closed,
                EventBody::OpportunityWon {
                    opportunity_id: opportunity.as_str().into(),
                    amount: value,
                },
            ));
            imported.events.push(event(
                "order",
                closed,
                EventBody::OrderPlaced {
                    order_id: format!("{opportunity}-order").into(),
                    amount: value,
                },
            ));
        } else {
            imported.events.push(event(
                "lost",
                closed,
                EventBody::OpportunityLost {
                    opportunity_id: opportunity.as_str().into(),
                    amount,
                    reason: LossReason::Other,
                    competitor: None,
                },
            ));
        }
    }
    imported
        .events
        .sort_by(|a, b| (a.occurred_at, &a.event_id).cmp(&(b.occurred_at, &b.event_id)));
    Ok(imported)
}

/// `YYYY-MM-DD` at 12:00 UTC.
fn date(text: &str) -> Option<Timestamp> {
    let day = Timestamp::parse_rfc3339(&format!("{}T00:00:00Z", text.trim()))?;
    Some(day.plus(DAY / 2))
}

/// A CSV row: its line number, and its values by header.
type Row = (u64, HashMap<String, String>);

/// The rows of a CSV file.
fn rows(path: &Path) -> Result<Vec<Row>, ImportError> {
    let read_error = |source| ImportError::Read {
        path: path.display().to_string(),
        source,
    };
    let mut reader = csv::Reader::from_path(path).map_err(read_error)?;
    let headers = reader.headers().map_err(read_error)?.clone();
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(read_error)?;
        let line = record.position().map_or(0, |p| p.line());
        let row = headers
            .iter()
            .zip(record.iter())
            .map(|(h, v)| (h.trim().to_owned(), v.trim().to_owned()))
            .collect();
        out.push((line, row));
    }
    Ok(out)
}

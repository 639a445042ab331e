//! Alert transitions, schema v1 (DESIGN §3): the values the engine emits and
//! their JSON form on the alert topic and in `backtest --output`.
//!
//! This module owns the output contract; the sinks only move the bytes.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::stats;
use crate::time::Timestamp;

pub const SCHEMA: &str = "feidan.alert.v1";

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AlertKind {
    WinRateDrop,
    PipelineLeakage,
    BookChurn,
    CompetitorConcentration,
    DiversionRisk,
    AccountChurn,
}

impl AlertKind {
    pub const ALL: [AlertKind; 6] = [
        AlertKind::WinRateDrop,
        AlertKind::PipelineLeakage,
        AlertKind::BookChurn,
        AlertKind::CompetitorConcentration,
        AlertKind::DiversionRisk,
        AlertKind::AccountChurn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::WinRateDrop => "win_rate_drop",
            AlertKind::PipelineLeakage => "pipeline_leakage",
            AlertKind::BookChurn => "book_churn",
            AlertKind::CompetitorConcentration => "competitor_concentration",
            AlertKind::DiversionRisk => "diversion_risk",
            AlertKind::AccountChurn => "account_churn",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    /// Critical below `critical_p_value`, a warning otherwise.
    pub fn for_p_value(p_value: f64, critical_p_value: f64) -> Severity {
        if p_value < critical_p_value {
            Severity::Critical
        } else {
            Severity::Warning
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// A standard statistical test with every parameter needed to recompute its
/// p-value (scipy names in the comments).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StatTest {
    /// P[X ≤ k], X ~ Binomial(n, p): `binom.cdf(k, n, p)`.
    BinomialLower { k: u64, n: u64, p: f64 },
    /// P[X ≥ k], X ~ Binomial(n, p): `binom.sf(k - 1, n, p)`.
    BinomialUpper { k: u64, n: u64, p: f64 },
    /// P[X ≤ k], X ~ BetaBinomial(n, a, b): `betabinom.cdf(k, n, a, b)`.
    BetabinomLower { k: u64, n: u64, a: f64, b: f64 },
    /// P[X ≥ k], X ~ BetaBinomial(n, a, b): `betabinom.sf(k - 1, n, a, b)`.
    BetabinomUpper { k: u64, n: u64, a: f64, b: f64 },
    /// P(T > t), T ~ Gamma(shape, scale): `gamma.sf(t, shape, scale=scale)`.
    GammaSurvival { t: f64, shape: f64, scale: f64 },
    /// Fisher's method: `chi2.sf(-2 * sum(log(p_values)), 2 * len(p_values))`.
    FisherCombined { p_values: Vec<f64> },
}

impl StatTest {
    /// The p-value, computed from the parameters alone.
    pub fn p_value(&self) -> f64 {
        match *self {
            StatTest::BinomialLower { k, n, p } => stats::binomial_lower(k, n, p),
            StatTest::BinomialUpper { k, n, p } => stats::binomial_upper(k, n, p),
            StatTest::BetabinomLower { k, n, a, b } => stats::betabinom_lower(k, n, a, b),
            StatTest::BetabinomUpper { k, n, a, b } => stats::betabinom_upper(k, n, a, b),
            StatTest::GammaSurvival { t, shape, scale } => stats::gamma_survival(t, shape, scale),
            StatTest::FisherCombined { ref p_values } => stats::fisher_combined(p_values).1,
        }
    }

    /// The `test` object of the alert: name, parameters and p-value.
    pub fn to_json(&self, p_value: f64) -> Value {
        match *self {
            StatTest::BinomialLower { k, n, p } => {
                json!({"name": "binomial_lower", "k": k, "n": n, "p": p, "p_value": p_value})
            }
            StatTest::BinomialUpper { k, n, p } => {
                json!({"name": "binomial_upper", "k": k, "n": n, "p": p, "p_value": p_value})
            }
            StatTest::BetabinomLower { k, n, a, b } => {
                json!({"name": "betabinom_lower", "k": k, "n": n, "a": a, "b": b, "p_value": p_value})
            }
            StatTest::BetabinomUpper { k, n, a, b } => {
                json!({"name": "betabinom_upper", "k": k, "n": n, "a": a, "b": b, "p_value": p_value})
            }
            StatTest::GammaSurvival { t, shape, scale } => {
                json!({"name": "gamma_survival", "t": t, "shape": shape, "scale": scale, "p_value": p_value})
            }
            StatTest::FisherCombined { ref p_values } => {
                json!({"name": "fisher_combined", "p_values": p_values, "p_value": p_value})
            }
        }
    }
}

/// One alert transition: an alert starting to fire, or resolving.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `kind/subject/episode-start`: the same for every transition of one
    /// episode, and the same on every replay of the same input.
    pub alert_id: String,
    pub status: Status,
    pub kind: AlertKind,
    pub severity: Severity,
    pub manager_id: String,
    pub team: String,
    /// Set for account-level alerts only.
    pub account_id: Option<String>,
    /// The watermark when the transition happened (event time).
    pub detected_at: Timestamp,
    pub window_start: Timestamp,
    pub window_end: Timestamp,
    pub observed: f64,
    pub expected: f64,
    pub test: StatTest,
    pub p_value: f64,
    /// The events that moved the statistic most, as JSON objects.
    pub evidence: Vec<Value>,
    pub summary: String,
}

impl Alert {
    /// min(100, 10 · −log10(p_value)).
    pub fn score(&self) -> f64 {
        stats::score(self.p_value)
    }

    /// The schema-v1 JSON object.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("schema".into(), json!(SCHEMA));
        object.insert("alert_id".into(), json!(self.alert_id));
        object.insert("status".into(), json!(self.status.as_str()));
        object.insert("kind".into(), json!(self.kind.as_str()));
        object.insert("severity".into(), json!(self.severity.as_str()));
        object.insert("manager_id".into(), json!(self.manager_id));
        object.insert("team".into(), json!(self.team));
        object.insert("account_id".into(), json!(self.account_id));
        object.insert("detected_at".into(), json!(self.detected_at.to_string()));
        object.insert(
            "window".into(),
            json!({"start": self.window_start.to_string(), "end": self.window_end.to_string()}),
        );
        object.insert("observed".into(), json!(round(self.observed)));
        object.insert("expected".into(), json!(round(self.expected)));
        object.insert("score".into(), json!(round(self.score())));
        object.insert("test".into(), self.test.to_json(self.p_value));
        object.insert("evidence".into(), Value::Array(self.evidence.clone()));
        object.insert("summary".into(), json!(self.summary));
        Value::Object(object)
    }

    /// One line for people; see [`describe`].
    pub fn to_line(&self) -> String {
        describe(&self.to_json())
    }
}

/// One line for people from a schema-v1 alert object: status in capitals,
/// kind, severity, manager, team (and account), score, time and summary.
pub fn describe(alert: &Value) -> String {
    let text = |key: &str| alert.get(key).and_then(Value::as_str).unwrap_or("?");
    let account = match alert.get("account_id").and_then(Value::as_str) {
        Some(account) => format!(" account={account}"),
        None => String::new(),
    };
    format!(
        "{:<8} {} {} manager={} team={}{} score={:.0} at {}: {}",
        text("status").to_uppercase(),
        text("kind"),
        text("severity"),
        text("manager_id"),
        text("team"),
        account,
        alert.get("score").and_then(Value::as_f64).unwrap_or(0.0),
        text("detected_at"),
        text("summary")
    )
}

/// Four significant decimals: enough to read, stable across platforms.
fn round(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

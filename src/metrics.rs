//! Prometheus metrics (DESIGN §8) and the HTTP endpoints `/metrics`,
//! `/healthz` and `/readyz` on one port.
//!
//! One [`Metrics`] per process, built on a registry it owns (no global
//! registry, so every test gets its own). Per-event counters are handles
//! looked up once; the engine's gauges are refreshed from an
//! [`EngineStats`] snapshot about once a second, never per event.
//! `account_id` is never a label; per-manager series are opt-in and capped.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::alert::{AlertKind, Severity};
use crate::engine::{EngineStats, Outcome};
use crate::event::{DecodeError, EVENT_TYPES};

/// Every metric feidan exports.
pub struct Metrics {
    registry: Registry,
    pub events: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub watermark: Gauge,
    pub evaluated: Gauge,
    pub event_lag: Gauge,
    pub processing: Histogram,
    pub state_entities: IntGaugeVec,
    pub state_evictions: IntCounterVec,
    pub consumer_lag: IntGaugeVec,
    pub consumer_rebalances: IntCounter,
    pub alerts: IntCounterVec,
    pub alerts_firing: IntGaugeVec,
    pub alert_active: IntGaugeVec,
    pub manager_win_rate: GaugeVec,
    pub manager_leakage: GaugeVec,
    pub manager_overdue: GaugeVec,
    pub manager_risk: GaugeVec,
    pub team_win_rate: GaugeVec,
    pub series_dropped: IntCounter,
    pub ready: IntGauge,
    pub group_standby: IntGauge,
    pub sink_errors: IntCounterVec,
    pub forced_events: IntCounter,
    pub checkpoints: IntCounter,
    pub checkpoint_records: IntCounter,
    pub checkpoint_seconds: Histogram,
    pub checkpoint_timestamp: Gauge,
    pub replay_skipped: IntCounter,
    pub input_delay: Histogram,
    pub account_tail_scale: GaugeVec,
    pub input_refetches: IntCounter,
    /// `feidan_events_total` handles by (type, outcome), looked up once.
    message_counters:
        std::collections::HashMap<(&'static str, &'static str), IntCounter, ahash::RandomState>,
    /// `feidan_dead_letters_total` handles by reason, looked up once.
    dead_letter_counters: std::collections::HashMap<&'static str, IntCounter, ahash::RandomState>,
    /// Label sets currently exported, so series that went away are removed.
    exported: Mutex<Exported>,
    manager_series: bool,
    max_manager_series: usize,
}

#[derive(Default)]
struct Exported {
    active: BTreeSet<[String; 4]>,
    managers: BTreeSet<[String; 2]>,
    evictions: std::collections::HashMap<&'static str, u64>,
    forced_events: u64,
}

/// Health shared between the service and the HTTP endpoints.
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

fn build<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<T>,
) -> T {
    let metric = metric.expect("metric definitions are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

impl Metrics {
    /// Registers every metric on a fresh registry.
    pub fn new(manager_series: bool, max_manager_series: usize) -> Metrics {
        let registry = Registry::new();
        let shared = registry.clone();
        let r = &shared;
        let mut metrics = Metrics {
            events: build(r, IntCounterVec::new(Opts::new("feidan_events_total", "Input messages by event type and outcome (processed, duplicate, late, dead_letter)."), &["type", "outcome"])),
            dead_letters: build(r, IntCounterVec::new(Opts::new("feidan_dead_letters_total", "Messages sent to the dead-letter topic, by reason."), &["reason"])),
            watermark: build(r, Gauge::new("feidan_watermark_timestamp_seconds", "Event-time watermark, Unix seconds.")),
            evaluated: build(r, Gauge::new("feidan_evaluated_timestamp_seconds", "Event time up to which every evaluation is done (scaled out: by every stage of this instance), Unix seconds.")),
            event_lag: build(r, Gauge::new("feidan_event_lag_seconds", "Wall-clock time minus the watermark.")),
            processing: build(r, Histogram::with_opts(HistogramOpts::new("feidan_processing_seconds", "Time to decode and apply one input message, including any evaluation it triggers.").buckets(vec![1e-6, 5e-6, 2.5e-5, 1e-4, 5e-4, 2.5e-3, 1e-2, 5e-2, 0.25, 1.0]))),
            state_entities: build(r, IntGaugeVec::new(Opts::new("feidan_state_entities", "Entities held in state, by kind."), &["kind"])),
            state_evictions: build(r, IntCounterVec::new(Opts::new("feidan_state_evictions_total", "Entities evicted from state by a cap or TTL, by kind."), &["kind"])),
            consumer_lag: build(r, IntGaugeVec::new(Opts::new("feidan_consumer_lag_messages", "Messages between the consumer's position and the partition's high watermark."), &["partition"])),
            consumer_rebalances: build(r, IntCounter::new("feidan_consumer_rebalances_total", "Consumer group rebalances this instance took part in (assignments, revocations and failed rebalances). A group that keeps rebalancing does little work.")),
            alerts: build(r, IntCounterVec::new(Opts::new("feidan_alerts_total", "Alerts that started firing, by kind and severity."), &["kind", "severity"])),
            alerts_firing: build(r, IntGaugeVec::new(Opts::new("feidan_alerts_firing", "Alerts firing now, by kind and severity."), &["kind", "severity"])),
            alert_active: build(r, IntGaugeVec::new(Opts::new("feidan_alert_active", "1 for each alert firing now; Prometheus rules turn these into Alertmanager alerts."), &["kind", "severity", "manager_id", "team"])),
            manager_win_rate: build(r, GaugeVec::new(Opts::new("feidan_manager_win_rate", "A manager's won / closed deals over the win-rate window, at the last evaluation (opt-in: metrics.manager_series)."), &["manager_id", "team"])),
            manager_leakage: build(r, GaugeVec::new(Opts::new("feidan_manager_leakage_ratio", "A manager's leaked / exited deals over the leakage window, at the last evaluation (opt-in)."), &["manager_id", "team"])),
            manager_overdue: build(r, GaugeVec::new(Opts::new("feidan_manager_overdue_accounts", "A manager's accounts churning (overdue, value fallen or not renewed) at the last evaluation (opt-in)."), &["manager_id", "team"])),
            manager_risk: build(r, GaugeVec::new(Opts::new("feidan_manager_risk_score", "A manager's diversion-risk score, 0-100 (10 x -log10 of the combined p-value), at the last evaluation (opt-in)."), &["manager_id", "team"])),
            team_win_rate: build(r, GaugeVec::new(Opts::new("feidan_team_win_rate", "A team's won / closed deals over the win-rate window, at the last evaluation."), &["team"])),
            series_dropped: build(r, IntCounter::new("feidan_metrics_series_dropped_total", "Per-manager series not exported because metrics.max_manager_series was reached, counted per refresh.")),
            ready: build(r, IntGauge::new("feidan_ready", "1 while the service is ready (assigned, connected and caught up), else 0.")),
            group_standby: build(r, IntGauge::new("feidan_group_standby", "1 while this instance holds fewer than all input partitions (another instance shares its consumer group) and stands by, consuming nothing and writing no state (kafka.scale_out off).")),
            sink_errors: build(r, IntCounterVec::new(Opts::new("feidan_sink_errors_total", "Failed deliveries to Kafka, retried, by sink."), &["sink"])),
            forced_events: build(r, IntCounter::new("feidan_engine_forced_events_total", "On-time events applied before the watermark passed them because engine.max_buffered_events was reached.")),
            checkpoints: build(r, IntCounter::new("feidan_checkpoints_total", "Checkpoints of the state completed (all records and the marker acknowledged, offsets committed).")),
            checkpoint_records: build(r, IntCounter::new("feidan_checkpoint_records_total", "Records written to the state topic: changed entities, deletions and markers.")),
            checkpoint_seconds: build(r, Histogram::with_opts(HistogramOpts::new("feidan_checkpoint_seconds", "Time to take one checkpoint: serialise, write, wait for acknowledgement, commit.").buckets(vec![0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 60.0]))),
            checkpoint_timestamp: build(r, Gauge::new("feidan_checkpoint_timestamp_seconds", "When the last checkpoint completed, Unix seconds.")),
            replay_skipped: build(r, IntCounter::new("feidan_replay_skipped_messages_total", "Input messages consumed again after a restart that the restored checkpoint already held, skipped.")),
            account_tail_scale: build(r, GaugeVec::new(Opts::new("feidan_account_tail_scale", "How many times as often as the account rhythms' gamma tails say the company's returning customers were as late, at each tail level (survival 0.01 to 0.00001): account-churn p-values are scaled by it. 1 where rhythms are right."), &["level"])),
            input_delay: build(r, Histogram::with_opts(HistogramOpts::new("feidan_input_delay_seconds", "Wall-clock time from an input message's Kafka timestamp (the producer's create time, or the broker's append time on LogAppendTime topics) until feidan has applied it: how fresh detection is.").buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 600.0, 3600.0, 86400.0]))),
            input_refetches: build(r, IntCounter::new("feidan_input_refetches_total", "Input messages not applied while their partition is fetched again: ahead of the next expected offset, or read again from before it.")),
            message_counters: Default::default(),
            dead_letter_counters: Default::default(),
            exported: Mutex::new(Exported::default()),
            manager_series,
            max_manager_series,
            registry,
        };
        let build_info = build(
            r,
            IntGaugeVec::new(
                Opts::new("feidan_build_info", "Build information; always 1."),
                &["version"],
            ),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        // Pre-register the fixed label sets so every series exists from the
        // start, and keep their handles: no label lookup per message.

        for event_type in EVENT_TYPES.iter().chain(["invalid"].iter()) {
            for outcome in Outcome::LABELS {
                if *event_type == "invalid" && outcome != "dead_letter" {
                    continue;
                }
                let counter = metrics.events.with_label_values(&[event_type, outcome]);
                metrics
                    .message_counters
                    .insert((event_type, outcome), counter);
            }
        }
        for reason in DecodeError::CODES.iter().chain(["late"].iter()) {
            let counter = metrics.dead_letters.with_label_values(&[reason]);
            metrics.dead_letter_counters.insert(reason, counter);
        }
        for kind in AlertKind::ALL {
            for severity in [Severity::Warning, Severity::Critical] {
                metrics
                    .alerts
                    .with_label_values(&[kind.as_str(), severity.as_str()]);
                metrics
                    .alerts_firing
                    .with_label_values(&[kind.as_str(), severity.as_str()]);
            }
        }
        for kind in ["event_ids", "accounts", "managers"] {
            metrics.state_evictions.with_label_values(&[kind]);
        }
        for sink in ["alerts", "dead_letters"] {
            metrics.sink_errors.with_label_values(&[sink]);
        }
        metrics
    }

    /// Counts one input message.
    pub fn count_message(&self, event_type: &'static str, outcome: &Outcome) {
        match self.message_counters.get(&(event_type, outcome.label())) {
            Some(counter) => counter.inc(),
            None => self
                .events
                .with_label_values(&[event_type, outcome.label()])
                .inc(),
        }
        if let Outcome::DeadLetter(reason) = outcome {
            match self.dead_letter_counters.get(reason.code()) {
                Some(counter) => counter.inc(),
                None => self.dead_letters.with_label_values(&[reason.code()]).inc(),
            }
        }
    }

    /// Updates every gauge from an engine snapshot. `now` is wall-clock Unix seconds.
    pub fn refresh(&self, stats: &EngineStats, now: f64) {
        if let Some(evaluated) = stats.evaluated {
            self.evaluated.set(evaluated.0 as f64);
        }
        if let Some(watermark) = stats.watermark {
            self.watermark.set(watermark.0 as f64);
            self.event_lag.set((now - watermark.0 as f64).max(0.0));
        }
        if let Some(ratios) = stats.tail_ratios {
            for (level, ratio) in crate::engine::calibration::TAIL_LEVELS.iter().zip(ratios) {
                self.account_tail_scale
                    .with_label_values(&[&level.to_string()])
                    .set(ratio);
            }
        }
        for (kind, count) in [
            ("accounts", stats.accounts),
            ("open_opportunities", stats.open_opportunities),
            ("managers", stats.managers),
            ("teams", stats.teams),
            ("event_ids", stats.remembered_event_ids),
            ("buffered_events", stats.buffered_events),
            ("alerts", stats.pending_or_firing),
        ] {
            self.state_entities
                .with_label_values(&[kind])
                .set(count as i64);
        }

        let mut exported = self.exported.lock().unwrap_or_else(|e| e.into_inner());
        for (kind, total) in &stats.evictions {
            let previous = exported.evictions.insert(kind, *total).unwrap_or(0);
            self.state_evictions
                .with_label_values(&[kind])
                .inc_by(total.saturating_sub(previous));
        }
        self.forced_events
            .inc_by(stats.forced_events.saturating_sub(exported.forced_events));
        exported.forced_events = stats.forced_events;

        for kind in AlertKind::ALL {
            for severity in [Severity::Warning, Severity::Critical] {
                let count = stats
                    .active
                    .iter()
                    .filter(|a| a.kind == kind && a.severity == severity)
                    .count();
                self.alerts_firing
                    .with_label_values(&[kind.as_str(), severity.as_str()])
                    .set(count as i64);
            }
        }
        let active: BTreeSet<[String; 4]> = stats
            .active
            .iter()
            .map(|a| {
                [
                    a.kind.as_str().to_owned(),
                    a.severity.as_str().to_owned(),
                    a.manager_id.clone(),
                    a.team.clone(),
                ]
            })
            .collect();
        for gone in exported.active.difference(&active) {
            let _ = self.alert_active.remove_label_values(&labels(gone));
        }
        for now_active in &active {
            self.alert_active
                .with_label_values(&labels(now_active))
                .set(1);
        }
        exported.active = active;

        for (team, rate) in &stats.team_win_rates {
            self.team_win_rate.with_label_values(&[team]).set(*rate);
        }
        if self.manager_series {
            let mut shown = BTreeSet::new();
            let mut managers: Vec<&(String, String, crate::engine::manager::ManagerGauges)> =
                stats.managers_detail.iter().collect();
            managers.sort_by(|a, b| a.0.cmp(&b.0));
            for (manager, team, gauges) in managers {
                let key = [manager.clone(), team.clone()];
                if !exported.managers.contains(&key)
                    && exported.managers.len() + shown.len() >= self.max_manager_series
                {
                    self.series_dropped.inc();
                    continue;
                }
                let labels = [manager.as_str(), team.as_str()];
                set_or_remove(&self.manager_win_rate, &labels, gauges.win_rate);
                set_or_remove(&self.manager_leakage, &labels, gauges.leakage_ratio);
                self.manager_overdue
                    .with_label_values(&labels)
                    .set(gauges.overdue_accounts as f64);
                self.manager_risk
                    .with_label_values(&labels)
                    .set(gauges.risk_score);
                shown.insert(key);
            }
            for gone in exported.managers.difference(&shown) {
                for gauge in [
                    &self.manager_win_rate,
                    &self.manager_leakage,
                    &self.manager_overdue,
                    &self.manager_risk,
                ] {
                    let _ = gauge.remove_label_values(&labels(gone));
                }
            }
            exported.managers = shown;
        }
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buffer) {
            return format!("# encoding failed: {e}\n");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

fn set_or_remove(gauge: &GaugeVec, labels: &[&str], value: Option<f64>) {
    match value {
        Some(value) => gauge.with_label_values(labels).set(value),
        None => {
            let _ = gauge.remove_label_values(labels);
        }
    }
}

fn labels<const N: usize>(values: &[String; N]) -> [&str; N] {
    std::array::from_fn(|i| values[i].as_str())
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    health: Health,
}

/// Binds `addr` and serves the endpoints until `shutdown` completes.
/// Returns the bound address (useful with port 0) and the server task.
///
/// # Errors
///
/// When the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(HttpState { metrics, health });
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "The metrics server stopped.");
        }
    });
    Ok((bound, task))
}

async fn metrics_handler(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn ready_handler(State(state): State<HttpState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::lifecycle::ActiveAlert;

    #[test]
    fn manager_series_are_capped_and_drops_counted() {
        let metrics = Metrics::new(true, 3);
        let gauges = crate::engine::manager::ManagerGauges {
            win_rate: Some(0.5),
            ..Default::default()
        };
        let stats = EngineStats {
            managers_detail: (0..10)
                .map(|i| (format!("m{i}"), "t".to_owned(), gauges.clone()))
                .collect(),
            ..Default::default()
        };
        metrics.refresh(&stats, 0.0);
        let text = metrics.render();
        assert_eq!(text.matches("feidan_manager_win_rate{").count(), 3);
        assert_eq!(metrics.series_dropped.get(), 7);
        assert_eq!(text.matches("feidan_manager_risk_score{").count(), 3);
    }

    #[test]
    fn the_tail_calibration_is_exported_by_level_once_evaluated() {
        let metrics = Metrics::new(false, 0);
        metrics.refresh(&EngineStats::default(), 0.0);
        assert!(!metrics.render().contains("feidan_account_tail_scale{"));
        let stats = EngineStats {
            tail_ratios: Some([2.5, 9.0, 31.0, 62.0]),
            ..Default::default()
        };
        metrics.refresh(&stats, 0.0);
        let text = metrics.render();
        assert!(
            text.contains(r#"feidan_account_tail_scale{level="0.001"} 9"#),
            "{text}"
        );
        assert!(
            text.contains(r#"feidan_account_tail_scale{level="0.00001"} 62"#),
            "{text}"
        );
    }

    #[test]
    fn resolved_alerts_leave_the_active_series() {
        let metrics = Metrics::new(false, 0);
        let alert = ActiveAlert {
            kind: AlertKind::WinRateDrop,
            severity: Severity::Critical,
            manager_id: "kam-1".into(),
            team: "t".into(),
        };
        metrics.refresh(
            &EngineStats {
                active: vec![alert],
                ..Default::default()
            },
            0.0,
        );
        assert!(metrics.render().contains(r#"feidan_alert_active{kind="win_rate_drop",manager_id="kam-1",severity="critical",team="t"} 1"#));
        metrics.refresh(&EngineStats::default(), 0.0);
        assert!(!metrics.render().contains("feidan_alert_active{"));
        assert!(
            !metrics.render().contains("feidan_manager_win_rate{"),
            "manager series are opt-in"
        );
    }
}

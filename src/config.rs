//! Configuration: typed structs, the layered loader and validation.
//!
//! Layers, later wins (DESIGN §9):
//! 1. built-in defaults, `config/default.toml`, embedded in the binary;
//! 2. `--config FILE`;
//! 3. environment variables `FEIDAN__SECTION__KEY` (`__` separates levels; under
//!    `kafka.client` an `_` in the last part stands for a `.`);
//! 4. `--set KEY=VALUE` overrides, in the order given.
//!
//! Every key must exist in the defaults (or live under `kafka.client`); an
//! unknown key or an out-of-range value is a [`ConfigError`] naming the key.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The built-in defaults, documented key by key.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Prefix of the environment variables that configure feidan.
const ENV_PREFIX: &str = "FEIDAN";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("unknown configuration key `{key}`{}", did_you_mean(suggestion))]
    UnknownKey {
        key: String,
        /// A known key the unknown one is likely a slip for.
        suggestion: Option<String>,
    },
    #[error("`--set {0}` is not KEY=VALUE")]
    BadOverride(String),
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub engine: EngineConfig,
    pub alerts: AlertsConfig,
    pub detect: DetectConfig,
    /// Per-team overrides of any `detect` key, as written: `[teams."east".win_rate]`.
    #[serde(default)]
    pub teams: BTreeMap<String, Value>,
    /// `detect` with each team's overrides applied, built by [`Config::load`].
    #[serde(skip)]
    team_detect: BTreeMap<String, DetectConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub brokers: String,
    pub group_id: String,
    pub input_topic: String,
    pub alert_topic: String,
    pub dead_letter_topic: String,
    pub state_topic: String,
    /// Scale out (DESIGN §7): instances in the group share the input
    /// partitions (account stages) and the facts topic's partitions
    /// (manager stages). Off: one instance holds every partition.
    pub scale_out: bool,
    /// Scaled out: facts and books from the account stages to the manager
    /// stages, one partition per manager stage, keyed by team.
    pub facts_topic: String,
    /// Scaled out: the account stages' shares of the company's order pace,
    /// read by every instance (one partition).
    pub pace_topic: String,
    pub max_in_flight: usize,
    pub topics: TopicsConfig,
    /// librdkafka properties, flattened to `name = value` strings.
    #[serde(deserialize_with = "flatten_client_properties")]
    pub client: BTreeMap<String, String>,
}

/// How feidan creates the topics it owns when they are missing.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    pub create: bool,
    pub partitions: i32,
    pub replication_factor: i32,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub addr: String,
    pub manager_series: bool,
    pub max_manager_series: usize,
    pub ready_max_lag: i64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    #[serde(with = "duration")]
    pub allowed_lateness: Duration,
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    #[serde(with = "duration")]
    pub late_horizon: Duration,
    pub max_event_bytes: usize,
    pub max_buffered_events: usize,
    #[serde(with = "duration")]
    pub entity_ttl: Duration,
    pub max_accounts: usize,
    pub max_managers: usize,
    pub dedup_capacity: usize,
    #[serde(with = "duration")]
    pub dedup_horizon: Duration,
    /// How often `run` checkpoints the state to `kafka.state_topic`.
    #[serde(with = "duration")]
    pub checkpoint_interval: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    #[serde(with = "duration")]
    pub evaluate_every: Duration,
    /// Evaluations a condition must hold before the alert fires.
    #[serde(rename = "for")]
    pub for_evaluations: u32,
    pub resolve_after: u32,
    pub max_evidence: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    pub win_rate: WinRateConfig,
    pub leakage: LeakageConfig,
    pub churn: ChurnConfig,
    pub book_churn: BookChurnConfig,
    pub competitor: CompetitorConfig,
    pub diversion_risk: DiversionRiskConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LeakageConfig {
    #[serde(with = "duration")]
    pub window: Duration,
    #[serde(with = "duration")]
    pub history: Duration,
    pub alpha: f64,
    pub resolve_alpha: f64,
    pub min_rise: f64,
    pub min_exits: u64,
    pub prior_strength: f64,
    pub critical_p_value: f64,
    #[serde(with = "duration")]
    pub stall_after: Duration,
    pub cut_ratio: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChurnConfig {
    pub alpha: f64,
    pub signal_alpha: f64,
    pub min_visits: u32,
    pub min_gaps: u32,
    #[serde(with = "duration")]
    pub min_history: Duration,
    pub max_shape: f64,
    pub critical_p_value: f64,
    pub book_alpha: f64,
    pub visited_alpha: f64,
    pub value_fall_ratio: f64,
    pub value_min_orders: u32,
    #[serde(with = "duration")]
    pub lapse_horizon: Duration,
    #[serde(with = "duration")]
    pub reassign_grace: Duration,
    #[serde(with = "duration")]
    pub business_baseline: Duration,
    #[serde(with = "duration")]
    pub order_window: Duration,
    #[serde(with = "duration")]
    pub min_silence: Duration,
    #[serde(with = "duration")]
    pub visits_within: Duration,
    #[serde(with = "duration")]
    pub book_window: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BookChurnConfig {
    pub alpha: f64,
    pub resolve_alpha: f64,
    pub min_accounts: u64,
    pub min_churning: u64,
    pub min_excess: f64,
    /// Bars past the loosest at which the visited and the shrinking
    /// accounts are also counted, each a tenth of the one before (0 to 2).
    pub tighter_bars: u64,
    /// A book whose counts are this improbable under the company's shares
    /// is left out of the company's counts, and out of its team's when this
    /// improbable under the rest of the team's (company-wide).
    pub outlier_p: f64,
    pub critical_p_value: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CompetitorConfig {
    #[serde(with = "duration")]
    pub window: Duration,
    pub alpha: f64,
    pub resolve_alpha: f64,
    pub min_losses: u64,
    pub min_excess: f64,
    pub critical_p_value: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DiversionRiskConfig {
    pub alpha: f64,
    pub resolve_alpha: f64,
    pub component_p: f64,
    pub min_components: u64,
    pub critical_p_value: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WinRateConfig {
    #[serde(with = "duration")]
    pub window: Duration,
    #[serde(with = "duration")]
    pub history: Duration,
    pub alpha: f64,
    pub resolve_alpha: f64,
    pub min_drop: f64,
    pub min_closed: u64,
    pub prior_strength: f64,
    pub critical_p_value: f64,
}

/// Range rules shared by the tests of every detector.
struct Rules<'a> {
    prefix: &'a str,
}

impl Rules<'_> {
    fn fail(&self, key: &str, problem: &str) -> Result<(), ConfigError> {
        Err(ConfigError::Invalid {
            key: format!("{}{key}", self.prefix),
            problem: problem.to_owned(),
        })
    }

    fn probability(&self, key: &str, value: f64) -> Result<(), ConfigError> {
        if value > 0.0 && value < 1.0 {
            Ok(())
        } else {
            self.fail(key, "must be between 0 and 1, exclusive")
        }
    }

    /// `alpha`, `resolve_alpha` and `critical_p_value` of one detector.
    fn thresholds(
        &self,
        section: &str,
        alpha: f64,
        resolve: f64,
        critical: f64,
    ) -> Result<(), ConfigError> {
        self.probability(&format!("{section}.alpha"), alpha)?;
        self.probability(&format!("{section}.resolve_alpha"), resolve)?;
        if resolve < alpha {
            return self.fail(
                &format!("{section}.resolve_alpha"),
                "must be at least alpha",
            );
        }
        if !(critical > 0.0 && critical <= alpha) {
            return self.fail(
                &format!("{section}.critical_p_value"),
                "must be above 0 and at most alpha",
            );
        }
        Ok(())
    }

    fn fraction(&self, key: &str, value: f64) -> Result<(), ConfigError> {
        if (0.0..1.0).contains(&value) {
            Ok(())
        } else {
            self.fail(key, "must be at least 0 and below 1")
        }
    }

    /// The baseline of a rate detector: a positive prior weight, a window
    /// no shorter than an evaluation step, a history no shorter than the window.
    fn rate_baseline(
        &self,
        section: &str,
        prior_strength: f64,
        window: Duration,
        history: Duration,
        evaluate_every: Duration,
    ) -> Result<(), ConfigError> {
        if prior_strength.is_nan() || prior_strength <= 0.0 {
            return self.fail(&format!("{section}.prior_strength"), "must be above 0");
        }
        if window < evaluate_every {
            return self.fail(
                &format!("{section}.window"),
                "must be at least alerts.evaluate_every",
            );
        }
        if history < window {
            return self.fail(
                &format!("{section}.history"),
                &format!("must be at least as long as {section}.window"),
            );
        }
        Ok(())
    }

    fn days_at_least(&self, key: &str, value: Duration, days: u64) -> Result<(), ConfigError> {
        if value >= Duration::from_secs(days * 86_400) {
            Ok(())
        } else {
            self.fail(key, &format!("must be at least {days}d"))
        }
    }

    fn at_least_one(&self, key: &str, value: u64) -> Result<(), ConfigError> {
        if value >= 1 {
            Ok(())
        } else {
            self.fail(key, "must be at least 1")
        }
    }
}

impl DetectConfig {
    /// Range rules; keys are named under `prefix` (`detect.` or `teams."x".`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for the first rule broken.
    pub fn validate(&self, prefix: &str, evaluate_every: Duration) -> Result<(), ConfigError> {
        let r = Rules { prefix };
        let w = &self.win_rate;
        r.thresholds("win_rate", w.alpha, w.resolve_alpha, w.critical_p_value)?;
        r.fraction("win_rate.min_drop", w.min_drop)?;
        r.at_least_one("win_rate.min_closed", w.min_closed)?;
        r.rate_baseline(
            "win_rate",
            w.prior_strength,
            w.window,
            w.history,
            evaluate_every,
        )?;
        let l = &self.leakage;
        r.thresholds("leakage", l.alpha, l.resolve_alpha, l.critical_p_value)?;
        r.fraction("leakage.min_rise", l.min_rise)?;
        r.at_least_one("leakage.min_exits", l.min_exits)?;
        r.fraction("leakage.cut_ratio", l.cut_ratio)?;
        r.rate_baseline(
            "leakage",
            l.prior_strength,
            l.window,
            l.history,
            evaluate_every,
        )?;
        r.days_at_least("leakage.stall_after", l.stall_after, 1)?;
        let c = &self.churn;
        r.probability("churn.alpha", c.alpha)?;
        r.probability("churn.signal_alpha", c.signal_alpha)?;
        r.probability("churn.book_alpha", c.book_alpha)?;
        r.probability("churn.visited_alpha", c.visited_alpha)?;
        if c.signal_alpha < c.alpha {
            return r.fail("churn.signal_alpha", "must be at least churn.alpha");
        }
        if !(c.critical_p_value > 0.0 && c.critical_p_value <= c.alpha) {
            return r.fail(
                "churn.critical_p_value",
                "must be above 0 and at most churn.alpha",
            );
        }
        if c.min_gaps < 2 {
            return r.fail("churn.min_gaps", "must be at least 2");
        }
        if c.max_shape.is_nan() || c.max_shape < 1.0 {
            return r.fail("churn.max_shape", "must be at least 1");
        }
        r.fraction("churn.value_fall_ratio", c.value_fall_ratio)?;
        if c.value_min_orders < 2 {
            return r.fail("churn.value_min_orders", "must be at least 2");
        }
        r.days_at_least("churn.order_window", c.order_window, 2)?;
        r.days_at_least("churn.visits_within", c.visits_within, 1)?;
        r.days_at_least("churn.book_window", c.book_window, 1)?;
        let b = &self.book_churn;
        r.thresholds("book_churn", b.alpha, b.resolve_alpha, b.critical_p_value)?;
        r.at_least_one("book_churn.min_accounts", b.min_accounts)?;
        r.at_least_one("book_churn.min_churning", b.min_churning)?;
        r.fraction("book_churn.min_excess", b.min_excess)?;
        r.probability("book_churn.outlier_p", b.outlier_p)?;
        if b.tighter_bars >= crate::detect::book_churn::BARS as u64 {
            return r.fail("book_churn.tighter_bars", "must be 0, 1 or 2");
        }
        let k = &self.competitor;
        r.thresholds("competitor", k.alpha, k.resolve_alpha, k.critical_p_value)?;
        r.at_least_one("competitor.min_losses", k.min_losses)?;
        r.fraction("competitor.min_excess", k.min_excess)?;
        let d = &self.diversion_risk;
        r.thresholds(
            "diversion_risk",
            d.alpha,
            d.resolve_alpha,
            d.critical_p_value,
        )?;
        r.probability("diversion_risk.component_p", d.component_p)?;
        if d.min_components < 2 {
            return r.fail("diversion_risk.min_components", "must be at least 2");
        }
        Ok(())
    }
}

impl Config {
    /// The built-in defaults alone.
    pub fn defaults() -> Config {
        Config::load(None, &[], std::iter::empty()).expect("built-in defaults are valid")
    }

    /// Loads the layers described in the module docs and validates the result.
    ///
    /// `env` is the process environment (pass `std::env::vars()`); only
    /// variables starting with `FEIDAN__` are read.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the file, the key or the override at fault.
    pub fn load(
        file: Option<&Path>,
        overrides: &[String],
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        use config::{Environment, File, FileFormat};

        let mut builder =
            config::Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
        }
        let env: config::Map<String, String> = env
            .filter(|(name, _)| name.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        builder = builder.add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        for item in overrides {
            let (key, value) = item
                .split_once('=')
                .filter(|(key, _)| !key.trim().is_empty())
                .ok_or_else(|| ConfigError::BadOverride(item.clone()))?;
            builder = builder
                .set_override(key.trim(), value.trim())
                .map_err(|e| ConfigError::Parse(e.to_string()))?;
        }
        let merged = builder
            .build()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;

        let tree: Value = merged
            .clone()
            .try_deserialize()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        let defaults: Value =
            toml::from_str(DEFAULT_TOML).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let scope = Scope {
            known: &defaults,
            path: "",
        };
        check_known_keys(&tree, &defaults, "", scope)?;

        let mut config: Config = merged
            .try_deserialize()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        let base =
            serde_json::to_value(&config.detect).map_err(|e| ConfigError::Parse(e.to_string()))?;
        for (team, overrides) in &config.teams {
            let mut merged = base.clone();
            merge(&mut merged, overrides);
            let detect: DetectConfig = serde_json::from_value(merged)
                .map_err(|e| ConfigError::Parse(format!("teams.\"{team}\": {e}")))?;
            config.team_detect.insert(team.clone(), detect);
        }
        config.validate()?;
        Ok(config)
    }

    /// Cross-field and range rules; each error names its key.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for the first rule broken.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: &str| {
            Err(ConfigError::Invalid {
                key: key.to_owned(),
                problem: problem.to_owned(),
            })
        };
        let k = &self.kafka;
        for (key, value) in [
            ("kafka.brokers", &k.brokers),
            ("kafka.group_id", &k.group_id),
            ("kafka.input_topic", &k.input_topic),
            ("kafka.alert_topic", &k.alert_topic),
            ("kafka.dead_letter_topic", &k.dead_letter_topic),
            ("kafka.state_topic", &k.state_topic),
            ("kafka.facts_topic", &k.facts_topic),
            ("kafka.pace_topic", &k.pace_topic),
        ] {
            if value.trim().is_empty() {
                return invalid(key, "must not be empty");
            }
        }
        if k.input_topic == k.alert_topic || k.input_topic == k.dead_letter_topic {
            return invalid(
                "kafka.input_topic",
                "must differ from the alert and dead-letter topics",
            );
        }
        let internal = [&k.facts_topic, &k.pace_topic];
        if k.scale_out
            && [
                &k.input_topic,
                &k.alert_topic,
                &k.dead_letter_topic,
                &k.state_topic,
            ]
            .iter()
            .any(|t| internal.contains(t))
        {
            return invalid(
                "kafka.facts_topic",
                "the facts and pace topics must differ from every other topic",
            );
        }
        if k.topics.partitions < 1 {
            return invalid("kafka.topics.partitions", "must be at least 1");
        }
        if k.topics.replication_factor < 1 {
            return invalid("kafka.topics.replication_factor", "must be at least 1");
        }
        if k.max_in_flight == 0 {
            return invalid("kafka.max_in_flight", "must be at least 1");
        }
        if self.metrics.addr.parse::<std::net::SocketAddr>().is_err() {
            return invalid("metrics.addr", "must be an IP:PORT socket address");
        }
        if self.engine.max_event_bytes < 64 {
            return invalid("engine.max_event_bytes", "must be at least 64");
        }
        if self.engine.max_accounts == 0 {
            return invalid("engine.max_accounts", "must be at least 1");
        }
        if self.engine.max_managers == 0 {
            return invalid("engine.max_managers", "must be at least 1");
        }
        if self.engine.entity_ttl < Duration::from_secs(86_400) {
            return invalid("engine.entity_ttl", "must be at least 1d");
        }
        if self.engine.max_buffered_events == 0 {
            return invalid("engine.max_buffered_events", "must be at least 1");
        }
        if self.engine.dedup_capacity == 0 {
            return invalid("engine.dedup_capacity", "must be at least 1");
        }
        if self.engine.checkpoint_interval.is_zero() {
            return invalid("engine.checkpoint_interval", "must be longer than zero");
        }
        if self.engine.idle_timeout.is_zero() {
            return invalid("engine.idle_timeout", "must be longer than zero");
        }
        if self.alerts.evaluate_every < Duration::from_secs(60) {
            return invalid("alerts.evaluate_every", "must be at least 1m");
        }
        if self.alerts.for_evaluations == 0 {
            return invalid("alerts.for", "must be at least 1");
        }
        if self.alerts.resolve_after == 0 {
            return invalid("alerts.resolve_after", "must be at least 1");
        }
        if !(1..=20).contains(&self.alerts.max_evidence) {
            return invalid(
                "alerts.max_evidence",
                "must be between 1 and 20 (the alert schema's limit)",
            );
        }
        self.detect
            .validate("detect.", self.alerts.evaluate_every)?;
        for (team, detect) in &self.team_detect {
            detect.validate(&format!("teams.\"{team}\"."), self.alerts.evaluate_every)?;
            // One reckoning of the company's base rates serves every team.
            if detect.book_churn.outlier_p != self.detect.book_churn.outlier_p {
                return invalid(
                    &format!("teams.\"{team}\".book_churn.outlier_p"),
                    "is company-wide: set detect.book_churn.outlier_p instead",
                );
            }
        }
        Ok(())
    }

    /// The detector settings for `team`: `detect` with the team's overrides.
    pub fn detect_for(&self, team: &str) -> &DetectConfig {
        if self.team_detect.is_empty() {
            return &self.detect;
        }
        self.team_detect.get(team).unwrap_or(&self.detect)
    }

    /// The effective configuration as TOML, with secret client properties masked.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        for (name, value) in shown.kafka.client.iter_mut() {
            if is_secret(name) {
                *value = "********".to_owned();
            }
        }
        toml::to_string_pretty(&shown)
            .unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

/// Whether a librdkafka property holds a secret that must never be shown.
pub fn is_secret(property: &str) -> bool {
    let property = property.to_ascii_lowercase();
    ["password", "secret", "ssl.key.pem", "token", "credentials"]
        .iter()
        .any(|word| property.contains(word))
}

/// Overlays `patch` on `base`, table by table.
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                match base.get_mut(key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, patch) => *base = patch.clone(),
    }
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map_or(String::new(), |known| format!(" (did you mean `{known}`?)"))
}

/// The known keys an unknown one is looked up among for a suggestion: the
/// whole default tree, or under `teams.<name>` the keys of `detect`; and
/// the path they sit at.
#[derive(Clone, Copy)]
struct Scope<'a> {
    known: &'a Value,
    path: &'a str,
}

/// Fails on the first key of `tree` that `defaults` does not have, naming
/// it and a known key it is likely a slip for. Under `teams.<name>` the
/// keys of `detect` are allowed.
fn check_known_keys(
    tree: &Value,
    defaults: &Value,
    path: &str,
    scope: Scope,
) -> Result<(), ConfigError> {
    let (Value::Object(tree), Value::Object(defaults_map)) = (tree, defaults) else {
        return Ok(());
    };
    for (key, value) in tree {
        let full = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if full == "kafka.client" {
            continue;
        }
        if full == "teams" {
            let Value::Object(teams) = value else {
                return Err(ConfigError::Invalid {
                    key: full,
                    problem: "must be a table of teams".to_owned(),
                });
            };
            let detect = defaults_map.get("detect").unwrap_or(&Value::Null);
            for (team, overrides) in teams {
                let path = format!("teams.\"{team}\"");
                let scope = Scope {
                    known: detect,
                    path: &path,
                };
                check_known_keys(overrides, detect, &path, scope)?;
            }
            continue;
        }
        match defaults_map.get(key) {
            Some(default) => check_known_keys(value, default, &full, scope)?,
            None => {
                // A table where none is known: name its first key.
                let mut below = Vec::new();
                let mut inner = value;
                while let Some((next, deeper)) = inner.as_object().and_then(|m| m.iter().next()) {
                    below.push(next.as_str());
                    inner = deeper;
                }
                let mut written = vec![key.as_str()];
                written.extend(&below);
                return Err(ConfigError::UnknownKey {
                    key: dotted(path, &written),
                    suggestion: suggest(defaults_map, path, &written, scope),
                });
            }
        }
    }
    Ok(())
}

/// A known key for the unknown one `written` (its first part not in
/// `siblings`, the known keys at `path`): one beside it spelt nearly the
/// same (`alhpa` for `alpha`, `broker` for `brokers`), or else a known key
/// the whole of `written` ends (`churn.min_visits` for
/// `detect.churn.min_visits`).
fn suggest(
    siblings: &serde_json::Map<String, Value>,
    path: &str,
    written: &[&str],
    scope: Scope,
) -> Option<String> {
    let (first, rest) = written.split_first()?;
    let near = siblings
        .keys()
        .map(|known| (strsim::damerau_levenshtein(known, first), known))
        .filter(|(distance, _)| *distance <= 2 && *distance < first.len())
        .min();
    if let Some((_, known)) = near {
        let mut parts = vec![known.as_str()];
        parts.extend(rest);
        return Some(dotted(path, &parts));
    }
    let mut leaves = Vec::new();
    leaf_paths(scope.known, &mut Vec::new(), &mut leaves);
    leaves
        .into_iter()
        .find(|leaf| leaf.len() > written.len() && leaf.ends_with(written))
        .map(|leaf| dotted(scope.path, &leaf))
}

/// `parts` joined by dots under `prefix` (none at the root).
fn dotted(prefix: &str, parts: &[&str]) -> String {
    let mut all: Vec<&str> = Vec::with_capacity(parts.len() + 1);
    if !prefix.is_empty() {
        all.push(prefix);
    }
    all.extend(parts);
    all.join(".")
}

/// Every path from `value` to a key holding a value, depth first.
fn leaf_paths<'a>(value: &'a Value, above: &mut Vec<&'a str>, out: &mut Vec<Vec<&'a str>>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                above.push(key);
                leaf_paths(inner, above, out);
                above.pop();
            }
        }
        _ => out.push(above.clone()),
    }
}

/// Flattens the `kafka.client` table: TOML dotted keys (`security.protocol`)
/// arrive nested; environment keys arrive with `_` for `.`.
fn flatten_client_properties<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    fn walk(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    let key = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&key, inner, out);
                }
            }
            Value::String(text) => {
                out.insert(prefix.replace('_', "."), text.clone());
            }
            Value::Null => {}
            other => {
                out.insert(prefix.replace('_', "."), other.to_string());
            }
        }
    }
    let value = Value::deserialize(deserializer)?;
    let mut out = BTreeMap::new();
    walk("", &value, &mut out);
    Ok(out)
}

/// Durations as human strings (`"90d"`, `"30s"`), parsed once.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration like \"90d\" or \"30s\" ({e})"
            ))
        })
    }

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*value))
    }

    /// The shortest exact rendering in one unit: `90d`, `36h`, `30s`, `250ms`.
    pub fn format(value: Duration) -> String {
        let secs = value.as_secs();
        if value.subsec_nanos() != 0 || secs == 0 {
            return format!("{}ms", value.as_millis());
        }
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
            if secs.is_multiple_of(size) {
                return format!("{}{unit}", secs / size);
            }
        }
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(overrides: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        Config::load(
            None,
            &overrides,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn the_shipped_defaults_parse_and_validate() {
        let config = Config::defaults();
        assert_eq!(config.kafka.input_topic, "sales-events");
        assert_eq!(
            config.detect.win_rate.window,
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(config.alerts.for_evaluations, 3);
        assert!(config.kafka.client.is_empty());
    }

    #[test]
    fn later_layers_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("feidan.toml");
        std::fs::write(
            &file,
            "[kafka]\nbrokers = \"file:9092\"\ngroup_id = \"from-file\"\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&file),
            &["kafka.group_id=from-set".to_string()],
            [
                ("FEIDAN__KAFKA__BROKERS".to_string(), "env:9092".to_string()),
                (
                    "FEIDAN__KAFKA__GROUP_ID".to_string(),
                    "from-env".to_string(),
                ),
                ("OTHER".to_string(), "ignored".to_string()),
            ]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(config.kafka.brokers, "env:9092");
        assert_eq!(config.kafka.group_id, "from-set");
    }

    #[test]
    fn set_parses_numbers_and_durations() {
        let config = load(
            &["detect.win_rate.alpha=0.01", "detect.win_rate.window=60d"],
            &[],
        )
        .unwrap();
        assert_eq!(config.detect.win_rate.alpha, 0.01);
        assert_eq!(
            config.detect.win_rate.window,
            Duration::from_secs(60 * 86_400)
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = load(&["detect.win_rate.alhpa=0.01"], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown configuration key `detect.win_rate.alhpa` (did you mean `detect.win_rate.alpha`?)"
        );
        let err = load(&[], &[("FEIDAN__KAFKA__BROKER", "x:1")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown configuration key `kafka.broker` (did you mean `kafka.brokers`?)"
        );
        // A detector key without its `detect.`, and one nothing resembles.
        let err = load(&["churn.min_visits=2"], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown configuration key `churn.min_visits` (did you mean `detect.churn.min_visits`?)"
        );
        let err = load(&["detect.win_rate.threshold=0.01"], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown configuration key `detect.win_rate.threshold`"
        );
    }

    #[test]
    fn out_of_range_values_are_named() {
        let err = load(&["detect.win_rate.alpha=1.5"], &[]).unwrap_err();
        assert!(err.to_string().contains("`detect.win_rate.alpha`"), "{err}");
        let err = load(&["alerts.max_evidence=50"], &[]).unwrap_err();
        assert!(err.to_string().contains("`alerts.max_evidence`"), "{err}");
        let err = load(&["engine.allowed_lateness=soon"], &[]).unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
        let err = load(&["detect.win_rate.alpha=abc"], &[]).unwrap_err();
        assert!(err.to_string().contains("alpha"), "{err}");
    }

    #[test]
    fn client_properties_pass_through_and_secrets_are_masked() {
        let config = load(
            &["kafka.client.sasl.mechanism=PLAIN"],
            &[("FEIDAN__KAFKA__CLIENT__SASL_PASSWORD", "hunter2")],
        )
        .unwrap();
        assert_eq!(config.kafka.client["sasl.mechanism"], "PLAIN");
        assert_eq!(config.kafka.client["sasl.password"], "hunter2");
        let shown = config.to_masked_toml();
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("********"));
    }

    #[test]
    fn team_overrides_apply_to_that_team_only_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("teams.toml");
        std::fs::write(&file, "[teams.\"east\".win_rate]\nalpha = 0.00001\n").unwrap();
        let config = Config::load(Some(&file), &[], std::iter::empty()).unwrap();
        assert_eq!(config.detect_for("east").win_rate.alpha, 0.00001);
        assert_eq!(
            config.detect_for("west").win_rate.alpha,
            config.detect.win_rate.alpha
        );
        assert_eq!(
            config.detect_for("east").leakage.alpha,
            config.detect.leakage.alpha
        );

        std::fs::write(&file, "[teams.\"east\".win_rate]\nalhpa = 0.1\n").unwrap();
        let err = Config::load(Some(&file), &[], std::iter::empty()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown configuration key `teams.\"east\".win_rate.alhpa` (did you mean `teams.\"east\".win_rate.alpha`?)"
        );
        std::fs::write(&file, "[teams.\"east\".book_churn]\nalpha = 2.0\n").unwrap();
        let err = Config::load(Some(&file), &[], std::iter::empty()).unwrap_err();
        assert!(
            err.to_string().contains("teams.\"east\".book_churn.alpha"),
            "{err}"
        );
        // The company's base rates are reckoned once, for every team.
        std::fs::write(&file, "[teams.\"east\".book_churn]\noutlier_p = 0.1\n").unwrap();
        let err = Config::load(Some(&file), &[], std::iter::empty()).unwrap_err();
        assert!(
            err.to_string()
                .contains("teams.\"east\".book_churn.outlier_p")
                && err.to_string().contains("company-wide"),
            "{err}"
        );
        std::fs::write(&file, "[teams.\"east\".book_churn]\ntighter_bars = 3\n").unwrap();
        let err = Config::load(Some(&file), &[], std::iter::empty()).unwrap_err();
        assert!(
            err.to_string()
                .contains("teams.\"east\".book_churn.tighter_bars"),
            "{err}"
        );
    }

    #[test]
    fn durations_render_back_in_one_unit() {
        assert_eq!(duration::format(Duration::from_secs(90 * 86_400)), "90d");
        assert_eq!(duration::format(Duration::from_secs(90)), "90s");
        assert_eq!(duration::format(Duration::from_secs(3600)), "1h");
        assert_eq!(duration::format(Duration::from_millis(250)), "250ms");
    }
}

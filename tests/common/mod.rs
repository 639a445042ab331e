//! Helpers shared by the integration tests: a real Kafka protocol peer
//! (librdkafka's mock cluster), producing, reading topics back, and the
//! JSON Schemas of the contracts.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use feidan::config::Config;
use feidan::kafka::embedded::EmbeddedBroker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::Value;

/// A topic name no other test uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Points `config` at `brokers`, with a group and topics of unique names.
pub fn point_at(config: &mut Config, brokers: &str) {
    config.kafka.brokers = brokers.to_owned();
    config.kafka.group_id = unique("group");
    config.kafka.input_topic = unique("input");
    config.kafka.alert_topic = unique("alerts");
    config.kafka.dead_letter_topic = unique("dead");
    config.kafka.state_topic = unique("state");
}

/// A mock cluster with the four topics of `config` created, and `config`
/// pointed at it with unique names.
pub fn broker_with_topics(config: &mut Config, input_partitions: i32) -> EmbeddedBroker {
    let broker = EmbeddedBroker::start().expect("mock cluster starts");
    point_at(config, &broker.bootstrap_servers());
    // Created here: the mock cluster cannot describe topic configurations.
    config.kafka.topics.create = false;
    broker
        .create_topic(&config.kafka.input_topic, input_partitions)
        .unwrap();
    broker.create_topic(&config.kafka.alert_topic, 1).unwrap();
    broker
        .create_topic(&config.kafka.dead_letter_topic, 1)
        .unwrap();
    broker.create_topic(&config.kafka.state_topic, 1).unwrap();
    broker
}

/// Produces each payload keyed by `key_of(payload)` and waits for delivery.
pub fn produce(
    brokers: &str,
    topic: &str,
    payloads: &[Vec<u8>],
    key_of: impl Fn(&[u8]) -> Vec<u8>,
) {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", brokers);
    produce_via(client, topic, payloads, key_of);
}

/// [`produce`] with a client of its own settings (TLS, SASL).
pub fn produce_via(
    mut client: ClientConfig,
    topic: &str,
    payloads: &[Vec<u8>],
    key_of: impl Fn(&[u8]) -> Vec<u8>,
) {
    let producer: BaseProducer = client.set("linger.ms", "5").create().unwrap();
    for payload in payloads {
        let key = key_of(payload);
        loop {
            match producer.send(BaseRecord::to(topic).key(&key).payload(payload)) {
                Ok(()) => break,
                Err((_, _)) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// A record read back from a topic.
#[derive(Debug)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Record {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).expect("JSON record")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads `topic` from the start until `expected` records arrived and the
/// topic then stays quiet for a moment, or `timeout` passes.
pub fn read_topic(brokers: &str, topic: &str, expected: usize, timeout: Duration) -> Vec<Record> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", brokers);
    read_topic_via(client, topic, expected, timeout)
}

/// [`read_topic`] with a client of its own settings (TLS, SASL).
pub fn read_topic_via(
    mut client: ClientConfig,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<Record> {
    let consumer: BaseConsumer = client
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let started = Instant::now();
    let mut records = Vec::new();
    let mut quiet_since = Instant::now();
    while started.elapsed() < timeout {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                quiet_since = Instant::now();
                let headers = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|header| {
                                (
                                    header.key.to_owned(),
                                    String::from_utf8_lossy(header.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(Record {
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Some(Err(error)) => panic!("reading {topic}: {error}"),
            None => {
                if records.len() >= expected && quiet_since.elapsed() > Duration::from_secs(2) {
                    break;
                }
            }
        }
    }
    records
}

/// Creates `topic` (one partition) through a client of its own settings
/// (TLS, SASL).
pub async fn create_topic_via(client: ClientConfig, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = client.create().unwrap();
    let topic = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    for result in admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
}

/// The JSON Schema of a contract, from the repository's copy of `../shared/schemas`.
pub fn schema(name: &str) -> jsonschema::Validator {
    let path = format!("{}/schemas/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles")
}

/// Panics with every schema violation of `instance`.
pub fn assert_valid(validator: &jsonschema::Validator, instance: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{instance}\nviolates the schema: {errors:?}"
    );
}

/// A small simulated world as JSONL lines, with the default configuration's
/// engine settings made safe for a test that ends its input abruptly.
pub fn small_world(seed: u64) -> Vec<Vec<u8>> {
    simulated_world(seed, 16, 400)
}

/// A simulated world of `managers` over `days`, as JSONL lines.
pub fn simulated_world(seed: u64, managers: usize, days: i64) -> Vec<Vec<u8>> {
    let sim = feidan::simulate::SimConfig {
        seed,
        managers,
        days,
        ..Default::default()
    };
    feidan::simulate::Simulation::new(sim)
        .flatten()
        .map(|event| event.to_json().to_string().into_bytes())
        .collect()
}

/// A Kafka-compatible broker in its own process (tansu, DESIGN §10), killed
/// when dropped.
pub struct Tansu {
    child: std::process::Child,
    pub bootstrap: String,
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts tansu on a free loopback port with in-memory storage, or `None`
/// (outside CI) when it is not installed.
pub fn start_tansu() -> Option<Tansu> {
    let port = free_port();
    start_tansu_advertising(port, port)
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// tansu in memory on `port`, telling clients to connect to `advertised`
/// (itself, or a relay or TLS terminator in front of it), or `None` outside
/// CI when it is not installed.
pub fn start_tansu_advertising(port: u16, advertised: u16) -> Option<Tansu> {
    let binary = tansu_binary()?;
    Some(launch_tansu(
        &binary,
        port,
        advertised,
        &["--storage-engine", "memory://tansu/"],
        None,
    ))
}

/// tansu requiring SCRAM-SHA-512 authentication on a free port, with one
/// user: started once without authentication on sqlite storage in `dir` to
/// create the user (`tansu user create`), then again on the same storage
/// with `--authentication`. `None` outside CI when tansu is not installed.
pub fn start_tansu_with_scram_user(
    dir: &std::path::Path,
    user: &str,
    password: &str,
) -> Option<Tansu> {
    let binary = tansu_binary()?;
    let port = free_port();
    // tansu reads a sqlite:// path relative to its working directory.
    let storage = ["--storage-engine", "sqlite://tansu.db"];
    let mut setup = launch_tansu(&binary, port, port, &storage, Some(dir));
    let status = std::process::Command::new(&binary)
        .args(["user", "create", user, password, "--mechanism", "scram512"])
        .args(["--broker", &format!("tcp://127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("tansu user create runs");
    assert!(status.success(), "tansu created the user");
    // A clean stop, so the user is on disk before the restart.
    terminate(&mut setup.child);
    drop(setup);
    let with_auth = [&storage[..], &["--authentication"]].concat();
    Some(launch_tansu(&binary, port, port, &with_auth, Some(dir)))
}

/// The tansu binary, on PATH or in ~/.cargo/bin; `None` outside CI when it
/// is not installed (in CI its absence fails the test).
fn tansu_binary() -> Option<std::path::PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("tansu"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain(
            std::env::var_os("HOME")
                .map(|home| std::path::PathBuf::from(home).join(".cargo/bin/tansu")),
        );
    let Some(binary) = candidates.into_iter().find(|p| p.is_file()) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "tansu is not installed; .ci/run installs it"
        );
        eprintln!("skipping: tansu is not installed (cargo install tansu --locked --features dynostore,libsql)");
        return None;
    };
    Some(binary)
}

/// Starts `tansu broker` on `port` advertising `advertised`, with `storage`
/// flags, in `dir` if given, and waits until it listens.
fn launch_tansu(
    binary: &std::path::Path,
    port: u16,
    advertised: u16,
    storage: &[&str],
    dir: Option<&std::path::Path>,
) -> Tansu {
    let url = format!("tcp://127.0.0.1:{port}");
    let advertised_url = format!("tcp://127.0.0.1:{advertised}");
    let mut command = std::process::Command::new(binary);
    command
        .arg("broker")
        .args(storage)
        .args(["--listener-url", &url])
        .args(["--advertised-listener-url", &advertised_url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let child = command.spawn().expect("tansu starts");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "tansu did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Tansu {
        child,
        bootstrap: format!("127.0.0.1:{advertised}"),
    }
}

/// GET `path` on `port`: (status code, body), or `None` while nothing listens.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    Some((status, body))
}

/// The sum of every series of metric `name` in an exposition text.
pub fn metric_sum(exposition: &str, name: &str) -> u64 {
    metric_values(exposition, name).iter().sum::<f64>() as u64
}

/// The values of every series of metric `name` in an exposition text.
pub fn metric_values(exposition: &str, name: &str) -> Vec<f64> {
    exposition
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect()
}

/// `feidan run`, the real binary, configured like `config` through `--set`
/// (so every topic, the group and the brokers match), serving metrics on
/// `port`. Its log goes to `feidan-<port>.log` in the tests' scratch folder.
pub fn spawn_feidan(config: &Config, port: u16, extra: &[&str]) -> Feidan {
    spawn_feidan_with_env(config, port, extra, &[])
}

/// [`spawn_feidan`] with extra environment variables (secrets, which the
/// command line would show to anyone listing processes).
pub fn spawn_feidan_with_env(
    config: &Config,
    port: u16,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Feidan {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_feidan"));
    command
        .arg("run")
        .args(["--set", &format!("metrics.addr=127.0.0.1:{port}")])
        .args(feidan_kafka_flags(config));
    for set in extra {
        command.args(["--set", set]);
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("{}/feidan-{port}.log", env!("CARGO_TARGET_TMPDIR")))
        .expect("log file");
    command
        .env(
            "RUST_LOG",
            std::env::var("FEIDAN_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .map(Feidan)
        .expect("feidan runs")
}

/// `--set` flags pointing a `feidan` process at `config`'s cluster, client
/// settings, topics and timings.
pub fn feidan_kafka_flags(config: &Config) -> Vec<String> {
    let k = &config.kafka;
    let client = k
        .client
        .iter()
        .map(|(name, value)| format!("kafka.client.{name}={value}"));
    [
        format!("kafka.brokers={}", k.brokers),
        format!("kafka.group_id={}", k.group_id),
        format!("kafka.input_topic={}", k.input_topic),
        format!("kafka.alert_topic={}", k.alert_topic),
        format!("kafka.dead_letter_topic={}", k.dead_letter_topic),
        format!("kafka.state_topic={}", k.state_topic),
        format!("kafka.topics.create={}", k.topics.create),
        format!("kafka.topics.partitions={}", k.topics.partitions),
        format!(
            "engine.idle_timeout={}s",
            config.engine.idle_timeout.as_secs()
        ),
        format!(
            "engine.checkpoint_interval={}ms",
            config.engine.checkpoint_interval.as_millis()
        ),
    ]
    .into_iter()
    .chain(client)
    .flat_map(|set| ["--set".to_owned(), set])
    .collect()
}

/// A running `feidan` process, killed if the test ends (or fails) first.
pub struct Feidan(pub std::process::Child);

impl Drop for Feidan {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Feidan {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Feidan {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// Sends SIGTERM to `child` and waits for it; its exit status.
pub fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap()
}

/// The backtest's alert transitions for `input` (one message per line).
pub fn backtest_alerts(config: &Config, input: &[Vec<u8>]) -> Vec<feidan::alert::Alert> {
    let joined: Vec<u8> = input
        .iter()
        .flat_map(|line| line.iter().copied().chain([b'\n']))
        .collect();
    let alerts = feidan::backtest::replay(config, joined.as_slice(), |_| Ok(()))
        .unwrap()
        .alerts;
    assert!(alerts.len() >= 2, "the world must raise alerts");
    alerts
}

/// Asserts that the alert topic's records are exactly `expected`, in order
/// and byte for byte.
pub fn assert_topic_holds(records: &[Record], expected: &[feidan::alert::Alert], context: &str) {
    let got: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect();
    let want: Vec<String> = expected.iter().map(|a| a.to_json().to_string()).collect();
    assert_eq!(got, want, "{context}");
}

/// The service running in-process, and what stops it the way SIGTERM would.
pub struct RunningService {
    shutdown: tokio_util::sync::CancellationToken,
    task:
        tokio::task::JoinHandle<Result<feidan::service::RunSummary, feidan::service::ServiceError>>,
}

impl RunningService {
    /// Stops the service and waits for its summary.
    pub async fn stop(self) -> feidan::service::RunSummary {
        self.shutdown.cancel();
        self.task.await.expect("service task").expect("service ran")
    }
}

/// Starts the service in-process on `config`, counting into `metrics`.
pub fn start_service(
    config: &Config,
    metrics: std::sync::Arc<feidan::metrics::Metrics>,
) -> RunningService {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = {
        let (config, shutdown) = (config.clone(), shutdown.clone());
        tokio::spawn(async move {
            let health = feidan::metrics::Health::default();
            feidan::service::run(&config, metrics, health, shutdown.cancelled_owned()).await
        })
    };
    RunningService { shutdown, task }
}

/// Runs the service in-process until `feidan_events_total` reaches
/// `expected` (within `timeout`), then stops it the way SIGTERM would.
pub async fn run_service_until(
    config: &Config,
    metrics: std::sync::Arc<feidan::metrics::Metrics>,
    expected: u64,
    timeout: Duration,
) -> feidan::service::RunSummary {
    let running = start_service(config, metrics.clone());
    let started = Instant::now();
    while metric_sum(&metrics.render(), "feidan_events_total") < expected {
        assert!(
            started.elapsed() < timeout,
            "the service consumed too little within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await
}

/// Whether `command` is installed; in CI its absence fails the test.
pub fn have(command: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{command} is not installed; .ci/run installs it"
        );
        eprintln!("skipping: {command} is not installed");
    }
    found
}

/// Waits until something listens on loopback `port`.
pub fn wait_listening(port: u16) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Debian's `socat` relaying `listen` (a socat address) to loopback
/// `target`: a TLS terminator, or a plain relay that can be cut. Killed
/// when dropped.
pub struct Socat(std::process::Child);

impl Socat {
    /// Starts the relay and waits until `port` (the one `listen` names) listens.
    pub fn start(listen: &str, target: u16, port: u16) -> Socat {
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new("socat")
            .arg(listen)
            .arg(format!("TCP:127.0.0.1:{target}"))
            .stderr(std::process::Stdio::null())
            // Its own process group, with the children it forks per
            // connection, so that dropping it cuts every connection.
            .process_group(0)
            .spawn()
            .expect("socat starts");
        wait_listening(port);
        Socat(child)
    }

    /// A plain TCP relay from `port` to `target`.
    pub fn relay(port: u16, target: u16) -> Socat {
        Socat::start(
            &format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"),
            target,
            port,
        )
    }
}

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

/// Events given as (Unix seconds, JSON object without `occurred_at`) as
/// JSONL in event-time order, each with its `occurred_at`.
pub fn jsonl_in_time_order(mut events: Vec<(i64, Value)>) -> Vec<u8> {
    events.sort_by_key(|(at, _)| *at);
    let mut lines = Vec::new();
    for (at, mut event) in events {
        let occurred_at = chrono::DateTime::from_timestamp(at, 0).unwrap();
        event.as_object_mut().unwrap().insert(
            "occurred_at".into(),
            serde_json::json!(occurred_at.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
        );
        lines.extend(event.to_string().into_bytes());
        lines.push(b'\n');
    }
    lines
}

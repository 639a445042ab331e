//! `feidan run` as deployed: the real binary against a real Kafka protocol
//! peer, probed over HTTP, stopped with SIGTERM as Kubernetes stops it.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use feidan::config::Config;

#[test]
fn run_serves_health_and_metrics_and_stops_cleanly_on_sigterm() {
    let mut config = Config::defaults();
    let broker = broker_with_topics(&mut config, 2);
    let input: Vec<Vec<u8>> = small_world(2).into_iter().take(3_000).collect();
    produce(
        &config.kafka.brokers,
        &config.kafka.input_topic,
        &input,
        |p| p[..20].to_vec(),
    );

    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_feidan"))
        .arg("run")
        .args(["--set", &format!("metrics.addr=127.0.0.1:{port}")])
        .args([
            "--set",
            &format!("kafka.input_topic={}", config.kafka.input_topic),
        ])
        .args([
            "--set",
            &format!("kafka.alert_topic={}", config.kafka.alert_topic),
        ])
        .args([
            "--set",
            &format!("kafka.dead_letter_topic={}", config.kafka.dead_letter_topic),
        ])
        .args([
            "--set",
            &format!("kafka.state_topic={}", config.kafka.state_topic),
        ])
        .env("FEIDAN__KAFKA__BROKERS", &config.kafka.brokers)
        // The mock cluster cannot describe topic configurations.
        .env("FEIDAN__KAFKA__TOPICS__CREATE", "false")
        .env("FEIDAN__KAFKA__GROUP_ID", &config.kafka.group_id)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let started = Instant::now();
    let mut seen_unready = false;
    let mut ready = false;
    let mut counted = 0;
    while started.elapsed() < Duration::from_secs(90) {
        match http_get(port, "/readyz") {
            Some((503, _)) => seen_unready = true,
            Some((200, _)) => ready = true,
            _ => {}
        }
        if let Some((200, body)) = http_get(port, "/metrics") {
            counted = metric_sum(&body, "feidan_events_total");
        }
        if ready && counted == input.len() as u64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
    assert!(
        seen_unready,
        "/readyz must say not ready before the consumer is assigned and caught up"
    );
    assert!(ready, "/readyz never became ready");
    assert_eq!(counted, input.len() as u64);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}: {stderr}",
        output.status
    );
    assert!(stderr.contains("Shutting down"), "{stderr}");
    drop(broker);
}

/// A client property librdkafka refuses is a configuration error: `run`
/// exits at once naming it, instead of retrying as if the broker were away.
#[test]
fn a_client_property_librdkafka_refuses_stops_run_at_once() {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_feidan"))
        .arg("run")
        .args(["--set", &format!("metrics.addr=127.0.0.1:{}", free_port())])
        .args(["--set", &format!("kafka.brokers=127.0.0.1:{}", free_port())])
        .args(["--set", "kafka.topics.create=false"])
        .args(["--set", "kafka.client.fetch.max.bytes=1000"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("fetch.max.bytes"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "gave up only after {:?}",
        started.elapsed()
    );
}

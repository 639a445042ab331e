//! Kafka over TLS (issue 5, DESIGN §9): every client feidan makes takes its
//! `security.protocol` and `ssl.*` settings from `kafka.client`, and the
//! service runs end to end against a broker it reaches only over TLS with a
//! self-signed certificate.
//!
//! tansu 0.6 cannot serve TLS itself (its `--cert` and `--key` flags are
//! declared mutually exclusive), and librdkafka's mock cluster speaks only
//! plaintext, so TLS is terminated by Debian's `socat` in front of tansu,
//! which advertises the TLS port. The certificate comes from the `openssl`
//! command. Skipped outside CI when tansu, socat or openssl is missing.
//!
//! SASL: tansu with `--authentication` and a SCRAM-SHA-512 user; `feidan
//! run`, the real binary, takes its password from the environment only.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use feidan::config::Config;
use feidan::metrics::Metrics;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_runs_against_a_broker_reached_only_over_tls() {
    if !(have("socat") && have("openssl")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl made a certificate");

    // tansu listens in plaintext on its own port and advertises the TLS one.
    let tls_port = free_port();
    let plain_port = free_port();
    let Some(_tansu) = start_tansu_advertising(plain_port, tls_port) else {
        return;
    };
    let socat = Socat::start(
        &format!(
            "OPENSSL-LISTEN:{tls_port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
            cert.display(),
            key.display()
        ),
        plain_port,
        tls_port,
    );

    let mut config = Config::defaults();
    config.engine.idle_timeout = Duration::from_secs(3600);
    point_at(&mut config, &format!("127.0.0.1:{tls_port}"));
    config.kafka.topics.partitions = 1;
    config
        .kafka
        .client
        .insert("security.protocol".into(), "SSL".into());
    config
        .kafka
        .client
        .insert("ssl.ca.location".into(), cert.display().to_string());

    // Without the certificate authority the handshake is refused: the
    // clients really are on TLS, and verify the broker.
    let mut untrusted = feidan::kafka::client_config(&config.kafka);
    untrusted.set("ssl.ca.location", "/nonexistent-ca.pem");
    assert!(
        untrusted
            .create::<rdkafka::producer::BaseProducer>()
            .is_err(),
        "a client with a missing CA file must not start"
    );

    let client = || feidan::kafka::client_config(&config.kafka);
    create_topic_via(client(), &config.kafka.input_topic).await;
    let input: Vec<Vec<u8>> = small_world(8).into_iter().take(20_000).collect();
    produce_via(client(), &config.kafka.input_topic, &input, |p| {
        p[..24].to_vec()
    });
    let expected = backtest_alerts(&config, &input);

    let metrics = Arc::new(Metrics::new(false, 0));
    let summary = run_service_until(
        &config,
        metrics,
        input.len() as u64,
        Duration::from_secs(180),
    )
    .await;
    assert_eq!(summary.messages, input.len() as u64);
    assert!(summary.checkpoints >= 1, "state written over TLS too");

    let records = read_topic_via(
        client(),
        &config.kafka.alert_topic,
        expected.len(),
        Duration::from_secs(60),
    );
    assert_topic_holds(&records, &expected, "over TLS: the backtest's alerts");
    drop(socat);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_runs_against_a_broker_requiring_scram_with_the_password_from_the_environment()
{
    let dir = tempfile::tempdir().unwrap();
    let password = "n0t-in-any-file-or-log";
    let Some(tansu) = start_tansu_with_scram_user(dir.path(), "feidan", password) else {
        return;
    };
    let mut config = Config::defaults();
    config.engine.idle_timeout = Duration::from_secs(3600);
    point_at(&mut config, &tansu.bootstrap);
    config.kafka.topics.partitions = 1;
    for (name, value) in [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.username", "feidan"),
    ] {
        config.kafka.client.insert(name.into(), value.into());
    }
    // The test's own clients know the password; the feidan process gets it
    // from its environment alone.
    let client = |password: &str| {
        let mut client = feidan::kafka::client_config(&config.kafka);
        client.set("sasl.password", password);
        client
    };

    // A wrong password is refused: authentication really is enforced.
    {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let intruder: BaseConsumer = client("guess").create().unwrap();
        assert!(
            intruder
                .fetch_metadata(None, Duration::from_secs(5))
                .is_err(),
            "a wrong password must not reach the broker"
        );
    }

    // feidan given a wrong password says so, at once, and does not echo it.
    for command in [&["run"][..], &["simulate", "--kafka", "--days", "5"]] {
        let started = std::time::Instant::now();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_feidan"))
            .args(command)
            .args(feidan_kafka_flags(&config))
            .args(["--set", "metrics.addr=127.0.0.1:0"])
            .env(
                "FEIDAN__KAFKA__CLIENT__SASL_PASSWORD",
                "guess-0f-an-intruder",
            )
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{command:?} with a wrong password"
        );
        assert!(
            stderr.contains("refused feidan's credentials"),
            "{command:?} names the refused login: {stderr}"
        );
        assert!(!stderr.contains("guess-0f-an-intruder"), "{stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{command:?} gave up on the refused login only after {:?}",
            started.elapsed()
        );
    }

    create_topic_via(client(password), &config.kafka.input_topic).await;
    let input: Vec<Vec<u8>> = small_world(8).into_iter().take(20_000).collect();
    produce_via(client(password), &config.kafka.input_topic, &input, |p| {
        p[..24].to_vec()
    });
    let expected = backtest_alerts(&config, &input);
    assert!(!expected.is_empty(), "the world has alerts to deliver");

    let port = free_port();
    let mut feidan = spawn_feidan_with_env(
        &config,
        port,
        &[],
        &[("FEIDAN__KAFKA__CLIENT__SASL_PASSWORD", password)],
    );
    // Every event consumed over SASL, as feidan's own metrics count them.
    let started = std::time::Instant::now();
    let mut counted = 0;
    while counted < input.len() as u64 {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "feidan consumed {counted} of {} events over SASL",
            input.len()
        );
        assert!(feidan.try_wait().unwrap().is_none(), "feidan exited");
        std::thread::sleep(Duration::from_millis(250));
        if let Some((200, body)) = http_get(port, "/metrics") {
            counted = metric_sum(&body, "feidan_events_total");
        }
    }
    let records = read_topic_via(
        client(password),
        &config.kafka.alert_topic,
        expected.len(),
        Duration::from_secs(60),
    );
    assert_topic_holds(&records, &expected, "over SASL: the backtest's alerts");
    assert!(terminate(&mut feidan).success(), "a clean stop");
    let log = std::fs::read_to_string(format!("{}/feidan-{port}.log", env!("CARGO_TARGET_TMPDIR")))
        .unwrap();
    assert!(log.contains("Stopped"), "the log is feidan's: {log}");
    assert!(!log.contains(password), "the password was logged: {log}");
}

//! The deployment under deploy/, proven with the real tools: promtool checks
//! the live /metrics output, the Prometheus config and rules, and runs the
//! rule unit tests; amtool checks Alertmanager's config and routes; a real
//! Alertmanager shows the inhibition working; a real Prometheus scraping a
//! running `feidan demo` answers every dashboard query with data.
//!
//! The tools are Debian's `prometheus` and `prometheus-alertmanager`
//! packages, which `.ci/run` installs. Without them these tests say so and
//! pass, except under CI (`CI=true`), where a missing tool is a failure.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The tool's path, or `None` (outside CI) when it is not installed.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is not installed; .ci/run installs Debian's prometheus and prometheus-alertmanager"
        );
        eprintln!("skipping: {name} is not installed (apt-get install prometheus prometheus-alertmanager)");
    }
    found
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()))
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET on loopback: (status, body), or `None` while nothing listens.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

fn wait_for(port: u16, path: &str, timeout: Duration) {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if matches!(get(port, path), Some((200, _))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("nothing answered on 127.0.0.1:{port}{path}");
}

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn demo(port: u16, seconds: u64) -> Running {
    Running(
        Command::new(env!("CARGO_BIN_EXE_feidan"))
            .args([
                "demo",
                "--duration",
                &seconds.to_string(),
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn prometheus_config_and_rules_check_and_their_unit_tests_pass() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    assert_success(
        &run(
            &promtool,
            &["check", "config", "deploy/prometheus/prometheus.yml"],
        ),
        "promtool check config",
    );
    assert_success(
        &run(
            &promtool,
            &["check", "rules", "deploy/prometheus/feidan.rules.yml"],
        ),
        "promtool check rules",
    );
    let output = run(
        &promtool,
        &["test", "rules", "deploy/prometheus/tests/feidan.test.yml"],
    );
    assert_success(&output, "promtool test rules");
    // Every alerting rule has a unit test.
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/feidan.rules.yml")).unwrap();
    let tests =
        std::fs::read_to_string(root().join("deploy/prometheus/tests/feidan.test.yml")).unwrap();
    for line in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {line}")),
            "no unit test for {line}"
        );
    }
}

#[test]
fn alertmanager_routes_each_team_to_its_on_call() {
    let Some(amtool) = tool("amtool") else { return };
    let config = "--config.file=deploy/alertmanager/alertmanager.yml";
    assert_success(
        &run(
            &amtool,
            &["check-config", "deploy/alertmanager/alertmanager.yml"],
        ),
        "amtool check-config",
    );
    let cases: Vec<(String, Vec<String>)> = (1..=5)
        .map(|t| {
            (
                format!("team-{t}-oncall"),
                vec![
                    format!("team=team-{t}"),
                    "kind=win_rate_drop".into(),
                    "service=feidan".into(),
                    "manager_id=kam-1".into(),
                ],
            )
        })
        .chain([
            (
                "default-oncall".to_owned(),
                vec![
                    "team=team-99".into(),
                    "kind=book_churn".into(),
                    "service=feidan".into(),
                ],
            ),
            (
                "feidan-operators".to_owned(),
                vec!["alertname=FeidanDown".into(), "service=feidan-ops".into()],
            ),
        ])
        .collect();
    for (receiver, labels) in cases {
        let mut args = vec!["config", "routes", "test", config];
        let verify = format!("--verify.receivers={receiver}");
        args.push(&verify);
        args.extend(labels.iter().map(String::as_str));
        assert_success(&run(&amtool, &args), &format!("{labels:?} → {receiver}"));
    }
}

#[test]
fn a_diversion_risk_alert_inhibits_that_managers_component_alerts() {
    let (Some(alertmanager), Some(amtool)) = (tool("prometheus-alertmanager"), tool("amtool"))
    else {
        return;
    };
    let port = free_port();
    let storage = tempfile::tempdir().unwrap();
    let _server = Running(
        Command::new(alertmanager)
            .args([
                "--config.file=deploy/alertmanager/alertmanager.yml",
                &format!("--storage.path={}", storage.path().display()),
                &format!("--web.listen-address=127.0.0.1:{port}"),
                "--cluster.listen-address=",
            ])
            .current_dir(root())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(port, "/-/ready", Duration::from_secs(30));
    let url = format!("--alertmanager.url=http://127.0.0.1:{port}");
    for labels in [
        ["kind=diversion_risk", "manager_id=kam-1"],
        ["kind=win_rate_drop", "manager_id=kam-1"],
        ["kind=win_rate_drop", "manager_id=kam-2"],
    ] {
        let mut args = vec![
            url.as_str(),
            "alert",
            "add",
            "alertname=FeidanDiversionAlert",
            "team=team-1",
            "service=feidan",
        ];
        args.extend(labels);
        assert_success(&run(&amtool, &args), "amtool alert add");
    }
    // Inhibition is evaluated as alerts are queried; give it a moment.
    let started = Instant::now();
    loop {
        let output = run(
            &amtool,
            &[url.as_str(), "alert", "query", "--inhibited", "-o", "json"],
        );
        assert_success(&output, "amtool alert query");
        let alerts: Value = serde_json::from_slice(&output.stdout).unwrap();
        let inhibited = |kind: &str, manager: &str| {
            alerts.as_array().unwrap().iter().any(|a| {
                a["labels"]["kind"] == kind
                    && a["labels"]["manager_id"] == manager
                    && a["status"]["inhibitedBy"]
                        .as_array()
                        .is_some_and(|by| !by.is_empty())
            })
        };
        if inhibited("win_rate_drop", "kam-1") {
            assert!(
                !inhibited("win_rate_drop", "kam-2"),
                "another manager's alert must not be inhibited"
            );
            assert!(!inhibited("diversion_risk", "kam-1"));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no inhibition: {alerts}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn live_metrics_pass_promtool_and_every_dashboard_query_returns_data() {
    let (Some(promtool), Some(prometheus)) = (tool("promtool"), tool("prometheus")) else {
        return;
    };
    let feidan_port = free_port();
    let _demo = demo(feidan_port, 120);
    wait_for(feidan_port, "/healthz", Duration::from_secs(60));

    // A real Prometheus on loopback scraping the demo every second, with feidan's rules.
    let prometheus_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [{}]\nscrape_configs:\n  - job_name: feidan\n    static_configs: [{{targets: ['127.0.0.1:{feidan_port}']}}]\n",
            root().join("deploy/prometheus/feidan.rules.yml").display()
        ),
    )
    .unwrap();
    let _prometheus = Running(
        Command::new(prometheus)
            .args([
                &format!("--config.file={}", config.display()),
                &format!("--storage.tsdb.path={}", dir.path().join("data").display()),
                &format!("--web.listen-address=127.0.0.1:{prometheus_port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(prometheus_port, "/-/ready", Duration::from_secs(60));

    // Let the demo run far enough that alerts fire and every series exists.
    std::thread::sleep(Duration::from_secs(35));

    let (status, body) = get(feidan_port, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let lint = check.wait_with_output().unwrap();
    assert_success(&lint, "promtool check metrics");
    assert!(
        lint.stdout.is_empty() && lint.stderr.is_empty(),
        "lint findings: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let mut queried = 0;
    for dashboard in ["feidan-pipeline", "feidan-alerts", "feidan-sales"] {
        let path = root().join(format!("deploy/grafana/dashboards/{dashboard}.json"));
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in json["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "1m")
                    .replace("$team", ".*")
                    .replace("$manager", ".*");
                let (status, body) = get(
                    prometheus_port,
                    &format!("/api/v1/query?query={}", encode(&expr)),
                )
                .expect("Prometheus answers");
                assert_eq!(
                    status, 200,
                    "{dashboard} / {}: {expr}: {body}",
                    panel["title"]
                );
                let answer: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(answer["status"], "success", "{expr}: {body}");
                let result = answer["data"]["result"].as_array().unwrap();
                assert!(
                    !result.is_empty(),
                    "{dashboard} / {}: `{expr}` returned no data",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 20, "{queried} queries");
}

/// Percent-encodes a query string value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

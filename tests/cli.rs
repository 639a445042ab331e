//! The command line as scripts use it: exit codes, messages that name the
//! problem, the fixed flags of DESIGN §9.

use std::process::{Command, Output};

fn feidan(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_feidan"));
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `feidan simulate --out EVENTS` with `options`.
fn simulate(events: &std::path::Path, options: &[&str]) -> Output {
    let mut args = vec!["simulate", "--out", events.to_str().unwrap()];
    args.extend(options);
    feidan(&args, &[])
}

/// The JSON objects of a file of JSON lines.
fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The command failed, and its error names `needle`.
fn assert_fails_naming(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected a failure naming {needle}");
    assert!(text(&out.stderr).contains(needle), "{}", text(&out.stderr));
}

#[test]
fn check_config_prints_the_effective_configuration_with_secrets_masked() {
    let out = feidan(
        &["check-config", "--set", "kafka.group_id=ops"],
        &[
            ("FEIDAN__KAFKA__BROKERS", "kafka-1:9092"),
            ("FEIDAN__KAFKA__CLIENT__SASL_PASSWORD", "hunter2"),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains(r#"brokers = "kafka-1:9092""#), "{stdout}");
    assert!(stdout.contains(r#"group_id = "ops""#), "{stdout}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
}

#[test]
fn bad_configuration_exits_non_zero_naming_the_key() {
    let out = feidan(&["check-config", "--set", "detect.win_rate.alpa=0.1"], &[]);
    assert_fails_naming(&out, "detect.win_rate.alpa");

    let out = feidan(
        &["check-config"],
        &[("FEIDAN__DETECT__WIN_RATE__MIN_DROP", "2")],
    );
    assert_fails_naming(&out, "detect.win_rate.min_drop");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[metrics]\naddress = \"x\"\n").unwrap();
    let out = feidan(&["check-config", "--config", file.to_str().unwrap()], &[]);
    assert_fails_naming(&out, "metrics.address");
}

#[test]
fn simulate_shapes_the_organisation_and_names_a_bad_option() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let out = simulate(
        &events,
        &[
            "--managers",
            "12",
            "--managers-per-team",
            "3",
            "--days",
            "120",
            "--diverter-share",
            "0.5",
            "--churn-per-year",
            "0",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let labels: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("events.labels.json")).unwrap(),
    )
    .unwrap();
    let teams: std::collections::BTreeSet<&str> = labels["managers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["team"].as_str().unwrap())
        .collect();
    assert_eq!(teams.len(), 4, "{teams:?}");
    assert_eq!(labels["diverters"].as_array().unwrap().len(), 6);
    // No honest churn: the only accounts lost are the diverted ones.
    let churned = labels["churned_accounts"].as_array().unwrap();
    assert!(!churned.is_empty());
    assert!(
        churned.iter().all(|c| c["cause"] != "natural"),
        "{churned:?}"
    );

    for (flag, value, says) in [
        ("--managers", "0", "must be at least 1"),
        ("--accounts-per-manager", "0", "must be at least 1"),
        ("--days", "0", "must be at least 1"),
        ("--diverter-share", "1.5", "must be a share from 0 to 1"),
        ("--churn-per-year", "much", "not a number"),
    ] {
        let out = simulate(&events, &[flag, value]);
        assert_fails_naming(&out, flag);
        assert_fails_naming(&out, says);
    }
}

#[test]
fn simulate_then_backtest_writes_alerts_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let alerts = dir.path().join("alerts.jsonl");
    let out = simulate(
        &events,
        &["--seed", "3", "--managers", "16", "--days", "400"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let labels = dir.path().join("events.labels.json");
    assert!(labels.exists());

    let out = feidan(
        &[
            "backtest",
            "--input",
            events.to_str().unwrap(),
            "--labels",
            labels.to_str().unwrap(),
            "--output",
            alerts.to_str().unwrap(),
        ],
        &[],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("Replayed"), "{stdout}");
    assert!(stdout.contains("  alerts "), "{stdout}");
    assert!(stdout.contains("churned accounts detected"), "{stdout}");
    assert!(stdout.contains("diverters detected"), "{stdout}");
    // This world's two diverters, scored by their styles; any missed are
    // named, with how long the data ran after their onset.
    assert!(stdout.contains("Diverters by style"), "{stdout}");
    assert!(
        stdout.contains("\n  blatant            1 of 1;"),
        "{stdout}"
    );
    assert!(stdout.contains("\n  subtle             "), "{stdout}");
    assert!(
        stdout.contains("First alert on each diverter found, by kind: "),
        "{stdout}"
    );
    if let Some(missed) = stdout.split("Diverters missed (").nth(1) {
        let first = missed.lines().nth(1).unwrap_or_default();
        assert!(first.contains("days of data after it)"), "{stdout}");
    }
    let written = std::fs::read_to_string(&alerts).unwrap();
    assert!(written.lines().count() >= 2);
    for line in written.lines() {
        let alert: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(alert["schema"], "feidan.alert.v1");
    }

    // The same replay twice gives the same bytes.
    let again = dir.path().join("again.jsonl");
    let out = feidan(
        &[
            "backtest",
            "--input",
            events.to_str().unwrap(),
            "--output",
            again.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success());
    assert_eq!(
        std::fs::read(&alerts).unwrap(),
        std::fs::read(&again).unwrap()
    );
}

/// `--trace` and `--trace-account` show every verdict, alerting or not, and agree
/// with the alerts: each alert's test is the traced one's that day.
#[test]
fn traced_managers_and_accounts_show_every_verdict_and_agree_with_the_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let alerts = dir.path().join("alerts.jsonl");
    let traced = dir.path().join("trace.jsonl");
    let out = simulate(
        &events,
        &["--seed", "3", "--managers", "16", "--days", "400"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let backtest = |options: &[&str]| {
        let mut args = vec!["backtest", "--input", events.to_str().unwrap()];
        args.extend(options);
        feidan(&args, &[])
    };
    let labels: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("events.labels.json")).unwrap(),
    )
    .unwrap();
    // The blatant diverter, whom this world's backtest finds.
    let diverter = labels["diverters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["style"] == "blatant")
        .and_then(|d| d["manager_id"].as_str())
        .unwrap();
    let out = backtest(&[
        "--output",
        alerts.to_str().unwrap(),
        "--trace",
        diverter,
        "--trace-output",
        traced.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let traces = json_lines(&traced);
    // One verdict a day once the manager is seen, most of them alerting
    // nothing.
    assert!(traces.len() > 300, "{}", traces.len());
    assert!(traces.iter().all(|t| t["manager_id"] == diverter));
    assert!(traces
        .windows(2)
        .all(|w| w[0]["at"].as_str() < w[1]["at"].as_str()));
    let firing: Vec<serde_json::Value> = json_lines(&alerts)
        .into_iter()
        .filter(|a| a["manager_id"] == diverter && a["status"] == "firing")
        .filter(|a| a["kind"] != "account_churn")
        .collect();
    assert!(!firing.is_empty(), "the diverter {diverter} is found");
    for alert in &firing {
        let day = traces
            .iter()
            .find(|t| t["at"] == alert["detected_at"])
            .expect("a verdict on the day of each alert");
        let finding = day["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["kind"] == alert["kind"])
            .expect("the alert's detector among the day's findings");
        assert_eq!(finding["alerting"], true, "{finding}");
        assert_eq!(finding["test"], alert["test"], "{finding}");
        assert!(finding["p_value"].as_f64() < finding["alpha"].as_f64());
    }

    // An account's trace agrees with its account-churn alert the same way.
    let alert = json_lines(&alerts)
        .into_iter()
        .find(|a| a["kind"] == "account_churn" && a["status"] == "firing")
        .expect("an account-churn alert in this world");
    let account = alert["account_id"].as_str().unwrap();
    let out = backtest(&[
        "--trace-account",
        account,
        "--trace-output",
        traced.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let traces = json_lines(&traced);
    assert!(traces.iter().all(|t| t["account_id"] == account));
    let day = traces
        .iter()
        .find(|t| t["at"] == alert["detected_at"])
        .expect("the account judged on the day of its alert");
    assert_eq!(day["silence"]["alerting"], true, "{day}");
    assert_eq!(day["silence"]["p_value"], alert["test"]["p_value"], "{day}");
    assert!(
        traces.iter().any(|t| t["silence"].is_null()),
        "quiet days too"
    );

    // Printed after the report instead, with the closest each detector
    // came to its bar; a manager never judged is named.
    let out = backtest(&["--trace", diverter, "--trace", "kam-nobody"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("Trace of {diverter} (")),
        "{stdout}"
    );
    assert!(stdout.contains("Closest to each bar:\n  "), "{stdout}");
    assert!(
        stdout.contains("Trace of kam-nobody: never judged"),
        "{stdout}"
    );
    let out = backtest(&["--trace-account", account]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("Trace of account {account} (")),
        "{stdout}"
    );
    assert!(stdout.contains(" ALERTING"), "{stdout}");
    assert!(stdout.contains("\nFirst alerting: "), "{stdout}");
    let out = backtest(&["--trace-output", traced.to_str().unwrap()]);
    assert_fails_naming(&out, "--trace");
}

/// A reader that stops early (`feidan backtest … | head`) ends the command
/// quietly, as with any Unix filter, not with an error about the pipe.
#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let out = simulate(
        &events,
        &["--seed", "3", "--managers", "8", "--days", "200"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut child = Command::new(env!("CARGO_BIN_EXE_feidan"))
        .args(["backtest", "--input", events.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before a line is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn a_missing_input_file_is_named() {
    let out = feidan(&["backtest", "--input", "/nonexistent/events.jsonl"], &[]);
    assert_fails_naming(&out, "/nonexistent/events.jsonl");
}

#[test]
fn the_shipped_example_configurations_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = feidan(
        &[
            "check-config",
            "--config",
            root.join("deploy/feidan.example.toml").to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The configuration inside the Kubernetes ConfigMap.
    let manifest = std::fs::read_to_string(root.join("deploy/kubernetes/feidan.yaml")).unwrap();
    let block: String = manifest
        .lines()
        .skip_while(|l| !l.contains("feidan.toml: |"))
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    assert!(block.contains("[kafka]"), "{block}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k8s.toml");
    std::fs::write(&file, block).unwrap();
    let out = feidan(&["check-config", "--config", file.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_sweep_prints_one_row_per_combination() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let out = simulate(
        &events,
        &["--seed", "4", "--managers", "16", "--days", "300"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let labels = dir.path().join("events.labels.json");
    let out = feidan(
        &[
            "backtest",
            "--input",
            events.to_str().unwrap(),
            "--labels",
            labels.to_str().unwrap(),
            "--sweep",
            "detect.diversion_risk.alpha=0.0001,0.00001",
            "--sweep",
            "alerts.for=1,3",
        ],
        &[],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert!(
        lines[0].starts_with("detect.diversion_risk.alpha\talerts.for\tmanager_recall"),
        "{stdout}"
    );
    for row in &lines[1..] {
        assert_eq!(row.split('\t').count(), 9, "{row}");
    }
    // A bad sweep value is named.
    let out = feidan(
        &[
            "backtest",
            "--input",
            events.to_str().unwrap(),
            "--sweep",
            "detect.win_rate.alpha=2",
        ],
        &[],
    );
    assert_fails_naming(&out, "detect.win_rate.alpha");
}

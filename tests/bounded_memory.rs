//! Bounded memory (DESIGN §6): a flood of a million distinct account ids
//! through the real binary keeps resident memory under what the entity caps
//! allow, and the evictions are counted.

use std::io::{BufWriter, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The resident set size of process `pid` in bytes, while it runs.
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[test]
fn a_million_new_accounts_stay_within_the_cap_and_are_counted() {
    const ACCOUNTS: usize = 1_000_000;
    const CAP: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flood.jsonl");
    let mut file = BufWriter::new(std::fs::File::create(&path).unwrap());
    for i in 0..ACCOUNTS {
        // One visit per account over three days of event time.
        let second = i * 3 * 86_400 / ACCOUNTS;
        let (day, rest) = (1 + second / 86_400, second % 86_400);
        writeln!(
            file,
            r#"{{"event_id":"f{i}","type":"activity_logged","occurred_at":"2025-03-{day:02}T{:02}:{:02}:{:02}Z","manager_id":"kam-{:04}","team":"team-{}","account_id":"flood-{i:07}","activity":"visit"}}"#,
            rest / 3600,
            rest / 60 % 60,
            rest % 60,
            i % 500,
            i % 7
        )
        .unwrap();
    }
    file.flush().unwrap();
    drop(file);

    let mut child = Command::new(env!("CARGO_BIN_EXE_feidan"))
        .args(["backtest", "--input"])
        .arg(&path)
        .args(["--set", &format!("engine.max_accounts={CAP}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Some(bytes) = resident_bytes(child.id()) {
            peak = peak.max(bytes);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let state = stdout
        .lines()
        .find(|l| l.starts_with("State at the end:"))
        .unwrap_or_else(|| panic!("no state line in {stdout}"));
    assert!(
        state.contains(&format!("{CAP} accounts")),
        "the cap holds: {state}"
    );
    let number_before = |suffix: &str| -> usize {
        let end = state
            .find(suffix)
            .unwrap_or_else(|| panic!("{suffix} in {state}"));
        state[..end].rsplit(' ').next().unwrap().parse().unwrap()
    };
    let number_after = |prefix: &str| -> usize {
        let start = state.find(prefix).unwrap() + prefix.len();
        state[start..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let buffered = number_before(" events not yet behind the watermark");
    let evicted = number_after("accounts ");
    assert!(evicted > ACCOUNTS / 2, "{state}");
    assert_eq!(
        CAP + evicted + buffered,
        ACCOUNTS,
        "every account is held, evicted and counted, or still waiting: {state}"
    );
    // A million accounts held would take well over a gigabyte; the cap of
    // 20,000 (plus the dedup memory of a million event ids) far less.
    assert!(peak > 0, "the process was measured");
    eprintln!("peak resident memory: {} MiB; {state}", peak >> 20);
    assert!(peak < 256 << 20, "peak resident memory {} MiB", peak >> 20);
}

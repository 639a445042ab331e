//! `feidan demo` as a newcomer runs it: the real binary, nothing installed.

use std::process::Command;

#[test]
fn the_demo_prints_alerts_and_exits_cleanly() {
    let output = Command::new(env!("CARGO_BIN_EXE_feidan"))
        .args([
            "demo",
            "--duration",
            "45",
            "--metrics-addr",
            "127.0.0.1:0",
            "--speed",
            "25",
        ])
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        output.status
    );
    let firing: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("FIRING "))
        .collect();
    assert!(!firing.is_empty(), "no alert printed:\n{stdout}\n{stderr}");
    assert!(firing[0].contains("manager=kam-"), "{}", firing[0]);
    assert!(stdout.contains("Demo finished:"), "{stdout}");
}

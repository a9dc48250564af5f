//! `funnelfix demo` as a newcomer runs it: the real binary, no credentials,
//! no input; it exits 0, prints both verdicts, and leaves nothing behind.

use std::process::{Command, Stdio};

#[test]
fn the_demo_reverts_the_harmful_change_and_keeps_the_helpful_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_funnelfix"))
        .arg("demo")
        .env_remove("RUST_LOG")
        .env_remove("FUNNELFIX_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("GitHub PR opened"), "{stdout}");
    assert!(
        stdout.contains("+  <p class=\"fine-print\">"),
        "the diff is shown"
    );
    assert!(
        stdout.contains("with buttons [Approve] [Reject]"),
        "{stdout}"
    );
    assert!(stdout.contains("Verdict: reverted: -"), "{stdout}");
    assert!(stdout.contains("Verdict: kept: +"), "{stdout}");
    assert!(
        out.stderr.is_empty(),
        "no log noise: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The state went to a temporary directory that is gone now.
    let state = stdout
        .lines()
        .find_map(|l| l.strip_prefix("State: "))
        .expect("the state directory is named");
    assert!(
        !std::path::Path::new(state).exists(),
        "{state} was left behind"
    );
}

#[test]
fn the_demo_keeps_its_state_where_asked() {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(env!("CARGO_BIN_EXE_funnelfix"))
        .args(["demo", "--state-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    assert!(out.status.success());
    assert!(dir.path().join("funnelfix.db").exists());
}

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
    // The watch chart of each verdict is kept there too, and named.
    let stdout = String::from_utf8_lossy(&out.stdout);
    for n in [1, 2] {
        let chart = dir.path().join(format!("watch-chart-{n}.png"));
        let png = std::fs::read(&chart).expect("the watch chart is written");
        assert!(png.starts_with(b"\x89PNG"), "{} is a PNG", chart.display());
        assert!(
            stdout.contains(&format!("watch chart: {}", chart.display())),
            "{stdout}"
        );
    }
    // `status N --chart FILE` draws the same chart from the same database.
    let config = dir.path().join("funnelfix.toml");
    let mut text = funnelfix::sandbox::world::CONFIG_TEMPLATE.replace(
        "STATE_PATH",
        &dir.path().join("funnelfix.db").display().to_string(),
    );
    for service in ["POSTHOG_URL", "GITHUB_URL", "TELEGRAM_URL", "LLM_URL"] {
        text = text.replace(service, "http://127.0.0.1:9");
    }
    std::fs::write(&config, text).expect("config");
    let written = dir.path().join("status-chart.png");
    let status = Command::new(env!("CARGO_BIN_EXE_funnelfix"))
        .arg("-c")
        .arg(&config)
        .args(["status", "1", "--chart"])
        .arg(&written)
        .output()
        .expect("the binary runs");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(
        std::fs::read(&written).expect("written"),
        std::fs::read(dir.path().join("watch-chart-1.png")).expect("the demo's")
    );
}

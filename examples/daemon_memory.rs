//! The daemon's resident memory after 100 monitor ticks against the twins.
//!
//!     cargo build --release --locked --bin funnelfix
//!     cargo run --release --example daemon_memory
//!
//! Starts the sandbox (five weeks of simulated traffic), runs the release
//! binary's `funnelfix run` with the monitor every second and one proposal
//! open, waits for 100 finished monitor runs in the state database, reads
//! VmRSS and VmHWM from /proc, and stops the daemon with SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DurationRound, Utc};
use funnelfix::sandbox::llm::Reply;
use funnelfix::sandbox::world::{self, World};

fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let binary = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/funnelfix");
    anyhow::ensure!(
        std::path::Path::new(binary).exists(),
        "build it first: cargo build --release --locked --bin funnelfix"
    );
    let dir = tempfile::tempdir()?;
    let now = Utc::now().duration_trunc(chrono::Duration::hours(1))?;
    let world = World::start(
        dir.path().to_path_buf(),
        now,
        Duration::from_secs(35 * 86400),
        world::CONFIG_TEMPLATE,
    )
    .await?;
    world.llm.script(vec![Reply::Content(
        serde_json::json!({
            "title": "Pricing: a clear call to action",
            "hypothesis": "Visitors on pricing do not see a clear next step.",
            "edits": [{"path": "site/pricing.html", "search": "  <h1>Pricing</h1>\n",
                       "replace": "  <h1>Pricing</h1>\n  <a class=\"cta\" href=\"/signup\">Start</a>\n"}]
        })
        .to_string(),
    )]);
    let config = world
        .config_text(world::CONFIG_TEMPLATE)
        .replace(
            "propose = \"0 0 9 * * *\"",
            "propose = \"0 0 0 1 1 * 2099\"",
        )
        .replace("monitor = \"0 0 * * * *\"", "monitor = \"* * * * * *\"");
    let config_path = dir.path().join("funnelfix.toml");
    std::fs::write(&config_path, config)?;
    let command = |args: &[&str]| {
        let mut c = Command::new(binary);
        c.arg("-c")
            .arg(&config_path)
            .args(args)
            .envs(world::SECRET_ENV)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        c
    };
    // One open proposal, so every tick asks GitHub about its PR.
    let once = tokio::task::spawn_blocking({
        let mut c = command(&["once"]);
        move || c.output()
    })
    .await??;
    anyhow::ensure!(
        once.status.success(),
        "once failed: {}",
        String::from_utf8_lossy(&once.stderr)
    );

    let mut daemon = command(&["run"]).stdout(Stdio::null()).spawn()?;
    let pid = daemon.id();
    let started = Instant::now();
    let db = rusqlite::Connection::open(&world.config.state.path)?;
    loop {
        let ticks: i64 = db.query_row(
            "SELECT COUNT(*) FROM schedule_runs WHERE name = 'monitor' AND finished_at IS NOT NULL",
            [],
            |r| r.get(0),
        )?;
        if ticks >= 100 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "only {ticks} ticks in 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rss = status_kb(pid, "VmRSS:").unwrap_or(0);
    let peak = status_kb(pid, "VmHWM:").unwrap_or(0);
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let exit = tokio::task::spawn_blocking(move || daemon.wait()).await??;
    println!(
        "after 100 monitor ticks ({:.0} s): resident {:.1} MiB, peak {:.1} MiB; exit on SIGTERM: {exit}",
        started.elapsed().as_secs_f64(),
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    Ok(())
}

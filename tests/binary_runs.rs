//! The database lock, through the real binary against the twins. The
//! daemon runs on simulated time (FUNNELFIX_SIMULATED_CLOCK), a simulated
//! minute per second. Everything is judged from outside: the twins and the
//! processes' output.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use funnelfix::app::Clock;
use funnelfix::sandbox::llm::Reply;
use funnelfix::sandbox::world::{self, World};

/// Simulated seconds per real second.
const FACTOR: f64 = 60.0;
const NEVER: &str = "0 0 0 1 1 * 2099";

fn proposal() -> String {
    serde_json::json!({
        "title": "Pricing: a clear call to action",
        "hypothesis": "Visitors on pricing do not see a clear next step.",
        "edits": [{
            "path": "site/pricing.html",
            "search": "  <h1>Pricing</h1>\n",
            "replace": "  <h1>Pricing</h1>\n  <a class=\"cta\" href=\"/signup\">Start your free trial</a>\n",
        }]
    })
    .to_string()
}

struct Sim {
    world: World,
    config: PathBuf,
    clock_spec: String,
    _dir: tempfile::TempDir,
}

impl Sim {
    /// Twins with five weeks of traffic before `start`; simulated time is
    /// `start` now. The config proposes on `propose` and monitors on
    /// `monitor`, with the model's `timeout`.
    async fn new(start: &str, propose: &str, monitor: &str, llm_timeout: &str) -> Sim {
        let dir = tempfile::tempdir().expect("tempdir");
        let start: DateTime<Utc> = start.parse().expect("valid time");
        let mut world = World::start(
            dir.path().to_path_buf(),
            start,
            Duration::from_secs(35 * 86400),
            world::CONFIG_TEMPLATE,
        )
        .await
        .expect("world");
        let epoch = Utc::now();
        world.clock = Clock::scaled_since(start, epoch, FACTOR);
        let clock_spec = format!(
            "{},{},{FACTOR}",
            start.to_rfc3339_opts(SecondsFormat::Millis, true),
            epoch.to_rfc3339_opts(SecondsFormat::Millis, true)
        );
        let text = world
            .config_text(world::CONFIG_TEMPLATE)
            .replacen(
                "propose = \"0 0 9 * * *\"",
                &format!("propose = {propose:?}"),
                1,
            )
            .replacen(
                "monitor = \"0 0 * * * *\"",
                &format!("monitor = {monitor:?}"),
                1,
            )
            .replacen(
                "timeout = \"10s\"",
                &format!("timeout = {llm_timeout:?}"),
                1,
            );
        assert!(text.contains(propose) && text.contains(monitor) && text.contains(llm_timeout));
        let config = dir.path().join("funnelfix.toml");
        std::fs::write(&config, text).expect("config");
        Sim {
            world,
            config,
            clock_spec,
            _dir: dir,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_funnelfix"));
        c.current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("FUNNELFIX_SIMULATED_CLOCK", &self.clock_spec)
            .envs(world::SECRET_ENV)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        c
    }

    fn daemon(&self) -> Child {
        self.command(&["run"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the daemon starts")
    }

    async fn run(&self, args: &[&str]) -> Output {
        let mut c = self.command(args);
        tokio::task::spawn_blocking(move || c.output().expect("the binary runs"))
            .await
            .expect("joined")
    }

    /// Keeps the site's traffic up with simulated time until `done`, for at
    /// most `limit` of real time.
    async fn until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            self.world.catch_up();
            if done(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        done(self)
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits up to `limit` for the process to end; kills it if it does not.
/// The exit status and how long it took.
async fn wait_exit(mut child: Child, limit: Duration) -> (Output, Duration, bool) {
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut in_time = true;
        while child.try_wait().expect("wait").is_none() {
            if start.elapsed() > limit {
                in_time = false;
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = start.elapsed();
        (child.wait_with_output().expect("output"), took, in_time)
    })
    .await
    .expect("joined")
}

async fn stop(child: Child) -> String {
    sigterm(&child);
    let (out, _, in_time) = wait_exit(child, Duration::from_secs(30)).await;
    assert!(in_time, "the daemon did not stop");
    assert_eq!(out.status.code(), Some(0), "graceful exit: {}", text(&out));
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn once_is_refused_while_a_daemon_holds_the_database() {
    let mut sim = Sim::new("2026-03-02T08:00:00Z", NEVER, NEVER, "10s").await;
    sim.world
        .llm
        .script(vec![Reply::Content(proposal()), Reply::Content(proposal())]);
    let daemon = sim.daemon();
    let up = sim
        .until(Duration::from_secs(20), |s| {
            s.world.telegram.requests("SetMyCommands") >= 1
        })
        .await;
    assert!(up, "the daemon started");

    let refused = sim.run(&["once"]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(refused.stdout.is_empty(), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("running on") && stderr.contains("stop it first"),
        "{stderr}"
    );
    assert_eq!(sim.world.posthog.query_count(), 0, "nothing was asked");
    assert!(sim.world.llm.requests().is_empty());
    assert!(sim.world.github.pulls().is_empty());

    // A dry run writes nothing, so it needs no lock.
    let dry = sim.run(&["once", "--dry-run"]).await;
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains("would open a PR"),
        "{}",
        text(&dry)
    );

    stop(daemon).await;
    let out = sim.run(&["once"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("experiment #1 proposed"),
        "{}",
        text(&out)
    );
    assert_eq!(sim.world.github.pulls().len(), 1);
}

//! Scheduled runs, the heartbeat, shutdown and the database lock, through
//! the real binary against the twins. The daemon runs on simulated time
//! (FUNNELFIX_SIMULATED_CLOCK) slow enough that the services' own real-time
//! retries stay short in simulated minutes: a simulated minute per second.
//! Everything is judged from outside: the twins and the state database.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use funnelfix::clock::Clock;
use funnelfix::retry::RetryPolicy;
use funnelfix::sandbox::llm::Reply;
use funnelfix::sandbox::world::{self, World};
use funnelfix::store::{ScheduledRun, Store};

/// Simulated seconds per real second.
const FACTOR: f64 = 60.0;
/// A weekly proposal, Mondays at 09:00; 2026-03-02 is a Monday.
const WEEKLY: &str = "0 0 9 * * Mon";
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

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("valid time")
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
        let start = t(start);
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

    fn db(&self) -> &Path {
        &self.world.config.state.path
    }

    /// A reader of the daemon's database (WAL: it never blocks the daemon).
    fn store(&self) -> Store {
        Store::open(self.db()).expect("the state database")
    }

    fn propose_run(&self) -> Option<ScheduledRun> {
        self.store().latest_run("propose").expect("schedule_runs")
    }

    fn heartbeat(&self) -> Option<String> {
        if !self.db().exists() {
            return None;
        }
        self.store().setting("heartbeat").expect("settings")
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

fn asked(w: &World) -> bool {
    w.telegram.messages().iter().any(|m| !m.buttons.is_empty())
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
async fn a_proposal_due_while_posthog_is_down_comes_minutes_late_not_a_week_late() {
    let mut sim = Sim::new("2026-03-02T08:57:00Z", WEEKLY, "0 0 * * * *", "10s").await;
    sim.world.llm.script(vec![Reply::Content(proposal())]);
    // PostHog is down when the weekly run starts at 09:00: every query of
    // its first try, with the client's own retries, answers 503. Those
    // retries wait in real time, 2 + 4 + 8 s: the outage lasts about
    // fourteen simulated minutes.
    let tries = RetryPolicy::SERVICES.max_attempts as usize;
    sim.world.posthog.fail_next(503, tries);
    let daemon = sim.daemon();
    // Real time for one simulated hour and a little.
    let proposed = sim
        .until(Duration::from_secs(75), |s| asked(&s.world))
        .await;
    let now = sim.world.now();
    let logs = stop(daemon).await;
    assert!(
        proposed,
        "no proposal by {now} (the run was due at 09:00): {logs}"
    );
    assert_eq!(sim.world.github.pulls().len(), 1, "one PR");
    assert!(
        sim.world.posthog.query_count() > tries,
        "PostHog was asked again after the outage"
    );

    let store = sim.store();
    let experiments = store.all().expect("experiments");
    assert_eq!(experiments.len(), 1);
    let proposed_at = experiments[0].created_at;
    assert!(
        proposed_at >= t("2026-03-02T09:10:00Z") && proposed_at < t("2026-03-02T10:00:00Z"),
        "proposed at {proposed_at}: after the outage, within the hour, not next Monday"
    );

    let run = sim.propose_run().expect("the propose run");
    assert_eq!(run.scheduled_at, t("2026-03-02T09:00:00Z"));
    assert_eq!(run.attempts, 2, "{run:?}");
    assert!(run.finished_at.is_some(), "{run:?}");
    let error = run.last_error.unwrap_or_default();
    assert!(error.contains("503"), "the failure is kept: {error}");
    assert!(logs.contains("tried again"), "{logs}");
    for secret in world::ALL_SECRETS {
        assert!(!logs.contains(secret) && !error.contains(secret));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_pass_stops_within_five_seconds_and_the_run_resumes_once() {
    let mut sim = Sim::new("2026-03-02T08:59:00Z", WEEKLY, NEVER, "900s").await;
    // The model takes ten real minutes to answer the first request.
    sim.world.llm.script(vec![
        Reply::Slow(
            Duration::from_secs(600),
            Box::new(Reply::Content(proposal())),
        ),
        Reply::Content(proposal()),
    ]);
    let daemon = sim.daemon();
    let stuck = sim
        .until(Duration::from_secs(30), |s| {
            s.world.llm.requests().len() == 1
        })
        .await;
    assert!(stuck, "the pass reached the model");

    // While the pass waits on the model, the heartbeat goes on.
    let before = sim.heartbeat();
    let beating = sim
        .until(Duration::from_secs(10), |s| {
            s.heartbeat().is_some_and(|b| Some(&b) > before.as_ref())
        })
        .await;
    assert!(
        beating,
        "the heartbeat stayed at {before:?} during the pass"
    );
    let health = sim.run(&["health"]).await;
    assert!(health.status.success(), "{}", text(&health));
    assert_eq!(sim.world.llm.requests().len(), 1, "still the first request");
    assert!(sim.world.github.pulls().is_empty(), "still waiting");

    sigterm(&daemon);
    let (out, took, in_time) = wait_exit(daemon, Duration::from_secs(15)).await;
    println!("SIGTERM to exit mid-pass: {took:?}");
    assert!(
        in_time,
        "the daemon was still waiting on the model after 15 s"
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM took {took:?} to stop the daemon"
    );
    let run = sim.propose_run().expect("the run was started");
    assert_eq!(run.finished_at, None, "the run is left unfinished: {run:?}");
    assert_eq!(run.next_attempt_at, None, "and due at once: {run:?}");
    assert!(sim.world.github.pulls().is_empty());

    // After a restart the same run is resumed and proposes once.
    let daemon = sim.daemon();
    let proposed = sim
        .until(Duration::from_secs(30), |s| asked(&s.world))
        .await;
    assert!(proposed, "the resumed run proposed");
    // Some more simulated time: nothing is proposed again.
    sim.until(Duration::from_secs(2), |_| false).await;
    stop(daemon).await;
    assert_eq!(sim.world.github.pulls().len(), 1, "exactly one PR");
    assert_eq!(sim.world.llm.requests().len(), 2);
    assert_eq!(sim.world.llm.script_left(), 0);
    let run = sim.propose_run().expect("the run");
    assert_eq!(run.scheduled_at, t("2026-03-02T09:00:00Z"));
    assert_eq!(run.attempts, 2, "{run:?}");
    assert!(run.finished_at.is_some(), "{run:?}");
    let proposals = sim
        .world
        .telegram
        .messages()
        .iter()
        .filter(|m| m.text.contains("funnelfix proposal #"))
        .count();
    assert_eq!(proposals, 1, "one proposal message");
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

//! Whole lifecycles through the real binary: `funnelfix run` against the
//! twins on simulated time (FUNNELFIX_SIMULATED_CLOCK, an hour every 60 ms),
//! with the simulated site producing traffic in this process on the same
//! timeline. Everything is judged from outside: the twins' state.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use funnelfix::clock::Clock;
use funnelfix::sandbox::github::PullState;
use funnelfix::sandbox::llm::Reply;
use funnelfix::sandbox::world::{self, APPROVER, CHAT_ID, World};

/// Simulated seconds per real second: an hour every 60 ms.
const FACTOR: f64 = 60_000.0;
const HARMFUL: &str = "<p class=\"fine-print\">Prices exclude VAT and a setup fee.</p>";
const HELPFUL: &str = "<a class=\"cta\" href=\"/signup\">Start your free trial</a>";

struct Sim {
    world: World,
    config: PathBuf,
    clock_spec: String,
    _dir: tempfile::TempDir,
}

fn proposal(line: &str) -> String {
    serde_json::json!({
        "title": "Pricing change",
        "hypothesis": "Visitors on pricing do not see a clear next step.",
        "edits": [{
            "path": "site/pricing.html",
            "search": "  <h1>Pricing</h1>\n",
            "replace": format!("  <h1>Pricing</h1>\n  {line}\n"),
        }]
    })
    .to_string()
}

impl Sim {
    async fn new(line: &str) -> Sim {
        Sim::scripted(vec![Reply::Content(proposal(line))]).await
    }

    /// A world whose model gives these replies, in order.
    async fn scripted(replies: Vec<Reply>) -> Sim {
        Sim::at_speed(replies, FACTOR).await
    }

    /// Like [`Sim::scripted`], with `factor` simulated seconds per real one.
    async fn at_speed(replies: Vec<Reply>, factor: f64) -> Sim {
        let dir = tempfile::tempdir().expect("tempdir");
        let start: DateTime<Utc> = "2026-03-02T08:00:00Z".parse().expect("time");
        let mut world = World::start(
            dir.path().to_path_buf(),
            start,
            Duration::from_secs(35 * 86400),
            world::CONFIG_TEMPLATE,
        )
        .await
        .expect("world");
        world.llm.script(replies);
        let epoch = Utc::now();
        world.set_clock(Clock::scaled_since(start, epoch, factor));
        let clock_spec = format!(
            "{},{},{factor}",
            start.to_rfc3339_opts(SecondsFormat::Millis, true),
            epoch.to_rfc3339_opts(SecondsFormat::Millis, true)
        );
        let text = world.config_text(world::CONFIG_TEMPLATE);
        let config = dir.path().join("funnelfix.toml");
        std::fs::write(&config, text).expect("config");
        Sim {
            world,
            config,
            clock_spec,
            _dir: dir,
        }
    }

    fn daemon(&self) -> Child {
        self.command()
            .stderr(Stdio::piped())
            .spawn()
            .expect("the daemon starts")
    }

    /// `funnelfix run` on this world's config, clock and secrets.
    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_funnelfix"));
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("-c")
            .arg(&self.config)
            .arg("run")
            .env("FUNNELFIX_SIMULATED_CLOCK", &self.clock_spec)
            .envs(world::SECRET_ENV)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    /// Keeps the site's traffic up with simulated time until `done`, for at
    /// most `limit` of real time.
    async fn until(&mut self, limit: Duration, mut done: impl FnMut(&World) -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            self.world.catch_up();
            if done(&self.world) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Taps the first button whose label contains `label` on the proposal.
    fn tap(&self, label: &str, user: u64) {
        let m = self
            .world
            .telegram
            .messages()
            .into_iter()
            .find(|m| m.buttons.iter().any(|(l, _)| l.contains(label)))
            .expect("a message with that button");
        let data = m
            .buttons
            .iter()
            .find(|(l, _)| l.contains(label))
            .expect("button")
            .1
            .clone();
        self.world
            .telegram
            .press_button(CHAT_ID, user, m.message_id, &data);
    }
}

fn asked(w: &World) -> bool {
    w.telegram.messages().iter().any(|m| !m.buttons.is_empty())
}

fn told_kept(w: &World) -> bool {
    w.telegram
        .messages()
        .iter()
        .any(|m| m.text.contains("is over: kept"))
}

/// The PR got its verdict comment. The chat is told first and the comment is
/// the verdict's last request, so a test that stops the daemon waits for both.
fn commented_kept(w: &World) -> bool {
    w.github
        .pulls()
        .first()
        .is_some_and(|p| p.comments.iter().any(|c| c.contains("kept")))
}

fn first_pull(state: PullState) -> impl FnMut(&World) -> bool {
    move |w| w.github.pulls().first().is_some_and(|p| p.state == state)
}

fn stop(mut child: Child) -> String {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert_eq!(out.status.code(), Some(0), "graceful exit");
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A daemon that exits right after its `n`-th command.
fn sim_daemon_crashing_after(sim: &Sim, n: u64) -> Child {
    sim.command()
        .env("FUNNELFIX_CRASH_AFTER_COMMANDS", n.to_string())
        .spawn()
        .expect("the daemon starts")
}

fn kill9(mut child: Child) {
    child.kill().expect("SIGKILL");
    let _ = child.wait();
}

/// No command is waiting for its result to be recorded.
fn outbox_empty(w: &World) -> bool {
    let db = w.state_dir.join("funnelfix.db");
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return false;
    };
    conn.query_row("SELECT count(*) FROM outbox", [], |r| r.get::<_, i64>(0))
        .is_ok_and(|n| n == 0)
}

/// The revert PR is merged.
fn revert_landed(w: &World) -> bool {
    w.github
        .pulls()
        .iter()
        .any(|p| p.title.starts_with("Revert") && p.state == PullState::Merged)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_harmful_change_is_reverted_through_crashes_and_restarts() {
    let mut sim = Sim::new(HARMFUL).await;
    // Every daemon stops right after its third command (the test-only crash
    // point), so the lifecycle is carried by a chain of restarted processes,
    // each crash at a different place in it.
    let mut daemon = sim_daemon_crashing_after(&sim, 3);
    let started = Instant::now();
    let mut restarts = 0;
    let mut tapped = false;
    let reverted = loop {
        // Landed, told, and every command's result recorded (the outbox
        // is empty), so killing the last daemon below cannot interrupt a
        // message between its sending and its record, which a restart
        // would send again.
        let landed_and_told = |w: &World| {
            revert_landed(w)
                && w.telegram
                    .messages()
                    .iter()
                    .any(|m| m.text.starts_with("↩️"))
                && outbox_empty(w)
        };
        let done = sim.until(Duration::from_millis(200), landed_and_told).await;
        if done || started.elapsed() > Duration::from_secs(90) {
            break done;
        }
        if !tapped && asked(&sim.world) {
            sim.tap("Approve", APPROVER);
            tapped = true;
        }
        if let Some(status) = daemon.try_wait().expect("wait") {
            assert_eq!(status.code(), Some(75), "a crash point, nothing else");
            restarts += 1;
            daemon = sim_daemon_crashing_after(&sim, 3);
        }
    };
    assert!(reverted, "the revert landed ({restarts} restarts)");
    // A daemon without a crash point runs on: it must not act again.
    if daemon.try_wait().expect("wait").is_none() {
        kill9(daemon);
    }
    let daemon = sim.daemon();
    sim.until(Duration::from_secs(2), |_| false).await;
    let logs = stop(daemon);
    let pulls = sim.world.github.pulls();
    assert_eq!(pulls.len(), 2, "the change and one revert: {pulls:?}");
    assert_eq!(sim.world.github.merge_requests(), 2, "one merge each");
    assert_eq!(
        sim.world
            .github
            .file_on_branch("main", "site/pricing.html")
            .as_deref(),
        Some(world::PRICING_HTML)
    );
    let messages = sim.world.telegram.messages();
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.text.contains("funnelfix proposal #"))
            .count(),
        1,
        "one proposal message"
    );
    assert_eq!(
        messages.iter().filter(|m| m.text.starts_with("↩️")).count(),
        1,
        "told once"
    );
    assert!(restarts >= 5, "the daemon crashed {restarts} times");
    for secret in world::ALL_SECRETS {
        assert!(!logs.contains(secret));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_helpful_change_is_kept() {
    let mut sim = Sim::new(HELPFUL).await;
    let daemon = sim.daemon();
    assert!(
        sim.until(Duration::from_secs(30), asked).await,
        "a proposal"
    );
    sim.tap("Approve", APPROVER);
    let kept = sim
        .until(Duration::from_secs(120), |w| {
            told_kept(w) && commented_kept(w)
        })
        .await;
    stop(daemon);
    assert!(kept, "the verdict reached the chat and the PR");
    assert_eq!(sim.world.github.pulls().len(), 1);
    assert!(
        sim.world
            .github
            .file_on_branch("main", "site/pricing.html")
            .expect("page")
            .contains(HELPFUL)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_and_unauthorized_taps() {
    let mut sim = Sim::new(HELPFUL).await;
    let daemon = sim.daemon();
    assert!(
        sim.until(Duration::from_secs(30), asked).await,
        "a proposal"
    );
    sim.tap("Approve", 999);
    let refused = sim
        .until(Duration::from_secs(20), |w| {
            w.telegram
                .callback_answers()
                .iter()
                .any(|(_, t)| t.contains("cannot decide"))
        })
        .await;
    assert!(refused);
    sim.tap("Reject", APPROVER);
    let closed = sim
        .until(Duration::from_secs(20), first_pull(PullState::Closed))
        .await;
    stop(daemon);
    assert!(closed, "rejected: the PR is closed");
    assert_eq!(sim.world.github.merge_requests(), 0);
    let branch = sim.world.github.pulls()[0].head.clone();
    assert!(
        !sim.world.github.branches().contains(&branch),
        "its branch is deleted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unanswered_proposal_expires() {
    let mut sim = Sim::new(HELPFUL).await;
    let daemon = sim.daemon();
    assert!(
        sim.until(Duration::from_secs(30), asked).await,
        "a proposal"
    );
    let expired = sim
        .until(Duration::from_secs(30), |w| {
            w.telegram
                .messages()
                .iter()
                .any(|m| m.text.contains("got no answer"))
        })
        .await;
    stop(daemon);
    assert!(expired);
    assert_eq!(sim.world.github.pulls()[0].state, PullState::Closed);
    assert_eq!(sim.world.github.merge_requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn service_faults_delay_but_never_corrupt() {
    // The model's first answer comes after the client's timeout: it must be
    // dropped, and the second one used.
    let mut sim = Sim::scripted(vec![
        Reply::Slow(
            Duration::from_secs(3),
            Box::new(Reply::Content(proposal(HARMFUL))),
        ),
        Reply::Content(proposal(HELPFUL)),
    ])
    .await;
    let text = std::fs::read_to_string(&sim.config).expect("config");
    std::fs::write(
        &sim.config,
        text.replacen("timeout = \"10s\"", "timeout = \"2s\"", 1),
    )
    .expect("config");
    let w = &sim.world;
    w.posthog.fail_next(429, 1);
    w.posthog.fail_next(503, 1);
    w.github.fail_next("/git/blobs", 403, 1);
    // The PR is refused once after its branch exists: the next pass opens it.
    w.github.fail_next("POST /pulls", 502, 1);
    w.telegram.fail_next("SendMessage", 429, 1);
    let daemon = sim.daemon();
    assert!(
        sim.until(Duration::from_secs(60), asked).await,
        "a proposal"
    );
    sim.world.github.fail_next("/merge", 502, 1);
    sim.tap("Approve", APPROVER);
    let merged = sim
        .until(Duration::from_secs(30), first_pull(PullState::Merged))
        .await;
    assert!(merged, "merged after the 502");
    sim.world.posthog.fail_next(429, 2);
    let kept = sim.until(Duration::from_secs(120), told_kept).await;
    let logs = stop(daemon);
    assert!(kept, "the verdict reached the chat");
    let w = &sim.world;
    let pulls = w.github.pulls();
    assert_eq!(pulls.len(), 1, "one PR: {pulls:?}");
    assert_eq!(w.llm.script_left(), 0, "the late answer was asked again");
    assert!(
        w.github.requests("POST", "/git/blobs") >= 2,
        "the blob was sent again after the limit"
    );
    assert_eq!(
        w.github.requests("POST", "/pulls"),
        2,
        "refused once, then opened"
    );
    assert_eq!(w.github.merge_requests(), 2, "the 502, then one merge");
    let page = w
        .github
        .file_on_branch("main", "site/pricing.html")
        .expect("page");
    assert!(page.contains(HELPFUL) && !page.contains(HARMFUL), "{page}");
    let proposals = w
        .telegram
        .messages()
        .iter()
        .filter(|m| m.text.contains("funnelfix proposal #"))
        .count();
    assert_eq!(proposals, 1, "one proposal message");
    for secret in world::ALL_SECRETS {
        assert!(!logs.contains(secret));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tap_telegram_will_not_answer_still_merges() {
    let mut sim = Sim::new(HELPFUL).await;
    let daemon = sim.daemon();
    assert!(
        sim.until(Duration::from_secs(30), asked).await,
        "a proposal"
    );
    // The tap waited too long: Telegram answers "query is too old".
    sim.world
        .telegram
        .set_callback_answer_window(Duration::ZERO);
    sim.tap("Approve", APPROVER);
    let merged = sim
        .until(Duration::from_secs(30), first_pull(PullState::Merged))
        .await;
    stop(daemon);
    assert!(merged, "the approval merged");
    assert!(sim.world.telegram.callback_answers().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revert_pr_closed_by_a_person_ends_it_and_a_later_proposal_opens() {
    let mut sim = Sim::scripted(vec![
        Reply::Content(proposal(HARMFUL)),
        Reply::Content(proposal(HELPFUL)),
    ])
    .await;
    let text = std::fs::read_to_string(&sim.config).expect("config");
    std::fs::write(
        &sim.config,
        // No cooldown: the same step is picked again once the funnel is free.
        text.replacen(
            "cooldown = \"28d\"",
            "cooldown = \"1s\"\nrevert = \"approve\"",
            1,
        ),
    )
    .expect("config");
    let daemon = sim.daemon();
    assert!(
        sim.until(Duration::from_secs(30), asked).await,
        "a proposal"
    );
    sim.tap("Approve", APPROVER);
    let revert_asked = |w: &World| {
        w.telegram.messages().iter().any(|m| {
            m.buttons
                .iter()
                .any(|(label, _)| label.contains("Merge the revert"))
        })
    };
    assert!(
        sim.until(Duration::from_secs(90), revert_asked).await,
        "the revert is asked for"
    );
    let revert = sim
        .world
        .github
        .pulls()
        .into_iter()
        .find(|p| p.title.starts_with("Revert"))
        .expect("the revert PR");
    sim.world.github.close_by_human(revert.number);
    let told = |w: &World| {
        w.telegram
            .messages()
            .iter()
            .any(|m| m.text.contains("revert PR was closed on GitHub"))
    };
    assert!(
        sim.until(Duration::from_secs(30), told).await,
        "the chat is told"
    );
    let second_proposal = |w: &World| {
        w.telegram
            .messages()
            .iter()
            .filter(|m| m.text.contains("funnelfix proposal #"))
            .count()
            == 2
    };
    let proposed_again = sim.until(Duration::from_secs(60), second_proposal).await;
    let logs = stop(daemon);
    assert!(proposed_again, "the funnel is free again: {logs}");
    assert_eq!(sim.world.github.pulls().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn on_github_app_auth_tokens_expire_and_are_renewed_through_a_lifecycle() {
    const APP_KEY: &str = include_str!("fixtures/github_app_key.pem");
    // An hour every 600 ms, slower than the others: the App's JWT lives ten
    // simulated minutes (100 ms), which a request on a busy machine needs.
    let mut sim = Sim::at_speed(vec![Reply::Content(proposal(HELPFUL))], 6_000.0).await;
    sim.world.use_github_app(APP_KEY).expect("the App");
    let text = std::fs::read_to_string(&sim.config).expect("config");
    // A day's watch: the lifecycle ends in seconds, on a token renewed each hour.
    let text =
        world::app_config(&text).replacen("observation = \"14d\"", "observation = \"1d\"", 1);
    assert!(text.contains("app_id = ") && !text.contains("FUNNELFIX_DEMO_GITHUB_TOKEN"));
    std::fs::write(&sim.config, text).expect("config");
    let daemon = sim
        .command()
        .env_remove("FUNNELFIX_DEMO_GITHUB_TOKEN")
        .env(world::APP_KEY_ENV, APP_KEY)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("the daemon starts");
    assert!(
        sim.until(Duration::from_secs(30), asked).await,
        "a proposal"
    );
    sim.tap("Approve", APPROVER);
    let kept = sim
        .until(Duration::from_secs(90), |w| {
            told_kept(w) && commented_kept(w)
        })
        .await;
    let logs = stop(daemon);
    assert!(kept, "the verdict reached the chat and the PR: {logs}");

    let github = &sim.world.github;
    let pulls = github.pulls();
    assert_eq!(pulls.len(), 1);
    let bot = format!("{}[bot]", world::APP_SLUG);
    assert_eq!(pulls[0].author, bot);
    assert_eq!(github.commit_author(&pulls[0].head_sha), Some(bot.clone()));
    let tokens = github.installation_tokens();
    // The verdict came a day after the PR: its comment went out on a token
    // minted long after the first one had expired.
    assert!(tokens.len() >= 2, "tokens minted: {}", tokens.len());
    eprintln!(
        "{} installation tokens minted, {} requests refused on an expired one",
        tokens.len(),
        github.expired_token_refusals()
    );
    assert!(logs.contains(&bot), "the logs name who funnelfix acts as");

    let db = &sim.world.config.state.path;
    let mut places = vec![logs];
    for file in [db.clone(), db.with_extension("db-wal")] {
        if let Ok(bytes) = std::fs::read(&file) {
            places.push(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    places.extend(sim.world.telegram.messages().into_iter().map(|m| m.text));
    places.extend(
        pulls
            .iter()
            .map(|p| format!("{} {} {}", p.title, p.body, p.comments.join(" "))),
    );
    for secret in world::pem_secrets(APP_KEY).iter().chain(&tokens) {
        for place in &places {
            assert!(!place.contains(secret.as_str()), "a secret leaked");
        }
    }
}

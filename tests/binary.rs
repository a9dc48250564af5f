//! The real `funnelfix` binary against the sandbox twins: `once`, a dry
//! run, `status`, the daemon with an approval over Telegram, a second daemon
//! refused, `health`, SIGTERM, JSON logs, and no secret in any output.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DurationRound, Utc};
use funnelfix::sandbox::github::PullState;
use funnelfix::sandbox::llm::Reply;
use funnelfix::sandbox::world::{self, APPROVER, CHAT_ID, World};

const HELPFUL: &str = "<a class=\"cta\" href=\"/signup\">Start your free trial</a>";

struct Env {
    world: World,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

fn proposal() -> String {
    serde_json::json!({
        "title": "Pricing: a clear call to action",
        "hypothesis": "Visitors on pricing do not see a clear next step.",
        "edits": [{
            "path": "site/pricing.html",
            "search": "  <h1>Pricing</h1>\n",
            "replace": format!("  <h1>Pricing</h1>\n  {HELPFUL}\n"),
        }]
    })
    .to_string()
}

impl Env {
    /// Twins with five weeks of traffic up to now, and a config file for them.
    async fn new(schedule: Option<(&str, &str)>) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = Utc::now()
            .duration_trunc(chrono::Duration::hours(1))
            .expect("hour");
        let world = World::start(
            dir.path().to_path_buf(),
            now,
            Duration::from_secs(35 * 86400),
            world::CONFIG_TEMPLATE,
        )
        .await
        .expect("world");
        let mut text = world.config_text(world::CONFIG_TEMPLATE);
        if let Some((propose, monitor)) = schedule {
            text = text
                .replace(
                    "propose = \"0 0 9 * * *\"",
                    &format!("propose = {propose:?}"),
                )
                .replace(
                    "monitor = \"0 0 * * * *\"",
                    &format!("monitor = {monitor:?}"),
                );
        }
        let config = dir.path().join("funnelfix.toml");
        std::fs::write(&config, text).expect("config written");
        Env {
            world,
            config,
            _dir: dir,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_funnelfix"));
        c.current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .envs(world::SECRET_ENV)
            .env("RUST_LOG", "funnelfix=debug,info")
            .stdin(Stdio::null());
        c
    }

    async fn run(&self, args: &[&str]) -> Output {
        let mut c = self.command(args);
        tokio::task::spawn_blocking(move || c.output().expect("the binary runs"))
            .await
            .expect("joined")
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the daemon starts")
    }

    fn db(&self) -> &Path {
        &self.world.config.state.path
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_no_secret(what: &str, s: &str) {
    for secret in world::ALL_SECRETS {
        assert!(!s.contains(secret), "a secret leaked into {what}");
    }
}

/// Waits (polling, up to `limit`) until `done` holds.
async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

async fn wait(mut child: Child) -> Output {
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "the daemon did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().expect("output")
    })
    .await
    .expect("joined")
}

#[tokio::test(flavor = "multi_thread")]
async fn once_opens_one_pr_and_a_second_once_opens_none() {
    let env = Env::new(None).await;
    env.world
        .llm
        .script(vec![Reply::Content(proposal()), Reply::Content(proposal())]);
    let out = env.run(&["once"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("experiment #1 proposed"),
        "{}",
        text(&out)
    );
    assert_eq!(env.world.github.pulls().len(), 1);
    assert!(
        env.world
            .telegram
            .messages()
            .iter()
            .any(|m| !m.buttons.is_empty())
    );
    assert_no_secret("the output of once", &text(&out));

    let again = env.run(&["once"]).await;
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing proposed"),
        "{}",
        text(&again)
    );
    assert_eq!(env.world.github.pulls().len(), 1, "no second PR");

    let status = env.run(&["status"]).await;
    let listed = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        listed.contains("#1") && listed.contains("awaiting_approval"),
        "{listed}"
    );
    let one = env.run(&["status", "#1"]).await;
    assert!(one.status.success(), "{}", text(&one));
    assert!(String::from_utf8_lossy(&one.stdout).starts_with("#1 signup"));
    // Not merged yet: no watch chart, said in one line, nothing written.
    let chart = env.db().with_file_name("chart.png");
    let refused = env
        .run(&["status", "1", "--chart", chart.to_str().expect("path")])
        .await;
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("experiment #1: It was never merged, so it has no watch chart"),
        "{}",
        text(&refused)
    );
    assert!(!chart.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_writes_nothing_anywhere() {
    let env = Env::new(None).await;
    env.world.llm.script(vec![Reply::Content(proposal())]);
    let out = env.run(&["once", "--dry-run"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("would open a PR") && stdout.contains(HELPFUL),
        "{stdout}"
    );
    assert!(env.world.github.pulls().is_empty());
    assert_eq!(env.world.github.write_requests(), 0);
    assert!(env.world.telegram.messages().is_empty());
    assert!(!env.db().exists(), "no state database was created");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_merges_an_approval_refuses_a_twin_and_stops_on_sigterm() {
    // Propose every 2 seconds; monitor every 3.
    let env = Env::new(Some(("*/2 * * * * *", "*/3 * * * * *"))).await;
    env.world.llm.script(vec![Reply::Content(proposal())]);
    let daemon = env.spawn(&["run", "--log-format", "json"]);

    let asked = eventually(Duration::from_secs(20), || {
        env.world
            .telegram
            .messages()
            .iter()
            .any(|m| !m.buttons.is_empty())
    })
    .await;
    assert!(asked, "the proposal reached the chat");
    assert_eq!(
        env.world.telegram.commands().len(),
        5,
        "commands registered"
    );

    let second = env.run(&["run"]).await;
    assert_eq!(second.status.code(), Some(1));
    assert!(
        text(&second).contains("already running"),
        "{}",
        text(&second)
    );

    let health = env.run(&["health"]).await;
    assert!(health.status.success(), "{}", text(&health));

    let proposal = env
        .world
        .telegram
        .messages()
        .into_iter()
        .find(|m| !m.buttons.is_empty())
        .expect("proposal");
    let approve = proposal.buttons[0].1.clone();
    // A stranger's tap is refused politely and merges nothing.
    let stranger = env
        .world
        .telegram
        .press_button(CHAT_ID, 999, proposal.message_id, &approve);
    let refused = eventually(Duration::from_secs(20), || {
        env.world
            .telegram
            .callback_answers()
            .iter()
            .any(|(id, text)| *id == stranger && text.contains("cannot decide"))
    })
    .await;
    assert!(refused, "the stranger was answered");
    assert_eq!(env.world.github.merge_requests(), 0);
    env.world
        .telegram
        .press_button(CHAT_ID, APPROVER, proposal.message_id, &approve);
    let merged = eventually(Duration::from_secs(20), || {
        env.world
            .github
            .pulls()
            .first()
            .is_some_and(|p| p.state == PullState::Merged)
    })
    .await;
    assert!(merged, "the approval merged the PR");
    assert_eq!(env.world.github.merge_requests(), 1);

    terminate(&daemon);
    let out = wait(daemon).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let logs = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!logs.is_empty());
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|_| panic!("not JSON: {line}"));
    }
    assert!(
        logs.contains("\"experiment\""),
        "spans carry the experiment"
    );
    assert_no_secret("the daemon's logs", &logs);
    assert_eq!(env.world.github.pulls().len(), 1, "one PR in all");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_config_and_missing_secrets_are_one_line_each() {
    let env = Env::new(None).await;
    let out = env
        .command(&["check-config"])
        .env_remove("FUNNELFIX_DEMO_GITHUB_TOKEN")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("FUNNELFIX_DEMO_GITHUB_TOKEN"), "{stderr}");

    let out = env
        .command(&["once"])
        .env_remove("FUNNELFIX_DEMO_LLM_KEY")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FUNNELFIX_DEMO_LLM_KEY"));
    assert!(env.world.github.pulls().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_names_each_github_app_problem_in_one_line() {
    const APP_KEY: &str = include_str!("fixtures/github_app_key.pem");
    let env = Env::new(None).await;
    let token_config = std::fs::read_to_string(&env.config).expect("config");
    let app_config = world::app_config(&token_config);
    // "ok", or the one problem check-config printed, without the file's name.
    let check = |config: &str, key: Option<&str>| {
        std::fs::write(&env.config, config).expect("config");
        let mut command = env.command(&["check-config"]);
        command.env_remove(world::APP_KEY_ENV);
        if let Some(key) = key {
            command.env(world::APP_KEY_ENV, key);
        }
        let out = command.output().expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!stderr.contains("MII"), "the key was quoted: {stderr}");
        if out.status.success() {
            return "ok".to_string();
        }
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        let file = format!("{}: ", env.config.display());
        stderr.trim().trim_start_matches(&file).to_string()
    };
    assert_eq!(check(&app_config, Some(APP_KEY)), "ok");
    assert_eq!(
        check(&app_config, None),
        "github.app_private_key_env: environment variable FUNNELFIX_DEMO_GITHUB_APP_KEY is not set"
    );
    assert_eq!(
        check(&app_config, Some(&APP_KEY[..APP_KEY.len() / 2])),
        "github.app_private_key_env: the value of FUNNELFIX_DEMO_GITHUB_APP_KEY is cut short: its -----END RSA PRIVATE KEY----- line is missing"
    );
    let both = token_config.replacen(
        "repo = ",
        &format!(
            "app_id = {}\napp_private_key_env = \"{}\"\nrepo = ",
            world::APP_ID,
            world::APP_KEY_ENV
        ),
        1,
    );
    assert_eq!(
        check(&both, Some(APP_KEY)),
        "line 22: github.token_env: set either token_env (a token) or app_id with app_private_key_env or app_private_key_file (a GitHub App), not both"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_start_up_is_a_graceful_stop() {
    let env = Env::new(None).await;
    // Registering the commands is throttled three times (1 s each): the
    // daemon is still starting when the signal comes.
    env.world.telegram.fail_next("SetMyCommands", 429, 3);
    let daemon = env.spawn(&["run"]);
    assert!(
        eventually(Duration::from_secs(20), || env
            .world
            .telegram
            .requests("SetMyCommands")
            >= 1)
        .await,
        "the daemon started"
    );
    terminate(&daemon);
    let out = wait(daemon).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("shutting down"), "{}", text(&out));
}

//! What the scenario tests share: a world of twins with the real `App`
//! driven through the real adapters on a hand-moved clock.
#![allow(dead_code, unused_imports)]

pub use std::time::Duration;

pub use chrono::{DateTime, Utc};
pub use funnelfix::app::{App, ProposeOutcome};
pub use funnelfix::experiment::State;
pub use funnelfix::sandbox::github::PullState;
pub use funnelfix::sandbox::llm::Reply;
pub use funnelfix::sandbox::world::{self, APPROVER, CHAT_ID, World};
pub use funnelfix::store::Experiment;

pub const HOUR: Duration = Duration::from_secs(3600);
pub const DAY: Duration = Duration::from_secs(86400);

/// The page the site punishes or rewards: text the model adds to pricing.html.
pub const HARMFUL: &str = "<p class=\"fine-print\">Prices exclude VAT and a setup fee.</p>";
pub const HELPFUL: &str = "<a class=\"cta\" href=\"/signup\">Start your free trial</a>";
pub const NEUTRAL: &str = "<p>Questions? Write to hello@acme.test</p>";

/// The test GitHub App's private key.
pub const APP_KEY: &str = include_str!("../fixtures/github_app_key.pem");

pub struct Ctx {
    pub world: World,
    pub app: App,
    _dir: tempfile::TempDir,
}

pub fn start_time() -> DateTime<Utc> {
    // A Monday morning.
    "2026-03-02T08:00:00Z".parse().expect("valid time")
}

/// A proposal that inserts `line` above the pricing table.
pub fn proposal_json(title: &str, line: &str) -> String {
    serde_json::json!({
        "title": title,
        "hypothesis": "Visitors on pricing do not see a clear next step.",
        "edits": [{
            "path": "site/pricing.html",
            "search": "  <h1>Pricing</h1>\n",
            "replace": format!("  <h1>Pricing</h1>\n  {line}\n"),
        }]
    })
    .to_string()
}

impl Ctx {
    pub async fn new() -> Ctx {
        Ctx::with_config(world::CONFIG_TEMPLATE).await
    }

    pub async fn with_config(template: &str) -> Ctx {
        Ctx::with_site(template, |_| {}).await
    }

    /// A world whose site's visitors `adjust` changed before its history.
    pub async fn with_site(
        template: &str,
        adjust: impl FnOnce(&mut funnelfix::sandbox::site::Site),
    ) -> Ctx {
        let dir = tempfile::tempdir().expect("tempdir");
        let world = World::start_with(
            dir.path().to_path_buf(),
            start_time(),
            Duration::from_secs(35 * 86400),
            template,
            adjust,
        )
        .await
        .expect("world starts");
        let app = world.app().expect("app");
        Ctx {
            world,
            app,
            _dir: dir,
        }
    }

    /// A world where funnelfix acts as a GitHub App, not with a token.
    pub async fn with_github_app() -> Ctx {
        let mut ctx = Ctx::new().await;
        ctx.world
            .use_github_app(APP_KEY)
            .expect("the App is set up");
        ctx.restart();
        ctx
    }

    /// A new `App` on the same database: what a restart of the daemon does.
    pub fn restart(&mut self) {
        self.app = self.world.app().expect("app after restart");
    }

    pub async fn propose(&self) -> ProposeOutcome {
        let mut out = self.app.propose_pass(false).await;
        assert_eq!(out.len(), 1);
        out.remove(0).1.expect("propose pass")
    }

    pub async fn monitor(&self) {
        for (id, result) in self.app.monitor_pass().await {
            result.unwrap_or_else(|e| panic!("monitor of #{id}: {e:#}"));
        }
    }

    pub fn experiment(&self) -> Experiment {
        self.app
            .store
            .all()
            .expect("store")
            .into_iter()
            .next()
            .expect("an experiment")
    }

    /// Delivers what is queued in Telegram to the app, as the daemon loop does.
    pub async fn deliver_updates(&self) {
        self.app.poll_once(0).await.expect("poll");
    }

    /// Taps a button of the proposal message as `user` in `chat`.
    pub async fn press(&self, action: &str, user: u64, chat: i64) -> String {
        let e = self.experiment();
        let message_id = e.message_id.expect("proposal was sent") as i32;
        let data = format!("{}:{}:{}", &action[..1].to_lowercase(), e.id, e.nonce);
        let callback = self
            .world
            .telegram
            .press_button(chat, user, message_id, &data);
        self.deliver_updates().await;
        callback
    }

    /// Moves time by `by`, running the monitor every `every`.
    pub async fn run_for(&mut self, by: Duration, every: Duration) {
        let end = self.world.now() + chrono::Duration::from_std(by).expect("duration");
        while self.world.now() < end {
            let left = (end - self.world.now()).to_std().expect("positive");
            self.world.advance(every.min(left), HOUR);
            self.monitor().await;
        }
    }

    pub fn messages(&self) -> Vec<String> {
        self.world
            .telegram
            .messages()
            .into_iter()
            .map(|m| m.text)
            .collect()
    }
}

/// Proposes `line`, approves it, and watches until the experiment ends.
pub async fn run_experiment(ctx: &mut Ctx, line: &str) -> Experiment {
    ctx.world
        .llm
        .script(vec![Reply::Content(proposal_json("Pricing change", line))]);
    assert!(matches!(
        ctx.propose().await,
        ProposeOutcome::Proposed { .. }
    ));
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    assert_eq!(ctx.experiment().state, State::Merged);
    for _ in 0..(17 * 4) {
        ctx.run_for(6 * HOUR, 6 * HOUR).await;
        if ctx.experiment().state.is_final() {
            break;
        }
    }
    ctx.experiment()
}

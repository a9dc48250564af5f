//! A whole simulated world: the four twins, a website whose conversion
//! depends on its pages, a config pointing at the twins, and a clock that the
//! demo and the tests move by hand. `funnelfix demo` and the scenario tests
//! drive the real [`App`] through the real adapters against it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::app::{App, Services};
use crate::clock::Clock;
use crate::config::{self, AppKeySource, Config, GithubAuth, GithubCredentials, Secrets};
use crate::github_app::{AppCredentials, AppKey};
use crate::retry::RetryPolicy;
use crate::sandbox::github::GitHubTwin;
use crate::sandbox::github_app::TwinApp;
use crate::sandbox::llm::LlmTwin;
use crate::sandbox::posthog::PostHogTwin;
use crate::sandbox::site::{Behaviour, Site};
use crate::sandbox::telegram::TelegramTwin;
use crate::store::Store;

/// The config the world runs with; placeholders are replaced at start.
pub const CONFIG_TEMPLATE: &str = include_str!("../../config/demo.toml");

/// Secret values of the twins. They are fake, but tests still prove they
/// never leak into logs, prompts, PRs, messages or the database.
pub const POSTHOG_KEY: &str = "phx_sandbox_posthog_key_4f1c9a";
pub const GITHUB_TOKEN: &str = "ghp_sandbox_github_token_7d2e8b";
pub const TELEGRAM_TOKEN: &str = "123456:sandbox_telegram_token_9a3f";
pub const LLM_KEY: &str = "sk-sandbox-llm-key-5b7c1d";

pub const ALL_SECRETS: [&str; 4] = [POSTHOG_KEY, GITHUB_TOKEN, TELEGRAM_TOKEN, LLM_KEY];

/// The environment a funnelfix process needs to reach the twins, as named
/// by demo.toml.
pub const SECRET_ENV: [(&str, &str); 4] = [
    ("FUNNELFIX_DEMO_POSTHOG_KEY", POSTHOG_KEY),
    ("FUNNELFIX_DEMO_GITHUB_TOKEN", GITHUB_TOKEN),
    ("FUNNELFIX_DEMO_TELEGRAM_TOKEN", TELEGRAM_TOKEN),
    ("FUNNELFIX_DEMO_LLM_KEY", LLM_KEY),
];

/// The GitHub App of [`World::use_github_app`]: its id, name, installation,
/// and the variable that holds its key.
pub const APP_ID: u64 = 1042;
pub const APP_SLUG: &str = "funnelfix-acme";
pub const INSTALLATION_ID: u64 = 77;
pub const APP_KEY_ENV: &str = "FUNNELFIX_DEMO_GITHUB_APP_KEY";

/// `config` (rendered from demo.toml) on GitHub App auth instead of the token.
pub fn app_config(config: &str) -> String {
    config.replacen(
        "token_env = \"FUNNELFIX_DEMO_GITHUB_TOKEN\"",
        &format!("app_id = {APP_ID}\napp_private_key_env = \"{APP_KEY_ENV}\""),
        1,
    )
}

/// What of a PEM key must never show anywhere: the whole of it, and each
/// line of its base64 (a log cut short would still leak those).
pub fn pem_secrets(pem: &str) -> Vec<String> {
    let mut secrets = vec![pem.trim().to_string()];
    secrets.extend(
        pem.lines()
            .filter(|l| !l.starts_with("-----") && !l.trim().is_empty())
            .map(str::to_string),
    );
    secrets
}

/// The approver configured in demo.toml, and the chat.
pub const APPROVER: u64 = 42;
pub const CHAT_ID: i64 = -1001;

pub const INDEX_HTML: &str = "<!doctype html>\n<html>\n<head><title>Acme</title></head>\n<body>\n  <h1>Acme keeps your books in order</h1>\n  <p>Invoices, receipts and taxes in one place.</p>\n  <a href=\"/pricing\">See pricing</a>\n</body>\n</html>\n";
pub const PRICING_HTML: &str = "<!doctype html>\n<html>\n<head><title>Acme pricing</title></head>\n<body>\n  <h1>Pricing</h1>\n  <table class=\"plans\">\n    <tr><td>Starter</td><td>$9/month</td></tr>\n    <tr><td>Team</td><td>$29/month</td></tr>\n  </table>\n  <p>All plans include a 30-day trial.</p>\n  <footer><a href=\"/signup\">sign up</a></footer>\n</body>\n</html>\n";
pub const SIGNUP_HTML: &str = "<!doctype html>\n<html>\n<head><title>Sign up</title></head>\n<body>\n  <form action=\"/signup\" method=\"post\">\n    <input name=\"email\" type=\"email\">\n    <button type=\"submit\">Create account</button>\n  </form>\n</body>\n</html>\n";

pub struct World {
    pub posthog: PostHogTwin,
    pub github: GitHubTwin,
    pub telegram: TelegramTwin,
    pub llm: LlmTwin,
    pub site: Site,
    pub config: Config,
    pub secrets: Secrets,
    pub clock: Clock,
    pub state_dir: PathBuf,
    /// Traffic is simulated up to here.
    simulated_until: DateTime<Utc>,
}

/// Replaces the placeholders of [`CONFIG_TEMPLATE`] (or another template).
fn render_config(
    template: &str,
    state: &std::path::Path,
    posthog: &str,
    github: &str,
    telegram: &str,
    llm: &str,
) -> String {
    template
        .replace("STATE_PATH", &state.display().to_string())
        .replace("POSTHOG_URL", posthog)
        .replace("GITHUB_URL", github)
        .replace("TELEGRAM_URL", telegram)
        .replace("LLM_URL", llm)
}

impl World {
    /// Starts the twins and a site with `base_rates` per transition; the clock
    /// starts at `start`, with `history` of traffic already in PostHog.
    pub async fn start(
        state_dir: PathBuf,
        start: DateTime<Utc>,
        history: Duration,
        template: &str,
    ) -> Result<World> {
        World::start_with(state_dir, start, history, template, |_| {}).await
    }

    /// [`World::start`] with the site's visitors changed by `adjust` before
    /// the history is simulated (a drift, say).
    pub async fn start_with(
        state_dir: PathBuf,
        start: DateTime<Utc>,
        history: Duration,
        template: &str,
        adjust: impl FnOnce(&mut Site),
    ) -> Result<World> {
        let posthog = PostHogTwin::start("1", POSTHOG_KEY).await?;
        let github = GitHubTwin::start(
            "acme",
            "website",
            "main",
            &[
                ("site/index.html", INDEX_HTML),
                ("site/pricing.html", PRICING_HTML),
                ("site/signup.html", SIGNUP_HTML),
                ("README.md", "# Acme website\n"),
                (".github/workflows/deploy.yml", "name: deploy\non: push\n"),
            ],
            GITHUB_TOKEN,
        )
        .await?;
        let telegram = TelegramTwin::start(TELEGRAM_TOKEN).await?;
        let llm = LlmTwin::start(LLM_KEY).await?;
        std::fs::create_dir_all(&state_dir)
            .with_context(|| format!("cannot create {}", state_dir.display()))?;
        let text = render_config(
            template,
            &state_dir.join("funnelfix.db"),
            &posthog.url(),
            &github.url(),
            &telegram.url(),
            &llm.url(),
        );
        let config = config::parse(&text).map_err(|problems| {
            let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            anyhow::anyhow!("sandbox config: {}", lines.join("; "))
        })?;
        let secrets = Secrets {
            posthog_api_key: SecretString::from(POSTHOG_KEY),
            github: GithubCredentials::Token {
                token: SecretString::from(GITHUB_TOKEN),
                env: "FUNNELFIX_DEMO_GITHUB_TOKEN".into(),
            },
            telegram_token: SecretString::from(TELEGRAM_TOKEN),
            llm_api_key: SecretString::from(LLM_KEY),
        };
        let funnel = config.funnels[0].clone();
        // Pricing → signup is the weak step (0.25). On the pricing page, fine
        // print hurts and a clear call to action helps.
        // Visitors behave as on a real site: half the visits are people
        // who came before.
        let site = Site::new(funnel, "main", vec![0.45, 0.25, 0.6], 1200.0, 7)
            .with_behaviour(Behaviour::realistic())
            .with_effect("fine-print", 0.6)
            .with_effect("class=\"cta\"", 1.3);
        let mut site = site;
        adjust(&mut site);
        let clock = Clock::manual(start);
        let mut world = World {
            posthog,
            github,
            telegram,
            llm,
            site,
            config,
            secrets,
            clock,
            state_dir,
            simulated_until: start - chrono::Duration::from_std(history)?,
        };
        world.simulate_to(start);
        world.set_clock(world.clock.clone());
        Ok(world)
    }

    /// Has funnelfix act as a GitHub App ([`APP_ID`], key `pem`) installed on
    /// the repository, instead of with a token: the twin registers the App's
    /// public key, and the config and secrets switch to App auth. A config
    /// file for a process gets it from [`app_config`] and [`APP_KEY_ENV`].
    pub fn use_github_app(&mut self, pem: &str) -> Result<()> {
        let key = AppKey::from_pem(pem).map_err(|e| anyhow::anyhow!("the App key {e}"))?;
        self.github.register_app(TwinApp {
            id: APP_ID,
            slug: APP_SLUG.into(),
            public_key_der: key.public_key_der(),
            installation_id: Some(INSTALLATION_ID),
        });
        self.config.github.auth = GithubAuth::App {
            app_id: APP_ID,
            key: AppKeySource::Env(APP_KEY_ENV.into()),
            installation_id: None,
        };
        self.secrets.github = GithubCredentials::App(AppCredentials {
            app_id: APP_ID,
            key,
            installation_id: None,
            key_source: format!("${APP_KEY_ENV}"),
        });
        Ok(())
    }

    /// A config file's text for a funnelfix process run against these twins
    /// and this world's state database.
    pub fn config_text(&self, template: &str) -> String {
        render_config(
            template,
            &self.config.state.path,
            &self.posthog.url(),
            &self.github.url(),
            &self.telegram.url(),
            &self.llm.url(),
        )
    }

    /// Runs the world (and the GitHub twin's timestamps) on `clock`.
    pub fn set_clock(&mut self, clock: Clock) {
        let twin_clock = clock.clone();
        self.github
            .set_clock(std::sync::Arc::new(move || twin_clock.now()));
        self.clock = clock;
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// A fresh `App` on the world's state database (a restart makes a new one).
    pub fn app(&self) -> Result<App> {
        let services =
            Services::connect(&self.config, &self.secrets, RetryPolicy::FAST, &self.clock)?;
        let store = Store::open(&self.config.state.path)?;
        App::new(self.config.clone(), store, services, self.clock.clone())
    }

    /// Moves time forward by `by`, in steps of `step`, simulating the visitors
    /// of each step under the pages live at its start.
    pub fn advance(&mut self, by: Duration, step: Duration) {
        let end = self.now() + chrono::Duration::from_std(by).unwrap_or_default();
        while self.now() < end {
            let next = (self.now() + chrono::Duration::from_std(step).unwrap_or_default()).min(end);
            self.clock
                .advance((next - self.now()).to_std().unwrap_or_default());
            self.simulate_to(next);
        }
    }

    /// Simulates visitors up to the clock's now (for clocks that move by
    /// themselves, like the demo's).
    pub fn catch_up(&mut self) {
        let now = self.now();
        self.simulate_to(now);
    }

    fn simulate_to(&mut self, t: DateTime<Utc>) {
        if t > self.simulated_until {
            self.site
                .simulate(self.simulated_until, t, &self.github, &self.posthog);
            self.simulated_until = t;
        }
    }
}

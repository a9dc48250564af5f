//! The GitHub adapter as a GitHub App against the GitHub twin: the
//! installation found, tokens minted and renewed on the daemon's clock, a
//! refused token replaced, what GitHub says to a wrong key or a missing
//! installation, and the twin's JWT checks with GitHub's own texts.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use funnelfix::clock::Clock;
use funnelfix::github::GitHub;
use funnelfix::github_app::{self, AppCredentials, AppKey};
use funnelfix::retry::RetryPolicy;
use funnelfix::sandbox::github::GitHubTwin;
use funnelfix::sandbox::github_app::{self as twin_app, TwinApp};
use serde_json::{Value, json};

const KEY: &str = include_str!("fixtures/github_app_key.pem");
const OTHER_KEY: &str = include_str!("fixtures/github_app_other_key.pem");
const TOKEN: &str = "ghp_twin0123456789abcdefTOKEN";
const APP_ID: u64 = 1042;
const INSTALLATION: u64 = 77;
const BOT: &str = "funnelfix-acme[bot]";
const MINUTE: Duration = Duration::from_secs(60);

struct Ctx {
    twin: GitHubTwin,
    /// The twin's time (GitHub's).
    github_clock: Clock,
    /// The daemon's time; the same clock unless a test parts them.
    clock: Clock,
}

fn start_time() -> DateTime<Utc> {
    "2026-03-02T08:00:00Z".parse().expect("time")
}

fn key(pem: &str) -> AppKey {
    AppKey::from_pem(pem).expect("a test key")
}

async fn start(installed: bool) -> Ctx {
    let twin = GitHubTwin::start(
        "acme",
        "website",
        "main",
        &[("site/pricing.html", "<h1>Pricing</h1>\n")],
        TOKEN,
    )
    .await
    .expect("twin");
    twin.register_app(TwinApp {
        id: APP_ID,
        slug: "funnelfix-acme".into(),
        public_key_der: key(KEY).public_key_der(),
        installation_id: installed.then_some(INSTALLATION),
    });
    let clock = Clock::manual(start_time());
    let twin_clock = clock.clone();
    twin.set_clock(Arc::new(move || twin_clock.now()));
    Ctx {
        twin,
        github_clock: clock.clone(),
        clock,
    }
}

impl Ctx {
    fn adapter_with(&self, pem: &str, installation_id: Option<u64>) -> GitHub {
        let app = AppCredentials {
            app_id: APP_ID,
            key: key(pem),
            installation_id,
            key_source: "$GITHUB_APP_PRIVATE_KEY".into(),
        };
        GitHub::with_app(
            &self.twin.url(),
            app,
            "acme/website",
            "main",
            RetryPolicy::FAST,
            self.clock.clone(),
        )
        .expect("adapter")
    }

    fn adapter(&self) -> GitHub {
        self.adapter_with(KEY, None)
    }

    fn mints(&self) -> usize {
        self.twin.requests(
            "POST",
            &format!("/app/installations/{INSTALLATION}/access_tokens"),
        )
    }
}

#[tokio::test]
async fn an_app_finds_its_installation_and_acts_as_its_bot() {
    let ctx = start(true).await;
    let gh = ctx.adapter();
    let base = gh.base_head().await.expect("base");
    let changes = vec![(
        "site/pricing.html".to_string(),
        Some("<h1>Plans</h1>\n".to_string()),
    )];
    let sha = gh
        .commit_files(&base, "funnelfix/x", "Clearer headline", &changes)
        .await
        .expect("committed");
    let pr = gh
        .open_pr(
            "funnelfix/x",
            "Clearer headline",
            "Why.",
            &["funnelfix".into()],
        )
        .await
        .expect("opened");
    gh.comment(pr.number, "Kept.").await.expect("commented");
    assert_eq!(ctx.twin.commit_author(&sha).as_deref(), Some(BOT));
    let pulls = ctx.twin.pulls();
    assert_eq!(pulls[0].author, BOT);
    assert_eq!(pulls[0].labels, vec!["funnelfix".to_string()]);
    assert_eq!(
        ctx.twin.requests("GET", "/repos/acme/website/installation"),
        1
    );
    assert_eq!(ctx.mints(), 1, "one token for all of it");
}

#[tokio::test]
async fn a_configured_installation_is_not_looked_up() {
    let ctx = start(true).await;
    let gh = ctx.adapter_with(KEY, Some(INSTALLATION));
    gh.base_head().await.expect("base");
    assert_eq!(ctx.twin.requests("GET", "/installation"), 0);
    assert_eq!(ctx.mints(), 1);
}

#[tokio::test]
async fn tokens_are_renewed_on_the_daemons_clock_before_they_expire() {
    let ctx = start(true).await;
    let gh = ctx.adapter();
    gh.base_head().await.expect("first");
    ctx.clock.advance(54 * MINUTE);
    gh.base_head().await.expect("54 minutes on");
    assert_eq!(ctx.mints(), 1, "still valid for six minutes");
    ctx.clock.advance(2 * MINUTE);
    gh.base_head().await.expect("56 minutes on");
    assert_eq!(ctx.mints(), 2, "renewed with four minutes left");
    ctx.clock.advance(180 * MINUTE);
    gh.base_head().await.expect("hours later");
    assert_eq!(ctx.mints(), 3);
    assert_eq!(
        ctx.twin.expired_token_refusals(),
        0,
        "never sent an expired token"
    );
    assert_eq!(
        ctx.twin.requests("GET", "/installation"),
        1,
        "looked up once"
    );
}

#[tokio::test]
async fn a_token_github_refuses_is_replaced_and_the_request_sent_once_more() {
    let mut ctx = start(true).await;
    // The daemon's clock lags GitHub's by seven minutes: its JWTs still pass
    // (they live ten), but after an hour it believes its token has seven
    // minutes left when GitHub has let it expire.
    ctx.clock = Clock::manual(start_time() - chrono::Duration::minutes(7));
    let gh = ctx.adapter();
    let base = gh.base_head().await.expect("base");
    let changes = vec![(
        "site/pricing.html".to_string(),
        Some("<h1>New</h1>\n".to_string()),
    )];
    gh.commit_files(&base, "funnelfix/y", "Change", &changes)
        .await
        .expect("committed");
    ctx.github_clock.advance(60 * MINUTE);
    ctx.clock.advance(60 * MINUTE);
    gh.open_pr("funnelfix/y", "Change", "Why.", &[])
        .await
        .expect("opened on a new token");
    assert_eq!(ctx.twin.expired_token_refusals(), 1);
    assert_eq!(ctx.mints(), 2);
    assert_eq!(
        ctx.twin.requests("POST", "/pulls"),
        2,
        "the refused POST was sent again: GitHub had done nothing"
    );
    assert_eq!(ctx.twin.pulls().len(), 1);
}

#[tokio::test]
async fn a_wrong_key_is_named_without_quoting_it() {
    let ctx = start(true).await;
    let gh = ctx.adapter_with(OTHER_KEY, None);
    let text = format!("{:#}", gh.base_head().await.expect_err("refused"));
    assert_eq!(
        text,
        "GitHub refused the JWT of GitHub App 1042 (401 while finding GitHub App 1042's installation on acme/website): check github.app_id, that the key in $GITHUB_APP_PRIVATE_KEY is this App's, and this machine's clock (GitHub said \"A JSON web token could not be decoded\")"
    );
    assert_eq!(ctx.twin.installation_tokens().len(), 0);
}

#[tokio::test]
async fn an_app_not_installed_on_the_repository_is_named() {
    let ctx = start(false).await;
    let text = format!(
        "{:#}",
        ctx.adapter()
            .base_head()
            .await
            .expect_err("no installation")
    );
    assert!(
        text.starts_with("GitHub App 1042 is not installed on acme/website (404"),
        "{text}"
    );
    let gh = ctx.adapter_with(KEY, Some(5));
    let text = format!(
        "{:#}",
        gh.base_head().await.expect_err("no such installation")
    );
    assert!(
        text.starts_with("installation 5 of GitHub App 1042 not found (404"),
        "{text}"
    );
}

/// The twin's status and JSON for `method` on `path` with `bearer`.
async fn call(ctx: &Ctx, method: reqwest::Method, path: &str, bearer: &str) -> (u16, Value) {
    let answer = reqwest::Client::new()
        .request(method, format!("{}{path}", ctx.twin.url()))
        .bearer_auth(bearer)
        .send()
        .await
        .expect("answered");
    let status = answer.status().as_u16();
    (status, answer.json().await.expect("JSON"))
}

/// The twin's answer to a token request made with `bearer`.
async fn mint(ctx: &Ctx, bearer: &str) -> (u16, Value) {
    let path = format!("/app/installations/{INSTALLATION}/access_tokens");
    call(ctx, reqwest::Method::POST, &path, bearer).await
}

#[tokio::test]
async fn the_twin_checks_the_jwt_as_github_does() {
    let ctx = start(true).await;
    let now = start_time().timestamp();
    let app_key = key(KEY);
    let claims = |iat: i64, exp: i64| json!({"iat": iat, "exp": exp, "iss": APP_ID});
    let refused = [
        (
            github_app::sign_jwt(&app_key, &claims(now - 60, now + 600)),
            twin_app::EXP_TOO_FAR,
        ),
        (
            github_app::sign_jwt(&app_key, &claims(now - 700, now - 1)),
            twin_app::EXPIRED,
        ),
        (
            github_app::sign_jwt(&app_key, &claims(now + 120, now + 300)),
            twin_app::IAT_INVALID,
        ),
        (
            github_app::sign_jwt(&app_key, &json!({"iat": now, "exp": now + 60})),
            twin_app::ISS_INVALID,
        ),
        (
            github_app::sign_jwt(&app_key, &json!({"iat": now, "exp": now + 60, "iss": 7})),
            twin_app::UNDECODABLE,
        ),
        (
            github_app::jwt(APP_ID, &key(OTHER_KEY), start_time()),
            twin_app::UNDECODABLE,
        ),
        (TOKEN.to_string(), twin_app::UNDECODABLE),
        // HS256 over the same claims, "signed" with the public key: a classic forgery.
        (
            {
                let good = github_app::jwt(APP_ID, &app_key, start_time());
                let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
                parts[0] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9".into();
                parts.join(".")
            },
            twin_app::UNDECODABLE,
        ),
    ];
    for (jwt, message) in refused {
        let (status, body) = mint(&ctx, &jwt).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (401, Some(message)),
            "{jwt}"
        );
        assert_eq!(body["documentation_url"], "https://docs.github.com/rest");
    }
    assert!(ctx.twin.installation_tokens().is_empty());

    // A good one: a token shaped as octocrab reads it, expiring in an hour
    // of the twin's clock, that works like a token until then.
    let (status, body) = mint(&ctx, &github_app::jwt(APP_ID, &app_key, start_time())).await;
    assert_eq!(status, 201);
    let token: octocrab::models::InstallationToken =
        serde_json::from_value(body).expect("octocrab's shape");
    assert!(token.token.starts_with("ghs_") && token.token.len() == 40);
    assert_eq!(token.expires_at.as_deref(), Some("2026-03-02T09:00:00Z"));
    let main = "/repos/acme/website/git/ref/heads/main";
    assert_eq!(
        call(&ctx, reqwest::Method::GET, main, &token.token).await.0,
        200
    );
    ctx.github_clock.advance(60 * MINUTE);
    let (status, body) = call(&ctx, reqwest::Method::GET, main, &token.token).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("Bad credentials"))
    );
    assert_eq!(ctx.twin.expired_token_refusals(), 1);

    // The installation, as octocrab reads it.
    let jwt = github_app::jwt(APP_ID, &app_key, ctx.github_clock.now());
    let path = "/repos/acme/website/installation";
    let (status, body) = call(&ctx, reqwest::Method::GET, path, &jwt).await;
    assert_eq!(status, 200);
    assert_eq!(body["app_slug"], "funnelfix-acme");
    let installation: octocrab::models::Installation =
        serde_json::from_value(body).expect("octocrab's shape");
    assert_eq!(installation.id.0, INSTALLATION);
}

//! `funnelfix init` as a user runs it: the real binary against the PostHog
//! twin (saved insights in PostHog's JSON, both shapes) and the GitHub twin
//! (the site's files), then `check-config` and `funnel` on what it wrote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{Duration, Utc};
use funnelfix::sandbox::github::GitHubTwin;
use funnelfix::sandbox::posthog::{Event, PostHogTwin};
use serde_json::{Value, json};

const KEY: &str = "phx_init_test_key_5d1e";
const TOKEN: &str = "ghp_init0123456789abcdefTOKEN";
const PROJECT: &str = "5";

fn event(person: &str, name: &str, path: &str, at: chrono::DateTime<Utc>) -> Event {
    Event {
        person_id: person.into(),
        event: name.into(),
        timestamp: at,
        properties: BTreeMap::from([("$pathname".to_string(), path.to_string())]),
    }
}

/// 1000 visitors a few days ago: 600 see pricing, 300 start signup (on
/// /signup), 240 finish (on /welcome); clicks and page leaves around them.
fn traffic() -> Vec<Event> {
    // (visitors, event, path, minutes after arriving)
    const STEPS: [(i64, &str, &str, i64); 6] = [
        (1000, "$pageview", "/", 0),
        (1000, "$autocapture", "/", 0),
        (1000, "$pageleave", "/", 1),
        (600, "$pageview", "/pricing", 2),
        (300, "signup_started", "/signup", 3),
        (240, "signup_completed", "/welcome", 4),
    ];
    let start = Utc::now() - Duration::days(5);
    let mut events = Vec::new();
    for i in 0..1000 {
        let t = start + Duration::minutes(i);
        for (visitors, name, path, after) in STEPS {
            if i < visitors {
                events.push(event(
                    &format!("p{i}"),
                    name,
                    path,
                    t + Duration::minutes(after),
                ));
            }
        }
    }
    events
}

/// The signup funnel as the PostHog app saves it in the legacy shape, with
/// a filter funnelfix cannot express.
fn legacy_funnel() -> Value {
    json!({
        "name": "Signup flow",
        "derived_name": "Pageview → Pageview → signup_started → signup_completed",
        "filters": {
            "insight": "FUNNELS",
            "events": [
                {"id": "$pageview", "name": "$pageview", "type": "events", "order": 0,
                 "properties": [{"key": "$pathname", "value": ["/"], "operator": "exact", "type": "event"}]},
                {"id": "$pageview", "name": "$pageview", "type": "events", "order": 1,
                 "properties": [
                    {"key": "$pathname", "value": ["/pricing"], "operator": "exact", "type": "event"},
                    {"key": "$browser", "value": "Chrome", "operator": "icontains", "type": "event"}
                 ]},
                {"id": "signup_started", "name": "signup_started", "type": "events", "order": 2},
                {"id": "signup_completed", "name": "signup_completed", "type": "events", "order": 3,
                 "custom_name": "Completed signup"}
            ],
            "funnel_window_interval": 1,
            "funnel_window_interval_unit": "day",
            "funnel_viz_type": "steps",
            "date_from": "-30d"
        },
        "query": null
    })
}

/// The same funnel from pricing on, saved in the `query` shape.
fn query_funnel() -> Value {
    json!({
        "name": "Pricing to signup",
        "derived_name": null,
        "filters": {},
        "query": {"kind": "InsightVizNode", "source": {
            "kind": "FunnelsQuery",
            "series": [
                {"kind": "EventsNode", "event": "$pageview", "name": "$pageview", "custom_name": "Pricing",
                 "properties": [{"key": "$pathname", "value": ["/pricing"], "operator": "exact", "type": "event"}]},
                {"kind": "EventsNode", "event": "signup_started", "name": "signup_started"},
                {"kind": "EventsNode", "event": "signup_completed", "name": "signup_completed"}
            ],
            "funnelsFilter": {"funnelWindowInterval": 48, "funnelWindowIntervalUnit": "hour", "funnelVizType": "steps"},
            "dateRange": {"date_from": "-14d"}
        }}
    })
}

fn trends() -> Value {
    json!({
        "name": "Weekly pageviews",
        "filters": {},
        "query": {"kind": "InsightVizNode", "source": {
            "kind": "TrendsQuery",
            "series": [{"kind": "EventsNode", "event": "$pageview"}]
        }}
    })
}

struct Site {
    posthog: PostHogTwin,
    github: GitHubTwin,
    dir: tempfile::TempDir,
}

async fn site() -> Site {
    let posthog = PostHogTwin::start(PROJECT, KEY)
        .await
        .expect("PostHog twin");
    posthog.push_events(traffic());
    let files = [
        ("README.md", "# acme\n"),
        ("site/index.html", "<h1>Acme</h1>\n"),
        ("site/pricing.html", "<h1>Pricing</h1>\n"),
        ("site/signup.html", "<form></form>\n"),
        ("site/welcome.html", "<p>Welcome</p>\n"),
    ];
    let github = GitHubTwin::start("acme", "website", "main", &files, TOKEN)
        .await
        .expect("GitHub twin");
    Site {
        posthog,
        github,
        dir: tempfile::tempdir().expect("dir"),
    }
}

impl Site {
    fn config(&self) -> PathBuf {
        self.dir.path().join("funnelfix.toml")
    }

    /// `funnelfix -c <dir>/funnelfix.toml ARGS`, with every secret set.
    async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_funnelfix"));
        cmd.current_dir(self.dir.path())
            .arg("-c")
            .arg(self.config())
            .args(args)
            .env("POSTHOG_API_KEY", KEY)
            .env("GITHUB_TOKEN", TOKEN)
            .env("TELEGRAM_BOT_TOKEN", "123:telegram")
            .env("OPENAI_API_KEY", "sk-test")
            .env_remove("FUNNELFIX_CONFIG")
            .env_remove("RUST_LOG");
        tokio::task::spawn_blocking(move || cmd.output().expect("the binary runs"))
            .await
            .expect("joined")
    }

    async fn init(&self, extra: &[&str]) -> Output {
        self.init_for("acme/website", extra).await
    }

    async fn init_for(&self, repo: &str, extra: &[&str]) -> Output {
        let posthog = self.posthog.url();
        let github = self.github.url();
        let mut args = vec![
            "init",
            "--posthog-host",
            &posthog,
            "--project-id",
            PROJECT,
            "--repo",
            repo,
            "--github-api-url",
            &github,
        ];
        args.extend_from_slice(extra);
        self.run(&args).await
    }

    fn written(&self) -> String {
        std::fs::read_to_string(self.config()).expect("the draft was written")
    }
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_draft_passes_check_config_and_funnel_runs_on_it() {
    let site = site().await;
    let saved = site.posthog.save_insight(legacy_funnel());
    site.posthog.save_insight(query_funnel());
    let id = saved["id"].to_string();

    let out = site.init(&["--insight", &id]).await;
    assert_ok(&out);
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!(
            "wrote {}: funnel \"signup-flow\" with 4 steps from the saved funnel {id} \"Signup flow\"",
            site.config().display()
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("still to do"), "{stdout}");
    let draft = site.written();
    for line in [
        format!("host = {:?}", site.posthog.url()),
        "project_id = \"5\"".to_string(),
        format!("api_url = {:?}", site.github.url()),
        "repo = \"acme/website\"".to_string(),
        "allowed_paths = [\"site/**\"]".to_string(),
        "conversion_window = \"1d\"".to_string(),
        "  filters = { \"$pathname\" = \"/pricing\" }".to_string(),
        // The pages: from the filters, and from where the custom event is sent.
        "  files = [\"site/index.html\"]        # guessed from /: confirm".to_string(),
        "  files = [\"site/pricing.html\"]      # guessed from /pricing: confirm".to_string(),
        "  files = [\"site/signup.html\"]       # guessed: signup_started is sent from /signup most: confirm".to_string(),
        "  name = \"Completed signup\"".to_string(),
        // The filter it cannot express is listed, not lost.
        "#   - step 2: $browser icontains \"Chrome\" (operator \"icontains\"; only \"exact\" (equals) can be expressed)".to_string(),
    ] {
        assert!(draft.contains(&line), "{line}\n---\n{draft}");
    }
    assert!(!draft.contains(KEY) && !draft.contains(TOKEN));
    assert_eq!(site.github.requests("GET", "/git/trees/main"), 1);

    let out = site.run(&["check-config"]).await;
    assert_ok(&out);
    assert!(
        text(&out.stdout).contains(": ok (1 funnel(s)"),
        "{}",
        text(&out.stdout)
    );

    let out = site.run(&["funnel", "--json"]).await;
    assert_ok(&out);
    let reports: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(reports[0]["funnel"], "signup-flow");
    assert_eq!(
        reports[0]["counts"],
        json!({"entries": [1000, 600, 300, 240], "converted": [600, 300, 240]})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_shaped_funnel_is_found_by_its_short_id_on_a_later_page() {
    let site = site().await;
    site.posthog.save_insight(legacy_funnel());
    site.posthog.save_insight(trends());
    let saved = site.posthog.save_insight(query_funnel());
    // One insight a page: the query funnel is on the second.
    site.posthog.set_max_page(1);
    let short_id = saved["short_id"].as_str().expect("a short id").to_string();

    let out = site.init(&["--insight", &short_id]).await;
    assert_ok(&out);
    assert_eq!(site.posthog.insight_requests(), 2);
    let draft = site.written();
    for line in [
        "name = \"pricing-to-signup\"",
        "conversion_window = \"2d\"",
        "  name = \"Pricing\"",
        "  files = [\"site/pricing.html\"]      # guessed from /pricing: confirm",
        "  files = [\"site/signup.html\"]       # guessed: signup_started is sent from /signup most: confirm",
    ] {
        assert!(draft.contains(line), "{line}\n---\n{draft}");
    }
    assert!(!draft.contains("Not carried over"), "{draft}");

    let out = site.run(&["check-config"]).await;
    assert_ok(&out);
    let out = site.run(&["funnel", "--json"]).await;
    assert_ok(&out);
    let reports: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(
        reports[0]["counts"],
        json!({"entries": [600, 300, 240], "converted": [300, 240]})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn several_funnels_and_no_terminal_are_listed_and_nothing_is_written() {
    let site = site().await;
    let a = site.posthog.save_insight(legacy_funnel());
    let b = site.posthog.save_insight(query_funnel());
    let out = site.init(&[]).await;
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout,
        format!(
            "Saved funnels in PostHog project 5:\n  1. Signup flow (id {}, short id {})\n  2. Pricing to signup (id {}, short id {})\n",
            a["id"],
            a["short_id"].as_str().unwrap_or_default(),
            b["id"],
            b["short_id"].as_str().unwrap_or_default()
        )
    );
    assert_eq!(
        text(&out.stderr).trim(),
        "2 saved funnels in PostHog project 5: choose one with --insight ID (an id or short id listed above)"
    );
    assert!(!site.config().exists());

    let out = site.init(&["--insight", "nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "error: no saved funnel with id or short id \"nope\" in PostHog project 5; its saved funnels: "
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_project_without_a_saved_funnel_gets_its_top_pages_and_events() {
    let site = site().await;
    site.posthog.save_insight(trends());
    // Explored in the app but never saved: not a saved funnel.
    let mut unsaved = legacy_funnel();
    unsaved["saved"] = json!(false);
    site.posthog.save_insight(unsaved);

    let out = site.init(&[]).await;
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    insta::assert_snapshot!(stdout, @r"
    PostHog project 5 has no saved funnel. Its most viewed pages and custom events of the last 30 days, to build one from:

      page ($pageview $pathname)                   views
      /                                             1000
      /pricing                                       600

      custom event                                 count   sent most from
      signup_started                                 300   /signup
      signup_completed                               240   /welcome
    ");
    assert_eq!(
        text(&out.stderr).trim(),
        "no saved funnel in PostHog project 5: save one (Product analytics → New insight → Funnel) from the events above, then run funnelfix init again; nothing written"
    );
    assert!(!site.config().exists());
    // One HogQL query, with its values as placeholders.
    let queries = site.posthog.queries();
    assert_eq!(queries.len(), 1);
    let values = &queries[0]["query"]["values"];
    assert_eq!(values["pageview"], "$pageview");
    assert!(
        !queries[0]["query"]["query"]
            .as_str()
            .unwrap_or_default()
            .contains("'$")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_file_is_not_overwritten_without_force() {
    let site = site().await;
    site.posthog.save_insight(legacy_funnel());
    std::fs::write(site.config(), "# mine\n").expect("written");

    let out = site.init(&[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        format!(
            "error: {} already exists: funnelfix init does not overwrite it; use --force, or -c to write elsewhere",
            site.config().display()
        )
    );
    assert_eq!(site.written(), "# mine\n");
    // Refused before asking anything.
    assert_eq!(site.posthog.insight_requests(), 0);

    let out = site.init(&["--force"]).await;
    assert_ok(&out);
    assert!(site.written().contains("name = \"signup-flow\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_secrets_and_a_bad_key_are_one_line_each() {
    let site = site().await;
    site.posthog.save_insight(legacy_funnel());
    let posthog = site.posthog.url();
    let out = tokio::task::spawn_blocking({
        let config = site.config();
        move || {
            Command::new(env!("CARGO_BIN_EXE_funnelfix"))
                .args(["-c"])
                .arg(&config)
                .args(["init", "--posthog-host", &posthog])
                .args(["--project-id", PROJECT, "--repo", "acme/website"])
                .env_remove("POSTHOG_API_KEY")
                .env_remove("RUST_LOG")
                .output()
                .expect("runs")
        }
    })
    .await
    .expect("joined");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: environment variable POSTHOG_API_KEY is not set: a PostHog personal API key with the scopes insight:read and query:read"
    );

    let wrong = PostHogTwin::start(PROJECT, "phx_other")
        .await
        .expect("twin");
    let other = Site {
        posthog: wrong,
        github: site.github,
        dir: site.dir,
    };
    let out = other.init(&[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: PostHog refused the key in $POSTHOG_API_KEY (401): check it is a personal API key"
    );
    assert!(!Path::new(&other.config()).exists());

    let posthog = other.posthog.url();
    let out = other
        .run(&["init", "--posthog-host", &posthog, "--project-id", PROJECT])
        .await;
    assert_eq!(out.status.code(), Some(2), "clap: --repo is required");
    let out = other.init_for("website", &[]).await;
    assert_eq!(
        text(&out.stderr).trim(),
        "error: the GitHub repository must be written owner/name, got \"website\""
    );
    assert_eq!(other.posthog.insight_requests(), 1, "none for the bad repo");
}

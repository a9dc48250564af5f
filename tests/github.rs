//! The GitHub adapter against the GitHub twin: reading files, committing
//! through the Git Data API, pull requests from open to merged or closed,
//! changes made by people on GitHub, and the retry rules (reads retried on
//! 5xx, creating POSTs never re-sent blindly, rate limits waited out).

use std::time::{Duration, Instant};

use funnelfix::config::MergeMethod;
use funnelfix::github::{Checks, GitHub, MergeOutcome, PrState, PullRequest};
use funnelfix::retry::RetryPolicy;
use funnelfix::sandbox::github::{
    CommitStatus, Deployment, DeploymentStatus, GitHubTwin, PreviewDeployer,
};
use secrecy::SecretString;

const TOKEN: &str = "ghp_twin0123456789abcdefTOKEN";
const TOKEN_ENV: &str = "GITHUB_TOKEN";
const OWNER: &str = "acme";
const REPO: &str = "website";
const INDEX: &str = "<html>\n<body>\n<h1>Welcome</h1>\n<a href=\"/signup\">Start free — no card</a>\n</body>\n</html>\n";
const PRICING: &str =
    "<html>\n<body>\n<h1>Pricing</h1>\n<p>Plans for every team.</p>\n</body>\n</html>\n";
const README: &str = "# acme website\n";

struct Ctx {
    twin: GitHubTwin,
    gh: GitHub,
}

async fn start() -> Ctx {
    let files = [
        ("site/index.html", INDEX),
        ("site/pricing.html", PRICING),
        ("README.md", README),
    ];
    let twin = GitHubTwin::start(OWNER, REPO, "main", &files, TOKEN)
        .await
        .unwrap();
    let gh = adapter(&twin, TOKEN, &format!("{OWNER}/{REPO}"));
    Ctx { twin, gh }
}

fn adapter(twin: &GitHubTwin, token: &str, repo: &str) -> GitHub {
    GitHub::new(
        &twin.url(),
        SecretString::from(token.to_string()),
        TOKEN_ENV,
        repo,
        "main",
        RetryPolicy::FAST,
    )
    .unwrap()
}

impl Ctx {
    /// A branch with the pricing page changed, on top of main; returns its sha.
    async fn propose(&self, branch: &str, pricing: &str) -> String {
        let base = self.gh.base_head().await.unwrap();
        let changes = vec![("site/pricing.html".to_string(), Some(pricing.to_string()))];
        self.gh
            .commit_files(&base, branch, "Clearer pricing headline", &changes)
            .await
            .unwrap()
    }

    async fn open(&self, branch: &str, pricing: &str) -> PullRequest {
        self.propose(branch, pricing).await;
        self.gh
            .open_pr(
                branch,
                "Clearer pricing headline",
                "Step 2 converts worst.",
                &["funnelfix".to_string()],
            )
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn reads_files_at_a_commit_and_none_for_absent_ones() {
    let ctx = start().await;
    let head = ctx.gh.base_head().await.unwrap();
    assert_eq!(head.len(), 40);
    let paths = vec![
        "site/index.html".to_string(),
        "site/gone.html".to_string(),
        "README.md".to_string(),
    ];
    let files = ctx.gh.read_files(&head, &paths).await.unwrap();
    assert_eq!(files["site/index.html"].as_deref(), Some(INDEX));
    assert_eq!(files["site/gone.html"], None);
    assert_eq!(files["README.md"].as_deref(), Some(README));
    assert_eq!(ctx.twin.write_requests(), 0);
}

#[tokio::test]
async fn commit_files_makes_a_branch_that_differs_only_in_the_changed_paths() {
    let ctx = start().await;
    let base = ctx.gh.base_head().await.unwrap();
    let changes = vec![
        (
            "site/index.html".to_string(),
            Some(INDEX.replace("Welcome", "Ship faster")),
        ),
        ("site/pricing.html".to_string(), None),
        (
            "site/new.html".to_string(),
            Some("<p>new</p>\n".to_string()),
        ),
    ];
    let sha = ctx
        .gh
        .commit_files(&base, "funnelfix/step-2", "Sharper headline", &changes)
        .await
        .unwrap();

    let branch = "funnelfix/step-2";
    assert_eq!(ctx.gh.branch_head(branch).await.unwrap(), Some(sha.clone()));
    assert_eq!(
        ctx.twin.file_on_branch(branch, "site/index.html"),
        Some(INDEX.replace("Welcome", "Ship faster"))
    );
    assert_eq!(ctx.twin.file_on_branch(branch, "site/pricing.html"), None);
    assert_eq!(
        ctx.twin.file_on_branch(branch, "site/new.html").as_deref(),
        Some("<p>new</p>\n")
    );
    assert_eq!(
        ctx.twin.file_on_branch(branch, "README.md").as_deref(),
        Some(README)
    );
    // main is untouched, and the new commit sits on top of it.
    assert_eq!(
        ctx.twin
            .file_on_branch("main", "site/pricing.html")
            .as_deref(),
        Some(PRICING)
    );
    assert_eq!(ctx.gh.base_head().await.unwrap(), base);
    assert_eq!(ctx.gh.commit_parent(&sha).await.unwrap(), base);
    // Reading back through the adapter at the new commit agrees.
    let files = ctx
        .gh
        .read_files(
            &sha,
            &["site/pricing.html".to_string(), "site/new.html".to_string()],
        )
        .await
        .unwrap();
    assert_eq!(files["site/pricing.html"], None);
    assert_eq!(files["site/new.html"].as_deref(), Some("<p>new</p>\n"));
}

#[tokio::test]
async fn commit_files_onto_an_existing_branch_fails_clearly() {
    let ctx = start().await;
    ctx.propose("funnelfix/dup", "<p>one</p>\n").await;
    let base = ctx.gh.base_head().await.unwrap();
    let changes = vec![("README.md".to_string(), Some("two\n".to_string()))];
    let err = ctx
        .gh
        .commit_files(&base, "funnelfix/dup", "again", &changes)
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("funnelfix/dup already exists in acme/website"),
        "{text}"
    );
    assert_eq!(
        ctx.twin
            .file_on_branch("funnelfix/dup", "site/pricing.html")
            .as_deref(),
        Some("<p>one</p>\n")
    );
}

#[tokio::test]
async fn file_paths_lists_every_file_of_the_branch_and_no_directory() {
    let ctx = start().await;
    let listed = ctx.gh.file_paths("main").await.unwrap();
    assert_eq!(
        listed.paths,
        vec!["README.md", "site/index.html", "site/pricing.html"]
    );
    assert!(!listed.truncated);
    assert_eq!(ctx.twin.requests("GET", "/git/trees/main"), 1);
    let err = ctx.gh.file_paths("gh-pages").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the branch gh-pages does not exist in acme/website"
    );
}

#[tokio::test]
async fn branch_head_is_none_for_a_missing_branch() {
    let ctx = start().await;
    assert_eq!(ctx.gh.branch_head("funnelfix/none").await.unwrap(), None);
}

#[tokio::test]
async fn open_pr_labels_it_and_find_pr_finds_it_by_branch() {
    let ctx = start().await;
    // Another PR first: a lookup that dropped the owner would find it instead.
    let other = ctx.open("funnelfix/other", "<p>other</p>\n").await;
    let head = ctx.propose("funnelfix/step-2", "<p>pricing</p>\n").await;
    let pr = ctx
        .gh
        .open_pr(
            "funnelfix/step-2",
            "Clearer pricing",
            "Why: step 2 is worst.",
            &["funnelfix".to_string(), "experiment".to_string()],
        )
        .await
        .unwrap();
    assert_eq!(pr.state, PrState::Open);
    assert_eq!(pr.head_sha, head);
    assert_eq!(pr.merge_commit_sha, None);
    assert_eq!(
        pr.url,
        format!("{}/acme/website/pull/{}", ctx.twin.url(), pr.number)
    );

    let pulls = ctx.twin.pulls();
    let twin_pr = pulls.iter().find(|p| p.number == pr.number).unwrap();
    assert_eq!(twin_pr.labels, vec!["funnelfix", "experiment"]);
    assert_eq!(twin_pr.base, "main");
    assert_eq!(twin_pr.head, "funnelfix/step-2");
    assert_eq!(twin_pr.title, "Clearer pricing");
    assert_eq!(twin_pr.body, "Why: step 2 is worst.");

    assert_eq!(
        ctx.gh.find_pr("funnelfix/step-2").await.unwrap(),
        Some(pr.clone())
    );
    assert_eq!(
        ctx.gh.find_pr("funnelfix/other").await.unwrap(),
        Some(other)
    );
    assert_eq!(ctx.gh.find_pr("funnelfix/missing").await.unwrap(), None);
}

#[tokio::test]
async fn find_pr_prefers_the_open_pr_over_an_older_closed_one() {
    let ctx = start().await;
    let first = ctx.open("funnelfix/again", "<p>v1</p>\n").await;
    ctx.gh.close_pr(first.number).await.unwrap();
    let second = ctx
        .gh
        .open_pr("funnelfix/again", "Retry", "", &[])
        .await
        .unwrap();
    assert_ne!(first.number, second.number);
    assert_eq!(
        ctx.gh.find_pr("funnelfix/again").await.unwrap(),
        Some(second)
    );
}

#[tokio::test]
async fn opening_a_second_pr_for_the_same_branch_is_refused_with_githubs_message() {
    let ctx = start().await;
    ctx.open("funnelfix/once", "<p>v1</p>\n").await;
    let err = ctx
        .gh
        .open_pr("funnelfix/once", "Again", "", &[])
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("422")
            && text.contains("A pull request already exists for acme:funnelfix/once"),
        "{text}"
    );
    assert_eq!(ctx.twin.pulls().len(), 1);
}

#[tokio::test]
async fn merge_with_the_approved_sha_puts_the_change_on_main() {
    let ctx = start().await;
    let old_main = ctx.gh.base_head().await.unwrap();
    let pr = ctx.open("funnelfix/step-2", "<p>new pricing</p>\n").await;
    let outcome = ctx
        .gh
        .merge(
            pr.number,
            &pr.head_sha,
            MergeMethod::Squash,
            "Clearer pricing (#1)",
        )
        .await
        .unwrap();
    let MergeOutcome::Merged { sha } = outcome else {
        panic!("expected a merge, got {outcome:?}");
    };
    assert_eq!(
        ctx.twin
            .file_on_branch("main", "site/pricing.html")
            .as_deref(),
        Some("<p>new pricing</p>\n")
    );
    assert_eq!(
        ctx.twin
            .file_on_branch("main", "site/index.html")
            .as_deref(),
        Some(INDEX)
    );
    assert_eq!(ctx.gh.base_head().await.unwrap(), sha);
    assert_eq!(ctx.gh.commit_parent(&sha).await.unwrap(), old_main);
    assert_eq!(ctx.twin.merged_head(pr.number), Some(pr.head_sha.clone()));

    let now = ctx.gh.pull_request(pr.number).await.unwrap();
    assert_eq!(now.state, PrState::Merged);
    assert_eq!(now.merge_commit_sha, Some(sha.clone()));
    // The list endpoint has no `merged` field: merged_at says it.
    let found = ctx.gh.find_pr("funnelfix/step-2").await.unwrap().unwrap();
    assert_eq!(found.state, PrState::Merged);
    assert_eq!(found.merge_commit_sha, Some(sha));
}

#[tokio::test]
async fn merge_with_an_old_sha_is_head_moved_and_merges_nothing() {
    let ctx = start().await;
    let main_before = ctx.gh.base_head().await.unwrap();
    let pr = ctx.open("funnelfix/step-2", "<p>approved</p>\n").await;
    let pushed =
        ctx.twin
            .push_to_branch("funnelfix/step-2", "site/pricing.html", "<p>sneaky</p>\n");
    assert_eq!(
        ctx.gh.pull_request(pr.number).await.unwrap().head_sha,
        pushed
    );

    let outcome = ctx
        .gh
        .merge(pr.number, &pr.head_sha, MergeMethod::Squash, "t")
        .await
        .unwrap();
    assert_eq!(outcome, MergeOutcome::HeadMoved);
    assert_eq!(ctx.twin.merge_requests(), 1);
    assert_eq!(ctx.twin.merged_head(pr.number), None);
    assert_eq!(ctx.gh.base_head().await.unwrap(), main_before);
    assert_eq!(
        ctx.gh.pull_request(pr.number).await.unwrap().state,
        PrState::Open
    );
}

#[tokio::test]
async fn an_unmergeable_pr_is_not_mergeable_with_githubs_message() {
    let ctx = start().await;
    let pr = ctx.open("funnelfix/step-2", "<p>x</p>\n").await;
    ctx.twin.set_mergeable(pr.number, false);
    let outcome = ctx
        .gh
        .merge(pr.number, &pr.head_sha, MergeMethod::Squash, "t")
        .await
        .unwrap();
    assert_eq!(
        outcome,
        MergeOutcome::NotMergeable("Pull Request is not mergeable".to_string())
    );
    assert_eq!(
        ctx.twin
            .file_on_branch("main", "site/pricing.html")
            .as_deref(),
        Some(PRICING)
    );
}

#[tokio::test]
async fn main_moving_elsewhere_still_merges_but_a_conflict_does_not() {
    let ctx = start().await;
    let pr = ctx.open("funnelfix/step-2", "<p>ours</p>\n").await;
    // A person changes another file on main: both changes end up there.
    ctx.twin.push_to_branch("main", "README.md", "# renamed\n");
    let outcome = ctx
        .gh
        .merge(pr.number, &pr.head_sha, MergeMethod::Squash, "t")
        .await
        .unwrap();
    assert!(
        matches!(outcome, MergeOutcome::Merged { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        ctx.twin.file_on_branch("main", "README.md").as_deref(),
        Some("# renamed\n")
    );
    assert_eq!(
        ctx.twin
            .file_on_branch("main", "site/pricing.html")
            .as_deref(),
        Some("<p>ours</p>\n")
    );

    // The same file changed on both sides is a conflict.
    let pr = ctx.open("funnelfix/step-3", "<p>ours again</p>\n").await;
    ctx.twin
        .push_to_branch("main", "site/pricing.html", "<p>theirs</p>\n");
    let outcome = ctx
        .gh
        .merge(pr.number, &pr.head_sha, MergeMethod::Squash, "t")
        .await
        .unwrap();
    assert!(
        matches!(outcome, MergeOutcome::NotMergeable(_)),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn close_and_delete_branch() {
    let ctx = start().await;
    let pr = ctx.open("funnelfix/step-2", "<p>x</p>\n").await;
    ctx.gh.close_pr(pr.number).await.unwrap();
    assert_eq!(
        ctx.gh.pull_request(pr.number).await.unwrap().state,
        PrState::Closed
    );
    assert_eq!(
        ctx.twin.pulls()[0].state,
        funnelfix::sandbox::github::PullState::Closed
    );

    ctx.gh.delete_branch("funnelfix/step-2").await.unwrap();
    assert_eq!(ctx.twin.branches(), vec!["main".to_string()]);
    assert_eq!(ctx.gh.branch_head("funnelfix/step-2").await.unwrap(), None);
    // Already gone is fine.
    ctx.gh.delete_branch("funnelfix/step-2").await.unwrap();
}

#[tokio::test]
async fn comments_reach_the_pr() {
    let ctx = start().await;
    let pr = ctx.open("funnelfix/step-2", "<p>x</p>\n").await;
    ctx.gh
        .comment(pr.number, "Approved in Telegram by @ana.")
        .await
        .unwrap();
    assert_eq!(
        ctx.twin.pulls()[0].comments,
        vec!["Approved in Telegram by @ana.".to_string()]
    );
}

#[tokio::test]
async fn a_person_merging_or_closing_on_github_is_seen() {
    let ctx = start().await;
    let merged = ctx.open("funnelfix/a", "<p>a</p>\n").await;
    let closed = ctx.open("funnelfix/b", "<p>b</p>\n").await;
    let sha = ctx.twin.merge_by_human(merged.number);
    ctx.twin.close_by_human(closed.number);

    let now = ctx.gh.pull_request(merged.number).await.unwrap();
    assert_eq!(now.state, PrState::Merged);
    assert_eq!(now.merge_commit_sha, Some(sha.clone()));
    assert_eq!(ctx.gh.base_head().await.unwrap(), sha);
    assert_eq!(
        ctx.gh.pull_request(closed.number).await.unwrap().state,
        PrState::Closed
    );
    // Merging a PR a person already merged is refused, not repeated.
    let outcome = ctx
        .gh
        .merge(merged.number, &merged.head_sha, MergeMethod::Squash, "t")
        .await
        .unwrap();
    assert!(
        matches!(outcome, MergeOutcome::NotMergeable(_)),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_502_on_a_read_is_retried_then_succeeds() {
    let ctx = start().await;
    ctx.twin.fail_next("/git/ref/heads/main", 502, 2);
    let head = ctx.gh.base_head().await.unwrap();
    assert_eq!(head.len(), 40);
    assert_eq!(ctx.twin.requests("GET", "/git/ref/heads/main"), 3);
}

#[tokio::test]
async fn a_read_failing_every_time_gives_up_after_the_policys_tries() {
    let ctx = start().await;
    ctx.twin.fail_next("/pulls/", 503, 100);
    let err = ctx.gh.pull_request(1).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("503") && text.contains("after 4 tries"),
        "{text}"
    );
    assert_eq!(
        ctx.twin.requests("GET", "/pulls/1"),
        RetryPolicy::FAST.max_attempts as usize
    );
}

#[tokio::test]
async fn a_502_on_post_pulls_is_not_sent_again() {
    let ctx = start().await;
    ctx.propose("funnelfix/step-2", "<p>x</p>\n").await;
    let writes_before = ctx.twin.write_requests();
    ctx.twin.fail_next("/pulls", 502, 1);
    let err = ctx
        .gh
        .open_pr("funnelfix/step-2", "t", "b", &[])
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("502"), "{text}");
    assert!(!text.contains('\n'), "{text}");
    assert_eq!(ctx.twin.requests("POST", "/pulls"), 1);
    assert_eq!(ctx.twin.write_requests(), writes_before + 1);
    assert!(ctx.twin.pulls().is_empty());
}

#[tokio::test]
async fn a_secondary_rate_limit_on_post_pulls_is_waited_out_and_retried() {
    let ctx = start().await;
    ctx.propose("funnelfix/step-2", "<p>x</p>\n").await;
    ctx.twin.fail_next("/pulls", 403, 1);
    let started = Instant::now();
    let pr = ctx
        .gh
        .open_pr("funnelfix/step-2", "t", "b", &["funnelfix".to_string()])
        .await
        .unwrap();
    // retry-after: 1 asks a second; the FAST policy caps the wait.
    assert!(started.elapsed() >= RetryPolicy::FAST.max_delay);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(ctx.twin.requests("POST", "/pulls"), 2);
    assert_eq!(ctx.twin.pulls().len(), 1);
    assert_eq!(ctx.twin.pulls()[0].number, pr.number);
    assert_eq!(ctx.twin.pulls()[0].labels, vec!["funnelfix"]);
}

#[tokio::test]
async fn a_429_on_a_blob_is_retried_and_the_commit_completes() {
    let ctx = start().await;
    ctx.twin.fail_next("/git/blobs", 429, 1);
    let sha = ctx.propose("funnelfix/step-2", "<p>x</p>\n").await;
    assert_eq!(ctx.twin.requests("POST", "/git/blobs"), 2);
    assert_eq!(
        ctx.gh.branch_head("funnelfix/step-2").await.unwrap(),
        Some(sha)
    );
}

#[tokio::test]
async fn a_bad_token_is_a_clear_401_naming_the_variable_not_the_token() {
    let ctx = start().await;
    let wrong = "ghp_wrongWRONGwrong42";
    let gh = adapter(&ctx.twin, wrong, "acme/website");
    let err = gh.base_head().await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("401"), "{text}");
    assert!(text.contains("$GITHUB_TOKEN"), "{text}");
    assert!(!text.contains(wrong) && !text.contains(TOKEN), "{text}");
    // Refused, not retried.
    assert_eq!(ctx.twin.requests("GET", "/git/ref/heads/main"), 1);
}

#[tokio::test]
async fn a_repository_the_token_cannot_see_is_named() {
    let ctx = start().await;
    let gh = adapter(&ctx.twin, TOKEN, "acme/secret");
    let err = gh.base_head().await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("repository acme/secret not found or not visible to the token"),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_base_branch_is_named() {
    let ctx = start().await;
    let gh = GitHub::new(
        &ctx.twin.url(),
        SecretString::from(TOKEN.to_string()),
        TOKEN_ENV,
        "acme/website",
        "trunk",
        RetryPolicy::FAST,
    )
    .unwrap();
    let text = format!("{:#}", gh.base_head().await.unwrap_err());
    assert!(text.contains("base branch trunk does not exist"), "{text}");
}

#[tokio::test]
async fn a_malformed_repo_or_token_is_refused_at_construction() {
    let new = |repo: &str, token: &str| {
        GitHub::new(
            "https://api.github.com",
            SecretString::from(token.to_string()),
            TOKEN_ENV,
            repo,
            "main",
            RetryPolicy::FAST,
        )
        .err()
        .map(|e| format!("{e:#}"))
    };
    assert!(new("acme", TOKEN).unwrap().contains("owner/name"));
    assert!(new("acme/website", "").unwrap().contains("$GITHUB_TOKEN"));
    let text = new("acme/website", "ghp_has a space").unwrap();
    assert!(!text.contains("ghp_has"), "{text}");
    assert!(new("acme/website", TOKEN).is_none());
}

#[test]
fn outside_a_runtime_construction_is_an_error_not_a_panic() {
    let err = GitHub::new(
        "https://api.github.com",
        SecretString::from(TOKEN.to_string()),
        TOKEN_ENV,
        "acme/website",
        "main",
        RetryPolicy::FAST,
    )
    .err()
    .map(|e| format!("{e:#}"));
    assert!(err.unwrap().contains("Tokio runtime"));
}

/// The twin's JSON is what octocrab's own models expect from GitHub.
#[tokio::test]
async fn the_twins_json_deserializes_into_octocrabs_models() {
    use octocrab::params::repos::Reference;
    let ctx = start().await;
    let pr = ctx.open("funnelfix/step-2", "<p>x</p>\n").await;
    ctx.gh.comment(pr.number, "hello").await.unwrap();
    let octo = octocrab::Octocrab::builder()
        .base_uri(ctx.twin.url())
        .unwrap()
        .personal_token(TOKEN.to_string())
        .build()
        .unwrap();
    let pulls = octo.pulls(OWNER, REPO);

    let full = pulls.get(pr.number).await.unwrap();
    assert_eq!(full.head.ref_field, "funnelfix/step-2");
    assert_eq!(full.head.sha, pr.head_sha);
    assert_eq!(full.base.ref_field, "main");
    assert_eq!(full.merged, Some(false));
    assert_eq!(full.mergeable, Some(true));
    assert_eq!(full.labels.unwrap()[0].name, "funnelfix");

    let page = pulls
        .list()
        .state(octocrab::params::State::All)
        .head(format!("{OWNER}:funnelfix/step-2"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].merged, None);

    let merge = pulls
        .merge(pr.number)
        .sha(pr.head_sha.clone())
        .method(octocrab::params::pulls::MergeMethod::Squash)
        .send()
        .await
        .unwrap();
    assert!(merge.merged);

    let repos = octo.repos(OWNER, REPO);
    assert_eq!(repos.get().await.unwrap().name, REPO);
    let main = repos
        .get_ref(&Reference::Branch("main".to_string()))
        .await
        .unwrap();
    let octocrab::models::repos::Object::Commit { sha, .. } = main.object else {
        panic!("a branch points at a commit");
    };
    assert_eq!(Some(sha), merge.sha);
    let mut content = repos
        .get_content()
        .path("site/index.html")
        .r#ref("main")
        .send()
        .await
        .unwrap();
    let items = content.take_items();
    assert_eq!(items[0].decoded_content().as_deref(), Some(INDEX));
    let listing = repos
        .get_content()
        .path("site")
        .send()
        .await
        .unwrap()
        .take_items();
    let names: Vec<&str> = listing.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["index.html", "pricing.html"]);
    let root = repos.get_content().send().await.unwrap().take_items();
    let kinds: Vec<(&str, &str)> = root
        .iter()
        .map(|c| (c.name.as_str(), c.r#type.as_str()))
        .collect();
    assert_eq!(kinds, [("README.md", "file"), ("site", "dir")]);

    let comment = octo
        .issues(OWNER, REPO)
        .create_comment(pr.number, "from octocrab")
        .await
        .unwrap();
    assert_eq!(comment.body.as_deref(), Some("from octocrab"));
    let labels = octo
        .issues(OWNER, REPO)
        .add_labels(pr.number, &["shipped".to_string()])
        .await
        .unwrap();
    assert_eq!(labels.len(), 2);
}

/// A server that accepts connections and never answers.
async fn silent_server() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

#[tokio::test]
async fn a_read_that_never_answers_times_out_and_is_retried() {
    let (_listener, url) = silent_server().await;
    let policy = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        timeout: Duration::from_millis(100),
    };
    let gh = GitHub::new(
        &url,
        SecretString::from(TOKEN.to_string()),
        TOKEN_ENV,
        "acme/website",
        "main",
        policy,
    )
    .unwrap();
    let started = Instant::now();
    let text = format!("{:#}", gh.base_head().await.unwrap_err());
    assert!(started.elapsed() >= Duration::from_millis(200), "{text}");
    assert!(
        text.contains("did not answer") && text.contains("try 2 of 2"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unreachable_github_is_one_clear_line() {
    let url = {
        let (listener, url) = silent_server().await;
        drop(listener);
        url
    };
    let gh = GitHub::new(
        &url,
        SecretString::from(TOKEN.to_string()),
        TOKEN_ENV,
        "acme/website",
        "main",
        RetryPolicy::FAST,
    )
    .unwrap();
    let text = format!("{:#}", gh.comment(1, "x").await.unwrap_err());
    assert!(
        text.starts_with("could not reach GitHub while commenting on pull request #1"),
        "{text}"
    );
    assert!(!text.contains('\n') && !text.contains(TOKEN), "{text}");
    assert!(text.contains("Connection refused"), "{text}");
}

#[tokio::test]
async fn checks_combine_check_runs_and_statuses_and_tell_no_ci_from_pending() {
    use funnelfix::sandbox::github::CheckRun;
    let ctx = start().await;
    let pr = ctx.open("funnelfix/checks", "<p>x</p>\n").await;
    let sha = pr.head_sha.clone();
    // No CI at all: GitHub says "pending" with total_count 0.
    assert_eq!(ctx.gh.checks(&sha).await.unwrap(), Checks::None);
    let run = |status: &str, conclusion: Option<&str>| CheckRun {
        name: "build".into(),
        status: status.into(),
        conclusion: conclusion.map(str::to_string),
        html_url: "https://ci.test/build".into(),
        summary: None,
    };
    ctx.twin.set_check_run(&sha, run("queued", None));
    assert_eq!(
        ctx.gh.checks(&sha).await.unwrap(),
        Checks::Pending {
            names: vec!["build".into()]
        }
    );
    ctx.twin
        .set_check_run(&sha, run("completed", Some("success")));
    assert_eq!(ctx.gh.checks(&sha).await.unwrap(), Checks::Passed);
    ctx.twin.set_status(
        &sha,
        CommitStatus {
            context: "ci/legacy".into(),
            state: "error".into(),
            target_url: Some("https://legacy.test/1".into()),
        },
    );
    assert_eq!(
        ctx.gh.checks(&sha).await.unwrap(),
        Checks::Failed {
            name: "ci/legacy".into(),
            url: "https://legacy.test/1".into(),
            details: String::new(),
        }
    );
}

fn deployment(sha: &str, production: bool, statuses: &[(&str, Option<&str>)]) -> Deployment {
    Deployment {
        sha: sha.into(),
        environment: if production { "Production" } else { "Preview" }.into(),
        production_environment: production,
        statuses: statuses
            .iter()
            .map(|(state, url)| DeploymentStatus {
                state: (*state).into(),
                environment_url: url.map(String::from),
            })
            .collect(),
    }
}

#[tokio::test]
async fn the_preview_is_the_newest_ready_non_production_deployment() {
    let ctx = start().await;
    let head = ctx
        .propose(
            "funnelfix/preview",
            "<html>\n<body>\n<h1>Pricing for every team</h1>\n</body>\n</html>\n",
        )
        .await;
    let report = ctx.gh.head_report(&head).await.unwrap();
    assert_eq!((report.checks, report.preview), (Checks::None, None));
    // Production deployments and deployments still building are no preview.
    ctx.twin.add_deployment(deployment(
        &head,
        true,
        &[("success", Some("https://acme.example"))],
    ));
    let building = ctx
        .twin
        .add_deployment(deployment(&head, false, &[("in_progress", None)]));
    assert_eq!(ctx.gh.head_report(&head).await.unwrap().preview, None);
    ctx.twin.add_deployment_status(
        building,
        DeploymentStatus {
            state: "success".into(),
            environment_url: Some("https://pr-1.acme.pages.dev".into()),
        },
    );
    let report = ctx.gh.head_report(&head).await.unwrap();
    assert_eq!(
        report.preview.as_deref(),
        Some("https://pr-1.acme.pages.dev")
    );
    // A commit status from a preview service is read first.
    ctx.twin.set_status(
        &head,
        CommitStatus {
            context: "Vercel – acme-website".into(),
            state: "success".into(),
            target_url: Some("https://acme-git-preview.vercel.app".into()),
        },
    );
    let report = ctx.gh.head_report(&head).await.unwrap();
    assert_eq!(report.checks, Checks::Passed);
    assert_eq!(
        report.preview.as_deref(),
        Some("https://acme-git-preview.vercel.app")
    );
}

#[tokio::test]
async fn a_preview_is_linked_in_the_pr_description_once() {
    let ctx = start().await;
    ctx.twin.deploy_previews(PreviewDeployer {
        domain: "netlify.app".into(),
        takes: Duration::ZERO,
    });
    ctx.propose(
        "funnelfix/linked",
        "<html>\n<body>\n<h1>Pricing for every team</h1>\n</body>\n</html>\n",
    )
    .await;
    let pr = ctx
        .gh
        .open_pr(
            "funnelfix/linked",
            "Clearer pricing",
            "Why: people stop.",
            &[],
        )
        .await
        .unwrap();
    let report = ctx.gh.head_report(&pr.head_sha).await.unwrap();
    let url = report.preview.expect("the deployer made a preview");
    assert_eq!(url, "https://funnelfix-linked.netlify.app");
    ctx.gh.link_preview(pr.number, &url).await.unwrap();
    ctx.gh.link_preview(pr.number, &url).await.unwrap();
    let body = ctx.twin.pulls()[0].body.clone();
    assert_eq!(body, format!("**Preview:** {url}\n\nWhy: people stop."));
}

#[tokio::test]
async fn a_fine_grained_token_cannot_read_check_runs_and_says_so() {
    let token = "github_pat_11AAAA_twin0123456789";
    let twin = GitHubTwin::start(
        OWNER,
        REPO,
        "main",
        &[("site/pricing.html", PRICING)],
        token,
    )
    .await
    .unwrap();
    let gh = adapter(&twin, token, &format!("{OWNER}/{REPO}"));
    let base = gh.base_head().await.unwrap();
    let sha = gh
        .commit_files(
            &base,
            "funnelfix/fg",
            "x",
            &[("site/pricing.html".into(), Some("<p>x</p>\n".into()))],
        )
        .await
        .unwrap();
    // Unknown, never "no CI": check runs may exist that it cannot see.
    assert_eq!(gh.checks(&sha).await.unwrap(), Checks::Unreadable);
    let report = gh.head_report(&sha).await.unwrap();
    assert_eq!(report.checks, Checks::Unreadable);
    // A failing commit status still shows.
    twin.set_status(
        &sha,
        CommitStatus {
            context: "ci/legacy".into(),
            state: "failure".into(),
            target_url: None,
        },
    );
    assert!(matches!(
        gh.checks(&sha).await.unwrap(),
        Checks::Failed { .. }
    ));
}

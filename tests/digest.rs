//! The weekly digest through the real daemon loop and adapters against the
//! twins, on a hand-moved clock: its schedule sends it to the chat, a send
//! Telegram refused is tried again, and PostHog being down costs only the
//! line about what comes next.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use funnelfix::daemon;
use funnelfix::sandbox::world::{self, World};
use funnelfix::store::{ScheduledRun, Store};

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("time")
}

/// Waits (in real time, at most 30 s) until `done` holds.
async fn until<T>(mut done: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = done() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_digest_schedule_sends_the_week_and_retries_a_refused_send() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A Monday, a minute before the default digest time (08:00 UTC); last
    // week's digest was sent, so this week's is due at 08:00 whenever the
    // daemon gets to look.
    let world = World::start(
        dir.path().to_path_buf(),
        t("2026-03-09T07:59:00Z"),
        Duration::from_secs(35 * 86400),
        world::CONFIG_TEMPLATE,
    )
    .await
    .expect("world");
    let store = Store::open(&world.config.state.path).expect("store");
    let last_week = t("2026-03-02T08:00:00Z");
    store
        .begin_attempt("digest", last_week, last_week, |_| {
            chrono::Duration::minutes(1)
        })
        .expect("last week's run");
    store
        .finish_run("digest", last_week, last_week)
        .expect("sent");
    // The first send is refused; PostHog is down for both tries.
    world.telegram.fail_next("sendMessage", 400, 1);
    world.posthog.fail_next(503, 8);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = daemon::run(world.app().expect("app"), async {
        let _ = stopped.await;
    });
    let this_week = t("2026-03-09T08:00:00Z");
    let latest = || {
        store
            .latest_run("digest")
            .expect("runs")
            .filter(|r: &ScheduledRun| r.scheduled_at == this_week)
    };
    let digests = || -> Vec<String> {
        world
            .telegram
            .messages()
            .into_iter()
            .map(|m| m.text)
            .filter(|t| t.contains("weekly digest"))
            .collect()
    };
    let clock = world.clock.clone();
    let drive = async {
        clock.advance(Duration::from_secs(60));
        let failed = until(|| latest().filter(|r| r.last_error.is_some())).await;
        assert_eq!(
            (failed.attempts, failed.finished_at),
            (1, None),
            "{failed:?}"
        );
        assert!(digests().is_empty());
        // The retry is due a minute later.
        clock.advance(Duration::from_secs(60));
        let sent = until(|| latest().filter(|r| r.finished_at.is_some())).await;
        let _ = stop.send(());
        sent
    };
    let (ran, run) = tokio::join!(daemon, drive);
    ran.expect("the daemon ran");
    assert_eq!(run.attempts, 2, "{run:?}");
    assert!(
        run.last_error
            .as_deref()
            .is_some_and(|e| e.contains("sending the weekly digest")),
        "{run:?}"
    );
    let digests = digests();
    assert_eq!(digests.len(), 1, "one digest: {digests:?}");
    let digest = &digests[0];
    assert!(
        digest.starts_with("<b>funnelfix weekly digest</b> · 2026-03-02 to 2026-03-09"),
        "{digest}"
    );
    assert!(digest.contains("A quiet week"), "{digest}");
    assert!(
        digest.contains("• signup: could not ask PostHog (") && digest.contains("503"),
        "{digest}"
    );
}

//! The daemon: one serial event loop. Timers and the Telegram poller only
//! deliver events; the loop applies them one at a time, so an approval can
//! never race a merge or a revert.
//!
//! Scheduled runs live in the store (`UNIQUE(name, scheduled_at)`), so a
//! restart neither loses nor doubles one. A run counts as done only when its
//! pass worked; a failed try is tried again with a growing backoff on the
//! app's clock until it works or the next run of the same schedule is due,
//! and a try cut short (a crash, a shutdown) is resumed after a restart.
//! Runs missed while the daemon was down collapse into one catch-up run.
//!
//! The heartbeat comes from a task of its own, on its own connection, so a
//! slow pass does not make the daemon look dead; a shutdown abandons the
//! pass in flight at its next await point (every store write is its own
//! transaction) and leaves the run to be resumed.

use std::fmt::Display;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::app::App;
use crate::clock::Clock;
use crate::store::{self, ScheduledRun, Store};
use crate::telegram::{Incoming, Telegram};

/// Telegram's client gives up after 17 s; the long poll stays well inside it.
pub const POLL_TIMEOUT_SECS: u32 = 10;

/// How often the daemon proves it is alive (read by `funnelfix health`), in
/// the app's clock: a simulated clock beats faster, but never more often
/// than every [`HEARTBEAT_MIN`] of real time.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// The shortest real interval between two heartbeats.
pub const HEARTBEAT_MIN: Duration = Duration::from_millis(100);

/// A heartbeat older than this means the daemon is stuck or gone. The
/// heartbeat keeps beating while a pass waits on a slow model or service.
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(600);

/// The first retry of a failed scheduled run comes this long after it
/// failed (on the app's clock); each further one waits twice as long as the
/// one before, up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(60);

/// The longest wait between two tries of a scheduled run.
pub const RETRY_MAX: Duration = Duration::from_secs(3600);

/// The commands shown in Telegram's menu.
pub const COMMANDS: &[(&str, &str)] = &[
    (
        "status",
        "open experiments and their state; /status N: one, with its chart",
    ),
    ("funnel", "the funnel table and chart"),
    ("pause", "no new proposals (watching goes on)"),
    ("resume", "proposals again"),
    ("help", "what funnelfix can do"),
];

/// Holds the lock that keeps a second daemon, or a `funnelfix once`, off
/// the same database.
pub struct DaemonLock {
    _file: File,
    path: PathBuf,
}

impl DaemonLock {
    /// Takes the lock, or says who holds it.
    pub fn acquire(db: &Path) -> Result<DaemonLock> {
        match Self::try_acquire(db)? {
            Ok(lock) => Ok(lock),
            Err(path) => anyhow::bail!(
                "another funnelfix daemon or `once` is already running on {} (lock {} is held); stop it first",
                db.display(),
                path.display()
            ),
        }
    }

    /// Takes the lock; `Ok(Err(lock file))` if another process holds it.
    pub fn try_acquire(db: &Path) -> Result<std::result::Result<DaemonLock, PathBuf>> {
        let mut path = db.as_os_str().to_owned();
        path.push(".lock");
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        }
        let file = File::create(&path)
            .with_context(|| format!("cannot create the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Ok(DaemonLock { _file: file, path })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(Err(path)),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Propose,
    Monitor,
    Digest,
}

impl Pass {
    /// When two are due at once, they run in this order.
    const ALL: [Pass; 3] = [Pass::Monitor, Pass::Propose, Pass::Digest];

    fn name(self) -> &'static str {
        match self {
            Pass::Propose => "propose",
            Pass::Monitor => "monitor",
            Pass::Digest => "digest",
        }
    }

    fn schedule(self, app: &App) -> &cron::Schedule {
        match self {
            Pass::Propose => &app.config.schedule.propose,
            Pass::Monitor => &app.config.schedule.monitor,
            Pass::Digest => &app.config.schedule.digest,
        }
    }

    /// Runs the pass of the run scheduled at `scheduled`; the errors it
    /// met, one line each (none: it worked).
    async fn run(self, app: &App, scheduled: DateTime<Utc>) -> Vec<String> {
        match self {
            Pass::Propose => pass_errors(app.propose_pass(false).await),
            Pass::Monitor => pass_errors(
                app.monitor_pass()
                    .await
                    .into_iter()
                    .map(|(id, r)| (format!("experiment #{id}"), r)),
            ),
            Pass::Digest => pass_errors([("digest", app.digest_pass(scheduled).await)]),
        }
    }
}

/// A pass worked when no part of it returned an error. An outcome that is
/// not an error (nothing to propose, or a model that found no valid edit)
/// is final, and a success of the run.
fn pass_errors<K: Display, T>(results: impl IntoIterator<Item = (K, Result<T>)>) -> Vec<String> {
    results
        .into_iter()
        .filter_map(|(what, r)| r.err().map(|e| format!("{what}: {e:#}")))
        .collect()
}

/// The wait after the `attempts`-th failed try of a run.
fn retry_backoff(attempts: u32) -> chrono::Duration {
    let wait = RETRY_FIRST
        .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1)))
        .min(RETRY_MAX);
    chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX)
}

/// Next run of `schedule` strictly after `after`.
fn next_after(schedule: &cron::Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.after(&after).next()
}

/// The run due now that the store has not seen: the latest scheduled time at or
/// before `now` that is later than the last claimed one (missed runs collapse).
fn due_catch_up(
    schedule: &cron::Schedule,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let last = last?;
    let mut due = None;
    for t in schedule.after(&last) {
        if t > now {
            break;
        }
        due = Some(t);
    }
    due
}

/// A run and when (on the app's clock) to start its next try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    scheduled: DateTime<Utc>,
    at: DateTime<Utc>,
}

/// What a schedule does next, given its latest run. An unfinished run is
/// tried again when its retry is due, or at once if a shutdown or a crash
/// cut its try short, unless the schedule's next run comes first: that run
/// does the same work, so the old one is given up. Otherwise the next run is
/// the catch-up of missed runs, or the first one after `now`.
fn next_due(
    schedule: &cron::Schedule,
    latest: Option<&ScheduledRun>,
    now: DateTime<Utc>,
) -> Option<Due> {
    let fresh = |t: DateTime<Utc>| Due {
        scheduled: t,
        at: t,
    };
    let Some(latest) = latest else {
        return next_after(schedule, now).map(fresh);
    };
    if latest.finished_at.is_none() {
        let at = latest.next_attempt_at.map_or(now, |t| t.max(now));
        if next_after(schedule, latest.scheduled_at).is_none_or(|following| at < following) {
            return Some(Due {
                scheduled: latest.scheduled_at,
                at,
            });
        }
    }
    due_catch_up(schedule, Some(latest.scheduled_at), now)
        .or_else(|| next_after(schedule, now))
        .map(fresh)
}

/// When, in real time, `t` of the app's clock comes. Capped at an hour so
/// a suspended machine or a paused clock is looked at again.
fn until(clock: &Clock, t: DateTime<Utc>) -> tokio::time::Instant {
    let wait = (t - clock.now()).to_std().unwrap_or(Duration::ZERO);
    tokio::time::Instant::now() + clock.real_wait(wait).min(Duration::from_secs(3600))
}

/// Reads updates and hands them to the loop; the loop saves the offset after
/// handling each one, so an update that was not handled is delivered again.
fn spawn_poller(telegram: Telegram, start: Option<i32>) -> mpsc::Receiver<(i32, Incoming)> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut offset = start;
        let mut failures = 0u32;
        loop {
            match telegram.poll(offset, POLL_TIMEOUT_SECS).await {
                Ok(updates) => {
                    failures = 0;
                    for (update_id, incoming) in updates {
                        offset = Some(update_id + 1);
                        if tx.send((update_id, incoming)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    failures += 1;
                    warn!(error = %format!("{e:#}"), "Telegram poll failed");
                    let wait = Duration::from_millis(500).saturating_mul(2u32.pow(failures.min(6)));
                    tokio::time::sleep(wait).await;
                }
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

/// The heartbeat task; it stops when this is dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    /// Beats once now (so `health` is true from start-up on), then every
    /// `every`, on a connection of its own to the database at `db`.
    fn start(db: &Path, every: Duration) -> Result<Heartbeat> {
        let store = Store::open(db)?;
        store.set_setting("heartbeat", &store::ts(Utc::now()))?;
        Ok(Heartbeat(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(e) = store.set_setting("heartbeat", &store::ts(Utc::now())) {
                    warn!(error = %format!("{e:#}"), "could not write the heartbeat");
                }
            }
        })))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The real interval between heartbeats under `clock`.
fn heartbeat_every(clock: &Clock) -> Duration {
    clock.real_wait(HEARTBEAT).clamp(HEARTBEAT_MIN, HEARTBEAT)
}

/// How a try of a scheduled run ended, for the loop.
#[derive(Debug, PartialEq, Eq)]
enum Tried {
    /// It ran (and worked or failed), or it had already finished.
    Ran,
    /// A shutdown came first; the loop must stop.
    Shutdown,
}

/// Runs until `shutdown` resolves. A pass in flight is abandoned at its next
/// await point and its run resumed after a restart; a Telegram update in
/// flight is finished first.
pub async fn run(app: App, shutdown: impl Future<Output = ()>) -> Result<()> {
    let _lock = DaemonLock::acquire(&app.config.state.path)?;
    let _heartbeat = Heartbeat::start(&app.config.state.path, heartbeat_every(&app.clock))?;
    tokio::pin!(shutdown);
    tokio::select! {
        biased;
        () = &mut shutdown => {
            info!("shutting down");
            return Ok(());
        }
        registered = app.services.telegram.set_commands(COMMANDS) => {
            if let Err(e) = registered {
                warn!(error = %format!("{e:#}"), "could not register the Telegram commands");
            }
        }
    }
    let offset = app
        .store
        .setting("telegram_offset")?
        .and_then(|s| s.parse::<i32>().ok());
    let mut updates = spawn_poller(app.services.telegram.clone(), offset);

    // A run missed while the daemon was down is due at once (one catch-up,
    // however many were missed), and so is a run a crash or a shutdown cut
    // short; they go through the loop so that a shutdown asked for meanwhile
    // is honoured first.
    let clock = app.clock.clone();
    let due = |pass: Pass| -> Result<Option<Due>> {
        let latest = app.store.latest_run(pass.name())?;
        Ok(next_due(pass.schedule(&app), latest.as_ref(), clock.now()))
    };
    let mut next = Pass::ALL.map(|pass| (pass, None));
    for (pass, due_at) in &mut next {
        *due_at = due(*pass)?;
    }
    info!(?next, "funnelfix is running");

    'serve: loop {
        let wake = next
            .iter()
            .filter_map(|(_, d)| d.map(|d| d.at))
            .min()
            .map(|at| until(&clock, at));
        tokio::select! {
            biased;
            () = &mut shutdown => {
                info!("shutting down");
                break;
            }
            Some((update_id, incoming)) = updates.recv() => {
                if let Err(e) = app.handle(update_id, incoming).await {
                    warn!(error = %format!("{e:#}"), "handling a Telegram update failed");
                }
                app.store.set_setting("telegram_offset", &(update_id + 1).to_string())?;
            }
            () = sleep_opt(wake) => {
                // Every pass that is due runs; one woken early (a capped
                // wait) is looked at again.
                for (pass, due_at) in &mut next {
                    if let Some(d) = due_at.filter(|d| clock.now() >= d.at)
                        && try_run(&app, *pass, d.scheduled, shutdown.as_mut()).await?
                            == Tried::Shutdown
                    {
                        break 'serve;
                    }
                    *due_at = due(*pass)?;
                }
            }
        }
    }
    Ok(())
}

async fn sleep_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One try of the run of `pass` scheduled at `scheduled`, unless it already
/// finished. A failed try records its errors and when to try again.
async fn try_run(
    app: &App,
    pass: Pass,
    scheduled: DateTime<Utc>,
    shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Result<Tried> {
    let name = pass.name();
    let Some(attempt) = app
        .store
        .begin_attempt(name, scheduled, app.clock.now(), retry_backoff)?
    else {
        return Ok(Tried::Ran);
    };
    let errors = tokio::select! {
        biased;
        () = shutdown => {
            app.store.interrupt_run(name, scheduled)?;
            info!(run = name, %scheduled, attempt, "shutting down; the run in flight is resumed after a restart");
            return Ok(Tried::Shutdown);
        }
        errors = pass.run(app, scheduled) => errors,
    };
    let now = app.clock.now();
    if errors.is_empty() {
        app.store.finish_run(name, scheduled, now)?;
    } else {
        let retry_at = now + retry_backoff(attempt);
        let error = errors.join("; ");
        app.store.fail_run(name, scheduled, &error, retry_at)?;
        warn!(run = name, %scheduled, attempt, %retry_at, %error, "the scheduled run failed; it will be tried again");
    }
    Ok(Tried::Ran)
}

/// Listens for SIGTERM and SIGINT from the moment it is called (a signal
/// during start-up is kept, not fatal); the future resolves on the first.
pub fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// For `funnelfix health`: the daemon's heartbeat is recent.
pub fn healthy(store: &store::Store, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let beat = store
        .setting("heartbeat")?
        .context("the daemon has not started (no heartbeat in the state database)")?;
    let beat: DateTime<Utc> = DateTime::parse_from_rfc3339(&beat)
        .context("unreadable heartbeat")?
        .with_timezone(&Utc);
    let age = (now - beat).to_std().unwrap_or(Duration::ZERO);
    anyhow::ensure!(
        age <= HEARTBEAT_STALE,
        "the daemon's last heartbeat was {}s ago",
        age.as_secs()
    );
    Ok(beat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("valid time")
    }

    #[test]
    fn missed_runs_collapse_into_the_latest() {
        let every_15 = cron::Schedule::from_str("0 */15 * * * *").expect("cron");
        let last = Some(t("2026-03-02T09:00:00Z"));
        assert_eq!(
            due_catch_up(&every_15, last, t("2026-03-02T10:07:00Z")),
            Some(t("2026-03-02T10:00:00Z"))
        );
        assert_eq!(
            due_catch_up(&every_15, last, t("2026-03-02T09:14:59Z")),
            None
        );
        assert_eq!(
            due_catch_up(&every_15, None, t("2026-03-02T10:07:00Z")),
            None
        );
    }

    fn run_at(
        scheduled: &str,
        finished: bool,
        next_attempt_at: Option<DateTime<Utc>>,
    ) -> ScheduledRun {
        ScheduledRun {
            name: "propose".into(),
            scheduled_at: t(scheduled),
            started_at: t(scheduled),
            finished_at: finished.then(|| t(scheduled)),
            attempts: 1,
            last_error: None,
            next_attempt_at,
        }
    }

    fn weekly() -> cron::Schedule {
        cron::Schedule::from_str("0 0 9 * * Mon").expect("cron")
    }

    #[test]
    fn the_first_run_is_the_next_scheduled_one() {
        assert_eq!(
            next_due(&weekly(), None, t("2026-03-02T08:00:00Z")),
            Some(Due {
                scheduled: t("2026-03-02T09:00:00Z"),
                at: t("2026-03-02T09:00:00Z")
            })
        );
    }

    #[test]
    fn a_failed_run_is_retried_when_its_retry_is_due() {
        let failed = run_at(
            "2026-03-02T09:00:00Z",
            false,
            Some(t("2026-03-02T09:16:00Z")),
        );
        assert_eq!(
            next_due(&weekly(), Some(&failed), t("2026-03-02T09:15:00Z")),
            Some(Due {
                scheduled: t("2026-03-02T09:00:00Z"),
                at: t("2026-03-02T09:16:00Z")
            }),
            "the same run, a backoff later, not next week's"
        );
        // A retry whose time passed while the daemon was down is due at once.
        assert_eq!(
            next_due(&weekly(), Some(&failed), t("2026-03-04T12:00:00Z")),
            Some(Due {
                scheduled: t("2026-03-02T09:00:00Z"),
                at: t("2026-03-04T12:00:00Z")
            })
        );
    }

    #[test]
    fn an_interrupted_run_is_resumed_at_once() {
        let cut_short = run_at("2026-03-02T09:00:00Z", false, None);
        let now = t("2026-03-02T09:03:00Z");
        assert_eq!(
            next_due(&weekly(), Some(&cut_short), now),
            Some(Due {
                scheduled: t("2026-03-02T09:00:00Z"),
                at: now
            })
        );
    }

    #[test]
    fn a_failing_run_is_given_up_when_the_next_one_is_due() {
        let every_15 = cron::Schedule::from_str("0 */15 * * * *").expect("cron");
        // The retry would come after the next run: that run does the work.
        let failed = run_at(
            "2026-03-02T09:00:00Z",
            false,
            Some(t("2026-03-02T09:16:00Z")),
        );
        assert_eq!(
            next_due(&every_15, Some(&failed), t("2026-03-02T09:08:00Z")),
            Some(Due {
                scheduled: t("2026-03-02T09:15:00Z"),
                at: t("2026-03-02T09:15:00Z")
            })
        );
        // Down past later runs: one catch-up of the latest, not the old retry.
        let failed = run_at(
            "2026-03-02T09:00:00Z",
            false,
            Some(t("2026-03-02T09:01:00Z")),
        );
        assert_eq!(
            next_due(&every_15, Some(&failed), t("2026-03-02T10:07:00Z")),
            Some(Due {
                scheduled: t("2026-03-02T10:00:00Z"),
                at: t("2026-03-02T10:00:00Z")
            })
        );
        let cut_short = run_at("2026-03-02T09:00:00Z", false, None);
        assert_eq!(
            next_due(&weekly(), Some(&cut_short), t("2026-03-09T09:30:00Z")),
            Some(Due {
                scheduled: t("2026-03-09T09:00:00Z"),
                at: t("2026-03-09T09:00:00Z")
            })
        );
    }

    #[test]
    fn a_finished_run_is_followed_by_the_next_or_one_catch_up() {
        let done = run_at("2026-03-02T09:00:00Z", true, None);
        assert_eq!(
            next_due(&weekly(), Some(&done), t("2026-03-02T09:20:00Z")),
            Some(Due {
                scheduled: t("2026-03-09T09:00:00Z"),
                at: t("2026-03-09T09:00:00Z")
            })
        );
        assert_eq!(
            next_due(&weekly(), Some(&done), t("2026-03-24T10:00:00Z")),
            Some(Due {
                scheduled: t("2026-03-23T09:00:00Z"),
                at: t("2026-03-23T09:00:00Z")
            }),
            "three missed runs collapse into the latest"
        );
    }

    #[test]
    fn the_retry_backoff_doubles_from_a_minute_up_to_an_hour() {
        let minutes: Vec<i64> = (1..=9).map(|n| retry_backoff(n).num_minutes()).collect();
        assert_eq!(minutes, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_backoff(u32::MAX).num_minutes(), 60);
    }

    #[test]
    fn a_pass_failed_only_if_a_part_of_it_returned_an_error() {
        use crate::app::ProposeOutcome;
        let fine: Vec<(String, Result<ProposeOutcome>)> = vec![
            (
                "signup".into(),
                Ok(ProposeOutcome::Skipped("paused".into())),
            ),
            (
                "checkout".into(),
                Ok(ProposeOutcome::Failed("no valid edit".into())),
            ),
        ];
        assert!(pass_errors(fine).is_empty());
        let failed: Vec<(String, Result<ProposeOutcome>)> = vec![
            (
                "signup".into(),
                Err(anyhow::anyhow!("PostHog answered 503")),
            ),
            (
                "checkout".into(),
                Ok(ProposeOutcome::Skipped("paused".into())),
            ),
        ];
        assert_eq!(pass_errors(failed), ["signup: PostHog answered 503"]);
    }

    #[test]
    fn a_simulated_clock_beats_faster_but_not_too_fast() {
        assert_eq!(heartbeat_every(&Clock::System), HEARTBEAT);
        let start = t("2026-03-02T09:00:00Z");
        assert_eq!(
            heartbeat_every(&Clock::scaled(start, 60.0)),
            Duration::from_millis(250)
        );
        assert_eq!(
            heartbeat_every(&Clock::scaled(start, 60_000.0)),
            HEARTBEAT_MIN
        );
    }

    #[test]
    fn a_second_daemon_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("f.db");
        let first = DaemonLock::acquire(&db).expect("first");
        let err = DaemonLock::acquire(&db).err().expect("second refused");
        assert!(format!("{err:#}").contains("already running"), "{err:#}");
        assert_eq!(
            DaemonLock::try_acquire(&db).expect("no IO error").err(),
            Some(first.path().to_path_buf()),
            "held: the lock file is named"
        );
        drop(first);
        DaemonLock::acquire(&db).expect("free again");
    }

    #[test]
    fn health_needs_a_recent_heartbeat() {
        let s = store::Store::open_in_memory().expect("store");
        let now = t("2026-03-02T10:00:00Z");
        assert!(healthy(&s, now).is_err());
        s.set_setting("heartbeat", &store::ts(now - chrono::Duration::seconds(30)))
            .expect("set");
        assert!(healthy(&s, now).is_ok());
        assert!(healthy(&s, now + chrono::Duration::seconds(900)).is_err());
    }
}

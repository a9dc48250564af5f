//! The daemon: one serial event loop. Timers and the Telegram poller only
//! deliver events; the loop applies them one at a time, so an approval can
//! never race a merge or a revert. Scheduled runs are claimed in the store
//! (`UNIQUE(name, scheduled_at)`), so a restart neither loses nor doubles one;
//! runs missed while the daemon was down collapse into one catch-up run.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::app::{App, Clock};
use crate::store;
use crate::telegram::{Incoming, Telegram};

/// Telegram's client gives up after 17 s; the long poll stays well inside it.
pub const POLL_TIMEOUT_SECS: u32 = 10;

/// How often the daemon proves it is alive (read by `funnelfix health`).
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// A heartbeat older than this means the daemon is stuck or gone. A pass
/// waiting on a slow model or service can hold the loop for minutes.
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(600);

/// The commands shown in Telegram's menu.
pub const COMMANDS: &[(&str, &str)] = &[
    ("status", "open experiments and their state"),
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

/// Runs until `shutdown` resolves; the action in flight is finished first.
pub async fn run(app: App, shutdown: impl Future<Output = ()>) -> Result<()> {
    let _lock = DaemonLock::acquire(&app.config.state.path)?;
    if let Err(e) = app.services.telegram.set_commands(COMMANDS).await {
        warn!(error = %format!("{e:#}"), "could not register the Telegram commands");
    }
    let offset = app
        .store
        .setting("telegram_offset")?
        .and_then(|s| s.parse::<i32>().ok());
    let mut updates = spawn_poller(app.services.telegram.clone(), offset);
    let propose = app.config.schedule.propose.clone();
    let monitor = app.config.schedule.monitor.clone();

    // A run missed while the daemon was down is due at once (one catch-up,
    // however many were missed); it goes through the loop so that a shutdown
    // asked for meanwhile is honoured first.
    let clock = app.clock.clone();
    let now = clock.now();
    let mut next_monitor = due_catch_up(&monitor, app.store.last_run("monitor")?, now)
        .or_else(|| next_after(&monitor, now));
    let mut next_propose = due_catch_up(&propose, app.store.last_run("propose")?, now)
        .or_else(|| next_after(&propose, now));
    info!(?next_propose, ?next_monitor, "funnelfix is running");

    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    tokio::pin!(shutdown);
    loop {
        let propose_at = next_propose.map(|t| until(&clock, t));
        let monitor_at = next_monitor.map(|t| until(&clock, t));
        tokio::select! {
            biased;
            () = &mut shutdown => {
                info!("shutting down");
                break;
            }
            Some((update_id, incoming)) = updates.recv() => {
                if let Err(e) = app.handle(incoming).await {
                    warn!(error = %format!("{e:#}"), "handling a Telegram update failed");
                }
                app.store.set_setting("telegram_offset", &(update_id + 1).to_string())?;
            }
            () = sleep_opt(monitor_at) => {
                // Woken early (a capped wait): look again.
                if let Some(t) = next_monitor.filter(|t| clock.now() >= *t) {
                    run_monitor(&app, t).await?;
                    next_monitor = next_after(&monitor, clock.now());
                }
            }
            () = sleep_opt(propose_at) => {
                if let Some(t) = next_propose.filter(|t| clock.now() >= *t) {
                    run_propose(&app, t).await?;
                    next_propose = next_after(&propose, clock.now());
                }
            }
            _ = heartbeat.tick() => {
                app.store.set_setting("heartbeat", &store::ts(Utc::now()))?;
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

async fn run_monitor(app: &App, scheduled: DateTime<Utc>) -> Result<()> {
    if !app.store.claim_run("monitor", scheduled, app.clock.now())? {
        return Ok(());
    }
    app.monitor_pass().await;
    app.store.finish_run("monitor", scheduled, app.clock.now())
}

async fn run_propose(app: &App, scheduled: DateTime<Utc>) -> Result<()> {
    if !app.store.claim_run("propose", scheduled, app.clock.now())? {
        return Ok(());
    }
    app.propose_pass(false).await;
    app.store.finish_run("propose", scheduled, app.clock.now())
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

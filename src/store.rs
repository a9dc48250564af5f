//! SQLite state: experiments, the audit log of every transition and refused
//! tap, scheduled runs, and small settings (Telegram offset, pause flag).
//!
//! Migrations are append-only, applied at start-up, one transaction each, and
//! tracked by `PRAGMA user_version`. State changes are compare-and-set on the
//! current state, so a double tap or a redelivered update acts once.

use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::experiment::{ExperimentId, State};
use crate::lifecycle::{Command, Decision};
use crate::stats::Counts;

/// Ordered schema steps; never edit one that has shipped, append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: experiments, audit log, schedule runs, settings.
    "CREATE TABLE experiments (
        id INTEGER PRIMARY KEY,
        funnel TEXT NOT NULL,
        step INTEGER NOT NULL,
        step_name TEXT NOT NULL,
        next_step_name TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        nonce TEXT NOT NULL,
        title TEXT,
        hypothesis TEXT,
        diff TEXT,
        changed_files TEXT,
        base_sha TEXT,
        branch TEXT,
        pr_number INTEGER,
        pr_url TEXT,
        head_sha TEXT,
        message_id INTEGER,
        asked_at TEXT,
        decided_by INTEGER,
        decided_at TEXT,
        merged_at TEXT,
        merge_sha TEXT,
        rate_before REAL,
        entrants_before INTEGER,
        converted_before INTEGER,
        baseline TEXT,
        assessment TEXT,
        p_value REAL,
        revert_branch TEXT,
        revert_pr INTEGER,
        revert_pr_url TEXT,
        verdict TEXT,
        failure TEXT,
        ended_at TEXT
    );
    -- One open experiment per funnel, so a change in rate can be attributed.
    CREATE UNIQUE INDEX one_open_experiment_per_funnel ON experiments(funnel)
        WHERE state NOT IN ('kept', 'reverted', 'rejected', 'expired', 'failed');
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        experiment_id INTEGER REFERENCES experiments(id),
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        actor INTEGER,
        detail TEXT NOT NULL
    );
    CREATE TABLE schedule_runs (
        name TEXT NOT NULL,
        scheduled_at TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        UNIQUE(name, scheduled_at)
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
    // 2: a scheduled run is retried until it works: its tries, the last
    // error, and when the next try is due.
    "ALTER TABLE schedule_runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE schedule_runs ADD COLUMN last_error TEXT;
    ALTER TABLE schedule_runs ADD COLUMN next_attempt_at TEXT;",
    // 3: per-experiment revert state moves from settings into columns; the
    // final state kept_by_person; the outbox of commands decided but not done.
    r"ALTER TABLE experiments ADD COLUMN revert_head_sha TEXT;
    ALTER TABLE experiments ADD COLUMN revert_message_id INTEGER;
    ALTER TABLE experiments ADD COLUMN revert_told INTEGER NOT NULL DEFAULT 0;
    UPDATE experiments SET revert_message_id =
        (SELECT CAST(value AS INTEGER) FROM settings WHERE key = 'revert_message_' || experiments.id);
    UPDATE experiments SET revert_told = 1
        WHERE EXISTS (SELECT 1 FROM settings WHERE key = 'revert_told_' || experiments.id);
    DELETE FROM settings
        WHERE key LIKE 'revert\_message\_%' ESCAPE '\' OR key LIKE 'revert\_told\_%' ESCAPE '\';
    DROP INDEX one_open_experiment_per_funnel;
    CREATE UNIQUE INDEX one_open_experiment_per_funnel ON experiments(funnel)
        WHERE state NOT IN ('kept', 'reverted', 'kept_by_person', 'rejected', 'expired', 'failed');
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        experiment_id INTEGER NOT NULL REFERENCES experiments(id),
        command TEXT NOT NULL,
        created_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );",
    // 4: what CI and a preview deployer said about the PR head before asking;
    // the report the proposal was made from.
    "ALTER TABLE experiments ADD COLUMN head_seen_at TEXT;
    ALTER TABLE experiments ADD COLUMN head_checks TEXT;
    ALTER TABLE experiments ADD COLUMN preview_url TEXT;
    ALTER TABLE experiments ADD COLUMN checks_failed_sha TEXT;
    ALTER TABLE experiments ADD COLUMN fix_asked INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE experiments ADD COLUMN report TEXT;",
    // 5: a watched step's counts per UTC date of entry, before and after the
    // merge, as the latest look saw them: the watch chart draws them.
    "CREATE TABLE watch_days (
        experiment_id INTEGER NOT NULL REFERENCES experiments(id),
        period TEXT NOT NULL CHECK (period IN ('baseline', 'watch')),
        date TEXT NOT NULL,
        entrants INTEGER NOT NULL,
        conversions INTEGER NOT NULL,
        PRIMARY KEY (experiment_id, period, date)
    );",
    // 6: an experiment watched on one segment of the step's entries only
    // (a property of the step event equal to a value).
    "ALTER TABLE experiments ADD COLUMN segment_property TEXT;
    ALTER TABLE experiments ADD COLUMN segment_value TEXT;",
    // 7: the baseline counted on the early looks' shorter window, with that
    // window, when the experiment is watched with early looks.
    "ALTER TABLE experiments ADD COLUMN early_baseline TEXT;",
    // 8: the upstream step's baseline, when the experiment is watched with
    // the drift control.
    "ALTER TABLE experiments ADD COLUMN control_baseline TEXT;",
];

/// Columns an experiment has besides its identity; the only names
/// [`Store::update`] accepts.
const COLUMNS: &[&str] = &[
    "title",
    "hypothesis",
    "diff",
    "changed_files",
    "base_sha",
    "branch",
    "pr_number",
    "pr_url",
    "head_sha",
    "message_id",
    "asked_at",
    "decided_by",
    "decided_at",
    "merged_at",
    "merge_sha",
    "rate_before",
    "entrants_before",
    "converted_before",
    "baseline",
    "assessment",
    "p_value",
    "revert_branch",
    "revert_pr",
    "revert_pr_url",
    "verdict",
    "failure",
    "ended_at",
    "revert_head_sha",
    "revert_message_id",
    "revert_told",
    "head_seen_at",
    "head_checks",
    "preview_url",
    "checks_failed_sha",
    "fix_asked",
    "report",
    "segment_property",
    "segment_value",
    "early_baseline",
    "control_baseline",
];

/// An experiment as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Experiment {
    pub id: ExperimentId,
    pub funnel: String,
    pub step: usize,
    pub step_name: String,
    pub next_step_name: String,
    pub state: State,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Random; goes into the Telegram buttons so a forged tap cannot guess it.
    pub nonce: String,
    pub title: Option<String>,
    pub hypothesis: Option<String>,
    pub diff: Option<String>,
    /// JSON list of the paths the change touches.
    pub changed_files: Option<String>,
    pub base_sha: Option<String>,
    pub branch: Option<String>,
    pub pr_number: Option<u64>,
    pub pr_url: Option<String>,
    pub head_sha: Option<String>,
    pub message_id: Option<i64>,
    pub asked_at: Option<DateTime<Utc>>,
    pub decided_by: Option<u64>,
    pub decided_at: Option<DateTime<Utc>>,
    pub merged_at: Option<DateTime<Utc>>,
    pub merge_sha: Option<String>,
    pub rate_before: Option<f64>,
    pub entrants_before: Option<u64>,
    pub converted_before: Option<u64>,
    /// JSON of the per-weekday baseline counts, fetched once after the merge.
    pub baseline: Option<String>,
    /// JSON of the latest assessment.
    pub assessment: Option<String>,
    /// Always-valid p-value: the minimum over looks of 1/Λ.
    pub p_value: Option<f64>,
    pub revert_branch: Option<String>,
    pub revert_pr: Option<u64>,
    pub revert_pr_url: Option<String>,
    pub verdict: Option<String>,
    pub failure: Option<String>,
    pub ended_at: Option<DateTime<Utc>>,
    /// The revert PR's head when it was opened: what a revert tap merges.
    pub revert_head_sha: Option<String>,
    /// The Telegram message with the "Merge the revert" button.
    pub revert_message_id: Option<i64>,
    /// The chat was told the revert waits for a person on GitHub.
    pub revert_told: bool,
    /// When the current PR head was first seen: CI is waited for from then.
    pub head_seen_at: Option<DateTime<Utc>>,
    /// JSON of the checks on the head when the approver was asked.
    pub head_checks: Option<String>,
    /// A deployment preview of the head.
    pub preview_url: Option<String>,
    /// The head whose failed checks the chat was told about.
    pub checks_failed_sha: Option<String>,
    /// The model was asked to fix a red head (once per experiment).
    pub fix_asked: bool,
    /// JSON of the funnel report (with its evidence) the proposal was made
    /// from, so the PR and the chat show the same numbers after a restart.
    pub report: Option<String>,
    /// The segment the experiment is watched on, when it is restricted to
    /// one: the step event's property and its value.
    pub segment_property: Option<String>,
    pub segment_value: Option<String>,
    /// JSON of the [`crate::lifecycle::EarlyBaseline`], when the experiment
    /// is watched with early looks.
    pub early_baseline: Option<String>,
    /// JSON of the upstream step's [`crate::lifecycle::UpstreamCounts`]
    /// before the merge, when the experiment is watched with the drift
    /// control.
    pub control_baseline: Option<String>,
}

impl Experiment {
    /// The segment whose entries alone the watch counts, if any.
    pub fn watch_segment(&self) -> Option<crate::funnel::WatchSegment> {
        match (&self.segment_property, &self.segment_value) {
            (Some(property), Some(value)) => Some(crate::funnel::WatchSegment {
                property: property.clone(),
                value: value.clone(),
            }),
            _ => None,
        }
    }
}

/// One run of a schedule, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduledRun {
    pub name: String,
    /// The schedule's time for this run; with `name`, its identity.
    pub scheduled_at: DateTime<Utc>,
    /// When its first try began.
    pub started_at: DateTime<Utc>,
    /// Set once a try worked; a run without it is retried.
    pub finished_at: Option<DateTime<Utc>>,
    /// Tries begun so far.
    pub attempts: u32,
    /// Why the latest failed try failed (kept after a later success).
    pub last_error: Option<String>,
    /// When an unfinished run is due again; `None` means at once (a try cut
    /// short by a shutdown, or a row from before retries were kept).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Which side of the merge a day of a watched step's counts lies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// The baseline window before the merge.
    Baseline,
    /// The entrants watched after the merge.
    Watch,
}

impl Period {
    fn as_str(self) -> &'static str {
        match self {
            Period::Baseline => "baseline",
            Period::Watch => "watch",
        }
    }
}

/// A watched step's entrants and conversions per UTC date of entry, oldest
/// first, as the latest look counted them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WatchDays {
    pub baseline: Vec<(NaiveDate, Counts)>,
    pub watch: Vec<(NaiveDate, Counts)>,
}

/// What the store needs to start an experiment.
#[derive(Debug, Clone)]
pub struct NewExperiment<'a> {
    pub funnel: &'a str,
    pub step: usize,
    pub step_name: &'a str,
    pub next_step_name: &'a str,
    pub nonce: &'a str,
}

/// A command waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub row: i64,
    pub command: Command,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// One row of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    pub experiment_id: Option<ExperimentId>,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub actor: Option<u64>,
    pub detail: String,
}

/// A state change asked of [`Store::transition`].
#[derive(Debug, Clone, Copy)]
pub struct Transition<'a> {
    pub from: State,
    pub to: State,
    pub fields: &'a [(&'a str, Value)],
    /// The Telegram user who caused it, if one did.
    pub actor: Option<u64>,
    pub detail: &'a str,
}

impl<'a> Transition<'a> {
    pub fn new(from: State, to: State, detail: &'a str) -> Self {
        Transition {
            from,
            to,
            fields: &[],
            actor: None,
            detail,
        }
    }
    pub fn with(mut self, fields: &'a [(&'a str, Value)]) -> Self {
        self.fields = fields;
        self
    }
    pub fn by(mut self, actor: u64) -> Self {
        self.actor = Some(actor);
        self
    }
}

/// Why a transition did not happen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransitionError {
    #[error("experiment {0} does not exist")]
    NotFound(ExperimentId),
    #[error("experiment {id} is {actual}, not {expected}")]
    StateChanged {
        id: ExperimentId,
        expected: State,
        actual: State,
    },
    #[error("{from} → {to} is not a step of the experiment lifecycle")]
    NotAllowed { from: State, to: State },
}

pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the state database {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        Self::init(conn).with_context(|| format!("state database {}", path.display()))
    }

    /// A private database for tests.
    pub fn open_in_memory() -> Result<Store> {
        Self::init(Connection::open_in_memory()?)
    }

    /// An in-memory copy of the database at `path`, opened read-only: a dry run
    /// reads the real history and writes nothing to the file.
    pub fn snapshot_of(path: &Path) -> Result<Store> {
        let src = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("cannot read the state database {}", path.display()))?;
        let mut copy = Connection::open_in_memory()?;
        rusqlite::backup::Backup::new(&src, &mut copy)?
            .run_to_completion(256, std::time::Duration::ZERO, None)
            .with_context(|| format!("cannot copy the state database {}", path.display()))?;
        Self::init(copy)
    }

    fn init(mut conn: Connection) -> Result<Store> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(Store { conn })
    }

    pub fn schema_version(&self) -> Result<usize> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize)
    }

    /// Starts an experiment in state `proposed`. Fails if the funnel already has one open.
    pub fn create(&self, new: &NewExperiment<'_>, now: DateTime<Utc>) -> Result<ExperimentId> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO experiments
               (funnel, step, step_name, next_step_name, state, created_at, updated_at, nonce)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
            params![
                new.funnel,
                new.step as i64,
                new.step_name,
                new.next_step_name,
                State::Proposed.as_str(),
                ts(now),
                new.nonce
            ],
        )
        .with_context(|| {
            format!(
                "cannot start an experiment on funnel {:?}: one is already open",
                new.funnel
            )
        })?;
        let id = ExperimentId(tx.last_insert_rowid());
        audit_in(
            &tx,
            Some(id),
            now,
            "proposed",
            None,
            &format!("step {:?}", new.step_name),
        )?;
        tx.commit()?;
        Ok(id)
    }

    pub fn get(&self, id: ExperimentId) -> Result<Option<Experiment>> {
        Ok(self
            .conn
            .query_row(
                "SELECT * FROM experiments WHERE id = ?1",
                [id.0],
                row_to_experiment,
            )
            .optional()?)
    }

    /// Experiments not yet ended, oldest first.
    pub fn open_experiments(&self) -> Result<Vec<Experiment>> {
        self.query(
            "SELECT * FROM experiments
             WHERE state NOT IN ('kept', 'reverted', 'kept_by_person', 'rejected', 'expired', 'failed')
             ORDER BY id",
            &[],
        )
    }

    /// Experiments not yet ended, and ended ones with commands still to do
    /// (the notes of their last transition), oldest first.
    pub fn experiments_to_advance(&self) -> Result<Vec<Experiment>> {
        self.query(
            "SELECT * FROM experiments
             WHERE state NOT IN ('kept', 'reverted', 'kept_by_person', 'rejected', 'expired', 'failed')
                OR id IN (SELECT experiment_id FROM outbox)
             ORDER BY id",
            &[],
        )
    }

    /// Every experiment, newest first.
    pub fn all(&self) -> Result<Vec<Experiment>> {
        self.query("SELECT * FROM experiments ORDER BY id DESC", &[])
    }

    /// Earlier experiments on one step of a funnel, newest first.
    pub fn history(&self, funnel: &str, step_name: &str) -> Result<Vec<Experiment>> {
        self.query(
            "SELECT * FROM experiments WHERE funnel = ?1 AND step_name = ?2 ORDER BY id DESC",
            &[&funnel, &step_name],
        )
    }

    fn query(&self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<Experiment>> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map(args, row_to_experiment)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Sets fields of an experiment without changing its state.
    pub fn update(
        &self,
        id: ExperimentId,
        fields: &[(&str, Value)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        set_fields(&tx, id, fields, now)?;
        tx.commit()?;
        Ok(())
    }

    /// Moves `id` from `from` to `to` if it is still in `from`, setting `fields`
    /// and writing an audit row, all in one transaction.
    pub fn transition(
        &self,
        id: ExperimentId,
        t: Transition<'_>,
        now: DateTime<Utc>,
    ) -> Result<std::result::Result<(), TransitionError>> {
        let Transition {
            from,
            to,
            fields,
            actor,
            detail,
        } = t;
        if !from.can_become(to) {
            return Ok(Err(TransitionError::NotAllowed { from, to }));
        }
        let tx = self.conn.unchecked_transaction()?;
        let changed = tx.execute(
            "UPDATE experiments SET state = ?1, updated_at = ?2 WHERE id = ?3 AND state = ?4",
            params![to.as_str(), ts(now), id.0, from.as_str()],
        )?;
        if changed == 0 {
            return Ok(Err(state_changed(&tx, id, from)?));
        }
        set_fields(&tx, id, fields, now)?;
        if to.is_final() {
            set_fields(&tx, id, &[("ended_at", Value::Text(ts(now)))], now)?;
        }
        audit_in(&tx, Some(id), now, to.as_str(), actor, detail)?;
        tx.commit()?;
        Ok(Ok(()))
    }

    /// Applies one lifecycle decision in one transaction: the state change
    /// (compare-and-set on `from`) with its audit row, its fields, its note,
    /// its commands into the outbox, and the removal of the outbox row whose
    /// result it answers. A crash leaves either all of it or none.
    /// A tap's decision also confirms its Telegram update (`update_id`), in
    /// the same transaction: a crash can neither lose the tap nor have it
    /// delivered and decided twice.
    pub fn apply(
        &self,
        id: ExperimentId,
        from: State,
        decision: &Decision,
        done: Option<i64>,
        update_id: Option<i32>,
        now: DateTime<Utc>,
    ) -> Result<std::result::Result<(), TransitionError>> {
        let tx = self.conn.unchecked_transaction()?;
        if let Some(change) = &decision.change {
            let to = change.to;
            if !from.can_become(to) {
                return Ok(Err(TransitionError::NotAllowed { from, to }));
            }
            let changed = tx.execute(
                "UPDATE experiments SET state = ?1, updated_at = ?2 WHERE id = ?3 AND state = ?4",
                params![to.as_str(), ts(now), id.0, from.as_str()],
            )?;
            if changed == 0 {
                return Ok(Err(state_changed(&tx, id, from)?));
            }
            if to.is_final() {
                set_fields(&tx, id, &[("ended_at", Value::Text(ts(now)))], now)?;
            }
            audit_in(
                &tx,
                Some(id),
                now,
                to.as_str(),
                change.actor,
                &change.detail,
            )?;
        }
        set_fields(&tx, id, &decision.fields, now)?;
        if let Some(note) = &decision.note {
            audit_in(&tx, Some(id), now, note.kind, note.actor, &note.detail)?;
        }
        for command in &decision.commands {
            tx.execute(
                "INSERT INTO outbox (experiment_id, command, created_at) VALUES (?1, ?2, ?3)",
                params![id.0, serde_json::to_string(command)?, ts(now)],
            )?;
        }
        if let Some(row) = done {
            tx.execute("DELETE FROM outbox WHERE id = ?1", [row])?;
        }
        if let Some(update_id) = update_id {
            tx.execute(
                "INSERT INTO settings (key, value) VALUES ('telegram_offset', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [(update_id + 1).to_string()],
            )?;
        }
        tx.commit()?;
        Ok(Ok(()))
    }

    /// Commands decided for `id` and not yet done, oldest first.
    pub fn pending(&self, id: ExperimentId) -> Result<Vec<Pending>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, command, attempts FROM outbox WHERE experiment_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([id.0], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (row, command, attempts) = row?;
            let command: Command = serde_json::from_str(&command)
                .with_context(|| format!("outbox row {row} is unreadable"))?;
            out.push(Pending {
                row,
                command,
                attempts: attempts as u32,
            });
        }
        Ok(out)
    }

    /// A command failed; it stays for the next attempt, with its error.
    pub fn command_failed(&self, row: i64, error: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
            params![row, error],
        )?;
        Ok(())
    }

    /// Forgets a command (done, or a best-effort one that failed).
    pub fn command_done(&self, row: i64) -> Result<()> {
        self.conn
            .execute("DELETE FROM outbox WHERE id = ?1", [row])?;
        Ok(())
    }

    /// Records something worth keeping that is not a transition (a refused tap, a skipped step).
    pub fn audit(
        &self,
        experiment: Option<ExperimentId>,
        kind: &str,
        actor: Option<u64>,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        audit_in(&self.conn, experiment, now, kind, actor, detail)
    }

    pub fn audit_log(&self, experiment: Option<ExperimentId>) -> Result<Vec<AuditRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT experiment_id, at, kind, actor, detail FROM audit
             WHERE ?1 IS NULL OR experiment_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([experiment.map(|e| e.0)], |r| {
            Ok(AuditRow {
                experiment_id: r.get::<_, Option<i64>>(0)?.map(ExperimentId),
                at: parse_ts(&r.get::<_, String>(1)?)?,
                kind: r.get(2)?,
                actor: r.get::<_, Option<i64>>(3)?.map(|a| a as u64),
                detail: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Keeps the counts of each date as a look saw them, replacing what an
    /// earlier look saw (later looks count more entrants whose window ended).
    pub fn record_days(
        &self,
        id: ExperimentId,
        period: Period,
        days: &[(NaiveDate, Counts)],
    ) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        for (date, c) in days {
            tx.execute(
                "INSERT INTO watch_days (experiment_id, period, date, entrants, conversions)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (experiment_id, period, date)
                 DO UPDATE SET entrants = excluded.entrants, conversions = excluded.conversions",
                params![
                    id.0,
                    period.as_str(),
                    date.to_string(),
                    c.entrants as i64,
                    c.conversions as i64
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The daily counts kept for `id` (none for an experiment watched before
    /// they were kept).
    pub fn watch_days(&self, id: ExperimentId) -> Result<WatchDays> {
        let mut stmt = self.conn.prepare(
            "SELECT period, date, entrants, conversions FROM watch_days
             WHERE experiment_id = ?1 ORDER BY date",
        )?;
        let rows = stmt.query_map([id.0], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = WatchDays::default();
        for row in rows {
            let (period, date, entrants, conversions) = row?;
            let date: NaiveDate = date
                .parse()
                .with_context(|| format!("watch_days has an unreadable date {date:?}"))?;
            let counts = Counts::new(entrants.max(0) as u64, conversions.max(0) as u64);
            if period == Period::Baseline.as_str() {
                out.baseline.push((date, counts));
            } else {
                out.watch.push((date, counts));
            }
        }
        Ok(out)
    }

    /// Starts a try of the run of schedule `name` due at `scheduled_at`
    /// (creating its row on the first try) and returns which try it is, or
    /// `None` if the run already finished. Until the try reports, the run is
    /// due again `backoff(tries)` after `now`: a crash mid-try is retried,
    /// but not at once, so a run that crashes the process cannot loop.
    pub fn begin_attempt(
        &self,
        name: &str,
        scheduled_at: DateTime<Utc>,
        now: DateTime<Utc>,
        backoff: impl Fn(u32) -> chrono::Duration,
    ) -> Result<Option<u32>> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO schedule_runs (name, scheduled_at, started_at) VALUES (?1, ?2, ?3)",
            params![name, ts(scheduled_at), ts(now)],
        )?;
        let attempts: Option<i64> = tx
            .query_row(
                "UPDATE schedule_runs SET attempts = attempts + 1
                 WHERE name = ?1 AND scheduled_at = ?2 AND finished_at IS NULL
                 RETURNING attempts",
                params![name, ts(scheduled_at)],
                |r| r.get(0),
            )
            .optional()?;
        let Some(attempts) = attempts.map(|a| a.max(1) as u32) else {
            return Ok(None);
        };
        tx.execute(
            "UPDATE schedule_runs SET next_attempt_at = ?3 WHERE name = ?1 AND scheduled_at = ?2",
            params![name, ts(scheduled_at), ts(now + backoff(attempts))],
        )?;
        tx.commit()?;
        Ok(Some(attempts))
    }

    /// The run worked: it is done and never tried again.
    pub fn finish_run(
        &self,
        name: &str,
        scheduled_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE schedule_runs SET finished_at = ?3, next_attempt_at = NULL
             WHERE name = ?1 AND scheduled_at = ?2",
            params![name, ts(scheduled_at), ts(now)],
        )?;
        Ok(())
    }

    /// The try failed with `error`; the run is due again at `retry_at`.
    pub fn fail_run(
        &self,
        name: &str,
        scheduled_at: DateTime<Utc>,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE schedule_runs SET last_error = ?3, next_attempt_at = ?4
             WHERE name = ?1 AND scheduled_at = ?2 AND finished_at IS NULL",
            params![name, ts(scheduled_at), error, ts(retry_at)],
        )?;
        Ok(())
    }

    /// The try was stopped by a shutdown, not by a fault: the run is due
    /// again as soon as the daemon is back.
    pub fn interrupt_run(&self, name: &str, scheduled_at: DateTime<Utc>) -> Result<()> {
        self.conn.execute(
            "UPDATE schedule_runs SET next_attempt_at = NULL
             WHERE name = ?1 AND scheduled_at = ?2 AND finished_at IS NULL",
            params![name, ts(scheduled_at)],
        )?;
        Ok(())
    }

    /// The run of `name` with the latest scheduled time, if any was started.
    pub fn latest_run(&self, name: &str) -> Result<Option<ScheduledRun>> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, scheduled_at, started_at, finished_at, attempts, last_error,
                        next_attempt_at
                 FROM schedule_runs WHERE name = ?1 ORDER BY scheduled_at DESC LIMIT 1",
                [name],
                |r| {
                    Ok(ScheduledRun {
                        name: r.get(0)?,
                        scheduled_at: parse_ts(&r.get::<_, String>(1)?)?,
                        started_at: parse_ts(&r.get::<_, String>(2)?)?,
                        finished_at: opt_ts(r.get(3)?)?,
                        attempts: r.get::<_, i64>(4)?.max(0) as u32,
                        last_error: r.get(5)?,
                        next_attempt_at: opt_ts(r.get(6)?)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// The raw connection, for tests that inspect every row.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current as usize > MIGRATIONS.len() {
        anyhow::bail!(
            "the state database has schema version {current}, newer than this funnelfix knows ({}); use a newer funnelfix",
            MIGRATIONS.len()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .with_context(|| format!("migration {} failed", i + 1))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Why a compare-and-set on `expected` found nothing to change.
fn state_changed(conn: &Connection, id: ExperimentId, expected: State) -> Result<TransitionError> {
    let actual: Option<String> = conn
        .query_row("SELECT state FROM experiments WHERE id = ?1", [id.0], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(match actual.as_deref().and_then(State::parse) {
        None => TransitionError::NotFound(id),
        Some(actual) => TransitionError::StateChanged {
            id,
            expected,
            actual,
        },
    })
}

fn set_fields(
    conn: &Connection,
    id: ExperimentId,
    fields: &[(&str, Value)],
    now: DateTime<Utc>,
) -> Result<()> {
    for (column, value) in fields {
        anyhow::ensure!(
            COLUMNS.contains(column),
            "unknown experiment column {column}"
        );
        conn.execute(
            &format!("UPDATE experiments SET {column} = ?1, updated_at = ?2 WHERE id = ?3"),
            params![value, ts(now), id.0],
        )?;
    }
    Ok(())
}

fn audit_in(
    conn: &Connection,
    experiment: Option<ExperimentId>,
    now: DateTime<Utc>,
    kind: &str,
    actor: Option<u64>,
    detail: &str,
) -> Result<()> {
    conn.execute(
        "INSERT INTO audit (experiment_id, at, kind, actor, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            experiment.map(|e| e.0),
            ts(now),
            kind,
            actor.map(|a| a as i64),
            detail
        ],
    )?;
    Ok(())
}

/// Timestamps are stored as RFC 3339 text in UTC, which sorts as time does.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_ts(s: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })
}

fn opt_ts(v: Option<String>) -> rusqlite::Result<Option<DateTime<Utc>>> {
    v.map(|s| parse_ts(&s)).transpose()
}

fn row_to_experiment(r: &rusqlite::Row<'_>) -> rusqlite::Result<Experiment> {
    let state: String = r.get("state")?;
    let state = State::parse(&state).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown state {state:?}").into(),
        )
    })?;
    let u = |name: &str| -> rusqlite::Result<Option<u64>> {
        Ok(r.get::<_, Option<i64>>(name)?.map(|v| v as u64))
    };
    Ok(Experiment {
        id: ExperimentId(r.get("id")?),
        funnel: r.get("funnel")?,
        step: r.get::<_, i64>("step")? as usize,
        step_name: r.get("step_name")?,
        next_step_name: r.get("next_step_name")?,
        state,
        created_at: parse_ts(&r.get::<_, String>("created_at")?)?,
        updated_at: parse_ts(&r.get::<_, String>("updated_at")?)?,
        nonce: r.get("nonce")?,
        title: r.get("title")?,
        hypothesis: r.get("hypothesis")?,
        diff: r.get("diff")?,
        changed_files: r.get("changed_files")?,
        base_sha: r.get("base_sha")?,
        branch: r.get("branch")?,
        pr_number: u("pr_number")?,
        pr_url: r.get("pr_url")?,
        head_sha: r.get("head_sha")?,
        message_id: r.get("message_id")?,
        asked_at: opt_ts(r.get("asked_at")?)?,
        decided_by: u("decided_by")?,
        decided_at: opt_ts(r.get("decided_at")?)?,
        merged_at: opt_ts(r.get("merged_at")?)?,
        merge_sha: r.get("merge_sha")?,
        rate_before: r.get("rate_before")?,
        entrants_before: u("entrants_before")?,
        converted_before: u("converted_before")?,
        baseline: r.get("baseline")?,
        assessment: r.get("assessment")?,
        p_value: r.get("p_value")?,
        revert_branch: r.get("revert_branch")?,
        revert_pr: u("revert_pr")?,
        revert_pr_url: r.get("revert_pr_url")?,
        verdict: r.get("verdict")?,
        failure: r.get("failure")?,
        ended_at: opt_ts(r.get("ended_at")?)?,
        revert_head_sha: r.get("revert_head_sha")?,
        revert_message_id: r.get("revert_message_id")?,
        revert_told: r.get::<_, i64>("revert_told")? != 0,
        head_seen_at: opt_ts(r.get("head_seen_at")?)?,
        head_checks: r.get("head_checks")?,
        preview_url: r.get("preview_url")?,
        checks_failed_sha: r.get("checks_failed_sha")?,
        fix_asked: r.get::<_, i64>("fix_asked")? != 0,
        report: r.get("report")?,
        segment_property: r.get("segment_property")?,
        segment_value: r.get("segment_value")?,
        early_baseline: r.get("early_baseline")?,
        control_baseline: r.get("control_baseline")?,
    })
}

/// Shorthands for [`Store::update`] and [`Store::transition`] field lists.
pub fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}
/// Text, or NULL for `None`.
pub fn opt_text(s: Option<impl Into<String>>) -> Value {
    s.map_or(Value::Null, text)
}
pub fn int(i: impl TryInto<i64>) -> Value {
    i.try_into().map(Value::Integer).unwrap_or(Value::Null)
}
pub fn real(f: f64) -> Value {
    Value::Real(f)
}
pub fn time(t: DateTime<Utc>) -> Value {
    Value::Text(ts(t))
}

/// An experiment with every field a message may show, for tests.
#[cfg(test)]
pub(crate) fn sample_experiment() -> Experiment {
    let t: DateTime<Utc> = "2026-03-02T09:00:00Z".parse().expect("time");
    Experiment {
        id: ExperimentId(3),
        funnel: "signup".into(),
        step: 1,
        step_name: "Viewed pricing".into(),
        next_step_name: "Started signup".into(),
        state: State::AwaitingApproval,
        created_at: t,
        updated_at: t,
        nonce: "abc".into(),
        title: Some("Pricing: <b>bold</b> & clear CTA".into()),
        hypothesis: Some("People do not see a next step.".into()),
        diff: None,
        changed_files: None,
        base_sha: None,
        branch: Some("funnelfix/signup/viewed-pricing-3".into()),
        pr_number: Some(12),
        pr_url: Some("https://github.com/acme/website/pull/12".into()),
        head_sha: Some("0123456789abcdef".into()),
        message_id: None,
        asked_at: None,
        decided_by: None,
        decided_at: None,
        merged_at: None,
        merge_sha: None,
        rate_before: Some(0.25),
        entrants_before: Some(4500),
        converted_before: Some(1125),
        baseline: None,
        assessment: None,
        p_value: None,
        revert_branch: None,
        revert_pr: None,
        revert_pr_url: None,
        verdict: None,
        failure: None,
        ended_at: None,
        revert_head_sha: None,
        revert_message_id: None,
        revert_told: false,
        head_seen_at: None,
        head_checks: None,
        preview_url: None,
        checks_failed_sha: None,
        fix_asked: false,
        report: None,
        segment_property: None,
        segment_value: None,
        early_baseline: None,
        control_baseline: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-03-02T09:00:00Z".parse().expect("valid time")
    }

    fn new<'a>(funnel: &'a str) -> NewExperiment<'a> {
        NewExperiment {
            funnel,
            step: 1,
            step_name: "Viewed pricing",
            next_step_name: "Started signup",
            nonce: "n0nce",
        }
    }

    #[test]
    fn migrations_apply_once_and_reopen_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state/funnelfix.db");
        let store = Store::open(&path).expect("open");
        assert_eq!(store.schema_version().expect("version"), MIGRATIONS.len());
        let id = store.create(&new("signup"), now()).expect("create");
        drop(store);
        let store = Store::open(&path).expect("reopen");
        assert_eq!(store.schema_version().expect("version"), MIGRATIONS.len());
        assert_eq!(
            store.get(id).expect("get").map(|e| e.state),
            Some(State::Proposed)
        );
        let mode: String = store
            .connection()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("pragma");
        assert_eq!(mode, "wal");
    }

    #[test]
    fn revert_state_moves_from_settings_into_columns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.db");
        {
            // A database as the first schema left it, mid-revert.
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(MIGRATIONS[0]).expect("schema 1");
            conn.pragma_update(None, "user_version", 1)
                .expect("version");
            conn.execute_batch(
                "INSERT INTO experiments (id, funnel, step, step_name, next_step_name, state,
                    created_at, updated_at, nonce)
                 VALUES (4, 'signup', 1, 'a', 'b', 'reverting', 't', 't', 'n');
                 INSERT INTO settings VALUES ('revert_message_4', '77'), ('revert_told_4', '1'),
                    ('telegram_offset', '9');",
            )
            .expect("rows");
        }
        let store = Store::open(&path).expect("migrated");
        assert_eq!(store.schema_version().expect("version"), MIGRATIONS.len());
        let conn = store.connection();
        let (message, told): (Option<i64>, i64) = conn
            .query_row(
                "SELECT revert_message_id, revert_told FROM experiments WHERE id = 4",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("row");
        assert_eq!((message, told), (Some(77), 1));
        assert_eq!(store.setting("revert_message_4").expect("get"), None);
        assert_eq!(
            store.setting("telegram_offset").expect("get").as_deref(),
            Some("9")
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.db");
        Connection::open(&path)
            .and_then(|c| c.pragma_update(None, "user_version", 99))
            .expect("set version");
        let err = Store::open(&path).err().expect("refused");
        assert!(format!("{err:#}").contains("newer"), "{err:#}");
    }

    #[test]
    fn one_open_experiment_per_funnel() {
        let store = Store::open_in_memory().expect("store");
        let id = store.create(&new("signup"), now()).expect("first");
        assert!(store.create(&new("signup"), now()).is_err());
        store.create(&new("checkout"), now()).expect("other funnel");
        store
            .transition(
                id,
                Transition::new(State::Proposed, State::Failed, "no edit")
                    .with(&[("failure", text("no edit"))]),
                now(),
            )
            .expect("db")
            .expect("allowed");
        store
            .create(&new("signup"), now())
            .expect("after the first ended");
    }

    #[test]
    fn transitions_are_compare_and_set_with_an_audit_row() {
        let store = Store::open_in_memory().expect("store");
        let id = store.create(&new("signup"), now()).expect("create");
        store
            .transition(
                id,
                Transition::new(State::Proposed, State::AwaitingApproval, "PR #7")
                    .with(&[("pr_number", int(7))]),
                now(),
            )
            .expect("db")
            .expect("first");
        let again = store
            .transition(
                id,
                Transition::new(State::Proposed, State::AwaitingApproval, "again"),
                now(),
            )
            .expect("db");
        assert_eq!(
            again,
            Err(TransitionError::StateChanged {
                id,
                expected: State::Proposed,
                actual: State::AwaitingApproval
            })
        );
        let double_tap = |actor| {
            store
                .transition(
                    id,
                    Transition::new(State::AwaitingApproval, State::Merged, "approved")
                        .with(&[("decided_by", int(actor))])
                        .by(actor),
                    now(),
                )
                .expect("db")
        };
        assert!(double_tap(5u64).is_ok());
        assert!(double_tap(6u64).is_err());
        let e = store.get(id).expect("get").expect("exists");
        assert_eq!(e.pr_number, Some(7));
        assert_eq!(e.decided_by, Some(5));
        let kinds: Vec<String> = store
            .audit_log(Some(id))
            .expect("log")
            .into_iter()
            .map(|a| a.kind)
            .collect();
        assert_eq!(kinds, ["proposed", "awaiting_approval", "merged"]);
        let not_allowed = store
            .transition(
                id,
                Transition::new(State::Merged, State::Rejected, ""),
                now(),
            )
            .expect("db");
        assert!(matches!(
            not_allowed,
            Err(TransitionError::NotAllowed { .. })
        ));
    }

    #[test]
    fn final_states_set_ended_at() {
        let store = Store::open_in_memory().expect("store");
        let id = store.create(&new("signup"), now()).expect("create");
        store
            .transition(
                id,
                Transition::new(State::Proposed, State::Failed, ""),
                now(),
            )
            .expect("db")
            .expect("ok");
        assert_eq!(
            store.get(id).expect("get").and_then(|e| e.ended_at),
            Some(now())
        );
        assert!(store.open_experiments().expect("open").is_empty());
        assert_eq!(
            store
                .history("signup", "Viewed pricing")
                .expect("history")
                .len(),
            1
        );
    }

    #[test]
    fn unknown_columns_are_refused() {
        let store = Store::open_in_memory().expect("store");
        let id = store.create(&new("signup"), now()).expect("create");
        assert!(
            store
                .update(id, &[("state; DROP TABLE audit", text("x"))], now())
                .is_err()
        );
    }

    fn minutes(n: u32) -> chrono::Duration {
        chrono::Duration::minutes(i64::from(n))
    }

    #[test]
    fn a_scheduled_run_is_tried_until_it_finishes_and_then_never_again() {
        let store = Store::open_in_memory().expect("store");
        let at = now();
        assert_eq!(store.latest_run("monitor").expect("latest"), None);
        assert_eq!(
            store
                .begin_attempt("monitor", at, at, minutes)
                .expect("try"),
            Some(1)
        );
        let run = store.latest_run("monitor").expect("latest").expect("row");
        assert_eq!(run.attempts, 1);
        assert_eq!(run.finished_at, None);
        // Until the try reports, a crash would leave it due a backoff later.
        assert_eq!(run.next_attempt_at, Some(at + minutes(1)));

        let later = at + minutes(1);
        store
            .fail_run("monitor", at, "PostHog: 503", later + minutes(1))
            .expect("fail");
        let run = store.latest_run("monitor").expect("latest").expect("row");
        assert_eq!(run.last_error.as_deref(), Some("PostHog: 503"));
        assert_eq!(run.next_attempt_at, Some(later + minutes(1)));
        assert_eq!(run.finished_at, None);

        let again = later + minutes(1);
        assert_eq!(
            store
                .begin_attempt("monitor", at, again, minutes)
                .expect("retry"),
            Some(2)
        );
        assert_eq!(
            store
                .latest_run("monitor")
                .expect("latest")
                .and_then(|r| r.next_attempt_at),
            Some(again + minutes(2)),
            "the backoff grows with the tries"
        );
        store.finish_run("monitor", at, again).expect("finish");
        let run = store.latest_run("monitor").expect("latest").expect("row");
        assert_eq!(run.finished_at, Some(again));
        assert_eq!(run.next_attempt_at, None);
        assert_eq!(run.attempts, 2);
        assert_eq!(run.started_at, at, "the first try's start is kept");
        assert_eq!(
            run.last_error.as_deref(),
            Some("PostHog: 503"),
            "the error stays on the row"
        );
        // Finished: a restart that sees the same scheduled time does nothing.
        assert_eq!(
            store
                .begin_attempt("monitor", at, again, minutes)
                .expect("done"),
            None
        );
        store
            .fail_run("monitor", at, "late", again)
            .expect("ignored");
        assert_eq!(
            store
                .latest_run("monitor")
                .expect("latest")
                .expect("row")
                .finished_at,
            Some(again)
        );
        // Schedules are separate, and the latest scheduled time wins.
        assert_eq!(
            store
                .begin_attempt("propose", at, at, minutes)
                .expect("other"),
            Some(1)
        );
        let next = at + minutes(15);
        store
            .begin_attempt("monitor", next, next, minutes)
            .expect("next");
        assert_eq!(
            store
                .latest_run("monitor")
                .expect("latest")
                .map(|r| r.scheduled_at),
            Some(next)
        );
    }

    #[test]
    fn a_try_cut_short_by_a_shutdown_is_due_at_once() {
        let store = Store::open_in_memory().expect("store");
        let at = now();
        store
            .begin_attempt("propose", at, at, minutes)
            .expect("try");
        store.interrupt_run("propose", at).expect("interrupt");
        let run = store.latest_run("propose").expect("latest").expect("row");
        assert_eq!(run.finished_at, None);
        assert_eq!(run.next_attempt_at, None);
        assert_eq!(run.attempts, 1);
    }

    #[test]
    fn runs_recorded_before_retries_existed_read_as_unretried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.db");
        {
            let mut conn = Connection::open(&path).expect("open");
            let tx = conn.transaction().expect("tx");
            tx.execute_batch(MIGRATIONS[0]).expect("schema 1");
            tx.pragma_update(None, "user_version", 1).expect("version");
            tx.execute(
                "INSERT INTO schedule_runs (name, scheduled_at, started_at)
                 VALUES ('propose', ?1, ?1)",
                [ts(now())],
            )
            .expect("a run a crash left unfinished");
            tx.commit().expect("commit");
        }
        let store = Store::open(&path).expect("migrated");
        assert_eq!(store.schema_version().expect("version"), MIGRATIONS.len());
        let run = store.latest_run("propose").expect("latest").expect("row");
        assert_eq!(run.attempts, 0);
        assert_eq!(run.finished_at, None);
        assert_eq!(run.next_attempt_at, None, "resumed at once");
        assert_eq!(
            store
                .begin_attempt("propose", now(), now(), minutes)
                .expect("resume"),
            Some(1)
        );
    }

    #[test]
    fn a_later_look_replaces_the_counts_of_a_date() {
        let store = Store::open_in_memory().expect("store");
        let id = store.create(&new("signup"), now()).expect("create");
        let d = |s: &str| s.parse::<NaiveDate>().expect("date");
        store
            .record_days(
                id,
                Period::Baseline,
                &[(d("2026-02-28"), Counts::new(90, 20))],
            )
            .expect("baseline");
        store
            .record_days(
                id,
                Period::Watch,
                &[
                    (d("2026-03-03"), Counts::new(40, 5)),
                    (d("2026-03-02"), Counts::new(100, 20)),
                ],
            )
            .expect("first look");
        store
            .record_days(id, Period::Watch, &[(d("2026-03-03"), Counts::new(80, 15))])
            .expect("second look");
        let days = store.watch_days(id).expect("read");
        assert_eq!(days.baseline, [(d("2026-02-28"), Counts::new(90, 20))]);
        assert_eq!(
            days.watch,
            [
                (d("2026-03-02"), Counts::new(100, 20)),
                (d("2026-03-03"), Counts::new(80, 15))
            ]
        );
        assert_eq!(
            store.watch_days(ExperimentId(99)).expect("none"),
            WatchDays::default()
        );
    }

    #[test]
    fn settings_upsert() {
        let store = Store::open_in_memory().expect("store");
        assert_eq!(store.setting("paused").expect("get"), None);
        store.set_setting("paused", "1").expect("set");
        store.set_setting("paused", "0").expect("set");
        assert_eq!(store.setting("paused").expect("get").as_deref(), Some("0"));
    }
}

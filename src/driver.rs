//! The driver: runs the lifecycle's commands against the services and feeds
//! each result back to the lifecycle as an event. Decisions and their
//! commands are persisted together (the outbox), and a command's row is
//! removed in the same transaction that records its result, so a crash
//! anywhere resumes from the first command not yet done.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use tracing::{info, warn};

use crate::app::App;
use crate::config::FunnelConfig;
use crate::experiment::ExperimentId;
use crate::funnel::{EntryRange, FunnelReport};
use crate::github::{self, MergeOutcome, PrState, PullRequest};
use crate::lifecycle::{
    self, Action, Command, EarlyBaseline, Event, MergeResult, PrSeen, Rules, UpstreamCounts,
};
use crate::proposal::{self, ChangedFile, EditRules, FailedCheck, PromptInput};
use crate::stats::{Assessment, Counts};
use crate::store::{Experiment, Period};
use crate::text;
use crate::watch_chart;

/// A command that tells the chat is tried this often before it is dropped.
const NOTIFY_ATTEMPTS: u32 = 20;

impl App {
    /// The lifecycle's rules for an experiment's funnel.
    fn rules(&self, e: &Experiment) -> Result<Rules> {
        let funnel = self.funnel_of(e)?;
        Ok(Rules {
            chat_id: self.config.telegram.chat_id,
            approvers: self.config.telegram.approvers.clone(),
            thresholds: self.config.thresholds.clone(),
            conversion_window: funnel.conversion_window,
            checks_wait: self.config.github.checks_wait,
            failed_checks: self.config.github.failed_checks,
        })
    }

    fn funnel_of(&self, e: &Experiment) -> Result<&FunnelConfig> {
        self.funnel(&e.funnel)
            .with_context(|| format!("funnel {:?} is no longer configured", e.funnel))
    }

    /// Tells the lifecycle of `event`, persists its decision, and runs what it asked.
    pub async fn feed(&self, id: ExperimentId, event: Event) -> Result<()> {
        self.decide(id, &event, None, None)?;
        self.drain(id).await
    }

    /// Like [`App::feed`] for an event that came as Telegram update
    /// `update_id`: the update is confirmed with the decision.
    pub async fn feed_update(&self, id: ExperimentId, event: Event, update_id: i32) -> Result<()> {
        self.decide(id, &event, None, Some(update_id))?;
        self.drain(id).await
    }

    /// What is pending is done; if nothing is left, the lifecycle hears a tick.
    pub async fn advance(&self, id: ExperimentId) -> Result<()> {
        self.drain(id).await?;
        if self.store.pending(id)?.is_empty() {
            self.feed(id, Event::Tick).await?;
        }
        Ok(())
    }

    /// Asks the lifecycle and persists its answer in one transaction,
    /// removing the outbox row `done` whose result `event` is.
    fn decide(
        &self,
        id: ExperimentId,
        event: &Event,
        done: Option<i64>,
        update_id: Option<i32>,
    ) -> Result<()> {
        let e = self.get(id)?;
        let rules = self.rules(&e)?;
        let now = self.clock.now();
        let decision = lifecycle::decide(&e, event, now, &rules);
        if let Some(change) = &decision.change {
            info!(experiment = %id, event = event.name(), from = %e.state, to = %change.to, detail = %change.detail, "transition");
        }
        self.store
            .apply(id, e.state, &decision, done, update_id, now)?
            .map_err(anyhow::Error::from)
    }

    /// Runs the experiment's pending commands in order. A failed command
    /// stays for the next tick (best-effort ones are dropped); the others go on.
    async fn drain(&self, id: ExperimentId) -> Result<()> {
        let mut failed = Vec::new();
        let mut first_error = None;
        loop {
            self.check_crash()?;
            let Some(p) = self
                .store
                .pending(id)?
                .into_iter()
                .find(|p| !failed.contains(&p.row))
            else {
                break;
            };
            let e = self.get(id)?;
            match self.execute(&e, &p.command).await {
                Ok(Some(event)) => self.decide(id, &event, Some(p.row), None)?,
                Ok(None) => self.store.command_done(p.row)?,
                Err(err) => {
                    let message = format!("{err:#}");
                    warn!(experiment = %id, command = p.command.name(), error = %message, "command failed");
                    let give_up = p.command.best_effort()
                        || (matches!(p.command, Command::Notify { .. } | Command::SendWatchChart)
                            && p.attempts + 1 >= NOTIFY_ATTEMPTS);
                    if give_up {
                        self.store.command_done(p.row)?;
                    } else {
                        self.store.command_failed(p.row, &message)?;
                        failed.push(p.row);
                        first_error.get_or_insert(err);
                    }
                }
            }
            self.count_command()?;
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The test-only crash point: after the N-th command, stop.
    fn count_command(&self) -> Result<()> {
        let done = self.crash.done.fetch_add(1, Ordering::SeqCst) + 1;
        if self.crash.after == Some(done) {
            if self.crash.exit_process {
                eprintln!("funnelfix: crash point after command {done}");
                std::process::exit(75);
            }
            self.crash.crashed.store(true, Ordering::SeqCst);
        }
        self.check_crash()
    }

    fn check_crash(&self) -> Result<()> {
        anyhow::ensure!(!self.crashed(), "stopped at a test crash point");
        Ok(())
    }

    /// Does one command; its result, if it has one, as the event to feed back.
    async fn execute(&self, e: &Experiment, command: &Command) -> Result<Option<Event>> {
        let gh = &self.services.github;
        let tg = &self.services.telegram;
        Ok(match command {
            Command::OpenPr => Some(self.open_pr(e).await?),
            Command::AskApproval => Some(self.ask_approval(e).await?),
            Command::AnswerTap { callback_id, text } => {
                tg.answer_callback(callback_id, text).await?;
                None
            }
            Command::CheckPr => {
                let pr = gh.pull_request(pr_number(e)?).await?;
                Some(Event::PrSeen(seen(&pr, self.clock.now())?))
            }
            Command::CheckHead => {
                let pr = gh.pull_request(pr_number(e)?).await?;
                let report = gh.head_report(&pr.head_sha).await?;
                let diff = match e.head_sha.as_deref() == Some(pr.head_sha.as_str()) {
                    true => None,
                    false => Some(self.whole_diff(e, &pr.head_sha).await?),
                };
                Some(Event::HeadChecked {
                    sha: pr.head_sha,
                    checks: report.checks,
                    preview: report.preview,
                    diff,
                })
            }
            Command::AskFix { check, details } => Some(self.ask_fix(e, check, details).await?),
            Command::LinkPreview { url } => {
                gh.link_preview(pr_number(e)?, url).await?;
                None
            }
            Command::CheckCi { sha, by } => Some(Event::ChecksSeen {
                sha: sha.clone(),
                checks: gh.checks(sha).await?,
                by: *by,
            }),
            Command::Merge { sha, by } => {
                let title = e.title.as_deref().unwrap_or("funnelfix change");
                Some(Event::MergeDone {
                    result: self.merge(pr_number(e)?, sha, title).await?,
                    by: *by,
                })
            }
            Command::ClosePr { by, checks_failed } => {
                gh.close_pr(pr_number(e)?).await?;
                if let Some(branch) = &e.branch {
                    gh.delete_branch(branch).await?;
                }
                Some(Event::PrClosed {
                    by: *by,
                    checks_failed: *checks_failed,
                })
            }
            Command::FetchBaseline {
                from,
                to,
                early_window,
                control,
            } => {
                let days = self.step_days(e, None, *control, *from, *to, *to).await?;
                self.store.record_days(e.id, Period::Baseline, &days.step)?;
                let early = match early_window {
                    Some(window) => Some(
                        self.step_days(e, Some(*window), *control, *from, *to, *to)
                            .await?,
                    ),
                    None => None,
                };
                let control = days.upstream.as_deref().map(|upstream| UpstreamCounts {
                    counts: by_weekday(upstream),
                    early: early
                        .as_ref()
                        .and_then(|d| d.upstream.as_deref())
                        .map(by_weekday),
                });
                Some(Event::BaselineFetched {
                    counts: by_weekday(&days.step),
                    early: early.zip(*early_window).map(|(d, window)| EarlyBaseline {
                        window,
                        counts: by_weekday(&d.step),
                    }),
                    control,
                })
            }
            Command::FetchCounts {
                from,
                to,
                early_window,
                control,
            } => {
                let now = self.clock.now();
                let days = self.step_days(e, None, *control, *from, *to, now).await?;
                self.store.record_days(e.id, Period::Watch, &days.step)?;
                // The entries from where the matured ones end, on the early window.
                let none = [Counts::default(); 7];
                let recent = match early_window {
                    Some(window) if days.matured_to < *to => Some(
                        self.step_days(e, Some(*window), *control, days.matured_to, *to, now)
                            .await?,
                    ),
                    _ => None,
                };
                let recent_of = |part: fn(&StepDays) -> Option<&Days>| {
                    early_window.map(|_| recent.as_ref().and_then(part).map_or(none, by_weekday))
                };
                let control = days.upstream.as_deref().map(|upstream| UpstreamCounts {
                    counts: by_weekday(upstream),
                    early: recent_of(|d| d.upstream.as_deref()),
                });
                Some(Event::CountsFetched {
                    counts: by_weekday(&days.step),
                    recent: recent_of(|d| Some(&d.step)),
                    control,
                })
            }
            Command::OpenRevertPr => Some(self.open_revert_pr(e).await?),
            Command::AskRevertApproval => {
                let verdict = e.verdict.as_deref().unwrap_or("reverted");
                let url = e.revert_pr_url.as_deref().unwrap_or("");
                let buttons = vec![(
                    text::MERGE_REVERT_BUTTON.to_string(),
                    lifecycle::callback_data(Action::MergeRevert, e),
                )];
                let html = text::revert_approval_note(e, verdict, url);
                let message_id = tg.send_html(&html, &buttons).await?;
                Some(Event::RevertAsked { message_id })
            }
            Command::CheckRevertPr => {
                let number = e
                    .revert_pr
                    .with_context(|| format!("experiment {} has no revert PR", e.id))?;
                let pr = gh.pull_request(number).await?;
                Some(Event::RevertPrSeen(seen(&pr, self.clock.now())?))
            }
            Command::MergeRevert { sha, by } => {
                let number = e
                    .revert_pr
                    .with_context(|| format!("experiment {} has no revert PR", e.id))?;
                Some(Event::RevertMergeDone {
                    result: self
                        .merge(number, sha, &text::revert_merge_title(e))
                        .await?,
                    by: *by,
                })
            }
            Command::Notify { html } => {
                tg.send_html(html, &[]).await?;
                None
            }
            Command::SendWatchChart => {
                self.send_watch_chart(e).await?;
                None
            }
            Command::EditMessage { message_id, html } => {
                tg.edit_html(*message_id, html).await?;
                None
            }
            Command::Annotate { content, at } => {
                self.services.posthog.annotate(content, *at).await?;
                None
            }
            Command::Comment { pr, body } => {
                gh.comment(*pr, body).await?;
                None
            }
        })
    }

    /// Merges PR `number` only at `sha`. A merge that was done before an
    /// interruption (its result never recorded) is recognised, not refused.
    async fn merge(&self, number: u64, sha: &str, title: &str) -> Result<MergeResult> {
        let gh = &self.services.github;
        let outcome = gh
            .merge(number, sha, self.config.github.merge_method, title)
            .await?;
        if let MergeOutcome::NotMergeable(_) = &outcome {
            let pr = gh.pull_request(number).await?;
            if pr.head_sha == sha
                && let PrSeen::Merged { at, sha } = seen(&pr, self.clock.now())?
            {
                return Ok(MergeResult::Merged { sha, at });
            }
        }
        Ok(merge_result(outcome, self.clock.now()))
    }

    /// The funnel report for the proposal's PR body and message: the one the
    /// proposal was made from, or (for an experiment stored before reports
    /// were) the one the propose pass just read, or a fresh one.
    async fn report_for(&self, e: &Experiment) -> Result<FunnelReport> {
        if let Some(report) = e
            .report
            .as_deref()
            .and_then(|r| serde_json::from_str::<FunnelReport>(r).ok())
        {
            return Ok(report);
        }
        let cached = self
            .last_report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|r| r.funnel == e.funnel);
        match cached {
            Some(r) => Ok(r),
            None => self.report(self.funnel_of(e)?).await,
        }
    }

    /// Opens the PR, or finds the one opened before a restart.
    async fn open_pr(&self, e: &Experiment) -> Result<Event> {
        let (Some(branch), Some(base), Some(changes)) = (&e.branch, &e.base_sha, &e.changed_files)
        else {
            anyhow::bail!("experiment {} has no change to open a PR with", e.id);
        };
        let gh = &self.services.github;
        let title = e.title.as_deref().unwrap_or("funnelfix change");
        let pr = match gh.find_pr(branch).await? {
            Some(pr) => pr,
            None => {
                if gh.branch_head(branch).await?.is_none() {
                    let changes: Vec<(String, Option<String>)> = serde_json::from_str(changes)?;
                    gh.commit_files(base, branch, title, &changes).await?;
                }
                let report = self.report_for(e).await?;
                let body = text::pr_body(&text::PrBody {
                    experiment_id: e.id.0,
                    report: &report,
                    step: e.step,
                    hypothesis: e.hypothesis.as_deref().unwrap_or(""),
                    diff: e.diff.as_deref().unwrap_or(""),
                    config: &self.config,
                });
                gh.open_pr(branch, title, &body, &self.config.github.labels)
                    .await?
            }
        };
        Ok(Event::PrOpened {
            number: pr.number,
            url: pr.url,
            head_sha: pr.head_sha,
        })
    }

    /// The chart (best effort) and the proposal with its buttons.
    async fn ask_approval(&self, e: &Experiment) -> Result<Event> {
        let report = self.report_for(e).await?;
        let summary = text::summarize_diff(e.diff.as_deref().unwrap_or(""));
        let html = text::proposal_message(
            e,
            &report,
            &summary,
            &self.config.thresholds,
            self.config.github.checks_wait,
        );
        let tg = &self.services.telegram;
        match crate::chart::funnel_chart(&report) {
            Ok(png) => {
                if let Err(err) = tg.send_photo(png, &text::chart_caption(&e.funnel)).await {
                    warn!(error = %format!("{err:#}"), "could not send the chart");
                }
            }
            Err(err) => warn!(error = %format!("{err:#}"), "could not draw the chart"),
        }
        let buttons = vec![
            (
                text::APPROVE_BUTTON.to_string(),
                lifecycle::callback_data(Action::Approve, e),
            ),
            (
                text::REJECT_BUTTON.to_string(),
                lifecycle::callback_data(Action::Reject, e),
            ),
        ];
        let message_id = tg.send_html(&html, &buttons).await?;
        info!(experiment = %e.id, pr = ?e.pr_number, "proposal sent to the chat");
        Ok(Event::ProposalSent { message_id })
    }

    /// The watch chart as a photo. A chart that cannot be drawn is logged,
    /// not retried; one Telegram did not take is.
    async fn send_watch_chart(&self, e: &Experiment) -> Result<()> {
        let png = match watch_chart::for_experiment(&self.store, &self.config.thresholds, e) {
            Ok(Some(png)) => png,
            Ok(None) => return Ok(()),
            Err(err) => {
                warn!(experiment = %e.id, error = %format!("{err:#}"), "could not draw the watch chart");
                return Ok(());
            }
        };
        self.services
            .telegram
            .send_photo(png, &text::watch_chart_caption(e))
            .await?;
        Ok(())
    }

    /// The step's entries from `from` to `to` and their conversions to the
    /// next step within the funnel's conversion window (or `window`), per
    /// date of entry, censored at `now`: the same estimand as the funnel
    /// report's rate of the step (a two-step query counts exactly the
    /// transition it would count in the whole funnel). With `control`, the
    /// query starts one step earlier and also counts the upstream step's
    /// transition, in the same query.
    async fn step_days(
        &self,
        e: &Experiment,
        window: Option<Duration>,
        control: bool,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<StepDays> {
        let funnel = self.funnel_of(e)?;
        let first = if control {
            e.step
                .checked_sub(1)
                .with_context(|| format!("experiment {}'s step has no upstream step", e.id))?
        } else {
            e.step
        };
        let steps = &funnel.steps[first..=e.step + 1];
        let days = self
            .services
            .posthog
            .segment_days(
                steps,
                e.watch_segment().as_ref(),
                window.unwrap_or(funnel.conversion_window),
                EntryRange { from, to },
                now,
            )
            .await?;
        let transition = |i: usize| -> Vec<(NaiveDate, Counts)> {
            days.days
                .iter()
                .map(|d| {
                    let (entrants, conversions) = d.counts.transition(i);
                    let counts = Counts::new(entrants, conversions);
                    let counts = match d.people.get(i) {
                        Some(people) => counts.with_people(*people),
                        None => counts,
                    };
                    (d.date, counts)
                })
                .collect()
        };
        let watched = e.step - first;
        Ok(StepDays {
            step: transition(watched),
            upstream: control.then(|| transition(0)),
            matured_to: days.range.to,
        })
    }

    /// Commits the files as they were before the merge on the revert branch
    /// and opens its PR, or finds what an interrupted run already made; says
    /// whether someone changed the files since the merge.
    async fn open_revert_pr(&self, e: &Experiment) -> Result<Event> {
        let gh = &self.services.github;
        let merge_sha = e
            .merge_sha
            .as_deref()
            .filter(|s| !s.is_empty())
            .with_context(|| format!("experiment {} has no merge commit to revert", e.id))?;
        let branch = github::revert_branch_name(&self.config.github.branch_prefix, e.id);
        let paths: Vec<String> = serde_json::from_str::<Vec<(String, Option<String>)>>(
            e.changed_files.as_deref().unwrap_or("[]"),
        )?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
        let title = text::revert_title(e);
        let pr = match gh.find_pr(&branch).await? {
            Some(pr) => pr,
            None => {
                let head = gh.base_head().await?;
                if gh.branch_head(&branch).await?.is_none() {
                    let parent = gh.commit_parent(merge_sha).await?;
                    let before = gh.read_files(&parent, &paths).await?;
                    let changes: Vec<(String, Option<String>)> = before.into_iter().collect();
                    gh.commit_files(&head, &branch, &title, &changes).await?;
                }
                let a: Assessment = serde_json::from_str(e.assessment.as_deref().unwrap_or("null"))
                    .context("the stored assessment is unreadable")?;
                let verdict = e.verdict.as_deref().unwrap_or("reverted");
                let body = text::revert_pr_body(e, verdict, &a, &self.config.thresholds);
                gh.open_pr(&branch, &title, &body, &self.config.github.labels)
                    .await?
            }
        };
        let head = gh.base_head().await?;
        let now_files: BTreeMap<String, Option<String>> = gh.read_files(&head, &paths).await?;
        let merged_files = gh.read_files(merge_sha, &paths).await?;
        Ok(Event::RevertPrOpened {
            number: pr.number,
            url: pr.url.clone(),
            head_sha: pr.head_sha.clone(),
            seen: seen(&pr, self.clock.now())?,
            changed_since_merge: now_files != merged_files,
        })
    }
}

impl App {
    /// Asks the model to fix the red head and commits the fix on the PR's
    /// branch. A fix the model could not give, or that could not be
    /// committed, is reported as such, not retried: a person takes over.
    async fn ask_fix(&self, e: &Experiment, check: &str, details: &str) -> Result<Event> {
        let gh = &self.services.github;
        let (Some(branch), Some(base)) = (&e.branch, &e.base_sha) else {
            anyhow::bail!("experiment {} has no branch to fix", e.id);
        };
        let step = &self.funnel_of(e)?.steps[e.step];
        let head = gh.pull_request(pr_number(e)?).await?.head_sha;
        // Pushed already: by a person, or by this command before a restart.
        if e.checks_failed_sha.as_deref() != Some(head.as_str()) {
            return Ok(Event::FixPushed {
                diff: self.whole_diff(e, &head).await?,
                sha: head,
            });
        }
        let at_base = present(gh.read_files(base, &step.files).await?);
        let on_branch = present(gh.read_files(&head, &step.files).await?);
        let used: usize = on_branch
            .iter()
            .map(|(path, after)| {
                proposal::changed_lines(at_base.get(path).map_or("", String::as_str), after)
            })
            .sum();
        let g = &self.config.github;
        let Some(left) = g.max_changed_lines.checked_sub(used).filter(|l| *l > 0) else {
            return Ok(Event::FixFailed {
                why: text::fix_no_lines_left(g.max_changed_lines),
            });
        };
        let report = self.report_for(e).await?;
        let input = PromptInput {
            report: &report,
            step: e.step,
            files: &on_branch,
            history: &[],
            allowed_paths: &g.allowed_paths,
            max_changed_lines: left,
            evidence: report.evidence.as_ref(),
        };
        let rules = EditRules {
            allowed: &g.allowed,
            step_files: &step.files,
            max_changed_lines: left,
            allowed_origins: &g.allowed_origins,
        };
        let failed = FailedCheck {
            name: check,
            details,
            diff: e.diff.as_deref().unwrap_or(""),
        };
        let template = &self.prompt_template;
        let attempts = self.config.llm.max_attempts;
        let llm = &self.services.llm;
        let accepted =
            match proposal::propose_fix(llm, template, &input, &rules, attempts, &failed).await {
                Ok(accepted) => accepted,
                Err(err) => {
                    return Ok(Event::FixFailed {
                        why: format!("{err:#}"),
                    });
                }
            };
        let changes: Vec<(String, Option<String>)> = accepted
            .changes
            .iter()
            .map(|c| (c.path.clone(), Some(c.after.clone())))
            .collect();
        let message = text::fix_commit_message(check, &accepted.proposal.title);
        let sha = match gh.commit_on_branch(&head, branch, &message, &changes).await {
            Ok(sha) => sha,
            Err(err) => {
                return Ok(Event::FixFailed {
                    why: format!("{err:#}"),
                });
            }
        };
        info!(experiment = %e.id, sha = %sha, "fix committed on the branch");
        let mut fixed = on_branch;
        fixed.extend(accepted.changes.into_iter().map(|c| (c.path, c.after)));
        Ok(Event::FixPushed {
            diff: change_diff(&at_base, fixed),
            sha,
        })
    }

    /// The change on the PR's branch at `head` against the base it was
    /// proposed on, over the step's files, as a unified diff.
    async fn whole_diff(&self, e: &Experiment, head: &str) -> Result<String> {
        let gh = &self.services.github;
        let base = e
            .base_sha
            .as_deref()
            .with_context(|| format!("experiment {} has no base commit", e.id))?;
        let step = &self.funnel_of(e)?.steps[e.step];
        let at_base = present(gh.read_files(base, &step.files).await?);
        let at_head = present(gh.read_files(head, &step.files).await?);
        Ok(change_diff(&at_base, at_head))
    }
}

/// The files that differ between `at_base` and `at_head`, as a unified diff.
fn change_diff(at_base: &BTreeMap<String, String>, at_head: BTreeMap<String, String>) -> String {
    let changed: Vec<ChangedFile> = at_head
        .into_iter()
        .filter_map(|(path, after)| {
            let before = at_base.get(&path)?.clone();
            (before != after).then_some(ChangedFile {
                path,
                before,
                after,
            })
        })
        .collect();
    proposal::unified_diff(&changed)
}

/// The files that exist, by path.
fn present(files: BTreeMap<String, Option<String>>) -> BTreeMap<String, String> {
    files
        .into_iter()
        .filter_map(|(path, content)| content.map(|c| (path, c)))
        .collect()
}

fn pr_number(e: &Experiment) -> Result<u64> {
    e.pr_number
        .with_context(|| format!("experiment {} has no PR", e.id))
}

/// A PR as the lifecycle sees it. A merged PR whose merge commit GitHub has
/// not reported yet is looked at again later rather than recorded without it.
fn seen(pr: &PullRequest, now: DateTime<Utc>) -> Result<PrSeen> {
    Ok(match pr.state {
        PrState::Open => PrSeen::Open,
        PrState::Closed => PrSeen::Closed,
        PrState::Merged => PrSeen::Merged {
            at: pr.merged_at.unwrap_or(now),
            sha: pr
                .merge_commit_sha
                .clone()
                .filter(|s| !s.is_empty())
                .with_context(|| {
                    format!(
                        "PR #{} is merged but GitHub has not reported its merge commit yet",
                        pr.number
                    )
                })?,
        },
    })
}

fn merge_result(outcome: MergeOutcome, now: DateTime<Utc>) -> MergeResult {
    match outcome {
        MergeOutcome::Merged { sha } => MergeResult::Merged { sha, at: now },
        MergeOutcome::HeadMoved => MergeResult::HeadMoved,
        MergeOutcome::NotMergeable(why) => MergeResult::Refused(why),
    }
}

/// Daily counts added up per weekday of entry (0 = Monday).
/// Counts per date of entry.
type Days = [(NaiveDate, Counts)];

/// One query's counts of the watched step per date of entry, the upstream
/// step's when the drift control asked for them, and where the censored
/// entry range ended.
struct StepDays {
    step: Vec<(NaiveDate, Counts)>,
    upstream: Option<Vec<(NaiveDate, Counts)>>,
    matured_to: DateTime<Utc>,
}

fn by_weekday(days: &[(NaiveDate, Counts)]) -> [Counts; 7] {
    let mut out = [Counts::default(); 7];
    for (date, counts) in days {
        let d = date.weekday().num_days_from_monday() as usize;
        out[d] = out[d].add(*counts);
    }
    out
}

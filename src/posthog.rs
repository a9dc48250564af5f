//! Adapter for PostHog's query API: one HogQL query per funnel, and
//! annotations that mark merges and reverts on the user's own charts; for
//! `funnelfix init`, the saved funnel insights and the most used events.
//!
//! Queries are reads, so every transient failure is asked again: 429 waits
//! as long as PostHog's `detail` says ("Expected available in N seconds"; no
//! Retry-After header is promised), and 5xx (503/504 when ClickHouse is busy
//! or slow, 512 when a query is too expensive) back off under the shared
//! [`RetryPolicy`]. An annotation is a write, so it is sent once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::instrument;

use crate::config::{FunnelConfig, StepConfig};
use crate::evidence::hogql as evidence_hogql;
use crate::evidence::{Evidence, Kind};
use crate::funnel::hogql::{self, HogQlQuery, Sums};
use crate::funnel::{ByDay, ByWeekday, EntryRange, WatchSegment};
use crate::init::{self, SavedInsight, TopEvents};
use crate::retry::{Attempt, RetryPolicy};

/// Why PostHog gave no answer. Each Display is one line naming what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostHogError {
    #[error("PostHog refused the key in ${key_env} (401): check it is a personal API key")]
    Unauthorized { key_env: String },
    #[error(
        "PostHog denied access (403): the key in ${key_env} needs the {scope} scope and access to project {project}: {detail}"
    )]
    Forbidden {
        key_env: String,
        scope: &'static str,
        project: String,
        detail: String,
    },
    #[error("PostHog project {project} not found (404): check posthog.host and posthog.project_id")]
    NotFound { project: String },
    #[error("PostHog rejected the query (400): {detail}")]
    BadQuery { detail: String },
    #[error("PostHog answered {status}: {detail}")]
    Status { status: u16, detail: String },
    #[error("PostHog sent a reply funnelfix cannot read: {0}")]
    Malformed(String),
    #[error("PostHog did not answer after {attempts} tries; last: {last}")]
    Exhausted { attempts: u32, last: String },
    /// One try failed in a way another may not (a 429, a 5xx, the network).
    #[error("PostHog is unavailable: {0}")]
    Unavailable(String),
    #[error("could not set up the HTTP client for PostHog: {0}")]
    Setup(String),
}

/// PostHog's error body: `{type, code, detail, attr}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    detail: Option<String>,
}

pub struct PostHog {
    http: reqwest::Client,
    host: String,
    project: String,
    key: SecretString,
    key_env: String,
    retry: RetryPolicy,
}

impl PostHog {
    pub fn new(
        host: &str,
        project_id: &str,
        key: SecretString,
        key_env: &str,
        retry: RetryPolicy,
    ) -> Result<PostHog, PostHogError> {
        let http = reqwest::Client::builder()
            .timeout(retry.timeout)
            .user_agent(concat!("funnelfix/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PostHogError::Setup(e.without_url().to_string()))?;
        Ok(PostHog {
            http,
            host: host.trim_end_matches('/').to_string(),
            project: project_id.to_string(),
            key,
            key_env: key_env.to_string(),
            retry,
        })
    }

    /// Funnel counts per UTC date of entry for entries in `range`
    /// (right-censored at `now - window`, the range the result carries).
    /// One query.
    #[instrument(skip_all, fields(steps = steps.len()))]
    pub async fn funnel_days(
        &self,
        steps: &[StepConfig],
        window: Duration,
        range: EntryRange,
        now: DateTime<Utc>,
    ) -> Result<ByDay, PostHogError> {
        self.days(steps, None, Sums::Skip, window, range, now).await
    }

    /// [`Self::funnel_days`] counting only `segment`'s entries (all of
    /// them when `None`), with the per-person sums the revert test needs.
    /// One query.
    pub async fn segment_days(
        &self,
        steps: &[StepConfig],
        segment: Option<&WatchSegment>,
        window: Duration,
        range: EntryRange,
        now: DateTime<Utc>,
    ) -> Result<ByDay, PostHogError> {
        self.days(steps, segment, Sums::Count, window, range, now)
            .await
    }

    async fn days(
        &self,
        steps: &[StepConfig],
        segment: Option<&WatchSegment>,
        sums: Sums,
        window: Duration,
        range: EntryRange,
        now: DateTime<Utc>,
    ) -> Result<ByDay, PostHogError> {
        let query = hogql::segment_funnel_query(steps, segment, sums, window, range, now)
            .map_err(PostHogError::Malformed)?;
        let reply = self.query(&query).await?;
        let results = reply
            .get("results")
            .ok_or_else(|| PostHogError::Malformed("no `results` in the reply".into()))?;
        let counted = hogql::censored(range, window, now);
        hogql::parse_days(steps.len(), sums, counted, results).map_err(PostHogError::Malformed)
    }

    /// Funnel counts per weekday of entry for entries in `range`
    /// (right-censored at `now - window`). One query.
    pub async fn funnel_counts(
        &self,
        steps: &[StepConfig],
        window: Duration,
        range: EntryRange,
        now: DateTime<Utc>,
    ) -> Result<ByWeekday, PostHogError> {
        let days = self.funnel_days(steps, window, range, now).await?;
        Ok(days.by_weekday(steps.len()))
    }

    /// What PostHog says about why entries at `funnel`'s step `step` stop
    /// there, over `range` (right-censored like the funnel query): one
    /// query per part, one after another (PostHog allows 3 at a time per
    /// project, shared with everything else the project runs). A part whose
    /// query fails is marked failed; the others still come.
    #[instrument(skip_all, fields(funnel = %funnel.name, step))]
    pub async fn evidence(
        &self,
        funnel: &FunnelConfig,
        step: usize,
        range: EntryRange,
        now: DateTime<Utc>,
    ) -> Evidence {
        let (this, next) = (&funnel.steps[step], &funnel.steps[step + 1]);
        let mut e = Evidence::new(&funnel.name, &this.name, &next.name);
        for kind in Kind::ALL {
            let results = match evidence_hogql::evidence_query(
                kind,
                this,
                next,
                funnel.conversion_window,
                range,
                now,
            ) {
                Ok(q) => {
                    e.queries += 1;
                    self.query(&q).await.and_then(|reply| {
                        reply.get("results").cloned().ok_or_else(|| {
                            PostHogError::Malformed("no `results` in the reply".into())
                        })
                    })
                }
                Err(problem) => Err(PostHogError::Malformed(problem)),
            };
            let read = results
                .map_err(|err| err.to_string())
                .and_then(|rows| e.read(kind, &rows));
            if let Err(why) = read {
                tracing::warn!(part = ?kind, error = %why, "an evidence query failed");
                e.fail(kind, why);
            }
        }
        e
    }

    /// Runs one HogQL query, fresh (`force_blocking`: otherwise PostHog may
    /// serve a cached result hours old).
    pub async fn query(&self, q: &HogQlQuery) -> Result<Value, PostHogError> {
        let url = format!("{}/api/projects/{}/query/", self.host, self.project);
        let body = json!({
            "query": {"kind": "HogQLQuery", "query": q.query, "values": q.values},
            "refresh": "force_blocking",
        });
        self.read(&url, Some(&body), "query:read").await
    }

    /// The project's saved funnel insights (both shapes), every page of
    /// them. Needs the `insight:read` scope.
    #[instrument(skip_all)]
    pub async fn saved_funnels(&self) -> Result<Vec<SavedInsight>, PostHogError> {
        /// Pages read at most (of 100 insights each).
        const MAX_PAGES: usize = 50;
        let base = format!("{}/api/projects/{}/insights/", self.host, self.project);
        let mut params = "insight=FUNNELS&saved=true&basic=true&limit=100".to_string();
        let mut insights = Vec::new();
        for _ in 0..MAX_PAGES {
            let page = self
                .read(&format!("{base}?{params}"), None, "insight:read")
                .await?;
            let results = page
                .get("results")
                .and_then(Value::as_array)
                .ok_or_else(|| PostHogError::Malformed("no `results` in the insights".into()))?;
            for r in results {
                let insight = serde_json::from_value(r.clone())
                    .map_err(|e| PostHogError::Malformed(format!("an insight: {e}")))?;
                insights.push(insight);
            }
            // `next` is an absolute URL built from the host PostHog sees,
            // which behind a proxy is not ours: only its parameters are kept.
            match page.get("next").and_then(Value::as_str) {
                Some(next) => {
                    params = next
                        .split_once('?')
                        .map(|(_, q)| q.to_string())
                        .ok_or_else(|| {
                            PostHogError::Malformed(format!(
                                "a next page without parameters: {next}"
                            ))
                        })?
                }
                None => return Ok(insights),
            }
        }
        Err(PostHogError::Malformed(format!(
            "more than {MAX_PAGES} pages of saved funnels"
        )))
    }

    /// The project's most viewed pages and custom events. One query.
    #[instrument(skip_all)]
    pub async fn top_events(&self, now: DateTime<Utc>) -> Result<TopEvents, PostHogError> {
        let reply = self.query(&init::top_events_query(now)).await?;
        let results = reply
            .get("results")
            .ok_or_else(|| PostHogError::Malformed("no `results` in the reply".into()))?;
        init::parse_top_events(results).map_err(PostHogError::Malformed)
    }

    /// A read: GET, or POST `body` (a query). Asked again on 429 and 5xx.
    async fn read(
        &self,
        url: &str,
        body: Option<&Value>,
        scope: &'static str,
    ) -> Result<Value, PostHogError> {
        let outcome = self
            .retry
            .run("PostHog", |_| async {
                let request = match body {
                    Some(body) => self.http.post(url).json(body),
                    None => self.http.get(url),
                };
                let sent = request.bearer_auth(self.key.expose_secret()).send().await;
                let resp = match sent {
                    Ok(resp) => resp,
                    Err(e) => {
                        return Attempt::Again {
                            error: PostHogError::Unavailable(e.without_url().to_string()),
                            asked: None,
                        };
                    }
                };
                let status = resp.status();
                if status.is_success() {
                    return match resp.text().await {
                        Ok(text) => match serde_json::from_str(&text) {
                            Ok(value) => Attempt::Done(value),
                            Err(e) => {
                                Attempt::Fail(PostHogError::Malformed(format!("not JSON ({e})")))
                            }
                        },
                        Err(e) => {
                            Attempt::Fail(PostHogError::Malformed(e.without_url().to_string()))
                        }
                    };
                }
                let detail = error_detail(resp).await;
                let again = |last: String, asked| Attempt::Again {
                    error: PostHogError::Unavailable(last),
                    asked,
                };
                match status {
                    StatusCode::TOO_MANY_REQUESTS => {
                        again(format!("429 {detail}"), expected_available_in(&detail))
                    }
                    s if s.is_server_error() => again(format!("{} {detail}", s.as_u16()), None),
                    s => Attempt::Fail(self.refusal(s, detail, scope)),
                }
            })
            .await;
        outcome.map_err(|gave_up| match gave_up.error {
            PostHogError::Unavailable(last) => PostHogError::Exhausted {
                attempts: gave_up.attempts,
                last,
            },
            other => other,
        })
    }

    fn refusal(&self, status: StatusCode, detail: String, scope: &'static str) -> PostHogError {
        match status {
            StatusCode::UNAUTHORIZED => PostHogError::Unauthorized {
                key_env: self.key_env.clone(),
            },
            StatusCode::FORBIDDEN => PostHogError::Forbidden {
                key_env: self.key_env.clone(),
                scope,
                project: self.project.clone(),
                detail,
            },
            StatusCode::NOT_FOUND => PostHogError::NotFound {
                project: self.project.clone(),
            },
            StatusCode::BAD_REQUEST => PostHogError::BadQuery { detail },
            s => PostHogError::Status {
                status: s.as_u16(),
                detail,
            },
        }
    }

    /// Marks a moment on the project's charts. Sent once: a write is not
    /// repeated blindly, and a missing annotation only costs a marker.
    #[instrument(skip_all)]
    pub async fn annotate(&self, content: &str, at: DateTime<Utc>) -> Result<(), PostHogError> {
        let url = format!("{}/api/projects/{}/annotations/", self.host, self.project);
        let resp = self
            .http
            .post(&url)
            .bearer_auth(self.key.expose_secret())
            .json(&json!({
                "content": content,
                "date_marker": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "scope": "project",
            }))
            .send()
            .await
            .map_err(|e| PostHogError::Exhausted {
                attempts: 1,
                last: e.without_url().to_string(),
            })?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status();
        Err(self.refusal(status, error_detail(resp).await, "annotation:write"))
    }
}

/// PostHog's `detail`, or the status's name when the body has none.
async fn error_detail(resp: reqwest::Response) -> String {
    let status = resp.status();
    resp.text()
        .await
        .ok()
        .and_then(|t| serde_json::from_str::<ErrorBody>(&t).ok())
        .and_then(|b| b.detail)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string())
}

/// "Request was throttled. Expected available in 12 seconds." → 12 s.
fn expected_available_in(detail: &str) -> Option<Duration> {
    let rest = &detail[detail.find("available in ")? + "available in ".len()..];
    let number: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    number.parse().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_wait_from_the_throttle_detail() {
        assert_eq!(
            expected_available_in("Request was throttled. Expected available in 12 seconds."),
            Some(Duration::from_secs(12))
        );
        assert_eq!(expected_available_in("Request was throttled."), None);
    }
}

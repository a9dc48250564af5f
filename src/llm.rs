//! Adapter for any OpenAI-compatible chat completions API. It sends one
//! conversation and returns the assistant's text, asking for a JSON object;
//! what the JSON means is [`crate::proposal`]'s business.
//!
//! A chat completion has no side effects, so every transient failure (429,
//! 5xx, timeouts, dropped connections) is simply asked again under the shared
//! [`RetryPolicy`]. Everything else is a one-line error naming what to fix.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::retry::{Attempt, RetryPolicy};

/// Who says a message in the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of the conversation, as the API takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Message {
        Message {
            role: Role::System,
            content: content.into(),
        }
    }

    pub fn user(content: impl Into<String>) -> Message {
        Message {
            role: Role::User,
            content: content.into(),
        }
    }

    pub fn assistant(content: impl Into<String>) -> Message {
        Message {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// Why no completion came back. Each Display is one line naming what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    #[error("the LLM API refused the key (401): check the API key in ${key_env}")]
    Unauthorized { key_env: String },
    #[error(
        "the LLM API answered 404 for model {model:?} at {url}: check llm.model and llm.base_url ({message})"
    )]
    NotFound {
        model: String,
        url: String,
        message: String,
    },
    #[error("the LLM API rejected the request (400): {message}")]
    BadRequest { message: String },
    #[error("the LLM API answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("the LLM API sent a reply that is not a chat completion: {0}")]
    Malformed(String),
    #[error("the LLM API did not answer after {attempts} tries; last: {last}")]
    Exhausted { attempts: u32, last: String },
    /// One try failed in a way another may not.
    #[error("the LLM API is unavailable: {0}")]
    Unavailable(String),
    #[error("could not set up the HTTP client for the LLM API: {0}")]
    Setup(String),
}

/// A client for one model at one OpenAI-compatible endpoint.
pub struct Llm {
    http: reqwest::Client,
    url: String,
    model: String,
    api_key: SecretString,
    key_env: String,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Llm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llm")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("key_env", &self.key_env)
            .finish_non_exhaustive()
    }
}

/// The outcome of one try: a final error, or a reason to ask again (with the
/// wait the server asked for, if any).
enum TryError {
    Fatal(LlmError),
    Transient {
        reason: String,
        asked: Option<Duration>,
    },
}

impl Llm {
    /// `base_url` is the API root including its version, e.g.
    /// `https://api.openai.com/v1`; `key_env` only names the key in errors.
    pub fn new(
        base_url: &str,
        model: &str,
        api_key: SecretString,
        key_env: &str,
        retry: RetryPolicy,
    ) -> Result<Llm, LlmError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("funnelfix/", env!("CARGO_PKG_VERSION")))
            .timeout(retry.timeout)
            .build()
            .map_err(|e| LlmError::Setup(error_chain(&e)))?;
        Ok(Llm {
            http,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            model: model.to_string(),
            api_key,
            key_env: key_env.to_string(),
            retry,
        })
    }

    /// Sends the conversation with `response_format: json_object` and returns
    /// the assistant's content (unparsed). Transient failures are retried.
    #[tracing::instrument(skip_all, fields(model = %self.model))]
    pub async fn complete_json(&self, messages: &[Message]) -> Result<String, LlmError> {
        let body = serde_json::json!({
            "model": self.model,
            "messages": messages,
            "response_format": {"type": "json_object"},
        });
        let body = &body;
        let outcome = self
            .retry
            .run("LLM", |attempt| async move {
                match self.try_once(body).await {
                    Ok(content) => Attempt::Done(content),
                    Err(TryError::Fatal(e)) => Attempt::Fail(e),
                    Err(TryError::Transient { reason, asked }) => {
                        tracing::warn!(attempt, %reason, "LLM request failed");
                        Attempt::Again {
                            error: LlmError::Unavailable(reason),
                            asked,
                        }
                    }
                }
            })
            .await;
        outcome.map_err(|gave_up| match gave_up.error {
            LlmError::Unavailable(last) => LlmError::Exhausted {
                attempts: gave_up.attempts,
                last,
            },
            other => other,
        })
    }

    async fn try_once(&self, body: &serde_json::Value) -> Result<String, TryError> {
        let sent = self
            .http
            .post(&self.url)
            .bearer_auth(self.api_key.expose_secret())
            .json(body)
            .send()
            .await;
        let response = sent.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let asked = retry_after(response.headers());
        let text = response
            .text()
            .await
            .map_err(|e| self.transport_error(&e))?;
        if status.is_success() {
            return assistant_content(&text).map_err(|e| TryError::Fatal(LlmError::Malformed(e)));
        }
        let message = error_message(&text);
        Err(match status {
            StatusCode::UNAUTHORIZED => TryError::Fatal(LlmError::Unauthorized {
                key_env: self.key_env.clone(),
            }),
            StatusCode::NOT_FOUND => TryError::Fatal(LlmError::NotFound {
                model: self.model.clone(),
                url: self.url.clone(),
                message,
            }),
            StatusCode::BAD_REQUEST => TryError::Fatal(LlmError::BadRequest { message }),
            // 408/409 are what OpenAI sends for its own timeouts and lock
            // contention; like 429 and 5xx they pass if asked again.
            s if s == StatusCode::TOO_MANY_REQUESTS
                || s == StatusCode::REQUEST_TIMEOUT
                || s == StatusCode::CONFLICT
                || s.is_server_error() =>
            {
                TryError::Transient {
                    reason: format!("HTTP {}: {message}", s.as_u16()),
                    asked,
                }
            }
            s => TryError::Fatal(LlmError::Status {
                status: s.as_u16(),
                message,
            }),
        })
    }

    fn transport_error(&self, e: &reqwest::Error) -> TryError {
        let reason = if e.is_timeout() {
            format!("no answer within {:?}", self.retry.timeout)
        } else {
            error_chain(e)
        };
        if e.is_builder() {
            TryError::Fatal(LlmError::Setup(reason))
        } else {
            TryError::Transient {
                reason,
                asked: None,
            }
        }
    }
}

/// The wait the server asked for: OpenAI's `retry-after-ms`, else the
/// standard `Retry-After` in seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| -> Option<f64> {
        let v: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
        (v.is_finite() && v >= 0.0).then_some(v)
    };
    number("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| number("retry-after").map(Duration::from_secs_f64))
}

/// `choices[0].message.content` of a chat completion.
fn assistant_content(body: &str) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Completion {
        choices: Vec<Choice>,
    }
    #[derive(Deserialize)]
    struct Choice {
        message: ChoiceMessage,
        finish_reason: Option<String>,
    }
    #[derive(Deserialize)]
    struct ChoiceMessage {
        content: Option<String>,
        refusal: Option<String>,
    }
    let completion: Completion =
        serde_json::from_str(body).map_err(|e| format!("{e} in {}", clip(body, 120)))?;
    let choice = completion
        .choices
        .into_iter()
        .next()
        .ok_or("it has no choices")?;
    match (choice.message.content, choice.message.refusal) {
        (Some(content), _) => Ok(content),
        (None, Some(refusal)) => Err(format!("the model refused: {}", one_line(&refusal))),
        (None, None) => Err(format!(
            "the message has no content (finish_reason {})",
            choice.finish_reason.as_deref().unwrap_or("missing")
        )),
    }
}

/// The server's `error.message` (OpenAI's error shape), else the body itself.
fn error_message(body: &str) -> String {
    let parsed: Option<String> = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let error = v.get("error")?;
            error
                .get("message")
                .and_then(|m| m.as_str())
                .or_else(|| error.as_str())
                .map(str::to_string)
        });
    match parsed {
        Some(m) => clip(&m, 300),
        None if body.trim().is_empty() => "no details given".to_string(),
        None => clip(body, 300),
    }
}

/// reqwest hides the useful part (connection refused, DNS) in its sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    one_line(&text)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn clip(s: &str, max_chars: usize) -> String {
    let s = one_line(s);
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_prefers_milliseconds() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
    }

    #[test]
    fn retry_after_ignores_dates_and_nonsense() {
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("-1"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn content_is_read_from_the_first_choice() {
        let body = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"{}"},"finish_reason":"stop"}]}"#;
        assert_eq!(assistant_content(body), Ok("{}".to_string()));
    }

    #[test]
    fn missing_content_is_explained() {
        let refused =
            r#"{"choices":[{"message":{"content":null,"refusal":"no"},"finish_reason":"stop"}]}"#;
        assert_eq!(
            assistant_content(refused),
            Err("the model refused: no".into())
        );
        let empty = r#"{"choices":[]}"#;
        assert_eq!(assistant_content(empty), Err("it has no choices".into()));
        assert!(assistant_content("<html>").is_err());
    }

    #[test]
    fn error_message_reads_openai_shape_and_falls_back() {
        assert_eq!(
            error_message(r#"{"error":{"message":"bad\nthing","type":"x"}}"#),
            "bad thing"
        );
        assert_eq!(error_message("Bad Gateway"), "Bad Gateway");
        assert_eq!(error_message(""), "no details given");
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let llm = Llm::new(
            "http://127.0.0.1:1/v1/",
            "m",
            SecretString::from("sk-secret-value"),
            "OPENAI_API_KEY",
            RetryPolicy::FAST,
        )
        .unwrap();
        let shown = format!("{llm:?}");
        assert!(!shown.contains("sk-secret-value"), "{shown}");
        assert!(shown.contains("http://127.0.0.1:1/v1/chat/completions"));
    }
}

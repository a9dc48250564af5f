//! Twin of an OpenAI-compatible chat completions API: POST
//! `/v1/chat/completions` with bearer auth, OpenAI's response and error
//! shapes, and its rule that `json_object` needs the word "json" in the
//! messages. Replies come from a script (consumed in order), then from a
//! responder function; every request is recorded for the tests to read.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::Server;

/// The strongest finding of the evidence quoted in a prompt, as a stand-in
/// model would cite it: a segment much worse than the rest, else the first
/// secondary action whose rate is clearly apart from the others'.
pub fn strongest_evidence(prompt: &str) -> Option<String> {
    let block = prompt.split("```text\nEvidence for").nth(1)?;
    let block = block.split("\n```").next()?;
    let finding = |prefix: &str, skip: &str| {
        block
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .find(|l| !l.contains(skip) && !l.starts_with("not read"))
            .map(str::to_string)
    };
    finding("- segments: ", "no segment")
        .or_else(|| finding("- secondary actions: ", "intervals overlap"))
}

/// One scripted answer to a valid request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A 200 chat completion whose assistant content is this text.
    Content(String),
    /// This HTTP status with an OpenAI-shaped error (429 adds `retry-after: 1`).
    Status(u16),
    /// Wait this long, then give the inner reply (to trigger client timeouts).
    Slow(Duration, Box<Reply>),
}

/// Makes the assistant content from the request's messages, once the script is used up.
pub type Responder = Arc<dyn Fn(&[Value]) -> String + Send + Sync>;

/// A request as the twin received it.
#[derive(Debug, Clone)]
pub struct TwinRequest {
    /// The `Authorization` header as sent.
    pub authorization: Option<String>,
    /// The raw body, to check what left the client.
    pub body: String,
    pub model: Option<String>,
    /// The `messages` array (empty if it was missing).
    pub messages: Vec<Value>,
}

impl TwinRequest {
    /// The `content` of each message, in order.
    pub fn contents(&self) -> Vec<String> {
        self.messages
            .iter()
            .map(|m| m["content"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

struct TwinState {
    api_key: String,
    /// Empty means any model is served.
    models: Vec<String>,
    script: VecDeque<Reply>,
    responder: Option<Responder>,
    requests: Vec<TwinRequest>,
    completions: u64,
}

/// A running LLM twin; stops when dropped.
pub struct LlmTwin {
    server: Server,
    state: Arc<Mutex<TwinState>>,
}

impl LlmTwin {
    /// Serves on loopback, accepting only `Authorization: Bearer {api_key}`.
    pub async fn start(api_key: &str) -> std::io::Result<LlmTwin> {
        let state = Arc::new(Mutex::new(TwinState {
            api_key: api_key.to_string(),
            models: Vec::new(),
            script: VecDeque::new(),
            responder: None,
            requests: Vec::new(),
            completions: 0,
        }));
        let router = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .fallback(unknown_url)
            .with_state(state.clone());
        let server = Server::start(router).await?;
        Ok(LlmTwin { server, state })
    }

    /// The API root as a client is configured with it: `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("{}/v1", self.server.url())
    }

    /// The server root without `/v1`, to test a misconfigured base URL.
    pub fn root_url(&self) -> String {
        self.server.url()
    }

    /// Queues replies for the next valid requests, after any still queued.
    pub fn script(&self, replies: Vec<Reply>) {
        self.lock().script.extend(replies);
    }

    /// Answers valid requests once the script is used up.
    pub fn set_responder(&self, responder: Responder) {
        self.lock().responder = Some(responder);
    }

    /// Serve only these models; others get OpenAI's 404 `model_not_found`.
    pub fn set_models(&self, models: Vec<String>) {
        self.lock().models = models;
    }

    /// Every request received so far, valid or not, in order.
    pub fn requests(&self) -> Vec<TwinRequest> {
        self.lock().requests.clone()
    }

    /// Scripted replies not yet used.
    pub fn script_left(&self) -> usize {
        self.lock().script.len()
    }

    fn lock(&self) -> MutexGuard<'_, TwinState> {
        lock(&self.state)
    }
}

/// A poisoned lock only means a test panicked mid-request; the data is fine.
fn lock(state: &Mutex<TwinState>) -> MutexGuard<'_, TwinState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// OpenAI's error body.
fn openai_error(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Value,
    code: Value,
) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    (status, axum::Json(body)).into_response()
}

async fn unknown_url(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    openai_error(
        StatusCode::NOT_FOUND,
        &format!("Invalid URL ({method} {})", uri.path()),
        "invalid_request_error",
        Value::Null,
        Value::Null,
    )
}

async fn chat_completions(
    State(state): State<Arc<Mutex<TwinState>>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let parsed: Option<Value> = serde_json::from_str(&body).ok();
    let request = TwinRequest {
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: body.clone(),
        model: parsed
            .as_ref()
            .and_then(|v| v["model"].as_str())
            .map(str::to_string),
        messages: parsed
            .as_ref()
            .and_then(|v| v["messages"].as_array())
            .cloned()
            .unwrap_or_default(),
    };
    let reply = {
        let mut s = lock(&state);
        s.requests.push(request.clone());
        if let Some(refusal) = refusal(&s, &request, parsed.as_ref()) {
            return refusal;
        }
        match s.script.pop_front() {
            Some(reply) => reply,
            None => match s.responder.clone() {
                Some(responder) => Reply::Content(responder(&request.messages)),
                None => Reply::Status(500),
            },
        }
    };
    let model = request.model.unwrap_or_default();
    respond(&state, reply, &model, &request.messages).await
}

/// The error OpenAI would answer with, if any; checked in its order: key,
/// body, model, messages, json mode.
fn refusal(s: &TwinState, request: &TwinRequest, body: Option<&Value>) -> Option<Response> {
    let bad = |message: &str, param: Value| {
        openai_error(
            StatusCode::BAD_REQUEST,
            message,
            "invalid_request_error",
            param,
            Value::Null,
        )
    };
    match request
        .authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
    {
        None => {
            return Some(openai_error(
                StatusCode::UNAUTHORIZED,
                "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
                Value::Null,
                Value::Null,
            ));
        }
        Some(key) if key != s.api_key => {
            return Some(openai_error(
                StatusCode::UNAUTHORIZED,
                &format!("Incorrect API key provided: {}.", redact(key)),
                "invalid_request_error",
                Value::Null,
                json!("invalid_api_key"),
            ));
        }
        Some(_) => {}
    }
    let Some(body) = body.filter(|b| b.is_object()) else {
        return Some(bad(
            "We could not parse the JSON body of your request.",
            Value::Null,
        ));
    };
    let Some(model) = request.model.as_deref() else {
        return Some(bad("you must provide a model parameter", Value::Null));
    };
    if !s.models.is_empty() && !s.models.iter().any(|m| m == model) {
        return Some(openai_error(
            StatusCode::NOT_FOUND,
            &format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            Value::Null,
            json!("model_not_found"),
        ));
    }
    if body["messages"].as_array().is_none_or(|m| m.is_empty()) {
        return Some(bad(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            json!("messages"),
        ));
    }
    let json_mode = body["response_format"]["type"].as_str() == Some("json_object");
    let mentions_json = request
        .contents()
        .iter()
        .any(|c| c.to_lowercase().contains("json"));
    if json_mode && !mentions_json {
        return Some(bad(
            "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
            json!("messages"),
        ));
    }
    None
}

/// Like OpenAI: show only the ends of a wrong key.
fn redact(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

async fn respond(
    state: &Arc<Mutex<TwinState>>,
    mut reply: Reply,
    model: &str,
    messages: &[Value],
) -> Response {
    loop {
        match reply {
            Reply::Slow(wait, inner) => {
                tokio::time::sleep(wait).await;
                reply = *inner;
            }
            Reply::Content(content) => return completion(state, &content, model, messages),
            Reply::Status(code) => return status_reply(code),
        }
    }
}

fn completion(
    state: &Arc<Mutex<TwinState>>,
    content: &str,
    model: &str,
    messages: &[Value],
) -> Response {
    let n = {
        let mut s = lock(state);
        s.completions += 1;
        s.completions
    };
    let prompt_tokens: usize = messages
        .iter()
        .map(|m| m["content"].as_str().map_or(0, |c| c.len() / 4 + 1))
        .sum();
    let completion_tokens = content.len() / 4 + 1;
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    axum::Json(json!({
        "id": format!("chatcmpl-twin{n}"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }))
    .into_response()
}

fn status_reply(code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (message, kind, code_field) = match status.as_u16() {
        429 => (
            "Rate limit reached for requests. Please try again in 1s.",
            "requests",
            json!("rate_limit_exceeded"),
        ),
        500 => (
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            Value::Null,
        ),
        503 => (
            "The engine is currently overloaded, please try again later.",
            "server_error",
            Value::Null,
        ),
        _ => (
            status.canonical_reason().unwrap_or("error"),
            "invalid_request_error",
            Value::Null,
        ),
    };
    let mut response = openai_error(status, message, kind, Value::Null, code_field);
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    }
    response
}

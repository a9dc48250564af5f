//! A Telegram Bot API twin: `POST /bot<token>/<method>` (teloxide writes
//! methods in PascalCase; Telegram accepts any case, so does the twin), the
//! `{ok, result}` / `{ok: false, error_code, description, parameters}`
//! envelopes, getUpdates with offset and long-poll timeout, stored messages
//! and photos, and Telegram's checks on HTML, lengths and button data.
//! Tests press buttons and send commands as any user, or inject faults.

// Helpers return the finished error reply as `Err`; its size is no concern
// in a test server.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::sandbox::Server;

const BOT_ID: u64 = 777_000_001;
const MAX_TEXT: usize = 4096;
const MAX_CAPTION: usize = 1024;
const MAX_CALLBACK_DATA: usize = 64;
/// Tags Telegram's HTML parse mode accepts.
const ALLOWED_TAGS: [&str; 12] = [
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "code",
    "pre",
    "a",
    "blockquote",
];

/// A message the bot sent, with later edits applied.
#[derive(Debug, Clone, PartialEq)]
pub struct SentMessage {
    pub message_id: i32,
    pub chat_id: i64,
    /// The text, or a photo's caption.
    pub text: String,
    /// `(label, callback_data)`; emptied by an edit without a keyboard.
    pub buttons: Vec<(String, String)>,
    pub is_photo: bool,
    pub photo_bytes: usize,
    /// The photo as uploaded (empty for a text message).
    pub photo: Vec<u8>,
    pub edits: usize,
}

struct Fault {
    method: String,
    status: u16,
    times: usize,
}

#[derive(Default)]
struct Twin {
    token: String,
    messages: Vec<SentMessage>,
    updates: VecDeque<(u32, Value)>,
    next_update: u32,
    next_callback: u64,
    next_message: i32,
    answers: Vec<(String, String)>,
    commands: Vec<(String, String)>,
    faults: Vec<Fault>,
    requests: Vec<String>,
    /// Taps not yet answered, with when they were made (real time, as
    /// Telegram measures it).
    open_callbacks: std::collections::HashMap<String, std::time::Instant>,
    /// How long a tap can still be answered; Telegram's is about 15 s.
    answer_window: Option<std::time::Duration>,
}

pub struct TelegramTwin {
    state: Arc<Mutex<Twin>>,
    arrived: Arc<Notify>,
    server: Server,
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<Twin>>,
    arrived: Arc<Notify>,
}

/// Telegram answers "query is too old" to an answer sent later than this.
const CALLBACK_ANSWER_WINDOW: std::time::Duration = std::time::Duration::from_secs(15);

fn lock(state: &Mutex<Twin>) -> MutexGuard<'_, Twin> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl TelegramTwin {
    pub async fn start(token: &str) -> std::io::Result<TelegramTwin> {
        let state = Arc::new(Mutex::new(Twin {
            token: token.to_string(),
            next_update: 1,
            next_message: 1,
            ..Twin::default()
        }));
        let arrived = Arc::new(Notify::new());
        let shared = Shared {
            state: state.clone(),
            arrived: arrived.clone(),
        };
        let router = Router::new()
            .route("/{bot}/{method}", post(method))
            .with_state(shared);
        let server = Server::start(router).await?;
        Ok(TelegramTwin {
            state,
            arrived,
            server,
        })
    }

    /// The `telegram.api_url` to configure.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn messages(&self) -> Vec<SentMessage> {
        lock(&self.state).messages.clone()
    }

    /// `(callback id, text)` of every answered tap.
    pub fn callback_answers(&self) -> Vec<(String, String)> {
        lock(&self.state).answers.clone()
    }

    pub fn commands(&self) -> Vec<(String, String)> {
        lock(&self.state).commands.clone()
    }

    /// How many calls of `method` arrived (any case).
    pub fn requests(&self, method: &str) -> usize {
        lock(&self.state)
            .requests
            .iter()
            .filter(|m| m.eq_ignore_ascii_case(method))
            .count()
    }

    /// `user_id` taps a button with `data` on `message_id` in `chat_id`;
    /// returns the callback id. Data is not checked: it can be forged.
    pub fn press_button(&self, chat_id: i64, user_id: u64, message_id: i32, data: &str) -> String {
        let mut twin = lock(&self.state);
        twin.next_callback += 1;
        let id = format!("cb{}", twin.next_callback);
        twin.open_callbacks
            .insert(id.clone(), std::time::Instant::now());
        let message = twin
            .messages
            .iter()
            .find(|m| m.message_id == message_id && m.chat_id == chat_id)
            .map(message_json)
            .unwrap_or_else(|| bare_message(chat_id, message_id));
        let update = json!({
            "callback_query": {
                "id": id,
                "from": user(user_id),
                "message": message,
                "chat_instance": format!("ci{chat_id}"),
                "data": data,
            }
        });
        queue(&mut twin, update);
        drop(twin);
        self.arrived.notify_waiters();
        id
    }

    /// Taps older than `window` can no longer be answered (Telegram: about
    /// 15 s); a test sets zero for a tap that waited behind a long pass.
    pub fn set_callback_answer_window(&self, window: std::time::Duration) {
        lock(&self.state).answer_window = Some(window);
    }

    /// `user_id` sends `text` (e.g. "/status") in `chat_id`.
    pub fn send_command(&self, chat_id: i64, user_id: u64, text: &str) {
        let mut twin = lock(&self.state);
        twin.next_message += 1;
        let command_len = text
            .split_whitespace()
            .next()
            .map_or(0, |w| w.encode_utf16().count());
        let update = json!({
            "message": {
                "message_id": twin.next_message,
                "date": now(),
                "chat": chat(chat_id),
                "from": user(user_id),
                "text": text,
                "entities": [{"type": "bot_command", "offset": 0, "length": command_len}],
            }
        });
        queue(&mut twin, update);
        drop(twin);
        self.arrived.notify_waiters();
    }

    /// The next `times` calls of `method` answer `status` (429 asks to
    /// retry after 1 s, as Telegram does). Note that teloxide sleeps 10 s
    /// after any 5xx before reading it.
    pub fn fail_next(&self, method: &str, status: u16, times: usize) {
        lock(&self.state).faults.push(Fault {
            method: method.to_string(),
            status,
            times,
        });
    }
}

fn queue(twin: &mut Twin, mut update: Value) {
    let id = twin.next_update;
    twin.next_update += 1;
    update["update_id"] = json!(id);
    twin.updates.push_back((id, update));
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn user(id: u64) -> Value {
    json!({"id": id, "is_bot": false, "first_name": format!("User {id}")})
}

fn chat(id: i64) -> Value {
    if id < 0 {
        json!({"id": id, "type": "group", "title": "Growth"})
    } else {
        json!({"id": id, "type": "private", "first_name": format!("User {id}")})
    }
}

fn bare_message(chat_id: i64, message_id: i32) -> Value {
    json!({
        "message_id": message_id,
        "date": now(),
        "chat": chat(chat_id),
        "from": {"id": BOT_ID, "is_bot": true, "first_name": "funnelfix", "username": "funnelfix_bot"},
        "text": "",
    })
}

fn message_json(m: &SentMessage) -> Value {
    let mut v = bare_message(m.chat_id, m.message_id);
    if m.is_photo {
        let size = photo_size(&m.photo).unwrap_or((0, 0));
        v.as_object_mut().map(|o| o.remove("text"));
        v["photo"] = json!([{
            "file_id": format!("photo{}", m.message_id),
            "file_unique_id": format!("u{}", m.message_id),
            "width": size.0, "height": size.1, "file_size": m.photo_bytes,
        }]);
        v["caption"] = json!(m.text);
    } else {
        v["text"] = json!(m.text);
    }
    if !m.buttons.is_empty() {
        let row: Vec<Value> = m
            .buttons
            .iter()
            .map(|(label, data)| json!({"text": label, "callback_data": data}))
            .collect();
        v["reply_markup"] = json!({"inline_keyboard": [row]});
    }
    v
}

fn ok(result: Value) -> Response {
    Json(json!({"ok": true, "result": result})).into_response()
}

fn fail(status: u16, description: &str) -> Response {
    let mut body = json!({"ok": false, "error_code": status, "description": description});
    if status == 429 {
        body["parameters"] = json!({"retry_after": 1});
    }
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        Json(body),
    )
        .into_response()
}

/// The parameters of a call, from JSON or multipart, and the bytes of an
/// uploaded file.
async fn params(request: Request) -> Result<(Value, Vec<u8>), Response> {
    let is_multipart = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !is_multipart {
        let body = Bytes::from_request(request, &())
            .await
            .map_err(|_| fail(400, "Bad Request: cannot read the request"))?;
        if body.is_empty() {
            return Ok((json!({}), Vec::new()));
        }
        let v =
            serde_json::from_slice(&body).map_err(|_| fail(400, "Bad Request: invalid JSON"))?;
        return Ok((v, Vec::new()));
    }
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|_| fail(400, "Bad Request: invalid multipart body"))?;
    let mut fields = serde_json::Map::new();
    let mut file = Vec::new();
    while let Ok(Some(field)) = form.next_field().await {
        let name = field.name().unwrap_or("").to_string();
        let is_file = field.file_name().is_some();
        let data = field
            .bytes()
            .await
            .map_err(|_| fail(400, "Bad Request: broken multipart field"))?;
        if is_file {
            file.extend_from_slice(&data);
            fields.insert(name, json!("<file>"));
        } else {
            let text = String::from_utf8_lossy(&data).to_string();
            // Structured fields (reply_markup...) arrive as JSON text.
            let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            fields.insert(name, value);
        }
    }
    Ok((Value::Object(fields), file))
}

/// Telegram's limits on a photo: 10 MB, width + height at most 10000, and
/// neither side more than 20 times the other.
const MAX_PHOTO_BYTES: usize = 10 * 1024 * 1024;

/// The width and height of an uploaded photo, checked as Telegram checks
/// it. Only PNG is read: it is all funnelfix sends.
fn photo_size(bytes: &[u8]) -> Result<(u32, u32), Response> {
    if bytes.is_empty() {
        return Err(fail(400, "Bad Request: there is no photo in the request"));
    }
    if bytes.len() > MAX_PHOTO_BYTES {
        return Err(fail(400, "Bad Request: PHOTO_INVALID_DIMENSIONS"));
    }
    let unreadable = || fail(400, "Bad Request: IMAGE_PROCESS_FAILED");
    let info = png::Decoder::new(bytes)
        .read_info()
        .map_err(|_| unreadable())?
        .info()
        .clone();
    let (w, h) = (info.width, info.height);
    let ratio_ok = u64::from(w.max(h)) <= 20 * u64::from(w.min(h));
    if w == 0 || h == 0 || w + h > 10_000 || !ratio_ok {
        return Err(fail(400, "Bad Request: PHOTO_INVALID_DIMENSIONS"));
    }
    Ok((w, h))
}

async fn method(
    State(shared): State<Shared>,
    Path((bot, method)): Path<(String, String)>,
    request: Request,
) -> Response {
    let (p, file) = match params(request).await {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    let method = method.to_ascii_lowercase();
    {
        let mut twin = lock(&shared.state);
        if bot.strip_prefix("bot") != Some(twin.token.as_str()) {
            return fail(401, "Unauthorized");
        }
        twin.requests.push(method.clone());
        if let Some(f) = twin
            .faults
            .iter_mut()
            .find(|f| f.times > 0 && f.method.eq_ignore_ascii_case(&method))
        {
            f.times -= 1;
            let status = f.status;
            return match status {
                429 => fail(429, "Too Many Requests: retry after 1"),
                s => fail(s, "Internal Server Error"),
            };
        }
    }
    if method == "getupdates" {
        return get_updates(&shared, &p).await;
    }
    let mut twin = lock(&shared.state);
    match method.as_str() {
        "sendmessage" => {
            let text = p["text"].as_str().unwrap_or("");
            if let Err(e) = check_text(&p, text, MAX_TEXT, "message is too long") {
                return e;
            }
            send(&mut twin, &p, text, Vec::new())
        }
        "sendphoto" => {
            let caption = p["caption"].as_str().unwrap_or("");
            if let Err(e) = photo_size(&file) {
                return e;
            }
            if let Err(e) = check_text(&p, caption, MAX_CAPTION, "message caption is too long") {
                return e;
            }
            send(&mut twin, &p, caption, file)
        }
        "editmessagetext" => {
            let text = p["text"].as_str().unwrap_or("");
            if let Err(e) = check_text(&p, text, MAX_TEXT, "message is too long") {
                return e;
            }
            let (chat_id, message_id) = (
                p["chat_id"].as_i64().unwrap_or(0),
                p["message_id"].as_i64().unwrap_or(0),
            );
            let buttons = match buttons(&p) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let Some(m) = twin
                .messages
                .iter_mut()
                .find(|m| m.chat_id == chat_id && i64::from(m.message_id) == message_id)
            else {
                return fail(400, "Bad Request: message to edit not found");
            };
            if m.text == text && m.buttons == buttons {
                return fail(
                    400,
                    "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
                );
            }
            m.text = text.to_string();
            m.buttons = buttons;
            m.edits += 1;
            ok(message_json(m))
        }
        "answercallbackquery" => {
            let id = p["callback_query_id"].as_str().unwrap_or("").to_string();
            let window = twin.answer_window.unwrap_or(CALLBACK_ANSWER_WINDOW);
            // A tap is answered once, and only while it is fresh.
            let fresh = twin
                .open_callbacks
                .remove(&id)
                .is_some_and(|made| made.elapsed() < window);
            if !fresh {
                return fail(
                    400,
                    "Bad Request: query is too old and response timeout expired or query ID is invalid",
                );
            }
            let text = p["text"].as_str().unwrap_or("").to_string();
            twin.answers.push((id, text));
            ok(json!(true))
        }
        "setmycommands" => {
            let Some(list) = p["commands"].as_array() else {
                return fail(400, "Bad Request: commands must be an array");
            };
            twin.commands = list
                .iter()
                .map(|c| {
                    (
                        c["command"].as_str().unwrap_or("").to_string(),
                        c["description"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            ok(json!(true))
        }
        _ => fail(404, "Not Found: method not found"),
    }
}

/// Stores a message, or a photo when `photo` is not empty.
fn send(twin: &mut Twin, p: &Value, text: &str, photo: Vec<u8>) -> Response {
    let Some(chat_id) = p["chat_id"].as_i64().filter(|c| *c != 0) else {
        return fail(400, "Bad Request: chat not found");
    };
    let buttons = match buttons(p) {
        Ok(b) => b,
        Err(e) => return e,
    };
    twin.next_message += 1;
    let m = SentMessage {
        message_id: twin.next_message,
        chat_id,
        text: text.to_string(),
        buttons,
        is_photo: !photo.is_empty(),
        photo_bytes: photo.len(),
        photo,
        edits: 0,
    };
    let reply = message_json(&m);
    twin.messages.push(m);
    ok(reply)
}

fn buttons(p: &Value) -> Result<Vec<(String, String)>, Response> {
    let mut out = Vec::new();
    let rows = p["reply_markup"]["inline_keyboard"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for button in rows.iter().filter_map(Value::as_array).flatten() {
        let data = button["callback_data"].as_str().unwrap_or("");
        if data.is_empty() || data.len() > MAX_CALLBACK_DATA {
            return Err(fail(400, "Bad Request: BUTTON_DATA_INVALID"));
        }
        out.push((
            button["text"].as_str().unwrap_or("").to_string(),
            data.to_string(),
        ));
    }
    Ok(out)
}

fn check_text(p: &Value, text: &str, max: usize, too_long: &str) -> Result<(), Response> {
    if text.chars().count() > max {
        return Err(fail(400, &format!("Bad Request: {too_long}")));
    }
    if p["parse_mode"].as_str() == Some("HTML") {
        check_html(text)
            .map_err(|why| fail(400, &format!("Bad Request: can't parse entities: {why}")))?;
    }
    Ok(())
}

/// Telegram's HTML rules: known tags, balanced; `<`, `>` and `&` otherwise
/// only as entities.
pub fn check_html(text: &str) -> Result<(), String> {
    let mut open: Vec<String> = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(i) = rest.find(['<', '&']) {
        let at = offset + i;
        let tail = &rest[i..];
        if tail.starts_with('&') {
            let end = tail
                .find(';')
                .filter(|&e| e > 1 && e <= 10 && tail[1..e].chars().all(|c| c.is_ascii_alphanumeric() || c == '#'))
                .ok_or_else(|| format!("character '&' is reserved and must be escaped with &amp; at byte offset {at}"))?;
            let name = &tail[1..end];
            if !matches!(name, "lt" | "gt" | "amp" | "quot") && !name.starts_with('#') {
                return Err(format!(
                    "unsupported HTML entity &{name}; at byte offset {at}"
                ));
            }
            offset = at + end + 1;
            rest = &tail[end + 1..];
            continue;
        }
        let end = tail
            .find('>')
            .ok_or_else(|| format!("unclosed start tag at byte offset {at}"))?;
        let inner = &tail[1..end];
        let (closing, name) = match inner.strip_prefix('/') {
            Some(n) => (true, n.trim()),
            None => (false, inner.split_whitespace().next().unwrap_or("")),
        };
        if !ALLOWED_TAGS.contains(&name) {
            return Err(format!(
                "unsupported start tag \"{name}\" at byte offset {at}"
            ));
        }
        if closing {
            if open.pop().as_deref() != Some(name) {
                return Err(format!(
                    "unmatched end tag at byte offset {at}, expected \"</{name}>\""
                ));
            }
        } else {
            open.push(name.to_string());
        }
        offset = at + end + 1;
        rest = &tail[end + 1..];
    }
    match open.last() {
        Some(tag) => Err(format!(
            "can't find end tag corresponding to start tag \"{tag}\""
        )),
        None => Ok(()),
    }
}

async fn get_updates(shared: &Shared, p: &Value) -> Response {
    let offset = p["offset"].as_i64().unwrap_or(0);
    let timeout = Duration::from_secs(p["timeout"].as_u64().unwrap_or(0).min(50));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // Register before looking, so an update queued in between wakes us.
        let arrived = shared.arrived.notified();
        {
            let mut twin = lock(&shared.state);
            // Updates before the offset are confirmed: gone for good.
            while twin
                .updates
                .front()
                .is_some_and(|(id, _)| i64::from(*id) < offset)
            {
                twin.updates.pop_front();
            }
            if !twin.updates.is_empty() || tokio::time::Instant::now() >= deadline {
                let batch: Vec<Value> = twin
                    .updates
                    .iter()
                    .take(100)
                    .map(|(_, u)| u.clone())
                    .collect();
                return ok(Value::Array(batch));
            }
        }
        if tokio::time::timeout_at(deadline, arrived).await.is_err() {
            return ok(json!([]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_html;

    #[test]
    fn html_is_checked_like_telegram() {
        assert!(
            check_html("<b>Pricing</b> &lt;b&gt; 5 &amp; 6 <a href=\"https://x\">PR</a>").is_ok()
        );
        assert!(check_html("a < b").is_err());
        assert!(check_html("R&D").is_err());
        assert!(check_html("<div>x</div>").is_err());
        assert!(check_html("<b>open").is_err());
        assert!(check_html("<b><i>x</b></i>").is_err());
    }
}

//! Responses in GitHub's shapes, and the encodings GitHub uses.

use super::*;

pub(super) fn reply(status: u16, body: &Value) -> Response {
    respond(status, body.to_string(), &[])
}

pub(super) fn respond(status: u16, body: String, extra: &[(&str, String)]) -> Response {
    let reset = chrono::Utc::now().timestamp() + 3600;
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header("x-github-api-version-selected", "2022-11-28")
        .header("x-ratelimit-limit", "5000")
        .header("x-ratelimit-remaining", "4999")
        .header("x-ratelimit-reset", reset.to_string())
        .header("x-ratelimit-used", "1")
        .header("x-ratelimit-resource", "core");
    for (name, value) in extra {
        builder = builder.header(*name, value);
    }
    builder
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

pub(super) fn error(status: u16, message: &str) -> Response {
    reply(
        status,
        &json!({"message": message, "documentation_url": DOCS, "status": status.to_string()}),
    )
}

pub(super) fn not_found() -> Response {
    error(404, "Not Found")
}

pub(super) fn unprocessable(message: &str) -> Response {
    error(422, message)
}

pub(super) fn invalid(errors: Value) -> Response {
    reply(
        422,
        &json!({"message": "Validation Failed", "errors": errors, "documentation_url": DOCS, "status": "422"}),
    )
}

/// The token of an `Authorization: Bearer …` (or `token …`) header.
pub(super) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token "))
        .map(str::to_string)
}

pub(super) fn no_content() -> Response {
    let mut response = respond(204, String::new(), &[]);
    response.headers_mut().remove(header::CONTENT_TYPE);
    response
}

/// An injected failure, shaped as GitHub sends it.
pub(super) fn fault(status: u16) -> Response {
    pub(super) const SECONDARY: &str = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID 0000:TWIN.";
    let message = match status {
        401 => "Bad credentials".to_string(),
        403 | 429 => SECONDARY.to_string(),
        404 => "Not Found".to_string(),
        // The only 405 GitHub gives: a merge it will not do.
        405 => "Pull Request is not mergeable".to_string(),
        500 | 502 => "Server Error".to_string(),
        _ => StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error")
            .to_string(),
    };
    let body = json!({"message": message, "documentation_url": DOCS, "status": status.to_string()});
    let extra = match status {
        403 | 429 => vec![("retry-after", "1".to_string())],
        _ => Vec::new(),
    };
    respond(status, body.to_string(), &extra)
}

// ---- Encodings ----

/// Base64 wrapped at 60 columns, each line ending in a newline, as GitHub sends it.
pub(super) fn encode_base64_wrapped(bytes: &[u8]) -> String {
    let flat = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(flat.len() + flat.len() / 60 + 1);
    for chunk in flat.as_bytes().chunks(60) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out
}

pub(super) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
}

pub(super) fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

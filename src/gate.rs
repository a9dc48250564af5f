//! The content-security gate: what no proposed edit may bring to a page,
//! however well it stays inside the step's files. A page's text can carry a
//! prompt injection and a model can simply be wrong; what reaches main must
//! not depend on the approver reading every diff on a phone.
//!
//! The gate compares what the page had before with what it has after, as
//! an HTML tokenizer sees them (framework files too: JSX, TSX, Vue and
//! Svelte markup tokenizes as tags and attributes), and refuses an edit that
//! adds a script, an inline event handler, a frame or embed, a `<base>`; an
//! origin the file did not use and the config does not allow; a change to a
//! form's action or method; or any change to an analytics snippet.

use std::collections::{BTreeMap, BTreeSet};

use html5gum::{Token, Tokenizer};

/// Tags an edit may never add.
const FORBIDDEN_TAGS: &[&str] = &["script", "iframe", "object", "embed", "base", "frame"];

/// Attributes whose value is a URL (or, for `srcset`, a list of them).
const URL_ATTRIBUTES: &[&str] = &[
    "src",
    "href",
    "action",
    "formaction",
    "srcset",
    "poster",
    "data",
    "xlink:href",
];

/// Text that marks an analytics or tracking snippet.
const TRACKING_MARKERS: &[&str] = &[
    "posthog",
    "gtag(",
    "googletagmanager",
    "google-analytics",
    "analytics.js",
    "plausible",
    "fbq(",
    "_paq",
    "hotjar",
    "segment.com",
    "clarity.ms",
];

/// What of a page the gate looks at.
#[derive(Debug, Default, PartialEq)]
struct Surface {
    /// Forbidden tags, by name, with their count.
    tags: BTreeMap<String, usize>,
    /// Inline event handlers (`onclick`, `onClick` …), by tag and attribute.
    handlers: BTreeMap<String, usize>,
    /// Origins the page points at (`https://host:port`, `javascript:`).
    origins: BTreeSet<String>,
    /// Each form's (action, method), in order.
    forms: Vec<(String, String)>,
}

/// Why the edit from `before` to `after` of `path` may not land, each a
/// sentence fit to send back to the model. Empty when it may.
pub fn check(path: &str, before: &str, after: &str, allowed_origins: &[String]) -> Vec<String> {
    let old = surface(before);
    let new = surface(after);
    let mut problems = Vec::new();
    for (tag, n) in &new.tags {
        if *n > old.tags.get(tag).copied().unwrap_or(0) {
            problems.push(format!(
                "{path}: the edit adds a <{tag}>; pages may not gain scripts, frames, embeds or a <base>"
            ));
        }
    }
    for (handler, n) in &new.handlers {
        if *n > old.handlers.get(handler).copied().unwrap_or(0) {
            problems.push(format!(
                "{path}: the edit adds an inline event handler ({handler}); change markup and text only"
            ));
        }
    }
    for origin in new.origins.difference(&old.origins) {
        if !allowed(origin, allowed_origins) {
            problems.push(format!(
                "{path}: the edit points at {origin}, which the page did not use before; link only to origins it already uses"
            ));
        }
    }
    if new.forms != old.forms {
        problems.push(format!(
            "{path}: the edit changes a form's action or method (or adds or removes a form); leave forms where they send"
        ));
    }
    if touches_tracking(before, after) {
        problems.push(format!(
            "{path}: the edit touches an analytics or tracking snippet; leave those lines exactly as they are"
        ));
    }
    problems
}

fn allowed(origin: &str, allowed_origins: &[String]) -> bool {
    allowed_origins
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

fn surface(text: &str) -> Surface {
    let mut s = Surface::default();
    for Ok(token) in Tokenizer::new(text) {
        match token {
            Token::StartTag(tag) => {
                let name = lossy(&tag.name).to_ascii_lowercase();
                if FORBIDDEN_TAGS.contains(&name.as_str()) {
                    *s.tags.entry(name.clone()).or_default() += 1;
                }
                let mut form = (String::new(), String::new());
                for (attr, value) in &tag.attributes {
                    let attr = lossy(attr).to_ascii_lowercase();
                    let value = lossy(&value.value);
                    if attr.starts_with("on") && attr.len() > 2 {
                        *s.handlers.entry(format!("{name} {attr}")).or_default() += 1;
                    }
                    if URL_ATTRIBUTES.contains(&attr.as_str()) {
                        let urls: Vec<&str> = if attr == "srcset" {
                            value
                                .split(',')
                                .filter_map(|c| c.split_whitespace().next())
                                .collect()
                        } else {
                            vec![value.as_str()]
                        };
                        s.origins.extend(urls.into_iter().filter_map(origin));
                    }
                    if attr == "style" {
                        s.origins.extend(css_origins(&value));
                    }
                    if name == "form" && attr == "action" {
                        form.0 = value.trim().to_string();
                    }
                    if name == "form" && attr == "method" {
                        form.1 = value.trim().to_ascii_lowercase();
                    }
                }
                if name == "form" {
                    s.forms.push(form);
                }
            }
            // <style> bodies and any text: CSS url() and @import.
            Token::String(text) => s.origins.extend(css_origins(&lossy(&text.value))),
            _ => {}
        }
    }
    s
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The origin a URL points at: `https://host[:port]` for an absolute or
/// protocol-relative URL, the scheme for `javascript:`/`data:`-like ones,
/// none for a path on the same site.
fn origin(url: &str) -> Option<String> {
    let url = url.trim().trim_matches(|c| c == '"' || c == '\'');
    // JSX and Vue bind expressions ({…}, :src) are not URLs the gate can read.
    if url.is_empty() || url.starts_with('{') || url.starts_with('#') {
        return None;
    }
    let lower = url.to_ascii_lowercase();
    let rest = if let Some(rest) = lower.strip_prefix("//") {
        ("https", rest)
    } else if let Some((scheme, rest)) = lower.split_once("://") {
        (scheme, rest)
    } else if let Some((scheme, _)) = lower.split_once(':') {
        let scheme_like = scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        // mailto: and tel: open the visitor's own apps; anything else is an origin.
        return (scheme_like && !matches!(scheme, "mailto" | "tel")).then(|| format!("{scheme}:"));
    } else {
        return None;
    };
    let host = rest.1.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    (!host.is_empty()).then(|| format!("{}://{host}", rest.0))
}

/// Origins of `url(...)` and `@import` in CSS text.
fn css_origins(css: &str) -> Vec<String> {
    let lower = css.to_ascii_lowercase();
    let mut out = Vec::new();
    for (i, _) in lower.match_indices("url(") {
        let inner = &lower[i + 4..];
        let end = inner.find(')').unwrap_or(inner.len());
        out.extend(origin(&inner[..end]));
    }
    for (i, _) in lower.match_indices("@import") {
        let inner = lower[i + 7..].trim_start();
        let inner = inner.strip_prefix("url(").unwrap_or(inner);
        let end = inner.find([')', ';', ' ', '\n']).unwrap_or(inner.len());
        out.extend(origin(&inner[..end]));
    }
    out
}

/// A line added or removed by the edit carries a tracking marker.
fn touches_tracking(before: &str, after: &str) -> bool {
    similar::TextDiff::from_lines(before, after)
        .iter_all_changes()
        .filter(|c| c.tag() != similar::ChangeTag::Equal)
        .any(|c| {
            let line = c.value().to_ascii_lowercase();
            TRACKING_MARKERS.iter().any(|m| line.contains(m))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "<html><head><link href=\"https://fonts.example.com/css\" rel=\"stylesheet\">\n\
        <script src=\"https://us-assets.i.posthog.com/static/array.js\"></script>\n</head>\n\
        <body>\n  <h1>Pricing</h1>\n  <a href=\"/signup\">sign up</a>\n\
        <form action=\"/signup\" method=\"post\"><button>Go</button></form>\n</body></html>\n";

    fn gate(after: &str) -> Vec<String> {
        check("site/pricing.html", PAGE, after, &[])
    }

    fn with(line: &str) -> String {
        PAGE.replace(
            "  <h1>Pricing</h1>\n",
            &format!("  <h1>Pricing</h1>\n  {line}\n"),
        )
    }

    #[test]
    fn text_and_markup_on_known_origins_pass() {
        assert!(gate(&with("<p class=\"cta\">Start your <b>free</b> trial</p>")).is_empty());
        assert!(gate(&with("<a href=\"/signup?plan=team\">Team plan</a>")).is_empty());
        assert!(gate(&with("<a href=\"https://fonts.example.com/x\">x</a>")).is_empty());
        assert!(gate(&with("<a href=\"mailto:hello@acme.test\">mail</a>")).is_empty());
    }

    #[test]
    fn each_rule_refuses_with_its_reason() {
        let cases = [
            ("<script src=\"/chat.js\"></script>", "adds a <script>"),
            ("<iframe src=\"/x\"></iframe>", "adds a <iframe>"),
            ("<embed src=\"/x.swf\">", "adds a <embed>"),
            ("<object data=\"/x\"></object>", "adds a <object>"),
            ("<base href=\"/\">", "adds a <base>"),
            (
                "<button onclick=\"go()\">Go</button>",
                "inline event handler",
            ),
            ("<Button onClick={go}>Go</Button>", "inline event handler"),
            (
                "<a href=\"https://evil.test/signup\">sign up</a>",
                "https://evil.test",
            ),
            (
                "<img src=\"//cdn.evil.test/p.gif\">",
                "https://cdn.evil.test",
            ),
            (
                "<img srcset=\"/a.png 1x, https://cdn.evil.test/b.png 2x\">",
                "https://cdn.evil.test",
            ),
            ("<form action=\"/x\"><input></form>", "form's action"),
            (
                "<div style=\"background: url(https://img.evil.test/a.png)\"></div>",
                "https://img.evil.test",
            ),
            (
                "<style>@import url(https://css.evil.test/a.css);</style>",
                "https://css.evil.test",
            ),
            ("<a href=\"javascript:steal()\">x</a>", "javascript:"),
        ];
        for (line, reason) in cases {
            let problems = gate(&with(line));
            assert!(
                problems.iter().any(|p| p.contains(reason)),
                "{line}: {problems:?}"
            );
        }
    }

    #[test]
    fn a_changed_form_or_tracking_snippet_is_refused() {
        let moved = PAGE.replace("action=\"/signup\"", "action=\"/other\"");
        assert!(gate(&moved).iter().any(|p| p.contains("form's action")));
        let get = PAGE.replace("method=\"post\"", "method=\"get\"");
        assert!(gate(&get).iter().any(|p| p.contains("form's action")));
        let untracked = PAGE.replace("array.js", "array2.js");
        assert!(gate(&untracked).iter().any(|p| p.contains("tracking")));
    }

    #[test]
    fn an_allowed_origin_passes() {
        let after = with("<a href=\"https://docs.acme.test/pricing\">docs</a>");
        assert!(!gate(&after).is_empty());
        let allowed = vec!["https://docs.acme.test".to_string()];
        assert!(check("site/pricing.html", PAGE, &after, &allowed).is_empty());
    }
}

//! Adapter for the Telegram Bot API on teloxide: the configured chat only,
//! HTML parse mode, inline buttons, long polling for taps and commands.
//!
//! Flood control (429) is waited out as Telegram asks (`retry_after`), and a
//! dropped connection is tried again, both under the shared [`RetryPolicy`].
//! Errors are our own one-line texts: teloxide's network errors can carry the
//! request URL, and the URL holds the token.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use secrecy::{ExposeSecret, SecretString};
use teloxide::payloads::{
    AnswerCallbackQuerySetters, EditMessageTextSetters, GetUpdatesSetters, SendMessageSetters,
    SendPhotoSetters,
};
use teloxide::prelude::Requester;
use teloxide::types::{
    AllowedUpdate, BotCommand, CallbackQueryId, ChatId, InlineKeyboardButton, InlineKeyboardMarkup,
    InputFile, MessageId, ParseMode, UpdateKind,
};
use teloxide::{ApiError, Bot, RequestError};
use tracing::instrument;

use crate::retry::{Attempt, RetryPolicy};

/// Telegram's limits: message text and photo caption, in characters.
const MAX_TEXT: usize = 4096;
const MAX_CAPTION: usize = 1024;

/// Something a person did in a chat the bot is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A button tap.
    Callback {
        id: String,
        from: u64,
        chat_id: i64,
        message_id: i32,
        data: String,
    },
    /// A message starting with '/': `command` is its first word as sent
    /// ("/status" or "/status@funnelfix_bot"), `args` the rest.
    Command {
        from: u64,
        chat_id: i64,
        command: String,
        args: String,
    },
}

#[derive(Clone)]
pub struct Telegram {
    bot: Bot,
    chat: ChatId,
    token_env: String,
    retry: RetryPolicy,
}

impl Telegram {
    pub fn new(
        api_url: &str,
        token: SecretString,
        token_env: &str,
        chat_id: i64,
        retry: RetryPolicy,
    ) -> Result<Telegram> {
        let url = reqwest::Url::parse(api_url)
            .map_err(|e| anyhow::anyhow!("telegram.api_url {api_url:?} is not a URL: {e}"))?;
        // teloxide's client times out at 17 s; long polls stay at 10 s or less.
        let client = teloxide::net::default_reqwest_settings()
            .build()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot set up the HTTP client for Telegram: {}",
                    e.without_url()
                )
            })?;
        let bot = Bot::with_client(token.expose_secret(), client).set_api_url(url);
        Ok(Telegram {
            bot,
            chat: ChatId(chat_id),
            token_env: token_env.to_string(),
            retry,
        })
    }

    /// Sends an HTML message to the chat, with one row of buttons
    /// `(label, callback_data)` when given; returns its message id.
    #[instrument(skip_all)]
    pub async fn send_html(&self, html: &str, buttons: &[(String, String)]) -> Result<i32> {
        let text = fit(html, MAX_TEXT);
        let keyboard = (!buttons.is_empty()).then(|| {
            InlineKeyboardMarkup::new(vec![
                buttons
                    .iter()
                    .map(|(label, data)| {
                        InlineKeyboardButton::callback(label.clone(), data.clone())
                    })
                    .collect::<Vec<_>>(),
            ])
        });
        let message = self
            .call("sendMessage", || {
                let request = self
                    .bot
                    .send_message(self.chat, text.clone())
                    .parse_mode(ParseMode::Html);
                let request = match &keyboard {
                    Some(k) => request.reply_markup(k.clone()),
                    None => request,
                };
                async move { request.await }
            })
            .await?;
        Ok(message.id.0)
    }

    /// Sends a PNG with an HTML caption; returns its message id.
    #[instrument(skip_all)]
    pub async fn send_photo(&self, png: Vec<u8>, caption_html: &str) -> Result<i32> {
        let caption = fit(caption_html, MAX_CAPTION);
        let message = self
            .call("sendPhoto", || {
                let photo = InputFile::memory(png.clone()).file_name("funnel.png");
                let request = self
                    .bot
                    .send_photo(self.chat, photo)
                    .caption(caption.clone())
                    .parse_mode(ParseMode::Html);
                async move { request.await }
            })
            .await?;
        Ok(message.id.0)
    }

    /// Replaces a message's text; without a keyboard in the edit, Telegram
    /// removes the buttons.
    #[instrument(skip_all)]
    pub async fn edit_html(&self, message_id: i32, html: &str) -> Result<()> {
        let text = fit(html, MAX_TEXT);
        let result = self
            .call("editMessageText", || {
                let request = self
                    .bot
                    .edit_message_text(self.chat, MessageId(message_id), text.clone())
                    .parse_mode(ParseMode::Html);
                async move { request.await }
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            // An edit that changes nothing (a redelivered update) is done.
            Err(e) if e.to_string().contains("not modified") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Answers a button tap (the small notice the tapper sees).
    #[instrument(skip_all)]
    pub async fn answer_callback(&self, callback_id: &str, text: &str) -> Result<()> {
        self.call("answerCallbackQuery", || {
            let request = self
                .bot
                .answer_callback_query(CallbackQueryId(callback_id.to_string()))
                .text(text.to_string());
            async move { request.await }
        })
        .await?;
        Ok(())
    }

    /// Registers the command list shown in Telegram's menu.
    #[instrument(skip_all)]
    pub async fn set_commands(&self, commands: &[(&str, &str)]) -> Result<()> {
        let list: Vec<BotCommand> = commands
            .iter()
            .map(|(c, d)| BotCommand::new(*c, *d))
            .collect();
        self.call("setMyCommands", || {
            let request = self.bot.set_my_commands(list.clone());
            async move { request.await }
        })
        .await?;
        Ok(())
    }

    /// Long-polls for taps and commands. Updates of other kinds are skipped;
    /// when a whole batch is skipped, it is confirmed at once so it is not
    /// fetched again, and what follows it is returned.
    #[instrument(skip_all)]
    pub async fn poll(
        &self,
        offset: Option<i32>,
        timeout_secs: u32,
    ) -> Result<Vec<(i32, Incoming)>> {
        let mut offset = offset;
        for _ in 0..2 {
            let updates = self
                .call("getUpdates", || {
                    let mut request = self
                        .bot
                        .get_updates()
                        .timeout(timeout_secs)
                        .allowed_updates(vec![
                            AllowedUpdate::Message,
                            AllowedUpdate::CallbackQuery,
                        ]);
                    if let Some(o) = offset {
                        request = request.offset(o);
                    }
                    async move { request.await }
                })
                .await?;
            let last = updates.last().map(|u| u.id.0 as i32);
            let incoming: Vec<(i32, Incoming)> = updates
                .into_iter()
                .filter_map(|u| Some((u.id.0 as i32, incoming(u.kind)?)))
                .collect();
            match last {
                Some(last) if incoming.is_empty() => offset = Some(last + 1),
                _ => return Ok(incoming),
            }
        }
        Ok(Vec::new())
    }

    /// Runs a request, trying again on flood control and network failures.
    async fn call<T, F, Fut>(&self, method: &str, request: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, RequestError>>,
    {
        let outcome = self
            .retry
            .run("Telegram", |_| async {
                match request().await {
                    Ok(v) => Attempt::Done(v),
                    Err(RequestError::RetryAfter(secs)) => Attempt::Again {
                        error: anyhow::anyhow!("flood control, retry after {} s", secs.seconds()),
                        asked: Some(Duration::from_secs(secs.seconds() as u64)),
                    },
                    Err(RequestError::Network(e)) => Attempt::Again {
                        error: anyhow::anyhow!("network: {}", network_reason(&e)),
                        asked: None,
                    },
                    Err(e) => Attempt::Fail(self.describe(method, e)),
                }
            })
            .await;
        outcome.map_err(|gave_up| {
            if gave_up.exhausted {
                anyhow::anyhow!(
                    "Telegram {method} failed after {} tries; last: {}",
                    gave_up.attempts,
                    gave_up.error
                )
            } else {
                gave_up.error
            }
        })
    }

    fn describe(&self, method: &str, e: RequestError) -> anyhow::Error {
        match e {
            RequestError::Api(ApiError::InvalidToken) => anyhow::anyhow!(
                "Telegram refused the bot token in ${} (401 Unauthorized)",
                self.token_env
            ),
            RequestError::Api(ApiError::ChatNotFound) => anyhow::anyhow!(
                "chat {} not found: is telegram.chat_id right and is the bot a member?",
                self.chat.0
            ),
            RequestError::Api(api) => anyhow::anyhow!("Telegram refused {method}: {api}"),
            RequestError::MigrateToChatId(id) => anyhow::anyhow!(
                "the chat became a supergroup: set telegram.chat_id = {}",
                id.0
            ),
            RequestError::InvalidJson { source, .. } => {
                anyhow::anyhow!("Telegram sent a reply to {method} funnelfix cannot read: {source}")
            }
            RequestError::Io(e) => anyhow::anyhow!("Telegram {method}: {e}"),
            RequestError::RetryAfter(_) | RequestError::Network(_) => {
                anyhow::anyhow!("Telegram {method} failed")
            }
        }
    }
}

/// A network error's reason without its URL (which holds the token).
fn network_reason(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "broken reply"
    } else {
        "request failed"
    }
}

/// What a person did, if it concerns funnelfix.
fn incoming(kind: UpdateKind) -> Option<Incoming> {
    match kind {
        UpdateKind::CallbackQuery(q) => {
            let message = q.message?;
            Some(Incoming::Callback {
                id: q.id.0,
                from: q.from.id.0,
                chat_id: message.chat().id.0,
                message_id: message.id().0,
                data: q.data.unwrap_or_default(),
            })
        }
        UpdateKind::Message(m) => {
            let text = m.text()?.trim();
            if !text.starts_with('/') {
                return None;
            }
            let (command, args) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
            Some(Incoming::Command {
                from: m.from.as_ref()?.id.0,
                chat_id: m.chat.id.0,
                command: command.to_string(),
                args: args.trim().to_string(),
            })
        }
        _ => None,
    }
}

/// Keeps a text within Telegram's limit: cut at a line break, so no HTML tag
/// or entity is cut in half (each of funnelfix's lines closes its own tags).
fn fit(html: &str, max: usize) -> String {
    if html.chars().count() <= max {
        return html.to_string();
    }
    let budget: String = html.chars().take(max - 2).collect();
    let cut = budget.rfind('\n').unwrap_or(0);
    format!("{}\n…", &budget[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_at_a_line() {
        let line = "<b>step</b> 12.5% of 1000\n";
        let long = line.repeat(400);
        let cut = fit(&long, MAX_TEXT);
        assert!(cut.chars().count() <= MAX_TEXT);
        assert!(cut.ends_with("\n…"));
        assert_eq!(cut.matches("<b>").count(), cut.matches("</b>").count());
        assert_eq!(fit("short", MAX_TEXT), "short");
    }
}

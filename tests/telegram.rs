//! The Telegram adapter (teloxide) against the Bot API twin: messages with
//! buttons, taps and commands through long polling, edits, answers, flood
//! control, HTML checks, and a bad token that never shows.

use std::time::{Duration, Instant};

use funnelfix::retry::RetryPolicy;
use funnelfix::sandbox::telegram::TelegramTwin;
use funnelfix::telegram::{Incoming, Telegram};
use secrecy::SecretString;

const TOKEN: &str = "123456:test_token_5f2a9c";
const CHAT: i64 = -100777;
const USER: u64 = 4242;

async fn setup() -> (TelegramTwin, Telegram) {
    let twin = TelegramTwin::start(TOKEN).await.expect("twin");
    let tg = Telegram::new(
        &twin.url(),
        SecretString::from(TOKEN),
        "TELEGRAM_BOT_TOKEN",
        CHAT,
        RetryPolicy::FAST,
    )
    .expect("client");
    (twin, tg)
}

fn buttons() -> Vec<(String, String)> {
    vec![
        ("Approve".into(), "a:1:abc".into()),
        ("Reject".into(), "r:1:abc".into()),
    ]
}

#[tokio::test]
async fn a_tap_on_a_sent_button_comes_back_through_polling() {
    let (twin, tg) = setup().await;
    let id = tg
        .send_html("<b>Proposal</b> 5 &lt; 6", &buttons())
        .await
        .expect("sent");
    let sent = twin.messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message_id, id);
    assert_eq!(sent[0].buttons, buttons());

    let callback = twin.press_button(CHAT, USER, id, "a:1:abc");
    let updates = tg.poll(None, 0).await.expect("polled");
    assert_eq!(updates.len(), 1);
    let (update_id, incoming) = &updates[0];
    assert_eq!(
        incoming,
        &Incoming::Callback {
            id: callback.clone(),
            from: USER,
            chat_id: CHAT,
            message_id: id,
            data: "a:1:abc".into(),
        }
    );
    // Until confirmed by the offset, the update is delivered again.
    assert_eq!(tg.poll(None, 0).await.expect("polled").len(), 1);
    assert!(
        tg.poll(Some(update_id + 1), 0)
            .await
            .expect("polled")
            .is_empty()
    );

    tg.answer_callback(&callback, "Merging…")
        .await
        .expect("answered");
    assert_eq!(
        twin.callback_answers(),
        vec![(callback, "Merging…".to_string())]
    );

    tg.edit_html(id, "<b>Proposal</b>: approved by user 4242")
        .await
        .expect("edited");
    let m = &twin.messages()[0];
    assert!(m.buttons.is_empty(), "the edit removed the keyboard");
    assert_eq!(m.edits, 1);
    // Editing to the same text again is not an error (a redelivered update).
    tg.edit_html(id, "<b>Proposal</b>: approved by user 4242")
        .await
        .expect("no-op edit");
}

#[tokio::test]
async fn commands_arrive_with_their_arguments() {
    let (twin, tg) = setup().await;
    twin.send_command(CHAT, USER, "/funnel@funnelfix_bot signup");
    let updates = tg.poll(None, 0).await.expect("polled");
    assert_eq!(
        updates[0].1,
        Incoming::Command {
            from: USER,
            chat_id: CHAT,
            command: "/funnel@funnelfix_bot".into(),
            args: "signup".into(),
        }
    );
    tg.set_commands(&[
        ("status", "open experiments"),
        ("help", "what funnelfix does"),
    ])
    .await
    .expect("registered");
    assert_eq!(
        twin.commands()[0],
        ("status".to_string(), "open experiments".to_string())
    );
}

#[tokio::test]
async fn long_polling_returns_when_something_arrives() {
    let (twin, tg) = setup().await;
    let id = tg.send_html("x", &buttons()).await.expect("sent");
    let twin = std::sync::Arc::new(twin);
    let presser = twin.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        presser.press_button(CHAT, USER, id, "r:1:abc");
    });
    let started = Instant::now();
    let updates = tg.poll(None, 5).await.expect("polled");
    assert_eq!(updates.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // And waits out its timeout when nothing comes.
    let started = Instant::now();
    assert!(
        tg.poll(Some(updates[0].0 + 1), 1)
            .await
            .expect("polled")
            .is_empty()
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn flood_control_is_waited_out_and_the_message_sent_once() {
    let (twin, tg) = setup().await;
    twin.fail_next("SendMessage", 429, 2);
    tg.send_html("after the wait", &[])
        .await
        .expect("delivered");
    assert_eq!(twin.requests("sendMessage"), 3);
    assert_eq!(twin.messages().len(), 1);
}

#[tokio::test]
async fn unescaped_html_is_refused_as_telegram_does() {
    let (twin, tg) = setup().await;
    let err = tg.send_html("rate < 5%", &[]).await.expect_err("refused");
    assert!(err.to_string().contains("can't parse entities"), "{err}");
    assert!(twin.messages().is_empty());
    let escaped = funnelfix::text::escape("rate < 5% & falling");
    tg.send_html(&escaped, &[])
        .await
        .expect("escaped text passes");
}

/// A white PNG of `width` × `height` pixels.
fn tiny_png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    let mut writer = encoder.write_header().expect("header");
    writer
        .write_image_data(&vec![255; (width * height * 3) as usize])
        .expect("pixels");
    writer.finish().expect("png");
    out
}

#[tokio::test]
async fn photos_are_sent_with_their_caption() {
    let (twin, tg) = setup().await;
    let png = tiny_png(3, 2);
    tg.send_photo(png.clone(), "Funnel <b>signup</b>")
        .await
        .expect("sent");
    let m = &twin.messages()[0];
    assert!(m.is_photo);
    assert_eq!(m.photo, png, "the twin keeps the photo as sent");
    assert_eq!(m.photo_bytes, png.len());
    assert_eq!(m.text, "Funnel <b>signup</b>");
}

#[tokio::test]
async fn a_photo_telegram_cannot_read_is_refused_as_telegram_refuses_it() {
    let (twin, tg) = setup().await;
    let err = tg
        .send_photo(vec![137, 80, 78, 71, 1, 2, 3], "broken")
        .await
        .expect_err("not an image");
    assert!(
        format!("{err:#}").contains("IMAGE_PROCESS_FAILED"),
        "{err:#}"
    );
    let err = tg
        .send_photo(tiny_png(1, 30), "too narrow")
        .await
        .expect_err("ratio over 20");
    assert!(
        format!("{err:#}").contains("PHOTO_INVALID_DIMENSIONS"),
        "{err:#}"
    );
    assert!(twin.messages().is_empty());
}

#[tokio::test]
async fn a_bad_token_is_named_not_shown() {
    let twin = TelegramTwin::start(TOKEN).await.expect("twin");
    let tg = Telegram::new(
        &twin.url(),
        SecretString::from("999:wrong_token"),
        "TELEGRAM_BOT_TOKEN",
        CHAT,
        RetryPolicy::FAST,
    )
    .expect("client");
    let err = tg.send_html("hi", &[]).await.expect_err("refused");
    let msg = format!("{err:#}");
    assert_eq!(
        msg,
        "Telegram refused the bot token in $TELEGRAM_BOT_TOKEN (401 Unauthorized)"
    );
    let err = tg.poll(None, 0).await.expect_err("refused");
    assert!(!format!("{err:#}").contains("wrong_token"));
}

#[tokio::test]
async fn a_network_failure_does_not_show_the_token() {
    // Nothing listens on port 9 of loopback.
    let tg = Telegram::new(
        "http://127.0.0.1:9",
        SecretString::from(TOKEN),
        "TELEGRAM_BOT_TOKEN",
        CHAT,
        RetryPolicy::FAST,
    )
    .expect("client");
    let err = tg.send_html("hi", &[]).await.expect_err("no server");
    let msg = format!("{err:#}");
    assert!(msg.contains("failed after 4 tries"), "{msg}");
    assert!(!msg.contains("test_token"), "{msg}");
}

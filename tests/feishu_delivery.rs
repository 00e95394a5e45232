//! Feishu card rendering and delivery against a local fake Feishu server (wiremock on
//! 127.0.0.1): tenant token fetch, caching and refresh, error-code classification, `uuid`
//! dedupe keys, card updates, and the custom bot signature checked by the fake server.
//! Nothing here contacts the internet.

#![cfg(feature = "feishu")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use agent_handoff::notify::feishu::{
    decision_token, CustomBotSecret, FeishuAppBot, FeishuCardRenderer, FeishuCustomBot,
    ReceiveIdType, DECISION_TOKEN_KEY, FEISHU_CARD_LIMIT,
};
use agent_handoff::notify::{
    Delivery, DeliveryError, DeliveryKind, DeliveryReceipt, Notifier, ReviewCard,
};
use agent_handoff::{Clock, ManualClock, Proposal, Timestamp};
use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use serde_json::{json, Value};
use support::*;
use uuid::Uuid;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const TOKEN_PATH: &str = "/open-apis/auth/v3/tenant_access_token/internal";
const MESSAGES_PATH: &str = "/open-apis/im/v1/messages";

/// A pending review card for a `db.update` (links minted for a group chat), built through the
/// real engine; `reason` is the agent's reason.
async fn card_with(reason: &str) -> ReviewCard {
    let h = Harness::with_links(Setup::default(), LinkSetup::standard()).await;
    let request = agent_handoff::action::ActionRequest::builder("db.update", idem("feishu-card"))
        .target("postgres://prod/orders")
        .parameters(json!({ "table": "orders", "password": "hunter2-SECRET" }))
        .sensitive("/password")
        .reason(reason)
        .build()
        .unwrap();
    let id = match h
        .handoff
        .agent(agent_id("ops-agent"), None)
        .propose(request)
        .await
        .unwrap()
    {
        Proposal::Pending(p) => p.id,
        other => panic!("expected pending, got {other:?}"),
    };
    let ticket = h.ticket(id).await;
    let links: Vec<_> = h
        .handoff
        .mint_links(&ticket, None, h.now())
        .unwrap()
        .iter()
        .map(|l| l.to_card_link())
        .collect();
    ReviewCard::from_ticket(&ticket, h.now(), &digest_key(), &links)
}

async fn card() -> ReviewCard {
    card_with("nightly cleanup").await
}

fn clock() -> (ManualClock, Arc<dyn Clock>) {
    let clock = ManualClock::new(Timestamp::from_unix_millis(START));
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    (clock, shared)
}

fn app_bot(server: &MockServer, clock: Arc<dyn Clock>) -> FeishuAppBot {
    FeishuAppBot::new(
        server.uri(),
        "cli_test",
        "app-secret",
        ReceiveIdType::ChatId,
        clock,
    )
    .unwrap()
    .with_default_receive_id("oc_chat")
}

fn token_answer(token: &str, expire: u64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "code": 0, "msg": "ok", "tenant_access_token": token, "expire": expire
    }))
}

fn sent(message_id: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "code": 0, "msg": "success", "data": { "message_id": message_id }
    }))
}

fn feishu_error(status: u16, code: i64) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({ "code": code, "msg": "refused" }))
}

async fn mount_token(server: &MockServer, token: &str, expire: u64) {
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(token_answer(token, expire))
        .mount(server)
        .await;
}

async fn requests_to(server: &MockServer, p: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == p)
        .collect()
}

fn body(r: &Request) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn bearer(r: &Request) -> String {
    r.headers
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

fn has_buttons(card: &Value) -> bool {
    card["elements"].as_array().unwrap().iter().any(|e| {
        e["tag"] == "action"
            && e["actions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a.get("value").is_some())
    })
}

// ---------------------------------------------------------------------------------------------
// Card rendering.

#[tokio::test]
async fn card_buttons_carry_the_link_tokens_and_text_is_escaped() {
    let card = card_with("<at id=all></at> [click](https://evil.example) **now**").await;
    let rendered = FeishuCardRenderer::new()
        .with_review_page("https://review.example/tickets/{ticket}")
        .render(&card, DeliveryKind::RequestReview);
    assert_eq!(rendered["config"]["update_multi"], true);
    // db.update targets production? No: default environment; not irreversible → orange.
    assert!(["orange", "red"].contains(&rendered["header"]["template"].as_str().unwrap()));
    let actions = rendered["elements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["tag"] == "action")
        .unwrap()["actions"]
        .as_array()
        .unwrap()
        .clone();
    let tokens: Vec<&str> = actions
        .iter()
        .filter_map(|a| a["value"][DECISION_TOKEN_KEY].as_str())
        .collect();
    let expected: Vec<&str> = card
        .links
        .iter()
        .map(|l| decision_token(&l.url).unwrap())
        .collect();
    assert_eq!(tokens, expected);
    assert_eq!(tokens.len(), 3, "approve, reject, request changes");
    let review = actions.iter().find(|a| a.get("url").is_some()).unwrap();
    assert_eq!(
        review["url"],
        format!("https://review.example/tickets/{}", card.ticket)
    );

    let text = rendered.to_string();
    assert!(!text.contains("hunter2-SECRET"), "sensitive value leaked");
    assert!(!text.contains("<at id=all>"), "mention not escaped");
    assert!(!text.contains("https://evil.example"), "link not defanged");
    assert!(
        text.contains("not verified by the host"),
        "claims not labelled"
    );
}

#[tokio::test]
async fn closed_cards_have_no_buttons_and_big_cards_are_bounded() {
    let card = card().await;
    let closed = FeishuCardRenderer::new().render(&card, DeliveryKind::Close);
    assert!(!has_buttons(&closed));
    assert_eq!(closed["config"]["update_multi"], true);

    // Longer than a request may carry, as a card another channel built could be.
    let mut huge = closed_source_card().await;
    huge.agent_claims.reason = "very long reason ".repeat(5_000);
    huge.facts.targets = (0..500)
        .map(|i| format!("postgres://prod/table-{i}"))
        .collect();
    let renderer = FeishuCardRenderer::new();
    let (bounded, rendered) = renderer.bounded(huge, DeliveryKind::RequestReview).unwrap();
    assert!(bounded.cut);
    assert!(rendered.to_string().len() <= FEISHU_CARD_LIMIT);
    assert!(rendered.to_string().contains("full text in the ticket"));
    assert!(has_buttons(&rendered), "buttons survive the cut");
}

// ---------------------------------------------------------------------------------------------
// App bot.

#[tokio::test]
async fn token_is_fetched_once_cached_and_messages_carry_the_row_id_as_uuid() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(token_answer("t-1", 7200))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .and(query_param("receive_id_type", "chat_id"))
        .and(header("authorization", "Bearer t-1"))
        .respond_with(sent("om_1"))
        .expect(2)
        .mount(&server)
        .await;
    let (_clock, shared) = clock();
    let bot = app_bot(&server, shared);
    let card = card().await;
    let first = Delivery::new(
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
        DeliveryKind::RequestReview,
        card.clone(),
    );
    let second = Delivery::new(
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002),
        DeliveryKind::RequestReview,
        card,
    )
    .with_recipient("oc_other");
    let receipt = bot.deliver(&first).await.unwrap();
    assert_eq!(receipt.channel_message_id.as_deref(), Some("om_1"));
    bot.deliver(&second).await.unwrap();

    let token_reqs = requests_to(&server, TOKEN_PATH).await;
    assert_eq!(
        body(&token_reqs[0]),
        json!({ "app_id": "cli_test", "app_secret": "app-secret" })
    );
    let sends = requests_to(&server, MESSAGES_PATH).await;
    let b = body(&sends[0]);
    assert_eq!(b["receive_id"], "oc_chat");
    assert_eq!(b["msg_type"], "interactive");
    assert_eq!(b["uuid"], first.id.to_string());
    assert!(b["uuid"].as_str().unwrap().len() <= 50);
    let content: Value = serde_json::from_str(b["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["config"]["update_multi"], true);
    assert!(has_buttons(&content));
    assert_eq!(body(&sends[1])["receive_id"], "oc_other");
    assert_eq!(body(&sends[1])["uuid"], second.id.to_string());
}

#[tokio::test]
async fn token_is_refreshed_shortly_before_it_expires() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(token_answer("t-1", 7200))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    mount_token(&server, "t-2", 7200).await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(sent("om_1"))
        .mount(&server)
        .await;
    let (clock, shared) = clock();
    let bot = app_bot(&server, shared);
    let d = Delivery::new(
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0003),
        DeliveryKind::RequestReview,
        card().await,
    );

    bot.deliver(&d).await.unwrap();
    clock.advance(Duration::from_secs(7200 - 3 * 60 - 1));
    bot.deliver(&d).await.unwrap(); // still cached
    clock.advance(Duration::from_secs(2)); // within the refresh margin
    bot.deliver(&d).await.unwrap();

    assert_eq!(requests_to(&server, TOKEN_PATH).await.len(), 2);
    let auth: Vec<String> = requests_to(&server, MESSAGES_PATH)
        .await
        .iter()
        .map(bearer)
        .collect();
    assert_eq!(auth, ["Bearer t-1", "Bearer t-1", "Bearer t-2"]);
}

#[tokio::test]
async fn an_invalid_token_code_refreshes_once_and_retries() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(token_answer("t-old", 7200))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    mount_token(&server, "t-new", 7200).await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .and(header("authorization", "Bearer t-old"))
        .respond_with(feishu_error(400, 99_991_663))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .and(header("authorization", "Bearer t-new"))
        .respond_with(sent("om_9"))
        .mount(&server)
        .await;
    let (_clock, shared) = clock();
    let bot = app_bot(&server, shared);
    let d = Delivery::new(
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0004),
        DeliveryKind::RequestReview,
        card().await,
    );
    let receipt = bot.deliver(&d).await.unwrap();
    assert_eq!(receipt.channel_message_id.as_deref(), Some("om_9"));
    assert_eq!(requests_to(&server, TOKEN_PATH).await.len(), 2);
    let sends = requests_to(&server, MESSAGES_PATH).await;
    assert_eq!(sends.len(), 2);
    assert_eq!(body(&sends[0])["uuid"], body(&sends[1])["uuid"]);
}

#[tokio::test]
async fn a_token_refused_even_after_refresh_is_a_configuration_problem() {
    let server = MockServer::start().await;
    mount_token(&server, "t", 7200).await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(feishu_error(400, 99_991_671))
        .mount(&server)
        .await;
    let (_clock, shared) = clock();
    let bot = app_bot(&server, shared);
    let d = Delivery::new(
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0005),
        DeliveryKind::RequestReview,
        card().await,
    );
    let err = bot.deliver(&d).await.unwrap_err();
    assert!(
        matches!(err, DeliveryError::Misconfigured { .. }),
        "{err:?}"
    );
    assert_eq!(
        requests_to(&server, TOKEN_PATH).await.len(),
        2,
        "one refresh"
    );
    assert_eq!(requests_to(&server, MESSAGES_PATH).await.len(), 2);
}

/// One send answered with `answer`; the error it maps to.
async fn send_error(answer: ResponseTemplate) -> DeliveryError {
    let server = MockServer::start().await;
    mount_token(&server, "t", 7200).await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(answer)
        .mount(&server)
        .await;
    let (_clock, shared) = clock();
    let bot = app_bot(&server, shared);
    let d = Delivery::new(
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0006),
        DeliveryKind::RequestReview,
        card().await,
    );
    bot.deliver(&d).await.unwrap_err()
}

#[tokio::test]
async fn error_codes_are_classified() {
    let limited =
        send_error(feishu_error(429, 99_991_400).insert_header("x-ogw-ratelimit-reset", "7")).await;
    assert!(limited.is_retryable());
    assert_eq!(limited.retry_after(), Some(Duration::from_secs(7)));

    // Older APIs: HTTP 400 with the rate-limit code.
    let old = send_error(feishu_error(400, 99_991_400)).await;
    assert!(matches!(old, DeliveryError::RateLimited { .. }), "{old:?}");

    let server_error = send_error(ResponseTemplate::new(503)).await;
    assert!(matches!(server_error, DeliveryError::Transient { .. }));
    assert!(server_error.is_retryable());

    let no_permission = send_error(feishu_error(400, 99_991_672)).await;
    assert!(matches!(no_permission, DeliveryError::Misconfigured { .. }));
    assert!(!no_permission.is_retryable());

    let bad_request = send_error(feishu_error(400, 230_001)).await;
    assert!(matches!(bad_request, DeliveryError::Permanent { .. }));
    assert!(!bad_request.is_retryable());
}

#[tokio::test]
async fn bad_app_credentials_are_a_configuration_problem_and_token_outages_transient() {
    for (answer, misconfigured) in [
        (feishu_error(400, 10_014), true),
        (ResponseTemplate::new(502), false),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(TOKEN_PATH))
            .respond_with(answer)
            .mount(&server)
            .await;
        let (_clock, shared) = clock();
        let bot = app_bot(&server, shared);
        let d = Delivery::new(
            Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0007),
            DeliveryKind::RequestReview,
            card().await,
        );
        let err = bot.deliver(&d).await.unwrap_err();
        assert_eq!(
            matches!(err, DeliveryError::Misconfigured { .. }),
            misconfigured,
            "{err:?}"
        );
        assert_eq!(err.is_retryable(), !misconfigured);
        assert!(requests_to(&server, MESSAGES_PATH).await.is_empty());
    }
}

#[tokio::test]
async fn a_retried_delivery_sends_the_same_uuid() {
    let server = MockServer::start().await;
    mount_token(&server, "t", 7200).await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(sent("om_1"))
        .mount(&server)
        .await;
    let (_clock, shared) = clock();
    let bot = app_bot(&server, shared);
    let d = Delivery::new(
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0008),
        DeliveryKind::RequestReview,
        card().await,
    );
    assert!(bot.deliver(&d).await.unwrap_err().is_retryable());
    bot.deliver(&d).await.unwrap();
    let uuids: Vec<Value> = requests_to(&server, MESSAGES_PATH)
        .await
        .iter()
        .map(|r| body(r)["uuid"].clone())
        .collect();
    assert_eq!(uuids, vec![json!(d.id.to_string()); 2]);
}

#[tokio::test]
async fn close_patches_the_sent_message_without_buttons() {
    let server = MockServer::start().await;
    mount_token(&server, "t", 7200).await;
    Mock::given(method("PATCH"))
        .and(path(format!("{MESSAGES_PATH}/om_42")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "code": 0, "msg": "ok", "data": {} })),
        )
        .expect(1)
        .mount(&server)
        .await;
    let (_clock, shared) = clock();
    let bot = app_bot(&server, shared);
    let d = Delivery::new(
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0009),
        DeliveryKind::Close,
        card().await,
    )
    .with_previous_receipt(DeliveryReceipt::new(Some("om_42".into())));
    let receipt = bot.deliver(&d).await.unwrap();
    assert_eq!(receipt.channel_message_id.as_deref(), Some("om_42"));
    let patches = requests_to(&server, &format!("{MESSAGES_PATH}/om_42")).await;
    let content: Value =
        serde_json::from_str(body(&patches[0])["content"].as_str().unwrap()).unwrap();
    assert!(!has_buttons(&content));
    assert!(requests_to(&server, MESSAGES_PATH).await.is_empty());
}

#[tokio::test]
async fn debug_output_shows_no_secrets() {
    let server = MockServer::start().await;
    let (_clock, shared) = clock();
    let bot = app_bot(&server, Arc::clone(&shared));
    assert!(!format!("{bot:?}").contains("app-secret"));
    let custom = FeishuCustomBot::new(
        format!("{}/open-apis/bot/v2/hook/HOOK-TOKEN", server.uri()),
        shared,
    )
    .unwrap()
    .with_secret(CustomBotSecret::new("bot-secret").unwrap());
    let shown = format!("{custom:?}");
    assert!(
        !shown.contains("HOOK-TOKEN") && !shown.contains("bot-secret"),
        "{shown}"
    );
}

// ---------------------------------------------------------------------------------------------
// Custom bot.

/// The fake custom bot's signature check, written independently of the crate:
/// `base64(HMAC-SHA256(key = timestamp + "\n" + secret, message = ""))`.
struct SignedBy(&'static str);

impl wiremock::Match for SignedBy {
    fn matches(&self, request: &Request) -> bool {
        let Ok(b) = serde_json::from_slice::<Value>(&request.body) else {
            return false;
        };
        let (Some(ts), Some(sign)) = (b["timestamp"].as_str(), b["sign"].as_str()) else {
            return false;
        };
        let key = format!("{ts}\n{}", self.0);
        let mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        expected == sign && b["msg_type"] == "interactive" && b["card"].is_object()
    }
}

#[tokio::test]
async fn custom_bot_posts_a_signed_card_the_fake_server_verifies() {
    let server = MockServer::start().await;
    let hook = "/open-apis/bot/v2/hook/abc";
    Mock::given(method("POST"))
        .and(path(hook))
        .and(SignedBy("bot-secret"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "code": 0, "msg": "success", "data": {} })),
        )
        .mount(&server)
        .await;
    // Anything else: the platform's bad-signature answer.
    Mock::given(method("POST"))
        .and(path(hook))
        .respond_with(feishu_error(200, 19_021))
        .mount(&server)
        .await;
    let (_clock, shared) = clock();
    let url = format!("{}{hook}", server.uri());
    let d = Delivery::new(
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_000a),
        DeliveryKind::RequestReview,
        card().await,
    );

    let good = FeishuCustomBot::new(&url, Arc::clone(&shared))
        .unwrap()
        .with_secret(CustomBotSecret::new("bot-secret").unwrap());
    good.deliver(&d).await.unwrap();
    let sent = body(&requests_to(&server, hook).await[0]);
    assert_eq!(sent["timestamp"], (START / 1000).to_string());
    assert!(has_buttons(&sent["card"]));

    let wrong = FeishuCustomBot::new(&url, shared)
        .unwrap()
        .with_secret(CustomBotSecret::new("other-secret").unwrap());
    let err = wrong.deliver(&d).await.unwrap_err();
    assert!(
        matches!(err, DeliveryError::Misconfigured { .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("/hook/abc"), "{err}");
}

async fn closed_source_card() -> ReviewCard {
    card().await
}

/// A target carrying U+2028 cannot put a line of its own into the Feishu card.
#[tokio::test]
async fn a_target_cannot_forge_a_line_in_the_feishu_card() {
    let h = Harness::with_links(Setup::default(), LinkSetup::standard()).await;
    let request = agent_handoff::action::ActionRequest::builder("db.update", idem("forged-line"))
        .target("orders\u{2028}Environment: development (verified)")
        .build()
        .unwrap();
    let id = match h
        .handoff
        .agent(agent_id("ops-agent"), None)
        .propose(request)
        .await
        .unwrap()
    {
        Proposal::Pending(p) => p.id,
        other => panic!("expected pending, got {other:?}"),
    };
    let card = ReviewCard::from_ticket(&h.ticket(id).await, h.now(), &digest_key(), &[]);
    let text = FeishuCardRenderer::new()
        .render(&card, DeliveryKind::RequestReview)
        .to_string();
    assert!(
        !text.contains("\\nEnvironment: development"),
        "forged line: {text}"
    );
}

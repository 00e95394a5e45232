//! The signed webhook notifier against real HTTP receivers on 127.0.0.1 (`wiremock`).
//!
//! What is proved here: the body the receiver gets verifies under the secret with
//! `WebhookVerifier` (and under each of two rotated secrets); a retry after a timeout carries
//! the same `webhook-id` and the same body bytes; answers map to retryable, rate-limited,
//! permanent and misconfiguration errors as documented, redirects are not followed; no
//! sensitive parameter value, URL path or secret leaks into a body, an error or `Debug`; the
//! card is cut to the body limit; and, through the engine, a proposal becomes a signed card at
//! the receiver whose webhook id is the outbox row id, also across a timed-out attempt.

#![cfg(feature = "webhook")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use agent_handoff::action::{ActionRequest, Environment, Justification, Sensitivity};
use agent_handoff::notify::webhook::{
    sign, WebhookNotifier, WebhookNotifierError, WebhookSecret, WebhookSigner, WebhookVerifier,
    WebhookVerifyError, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, MIN_MAX_BODY,
    WEBHOOK_BODY_SCHEMA,
};
use agent_handoff::notify::{
    DecisionLink, Delivery, DeliveryError, DeliveryKind, DeliveryReceipt, Notifier, ReviewCard,
};
use agent_handoff::ticket::{open, PrincipalCheck, Ticket};
use agent_handoff::token::VerdictKind;
use agent_handoff::{
    Clock, Handoff, ManualClock, Proposal, SqliteOptions, SqliteStore, Store, Timestamp,
};
use serde_json::{json, Value};
use support::*;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// The Standard Webhooks specification's example secret.
const SPEC_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// A second secret, for rotation (24 bytes of 0x01..).
const NEW_SECRET: &str = "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcY";
/// A value that must never leave the store.
const SENSITIVE: &str = "hunter2-S3CR3T-connection-password";
/// A credential in the receiver's URL path that must never show up in errors or `Debug`.
const PATH_TOKEN: &str = "path-token-0f1e2d3c";

fn secret(text: &str) -> WebhookSecret {
    WebhookSecret::parse(text).unwrap()
}

fn signer(secrets: &[&str]) -> WebhookSigner {
    WebhookSigner::new(secrets.iter().map(|s| secret(s))).unwrap()
}

fn verifier(secrets: &[&str]) -> WebhookVerifier {
    WebhookVerifier::new(secrets.iter().map(|s| secret(s))).unwrap()
}

fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_unix_millis(START))
}

fn hook_path() -> String {
    format!("/hooks/{PATH_TOKEN}")
}

fn hook_url(server: &MockServer) -> String {
    format!("{}{}", server.uri(), hook_path())
}

/// A notifier posting to `server`'s hook path on `clock`.
fn notifier(server: &MockServer, clock: &ManualClock, secrets: &[&str]) -> WebhookNotifier {
    WebhookNotifier::builder(&hook_url(server), signer(secrets))
        .clock(Arc::new(clock.clone()))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Answers the hook path with `response`.
async fn answer(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(hook_path()))
        .respond_with(response)
        .mount(server)
        .await;
}

/// A production drop with a sensitive password parameter, pending review.
fn drop_request(reason: &str) -> ActionRequest {
    ActionRequest::builder("db.drop", "idempotency-webhook-drop")
        .target("postgres://prod/orders_archive")
        .parameters(json!({ "table": "orders_archive", "password": SENSITIVE }))
        .sensitive("/password")
        .environment(Environment::Production)
        .sensitivity(Sensitivity::Confidential)
        .justification(Justification {
            reason: reason.into(),
            expected_effect: "frees 300 GB".into(),
            risk_factors: vec!["a report may still read it".into()],
            rollback_plan: Some("restore the snapshot".into()),
        })
        .build()
        .unwrap()
}

fn pending_ticket(request: ActionRequest) -> Ticket {
    let ruling = standard_policy_ruling(&request);
    open(
        agent_handoff::TicketId::from_uuid(Uuid::from_u128(7)),
        agent_handoff::action::Requester::new(agent_id("ops-agent"), None),
        PrincipalCheck::NoPrincipal,
        request,
        ruling,
        Timestamp::from_unix_millis(START),
    )
    .ticket
}

fn standard_policy_ruling(request: &ActionRequest) -> agent_handoff::policy::Ruling {
    use agent_handoff::policy::PolicyEngine as _;
    standard_policy().evaluate(request)
}

fn card_with(request: ActionRequest, links: &[DecisionLink]) -> ReviewCard {
    ReviewCard::from_ticket(
        &pending_ticket(request),
        Timestamp::from_unix_millis(START),
        &digest_key(),
        links,
    )
}

fn links() -> Vec<DecisionLink> {
    vec![
        DecisionLink::new(VerdictKind::Approve, format!("{LINK_BASE}?t=ah1.APPROVE")),
        DecisionLink::new(VerdictKind::Reject, format!("{LINK_BASE}?t=ah1.REJECT")),
    ]
}

fn delivery() -> Delivery {
    Delivery::new(
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0042),
        DeliveryKind::RequestReview,
        card_with(drop_request("the archive moved to cold storage"), &links()),
    )
}

/// The requests `server` received, as (headers, body).
async fn received(server: &MockServer) -> Vec<(Vec<(String, String)>, Vec<u8>)> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .map(|r: Request| {
            let headers = r
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                .collect();
            (headers, r.body)
        })
        .collect()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    let mut found = headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
    let (_, v) = found.next().unwrap_or_else(|| panic!("no `{name}` header"));
    assert!(found.next().is_none(), "`{name}` sent twice");
    v
}

#[track_caller]
fn assert_no_leak(text: &str) {
    assert!(!text.contains(SENSITIVE), "sensitive value leaked: {text}");
    assert!(!text.contains(PATH_TOKEN), "url path leaked: {text}");
    assert!(!text.contains(&SPEC_SECRET[6..]), "secret leaked: {text}");
}

/// Every message in an error's source chain.
fn chain(e: &DeliveryError) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(" | ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[test]
fn notifier_is_send_sync_and_dyn_compatible() {
    fn ensure<T: Send + Sync + 'static>() {}
    ensure::<WebhookNotifier>();
    ensure::<WebhookNotifierError>();
    let _: Option<Arc<dyn Notifier>> = None::<Arc<WebhookNotifier>>.map(|n| n as Arc<dyn Notifier>);
}

#[tokio::test]
async fn the_receiver_verifies_the_signed_card() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(204)).await;
    let clock = clock();
    let notifier = notifier(&server, &clock, &[SPEC_SECRET]);
    let delivery = delivery();

    let receipt = notifier.deliver(&delivery).await.unwrap();
    assert_eq!(receipt, DeliveryReceipt::new(None));

    let got = received(&server).await;
    assert_eq!(got.len(), 1);
    let (headers, body) = &got[0];
    assert_eq!(header(headers, "content-type"), "application/json");
    assert_eq!(header(headers, HEADER_ID), delivery.id.to_string());
    assert_eq!(
        header(headers, HEADER_TIMESTAMP),
        (START / 1000).to_string()
    );
    // Golden: the signature is exactly the spec's scheme over what the receiver got.
    assert_eq!(
        header(headers, HEADER_SIGNATURE),
        sign(
            &secret(SPEC_SECRET),
            &delivery.id.to_string(),
            START / 1000,
            body
        )
    );
    let verified = verifier(&[SPEC_SECRET])
        .verify(headers, body, clock.now())
        .unwrap();
    assert_eq!(verified.id, delivery.id.to_string());
    // A wrong secret, or one altered byte, does not verify.
    assert_eq!(
        verifier(&[NEW_SECRET]).verify(headers, body, clock.now()),
        Err(WebhookVerifyError::NoValidSignature)
    );
    let mut altered = body.clone();
    altered[10] ^= 1;
    assert_eq!(
        verifier(&[SPEC_SECRET]).verify(headers, &altered, clock.now()),
        Err(WebhookVerifyError::NoValidSignature)
    );

    // The documented body: the card, unchanged (it fits), inside the envelope.
    let value: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(value["type"], "review.requested");
    assert_eq!(
        value["timestamp"],
        delivery.card.generated_at.to_string().as_str()
    );
    let data = &value["data"];
    assert_eq!(data["schema"], WEBHOOK_BODY_SCHEMA);
    assert_eq!(data["delivery"], delivery.id.to_string().as_str());
    assert_eq!(data["ticket"], json!(delivery.ticket));
    assert_eq!(data["kind"], "request_review");
    assert!(data.get("recipient").is_none());
    assert!(data.get("previous_message_id").is_none());
    let card: ReviewCard = serde_json::from_value(data["card"].clone()).unwrap();
    assert_eq!(card, delivery.card);
    assert_eq!(body, &notifier.body(&delivery).unwrap());
}

#[tokio::test]
async fn two_secrets_two_signatures_either_verifies() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(200)).await;
    let clock = clock();
    let notifier = notifier(&server, &clock, &[NEW_SECRET, SPEC_SECRET]);
    notifier.deliver(&delivery()).await.unwrap();

    let got = received(&server).await;
    let (headers, body) = &got[0];
    let signatures: Vec<&str> = header(headers, HEADER_SIGNATURE).split(' ').collect();
    assert_eq!(signatures.len(), 2);
    assert!(signatures.iter().all(|s| s.starts_with("v1,")));
    // A receiver that has switched, one that has not, and one that knows both.
    for secrets in [
        &[NEW_SECRET][..],
        &[SPEC_SECRET],
        &[SPEC_SECRET, NEW_SECRET],
    ] {
        verifier(secrets)
            .verify(headers, body, clock.now())
            .unwrap_or_else(|e| panic!("{secrets:?}: {e}"));
    }
}

#[tokio::test]
async fn a_retry_after_a_timeout_has_the_same_id_and_bytes() {
    let server = MockServer::start().await;
    // The first attempt is answered too late; the next one at once.
    Mock::given(method("POST"))
        .and(path(hook_path()))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    answer(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({ "message_id": "m-42" })),
    )
    .await;
    let clock = clock();
    let notifier = WebhookNotifier::builder(&hook_url(&server), signer(&[SPEC_SECRET]))
        .clock(Arc::new(clock.clone()))
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let delivery = delivery();

    let first = notifier.deliver(&delivery).await.unwrap_err();
    assert!(first.is_retryable(), "{first}");
    assert_eq!(first.code(), "transient");
    assert_no_leak(&chain(&first));

    clock.advance(Duration::from_secs(30));
    let receipt = notifier.deliver(&delivery).await.unwrap();
    assert_eq!(receipt.channel_message_id.as_deref(), Some("m-42"));

    let got = received(&server).await;
    assert_eq!(got.len(), 2);
    let ((h1, b1), (h2, b2)) = (&got[0], &got[1]);
    assert_eq!(header(h1, HEADER_ID), header(h2, HEADER_ID));
    assert_eq!(header(h1, HEADER_ID), delivery.id.to_string());
    assert_eq!(b1, b2, "a retry must carry identical body bytes");
    // Each attempt is signed at its own time, and verifies at it.
    assert_eq!(header(h1, HEADER_TIMESTAMP), (START / 1000).to_string());
    assert_eq!(
        header(h2, HEADER_TIMESTAMP),
        (START / 1000 + 30).to_string()
    );
    verifier(&[SPEC_SECRET])
        .verify(h2, b2, clock.now())
        .unwrap();
}

#[tokio::test]
async fn answers_map_to_what_a_retry_can_do() {
    let clock = clock();
    let cases: Vec<(ResponseTemplate, &str, Option<Duration>)> = vec![
        (ResponseTemplate::new(500), "transient", None),
        (ResponseTemplate::new(502), "transient", None),
        (ResponseTemplate::new(503), "transient", None),
        (ResponseTemplate::new(408), "transient", None),
        (
            ResponseTemplate::new(429).insert_header("retry-after", "17"),
            "rate_limited",
            Some(Duration::from_secs(17)),
        ),
        (ResponseTemplate::new(429), "rate_limited", None),
        (
            ResponseTemplate::new(503).insert_header("retry-after", "120"),
            "rate_limited",
            Some(Duration::from_secs(120)),
        ),
        (ResponseTemplate::new(400), "permanent", None),
        (ResponseTemplate::new(404), "permanent", None),
        (ResponseTemplate::new(413), "permanent", None),
        (ResponseTemplate::new(401), "misconfigured", None),
        (ResponseTemplate::new(403), "misconfigured", None),
    ];
    for (response, code, retry_after) in cases {
        let server = MockServer::start().await;
        answer(&server, response).await;
        let e = notifier(&server, &clock, &[SPEC_SECRET])
            .deliver(&delivery())
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        assert_eq!(e.retry_after(), retry_after, "{e}");
        assert_eq!(
            e.is_retryable(),
            matches!(code, "transient" | "rate_limited"),
            "{e}"
        );
        assert_no_leak(&chain(&e));
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = MockServer::start().await;
    answer(
        &server,
        ResponseTemplate::new(307).insert_header("location", format!("{}/elsewhere", server.uri())),
    )
    .await;
    Mock::given(path("/elsewhere"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let e = notifier(&server, &clock(), &[SPEC_SECRET])
        .deliver(&delivery())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "misconfigured", "{e}");
    assert_eq!(received(&server).await.len(), 1);
    server.verify().await;
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    // A port that was just free: nothing listens there now.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let notifier = WebhookNotifier::builder(
        &format!("http://127.0.0.1:{port}/hooks/{PATH_TOKEN}"),
        signer(&[SPEC_SECRET]),
    )
    .clock(Arc::new(clock()))
    .build()
    .unwrap();
    let e = notifier.deliver(&delivery()).await.unwrap_err();
    assert_eq!(e.code(), "transient", "{e}");
    assert_no_leak(&chain(&e));
}

#[tokio::test]
async fn receipts_take_the_receivers_message_id() {
    let clock = clock();
    let cases = [
        (
            ResponseTemplate::new(200).set_body_json(json!({ "id": "msg-7" })),
            Some("msg-7"),
        ),
        (
            ResponseTemplate::new(202).insert_header("x-message-id", "hdr-9"),
            Some("hdr-9"),
        ),
        (
            ResponseTemplate::new(200)
                .insert_header("x-message-id", "hdr-9")
                .set_body_json(json!({ "message_id": "body-wins" })),
            Some("body-wins"),
        ),
        (ResponseTemplate::new(200).set_body_string("ok"), None),
        (ResponseTemplate::new(204), None),
    ];
    for (response, expected) in cases {
        let server = MockServer::start().await;
        answer(&server, response).await;
        let receipt = notifier(&server, &clock, &[SPEC_SECRET])
            .deliver(&delivery())
            .await
            .unwrap();
        assert_eq!(receipt.channel_message_id.as_deref(), expected);
    }
}

#[tokio::test]
async fn updates_name_the_earlier_message_and_closes_have_their_type() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(204)).await;
    let notifier = notifier(&server, &clock(), &[SPEC_SECRET]);
    let close = Delivery::new(
        Uuid::from_u128(9),
        DeliveryKind::Close,
        card_with(drop_request("r"), &[]),
    )
    .with_recipient("ops-room")
    .with_previous_receipt(DeliveryReceipt::new(Some("m-1".into())));
    notifier.deliver(&close).await.unwrap();
    let got = received(&server).await;
    let value: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(value["type"], "review.closed");
    assert_eq!(value["data"]["kind"], "close");
    assert_eq!(value["data"]["recipient"], "ops-room");
    assert_eq!(value["data"]["previous_message_id"], "m-1");
}

#[tokio::test]
async fn no_sensitive_value_url_path_or_secret_leaves() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(204)).await;
    let notifier = notifier(&server, &clock(), &[SPEC_SECRET]);
    let delivery = delivery();
    notifier.deliver(&delivery).await.unwrap();
    let got = received(&server).await;
    let body = String::from_utf8(got[0].1.clone()).unwrap();
    assert!(!body.contains(SENSITIVE), "{body}");
    assert!(body.contains("orders_archive"), "the rest is shown");
    assert_no_leak(&format!("{notifier:?}"));
    assert_no_leak(&format!("{notifier:#?}"));
    assert!(format!("{notifier:?}").contains("127.0.0.1"));
    let builder = WebhookNotifier::builder(&hook_url(&server), signer(&[SPEC_SECRET]));
    assert_no_leak(&format!("{builder:?}"));
}

#[tokio::test]
async fn the_card_is_cut_to_the_body_limit() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(204)).await;
    let limit = MIN_MAX_BODY;
    let notifier = WebhookNotifier::builder(&hook_url(&server), signer(&[SPEC_SECRET]))
        .clock(Arc::new(clock()))
        .max_body_bytes(limit)
        .build()
        .unwrap();
    let long = "the archive is obsolete. ".repeat(160);
    let delivery = Delivery::new(
        Uuid::from_u128(1),
        DeliveryKind::RequestReview,
        card_with(drop_request(&long), &links()),
    );
    assert!(delivery.card.json_len() > limit);
    notifier.deliver(&delivery).await.unwrap();
    let got = received(&server).await;
    let body = &got[0].1;
    assert!(body.len() <= limit, "{} > {limit}", body.len());
    let card: ReviewCard = serde_json::from_value(
        serde_json::from_slice::<Value>(body).unwrap()["data"]["card"].clone(),
    )
    .unwrap();
    assert!(card.cut);
    assert!(card.agent_claims.reason.contains("[cut:"), "visible marker");
    // Facts and links are never cut.
    assert_eq!(card.links, delivery.card.links);
    assert_eq!(card.facts.digest, delivery.card.facts.digest);
    assert!(!String::from_utf8_lossy(body).contains(SENSITIVE));
    verifier(&[SPEC_SECRET])
        .verify(&got[0].0, body, Timestamp::from_unix_millis(START))
        .unwrap();
}

#[tokio::test]
async fn a_card_that_cannot_fit_is_permanent_and_not_sent() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(204)).await;
    let notifier = WebhookNotifier::builder(&hook_url(&server), signer(&[SPEC_SECRET]))
        .clock(Arc::new(clock()))
        .max_body_bytes(4096)
        .build()
        .unwrap();
    // Decision links are never cut: ten long ones cannot fit in 4 KiB.
    let links: Vec<_> = (0..10)
        .map(|i| {
            DecisionLink::new(
                VerdictKind::Approve,
                format!("{LINK_BASE}?t={i}{}", "x".repeat(600)),
            )
        })
        .collect();
    let delivery = Delivery::new(
        Uuid::from_u128(2),
        DeliveryKind::RequestReview,
        card_with(drop_request("r"), &links),
    );
    let e = notifier.deliver(&delivery).await.unwrap_err();
    assert_eq!(e.code(), "permanent", "{e}");
    assert!(received(&server).await.is_empty());
}

#[test]
fn configurations_that_cannot_work_are_refused() {
    let s = || signer(&[SPEC_SECRET]);
    let build = |url: &str| WebhookNotifier::new(url, s());
    assert!(matches!(
        build("not a url"),
        Err(WebhookNotifierError::InvalidUrl(_))
    ));
    assert!(matches!(
        build("ftp://hooks.example/x"),
        Err(WebhookNotifierError::Scheme)
    ));
    assert!(matches!(
        build("http://hooks.example/x"),
        Err(WebhookNotifierError::PlainHttp)
    ));
    assert!(matches!(
        build("mailto:ops@example.com"),
        Err(WebhookNotifierError::NoHost | WebhookNotifierError::Scheme)
    ));
    build("https://hooks.example/x").unwrap();
    build("http://127.0.0.1:9/x").unwrap();
    build("http://[::1]:9/x").unwrap();
    build("http://localhost:9/x").unwrap();
    WebhookNotifier::builder("http://hooks.internal/x", s())
        .allow_plain_http(true)
        .build()
        .unwrap();
    assert!(matches!(
        WebhookNotifier::builder("https://hooks.example/x", s())
            .max_body_bytes(100)
            .build(),
        Err(WebhookNotifierError::BodyLimit { bytes: 100 })
    ));
    assert!(matches!(
        WebhookNotifier::builder("https://hooks.example/x", s())
            .timeout(Duration::ZERO)
            .build(),
        Err(WebhookNotifierError::ZeroTimeout)
    ));
    // Errors never repeat the URL.
    let e = build(&format!("http://hooks.example/{PATH_TOKEN}")).unwrap_err();
    assert_no_leak(&e.to_string());
    let e = build(&format!("https://[bad/{PATH_TOKEN}")).unwrap_err();
    assert_no_leak(&format!("{e} {e:?}"));
}

// --- Through the engine ---------------------------------------------------------------------

/// An engine on a SQLite file and a manual clock, with the webhook channel `webhook`.
async fn engine(
    dir: &tempfile::TempDir,
    clock: &ManualClock,
    notifier: WebhookNotifier,
) -> (Handoff, Arc<dyn Store>) {
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let options = SqliteOptions::new().with_clock(Arc::clone(&shared));
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open_with(dir.path().join("handoff.sqlite3"), options)
            .await
            .unwrap(),
    );
    let (directory, _) = directory();
    let handoff = Handoff::builder()
        .shared_store(Arc::clone(&store))
        .policy(standard_policy())
        .identity(directory)
        .shared_clock(shared)
        .digest_key(digest_key())
        .decision_links(decision_links())
        .notifier("webhook", notifier)
        .build()
        .unwrap();
    (handoff, store)
}

#[tokio::test]
async fn a_proposal_reaches_the_receiver_as_a_signed_card() {
    let server = MockServer::start().await;
    answer(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({ "message_id": "rcv-1" })),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let (handoff, store) = engine(&dir, &clock, notifier(&server, &clock, &[SPEC_SECRET])).await;

    let agent = handoff.agent(agent_id("ops-agent"), None);
    let id = match agent.propose(drop_request("obsolete")).await.unwrap() {
        Proposal::Pending(p) => p.id,
        other => panic!("expected a pending ticket, got {other:?}"),
    };
    let report = handoff.deliver_due().await.unwrap();
    assert_eq!(report.delivered, 1, "{report:?}");

    let got = received(&server).await;
    assert_eq!(got.len(), 1);
    let (headers, body) = &got[0];
    verifier(&[SPEC_SECRET])
        .verify(headers, body, clock.now())
        .unwrap();
    let outbox = store.ticket_outbox(id).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(header(headers, HEADER_ID), outbox[0].row.id.to_string());
    let receipt: DeliveryReceipt =
        serde_json::from_value(outbox[0].receipt.clone().unwrap()).unwrap();
    assert_eq!(receipt.channel_message_id.as_deref(), Some("rcv-1"));

    let value: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(value["type"], "review.requested");
    let card: ReviewCard = serde_json::from_value(value["data"]["card"].clone()).unwrap();
    assert_eq!(card.ticket, id);
    assert_eq!(card.state.as_str(), "pending");
    assert!(card
        .links
        .iter()
        .any(|l| l.verdict == VerdictKind::Approve && l.url.starts_with(LINK_BASE)));
    assert!(!String::from_utf8_lossy(body).contains(SENSITIVE));
    handoff.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_engine_retries_a_timed_out_delivery_under_the_same_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(hook_path()))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    answer(&server, ResponseTemplate::new(204)).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let notifier = WebhookNotifier::builder(&hook_url(&server), signer(&[SPEC_SECRET]))
        .clock(Arc::new(clock.clone()))
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let (handoff, store) = engine(&dir, &clock, notifier).await;

    let agent = handoff.agent(agent_id("ops-agent"), None);
    let id = match agent.propose(drop_request("obsolete")).await.unwrap() {
        Proposal::Pending(p) => p.id,
        other => panic!("expected a pending ticket, got {other:?}"),
    };
    let first = handoff.deliver_due().await.unwrap();
    assert_eq!(first.retried, 1, "{first:?}");
    // Past the first backoff (5 s base, with jitter at most that).
    clock.advance(Duration::from_secs(10));
    let second = handoff.deliver_due().await.unwrap();
    assert_eq!(second.delivered, 1, "{second:?}");

    let got = received(&server).await;
    assert_eq!(got.len(), 2);
    let row = store.ticket_outbox(id).await.unwrap()[0].row.id.to_string();
    assert_eq!(header(&got[0].0, HEADER_ID), row);
    assert_eq!(header(&got[1].0, HEADER_ID), row);
    assert_eq!(got[0].1, got[1].1, "identical body bytes on the retry");
    verifier(&[SPEC_SECRET])
        .verify(&got[1].0, &got[1].1, clock.now())
        .unwrap();
    handoff.shutdown().await.unwrap();
}

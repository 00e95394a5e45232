//! Delivering review cards to Feishu / Lark: a custom bot webhook, or an app bot through the
//! open platform's `im/v1/messages` API.
//!
//! Error codes mapped here, and where they come from:
//!
//! - `99991400` "request trigger frequency limit", with HTTP `429` (older APIs: `400`) and the
//!   `x-ogw-ratelimit-reset` header in seconds — Feishu open platform docs, "Rate limits"
//!   (`server-docs/api-call-guide/frequency-control`).
//! - `11232`: custom bot rate limit (same page: custom bots allow 100 / min, 5 / s per bot).
//! - `99991663` tenant access token invalid, `99991664` app access token invalid, `99991671`
//!   access token invalid: the codes on which `larksuite/oapi-sdk-go` (`core/httptransport.go`)
//!   drops its cached token and retries; `99991661` (access token missing) is treated alike.
//! - The SDK refreshes tokens 3 minutes before their `expire` (`expiryDelta` in
//!   `larksuite/oapi-sdk-go` v3 `core`); so do we.
//! - `19021` bad custom-bot signature or timestamp, `19022` IP not allowed, `19024` keyword
//!   check failed: custom bot docs — configuration problems.
//! - `99991672` no permission for the API (`larksuite/oapi-sdk-go` / Feishu error code list):
//!   a configuration problem.
//! - Any other non-zero code: permanent; `5xx` and transport errors: transient.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::card::FeishuCardRenderer;
use super::crypto::CustomBotSecret;
use crate::backend::Clock;
use crate::notify::{Delivery, DeliveryError, DeliveryKind, DeliveryReceipt, Notifier};
use crate::timestamp::Timestamp;

/// The Feishu (China) open platform.
pub const FEISHU_BASE_URL: &str = "https://open.feishu.cn";

/// The Lark (international) open platform.
pub const LARK_BASE_URL: &str = "https://open.larksuite.com";

/// Rate limited.
const CODE_RATE_LIMIT: i64 = 99_991_400;
/// Custom bot rate limited.
const CODE_BOT_RATE_LIMIT: i64 = 11_232;
/// Access token codes on which the token is fetched again once.
const CODES_TOKEN_INVALID: [i64; 4] = [99_991_661, 99_991_663, 99_991_664, 99_991_671];
/// Configuration problems: bad custom-bot signature, IP not allowed, keyword mismatch, no
/// permission.
const CODES_MISCONFIGURED: [i64; 4] = [19_021, 19_022, 19_024, 99_991_672];

/// How long before its stated expiry a tenant access token is replaced.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(3 * 60);

/// Default request timeout.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A Feishu notifier could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeishuSetupError {
    /// The URL is not `http(s)://…`.
    #[error("feishu url must start with `https://` or `http://`")]
    BadUrl,
    /// A required setting is empty.
    #[error("feishu setting `{0}` is empty")]
    Empty(&'static str),
    /// The HTTP client could not be built.
    #[error("http client could not be built")]
    Client(#[source] reqwest::Error),
}

fn client() -> Result<reqwest::Client, FeishuSetupError> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        // A redirect would re-send the app secret, the tenant token or a signed card to a
        // host nobody configured.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(FeishuSetupError::Client)
}

/// Most bytes read from a Feishu answer (they are a few hundred bytes of JSON).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

fn check_url(url: &str) -> Result<String, FeishuSetupError> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(url.trim_end_matches('/').to_owned())
    } else {
        Err(FeishuSetupError::BadUrl)
    }
}

/// A transport error, without the URL (a custom bot's URL holds its token).
fn transport(e: reqwest::Error) -> DeliveryError {
    let reason = if e.is_timeout() {
        "request to feishu timed out"
    } else if e.is_connect() {
        "could not connect to feishu"
    } else {
        "request to feishu failed"
    };
    DeliveryError::transient(reason).with_source(e.without_url())
}

/// How one Feishu answer went.
enum Answer {
    /// `code` 0: the `data` member (or the whole body).
    Ok(Value),
    /// The access token was refused.
    TokenInvalid,
    /// Anything else.
    Failed(DeliveryError),
}

/// Classifies a Feishu answer by HTTP status and body `code` (`StatusCode` in old custom bot
/// answers).
fn classify(status: u16, reset: Option<Duration>, body: &[u8]) -> Answer {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|v| v.get("code").or_else(|| v.get("StatusCode")))
        .and_then(Value::as_i64);
    let msg: String = parsed
        .as_ref()
        .and_then(|v| v.get("msg").or_else(|| v.get("StatusMessage")))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    let what = match code {
        Some(c) => format!("http {status}, feishu code {c}: {msg}"),
        None => format!("http {status}"),
    };
    if status == 429 || matches!(code, Some(CODE_RATE_LIMIT | CODE_BOT_RATE_LIMIT)) {
        return Answer::Failed(DeliveryError::rate_limited(reset));
    }
    if code.is_some_and(|c| CODES_TOKEN_INVALID.contains(&c)) {
        return Answer::TokenInvalid;
    }
    if status >= 500 {
        return Answer::Failed(DeliveryError::transient(what));
    }
    if code.is_some_and(|c| CODES_MISCONFIGURED.contains(&c)) || status == 401 || status == 403 {
        return Answer::Failed(DeliveryError::misconfigured(what));
    }
    match (status, code, parsed) {
        (200..=299, Some(0), Some(mut v)) => {
            if v.get("data").is_some() {
                Answer::Ok(v["data"].take())
            } else {
                Answer::Ok(v)
            }
        }
        _ => Answer::Failed(DeliveryError::permanent(what)),
    }
}

/// The `x-ogw-ratelimit-reset` header, seconds to wait.
fn reset_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get("x-ogw-ratelimit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

async fn send(request: reqwest::RequestBuilder) -> Result<Answer, DeliveryError> {
    let response = request.send().await.map_err(transport)?;
    let status = response.status().as_u16();
    let reset = reset_after(response.headers());
    let mut response = response;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(DeliveryError::transient(
                "feishu answer is larger than 64 KiB; refused unread",
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(classify(status, reset, &body))
}

fn json_body(request: reqwest::RequestBuilder, body: &Value) -> reqwest::RequestBuilder {
    request
        .header("Content-Type", "application/json; charset=utf-8")
        .body(body.to_string())
}

fn card_too_large(e: crate::notify::CardTooLarge) -> DeliveryError {
    DeliveryError::permanent("review card does not fit feishu's 30 KB limit").with_source(e)
}

/// Posts review cards to a Feishu / Lark **custom bot** (a group's incoming webhook).
///
/// Body: `{timestamp, sign, msg_type: "interactive", card}`, `sign` as
/// [`CustomBotSecret::sign`] when a secret is configured. Custom bots return no message id and
/// take no deduplication key: a retried delivery may post twice, and updates and closes are
/// posted as new cards. Prefer [`FeishuAppBot`] where that matters.
///
/// `Debug` shows neither the webhook URL (its path is the bot's credential) nor the secret.
pub struct FeishuCustomBot {
    webhook_url: String,
    secret: Option<CustomBotSecret>,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
    renderer: FeishuCardRenderer,
}

impl FeishuCustomBot {
    /// A custom bot at `webhook_url` (`https://open.feishu.cn/open-apis/bot/v2/hook/…`),
    /// signing with the time from `clock` once [`with_secret`](Self::with_secret) is set.
    pub fn new(
        webhook_url: impl Into<String>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, FeishuSetupError> {
        Ok(Self {
            webhook_url: check_url(&webhook_url.into())?,
            secret: None,
            clock,
            client: client()?,
            renderer: FeishuCardRenderer::new(),
        })
    }

    /// Signs requests with the bot's secret ("signature verification" in the bot settings).
    #[must_use]
    pub fn with_secret(mut self, secret: CustomBotSecret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Uses this renderer (for a review-page link).
    #[must_use]
    pub fn with_renderer(mut self, renderer: FeishuCardRenderer) -> Self {
        self.renderer = renderer;
        self
    }

    /// Uses this HTTP client (proxies, timeouts).
    #[must_use]
    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.client = client;
        self
    }
}

impl fmt::Debug for FeishuCustomBot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeishuCustomBot")
            .field("webhook_url", &"<redacted>")
            .field("signed", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Notifier for FeishuCustomBot {
    async fn deliver(&self, delivery: &Delivery) -> Result<DeliveryReceipt, DeliveryError> {
        let (_, card) = self
            .renderer
            .bounded(delivery.card.clone(), delivery.kind)
            .map_err(card_too_large)?;
        let mut body = json!({ "msg_type": "interactive", "card": card });
        if let Some(secret) = &self.secret {
            let ts = self.clock.now().as_unix_seconds();
            body["timestamp"] = Value::String(ts.to_string());
            body["sign"] = Value::String(secret.sign(ts));
        }
        let request = json_body(self.client.post(&self.webhook_url), &body);
        match send(request).await? {
            Answer::Ok(_) => Ok(DeliveryReceipt::new(None)),
            Answer::TokenInvalid => Err(DeliveryError::misconfigured(
                "feishu refused the custom bot's credentials",
            )),
            Answer::Failed(e) => Err(e),
        }
    }
}

/// Who an app bot's messages go to: the `receive_id_type` of `im/v1/messages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReceiveIdType {
    /// A group chat (`oc_…`). Cards there should carry verdict-only tokens.
    ChatId,
    /// One user by open id (`ou_…`). Cards may carry tokens bound to that reviewer.
    OpenId,
    /// One user by user id.
    UserId,
    /// One user by union id.
    UnionId,
    /// One user by email.
    Email,
}

impl ReceiveIdType {
    /// The query value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiveIdType::ChatId => "chat_id",
            ReceiveIdType::OpenId => "open_id",
            ReceiveIdType::UserId => "user_id",
            ReceiveIdType::UnionId => "union_id",
            ReceiveIdType::Email => "email",
        }
    }
}

#[derive(Clone)]
struct CachedToken {
    token: String,
    expires_at: Timestamp,
}

/// Sends review cards as an app bot through `im/v1/messages`, and updates them after a
/// decision.
///
/// - The `tenant_access_token` is obtained from
///   `POST /open-apis/auth/v3/tenant_access_token/internal` and cached until
///   [`TOKEN_REFRESH_MARGIN`] before its `expire` (by the injected clock); if Feishu refuses it
///   (`99991663` and kin) it is fetched again once and the request retried.
/// - A new card: `POST /open-apis/im/v1/messages?receive_id_type=…` with
///   `{receive_id, msg_type: "interactive", content: <card JSON as a string>, uuid}`, where
///   `uuid` is the outbox row id ([`Delivery::id`], 36 characters): Feishu sends a message at
///   most once per `uuid` within an hour, so a retried delivery never double-posts. The
///   receipt holds the `message_id`.
/// - An update or close with a previous receipt: `PATCH /open-apis/im/v1/messages/{message_id}`
///   with `{content}` (cards are sent with `update_multi` on). Without one, a new card is sent.
///
/// The recipient is [`Delivery::recipient`] if set, else the configured default.
///
/// `Debug` shows neither the app secret nor the token.
pub struct FeishuAppBot {
    base_url: String,
    app_id: String,
    app_secret: String,
    receive_id_type: ReceiveIdType,
    default_receive_id: Option<String>,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
    renderer: FeishuCardRenderer,
    token: Mutex<Option<CachedToken>>,
}

impl FeishuAppBot {
    /// An app bot of app `app_id` on the platform at `base_url` ([`FEISHU_BASE_URL`],
    /// [`LARK_BASE_URL`], or a test server), sending to recipients of `receive_id_type`.
    pub fn new(
        base_url: impl Into<String>,
        app_id: impl Into<String>,
        app_secret: impl Into<String>,
        receive_id_type: ReceiveIdType,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, FeishuSetupError> {
        let app_id = app_id.into();
        let app_secret = app_secret.into();
        if app_id.is_empty() {
            return Err(FeishuSetupError::Empty("app_id"));
        }
        if app_secret.is_empty() {
            return Err(FeishuSetupError::Empty("app_secret"));
        }
        Ok(Self {
            base_url: check_url(&base_url.into())?,
            app_id,
            app_secret,
            receive_id_type,
            default_receive_id: None,
            clock,
            client: client()?,
            renderer: FeishuCardRenderer::new(),
            token: Mutex::new(None),
        })
    }

    /// The recipient of deliveries that name none (a chat id, an open id…).
    #[must_use]
    pub fn with_default_receive_id(mut self, receive_id: impl Into<String>) -> Self {
        self.default_receive_id = Some(receive_id.into());
        self
    }

    /// Uses this renderer (for a review-page link).
    #[must_use]
    pub fn with_renderer(mut self, renderer: FeishuCardRenderer) -> Self {
        self.renderer = renderer;
        self
    }

    /// Uses this HTTP client (proxies, timeouts).
    #[must_use]
    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.client = client;
        self
    }

    /// The `uuid` sent with a new message for `delivery`: its outbox row id, hyphenated
    /// (36 characters, within Feishu's 50).
    pub fn message_uuid(delivery: &Delivery) -> String {
        delivery.id.hyphenated().to_string()
    }

    fn cached(&self) -> Option<CachedToken> {
        self.token.lock().ok().and_then(|t| t.clone())
    }

    fn store_token(&self, token: Option<CachedToken>) {
        if let Ok(mut slot) = self.token.lock() {
            *slot = token;
        }
    }

    /// A valid tenant access token: the cached one unless it is within the refresh margin of
    /// its expiry (or `force`), else a fresh one.
    async fn tenant_token(&self, force: bool) -> Result<String, DeliveryError> {
        let now = self.clock.now();
        if !force {
            if let Some(cached) = self.cached() {
                if now.saturating_add(TOKEN_REFRESH_MARGIN) < cached.expires_at {
                    return Ok(cached.token);
                }
            }
        }
        let url = format!(
            "{}/open-apis/auth/v3/tenant_access_token/internal",
            self.base_url
        );
        let body = json!({ "app_id": self.app_id, "app_secret": self.app_secret });
        let data = match send(json_body(self.client.post(url), &body)).await? {
            Answer::Ok(data) => data,
            Answer::TokenInvalid => {
                return Err(DeliveryError::misconfigured(
                    "feishu refused the app credentials",
                ))
            }
            Answer::Failed(e) if e.is_retryable() => return Err(e),
            Answer::Failed(e) => {
                // Bad app id or secret, app disabled: nothing a retry can fix.
                return Err(DeliveryError::misconfigured(
                    "feishu refused the tenant access token request",
                )
                .with_source(e));
            }
        };
        // The token endpoint answers at top level: `{code, msg, tenant_access_token, expire}`.
        let token = data
            .get("tenant_access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| DeliveryError::transient("feishu token answer has no token"))?
            .to_owned();
        let expire = data.get("expire").and_then(Value::as_u64).unwrap_or(0);
        self.store_token(Some(CachedToken {
            token: token.clone(),
            expires_at: now.saturating_add(Duration::from_secs(expire)),
        }));
        Ok(token)
    }

    async fn send_card(
        &self,
        token: &str,
        delivery: &Delivery,
        content: &str,
    ) -> Result<Answer, DeliveryError> {
        let previous = delivery
            .previous_receipt
            .as_ref()
            .and_then(|r| r.channel_message_id.as_deref())
            .filter(|_| delivery.kind != DeliveryKind::RequestReview);
        let request = match previous {
            Some(message_id) => {
                let url = format!(
                    "{}/open-apis/im/v1/messages/{}",
                    self.base_url,
                    encode_path(message_id)
                );
                json_body(self.client.patch(url), &json!({ "content": content }))
            }
            None => {
                let receive_id = delivery
                    .recipient
                    .as_deref()
                    .or(self.default_receive_id.as_deref())
                    .ok_or_else(|| {
                        DeliveryError::misconfigured("no feishu recipient for the delivery")
                    })?;
                let url = format!(
                    "{}/open-apis/im/v1/messages?receive_id_type={}",
                    self.base_url,
                    self.receive_id_type.as_str()
                );
                let body = json!({
                    "receive_id": receive_id,
                    "msg_type": "interactive",
                    "content": content,
                    "uuid": Self::message_uuid(delivery),
                });
                json_body(self.client.post(url), &body)
            }
        };
        send(request.bearer_auth(token)).await
    }
}

/// Message ids are `om_…`; anything outside the URL-safe set is percent-encoded.
fn encode_path(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl fmt::Debug for FeishuAppBot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeishuAppBot")
            .field("base_url", &self.base_url)
            .field("app_id", &self.app_id)
            .field("app_secret", &"<redacted>")
            .field("receive_id_type", &self.receive_id_type)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Notifier for FeishuAppBot {
    async fn deliver(&self, delivery: &Delivery) -> Result<DeliveryReceipt, DeliveryError> {
        let (_, card) = self
            .renderer
            .bounded(delivery.card.clone(), delivery.kind)
            .map_err(card_too_large)?;
        let content = card.to_string();
        let mut refreshed = false;
        loop {
            let token = self.tenant_token(refreshed).await?;
            match self.send_card(&token, delivery, &content).await? {
                Answer::Ok(data) => {
                    let message_id = data
                        .get("message_id")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .or_else(|| {
                            delivery
                                .previous_receipt
                                .as_ref()
                                .and_then(|r| r.channel_message_id.clone())
                        });
                    return Ok(DeliveryReceipt::new(message_id));
                }
                Answer::TokenInvalid if !refreshed => {
                    self.store_token(None);
                    refreshed = true;
                }
                Answer::TokenInvalid => {
                    return Err(DeliveryError::misconfigured(
                        "feishu refused a freshly issued tenant access token",
                    ))
                }
                Answer::Failed(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(a: Answer) -> &'static str {
        match a {
            Answer::Ok(_) => "ok",
            Answer::TokenInvalid => "token",
            Answer::Failed(e) => e.code(),
        }
    }

    #[test]
    fn codes_are_classified() {
        let body = |c: i64| format!(r#"{{"code":{c},"msg":"m"}}"#).into_bytes();
        assert_eq!(kind(classify(200, None, &body(0))), "ok");
        assert_eq!(kind(classify(429, None, b"")), "rate_limited");
        assert_eq!(kind(classify(400, None, &body(99_991_400))), "rate_limited");
        assert_eq!(kind(classify(200, None, &body(11_232))), "rate_limited");
        assert_eq!(kind(classify(400, None, &body(99_991_663))), "token");
        assert_eq!(kind(classify(503, None, b"oops")), "transient");
        assert_eq!(kind(classify(200, None, &body(19_021))), "misconfigured");
        assert_eq!(
            kind(classify(400, None, &body(99_991_672))),
            "misconfigured"
        );
        assert_eq!(kind(classify(400, None, &body(230_001))), "permanent");
        assert_eq!(kind(classify(200, None, b"not json")), "permanent");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_path("om_abc-1"), "om_abc-1");
        assert_eq!(encode_path("a/b?c"), "a%2Fb%3Fc");
    }
}

//! The signed webhook notifier: POSTs review cards to one URL, signed per Standard Webhooks.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::Serialize;
use serde_json::Value;
use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;

use super::signature::{WebhookSignError, WebhookSigner};
use crate::backend::{Clock, SystemClock};
use crate::id::TicketId;
use crate::notify::{Delivery, DeliveryError, DeliveryKind, DeliveryReceipt, Notifier, ReviewCard};
use crate::timestamp::Timestamp;

/// The `data.schema` member of every webhook body, so receivers can tell versions apart.
pub const WEBHOOK_BODY_SCHEMA: &str = "agent-handoff/webhook/v1";

/// The request body limit unless [`WebhookNotifierBuilder::max_body_bytes`] says otherwise.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// The smallest request body limit accepted: a card's facts need some room.
pub const MIN_MAX_BODY: usize = 4 * 1024;

/// The whole-request timeout unless [`WebhookNotifierBuilder::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The response header a receiver may use to return its message id (see
/// [`WebhookNotifier`]'s receipts).
pub const HEADER_MESSAGE_ID: &str = "x-message-id";

/// How much of a `2xx` response body is read, looking for a message id.
const MAX_RESPONSE_BYTES: usize = 16 * 1024;

/// Longest message id taken from a receiver.
const MAX_MESSAGE_ID_LEN: usize = 256;

/// Longest connect phase, within the whole-request timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Delivers review cards to one HTTP(S) endpoint as JSON, signed per
/// [Standard Webhooks](super) v1.
///
/// # Request
///
/// `POST <url>` with `content-type: application/json` and the three Standard Webhooks
/// headers from the configured [`WebhookSigner`]:
///
/// - `webhook-id`: [`Delivery::id`], the outbox row id in hyphenated UUID form. It is the same
///   on every attempt at the same row, so receivers **must deduplicate on it**: a retry after
///   a timeout (the receiver may have processed the first attempt) carries the same id and
///   the same body bytes.
/// - `webhook-timestamp`: the attempt time from the configured [`Clock`], Unix seconds.
/// - `webhook-signature`: one `v1,<base64>` per secret, space-separated (rotation).
///
/// The body is one JSON object (members in this order, `null` members omitted):
///
/// ```json
/// {
///   "type": "review.requested",
///   "timestamp": "2023-11-14T22:13:20.000Z",
///   "data": {
///     "schema": "agent-handoff/webhook/v1",
///     "delivery": "0190c9e2-…",
///     "ticket": "0190c9e1-…",
///     "kind": "request_review",
///     "recipient": "…",
///     "previous_message_id": "…",
///     "card": { "schema": "agent-handoff/review-card/v1", … }
///   }
/// }
/// ```
///
/// - `type`: `review.requested` ([`DeliveryKind::RequestReview`]), `review.updated`
///   ([`DeliveryKind::Update`]) or `review.closed` ([`DeliveryKind::Close`]).
/// - `timestamp`: when the card was built ([`ReviewCard::generated_at`], RFC 3339 UTC) — the
///   event's time, not the attempt's, so the bytes do not change between retries.
/// - `data.kind`: the [`DeliveryKind`] in snake case; `data.delivery` repeats `webhook-id`.
/// - `data.recipient`, `data.previous_message_id`: [`Delivery::recipient`] and the message id
///   of [`Delivery::previous_receipt`], when set.
/// - `data.card`: the [`ReviewCard`] as JSON (redacted; decision links only while pending),
///   cut with [`ReviewCard::bounded_by`] so the **whole body** fits the configured limit
///   ([`DEFAULT_MAX_BODY`]). A card that cannot fit is refused as
///   [`DeliveryError::Permanent`] without sending anything.
///
/// # Response
///
/// | receiver answers | result |
/// |---|---|
/// | `2xx` | a [`DeliveryReceipt`] whose message id is the JSON body's `message_id` or `id` member (string or integer), else the `x-message-id` header, else none |
/// | `429` | [`DeliveryError::RateLimited`], with `Retry-After` (seconds or HTTP date) if given |
/// | `503` with `Retry-After` | [`DeliveryError::RateLimited`] with that wait |
/// | `408`, `5xx` | [`DeliveryError::Transient`] |
/// | `401`, `403` | [`DeliveryError::Misconfigured`]: the receiver rejects our signature or has not been given the secret |
/// | `3xx` | [`DeliveryError::Misconfigured`]: redirects are never followed (a signed body must not be re-posted elsewhere); configure the final URL |
/// | other `4xx` | [`DeliveryError::Permanent`] |
/// | timeout, connection refused or reset | [`DeliveryError::Transient`] |
///
/// Error messages carry the status code only: never the URL (whose path or query may hold a
/// credential), the body or the receiver's answer. `Debug` shows the URL's scheme, host and
/// port only, and no secret.
///
/// Plain `http` is accepted only for loopback hosts (`127.0.0.0/8`, `::1`, `localhost`) unless
/// [`allow_plain_http`](WebhookNotifierBuilder::allow_plain_http) says otherwise; decision
/// links in the body are bearer-like (they still need the reviewer's credential to decide).
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use agent_handoff::notify::webhook::{WebhookNotifier, WebhookSecret, WebhookSigner};
///
/// let secret = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")?;
/// let notifier = WebhookNotifier::new(
///     "https://hooks.example.com/agent-handoff",
///     WebhookSigner::new([secret])?,
/// )?;
/// // Handoff::builder().notifier("webhook", notifier) …
/// # drop(notifier);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct WebhookNotifier {
    url: Url,
    signer: WebhookSigner,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
    max_body: usize,
    timeout: Duration,
}

impl WebhookNotifier {
    /// A notifier posting to `url`, signing with `signer`, with the defaults: wall-clock time
    /// ([`SystemClock`]), [`DEFAULT_TIMEOUT`], [`DEFAULT_MAX_BODY`].
    pub fn new(url: &str, signer: WebhookSigner) -> Result<Self, WebhookNotifierError> {
        Self::builder(url, signer).build()
    }

    /// A builder, to set the clock, timeout or body limit.
    pub fn builder(url: &str, signer: WebhookSigner) -> WebhookNotifierBuilder {
        WebhookNotifierBuilder {
            url: url.to_owned(),
            signer,
            clock: Arc::new(SystemClock),
            max_body: DEFAULT_MAX_BODY,
            timeout: DEFAULT_TIMEOUT,
            allow_plain_http: false,
        }
    }

    /// The request body for `delivery`, exactly as [`deliver`](Notifier::deliver) sends it:
    /// the card cut to fit the body limit. The same delivery always gives the same bytes.
    pub fn body(&self, delivery: &Delivery) -> Result<Vec<u8>, DeliveryError> {
        let envelope = Envelope::of(delivery);
        let card = delivery
            .card
            .clone()
            .bounded_by(self.max_body, |card| envelope.len_with(card))
            .map_err(|e| {
                DeliveryError::permanent("the review card does not fit the webhook body limit")
                    .with_source(e)
            })?;
        Ok(envelope.to_vec(&card))
    }
}

impl fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookNotifier")
            .field("url", &Origin(&self.url))
            .field("signer", &self.signer)
            .field("clock", &self.clock)
            .field("max_body", &self.max_body)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Builds a [`WebhookNotifier`] ([`WebhookNotifier::builder`]).
pub struct WebhookNotifierBuilder {
    url: String,
    signer: WebhookSigner,
    clock: Arc<dyn Clock>,
    max_body: usize,
    timeout: Duration,
    allow_plain_http: bool,
}

impl WebhookNotifierBuilder {
    /// Where "now" comes from for `webhook-timestamp` (and for `Retry-After` dates); default
    /// [`SystemClock`]. Give the engine's clock so a test clock drives both.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The whole-request timeout (connect, send, response headers and the bounded read of a
    /// `2xx` body); default [`DEFAULT_TIMEOUT`]. A timeout is a transient failure: the row is
    /// retried under the same `webhook-id`.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest request body, in bytes (at least [`MIN_MAX_BODY`]); default
    /// [`DEFAULT_MAX_BODY`]. Cards are cut to fit.
    #[must_use]
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Accepts a plain `http` URL to a host that is not loopback (a receiver on a trusted
    /// private network). Off by default.
    #[must_use]
    pub fn allow_plain_http(mut self, allow: bool) -> Self {
        self.allow_plain_http = allow;
        self
    }

    /// Checks the configuration and builds the HTTP client (redirects off).
    pub fn build(self) -> Result<WebhookNotifier, WebhookNotifierError> {
        let url = Url::parse(&self.url).map_err(|e| WebhookNotifierError::InvalidUrl(e.into()))?;
        if !url.has_host() || url.cannot_be_a_base() {
            return Err(WebhookNotifierError::NoHost);
        }
        match url.scheme() {
            "https" => {}
            "http" if self.allow_plain_http || is_loopback(&url) => {}
            "http" => return Err(WebhookNotifierError::PlainHttp),
            _ => return Err(WebhookNotifierError::Scheme),
        }
        if self.max_body < MIN_MAX_BODY {
            return Err(WebhookNotifierError::BodyLimit {
                bytes: self.max_body,
            });
        }
        if self.timeout.is_zero() {
            return Err(WebhookNotifierError::ZeroTimeout);
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(MAX_CONNECT_TIMEOUT))
            .user_agent(concat!("agent-handoff/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookNotifierError::Client(e.without_url().into()))?;
        Ok(WebhookNotifier {
            url,
            signer: self.signer,
            client,
            clock: self.clock,
            max_body: self.max_body,
            timeout: self.timeout,
        })
    }
}

impl fmt::Debug for WebhookNotifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL is not parsed yet: show nothing of it.
        f.debug_struct("WebhookNotifierBuilder")
            .field("url", &"<redacted>")
            .field("signer", &self.signer)
            .field("clock", &self.clock)
            .field("max_body", &self.max_body)
            .field("timeout", &self.timeout)
            .field("allow_plain_http", &self.allow_plain_http)
            .finish()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A [`WebhookNotifier`] could not be built. No variant shows the URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookNotifierError {
    /// The URL does not parse.
    #[error("webhook url is invalid")]
    InvalidUrl(#[source] BoxError),
    /// The URL has no host.
    #[error("webhook url has no host")]
    NoHost,
    /// The scheme is neither `https` nor `http`.
    #[error("webhook url must use `https`")]
    Scheme,
    /// Plain `http` to a host that is not loopback, without
    /// [`allow_plain_http`](WebhookNotifierBuilder::allow_plain_http).
    #[error("webhook url uses plain `http` to a host that is not loopback")]
    PlainHttp,
    /// The body limit is below [`MIN_MAX_BODY`].
    #[error("webhook body limit of {bytes} bytes is below the minimum of 4096")]
    BodyLimit {
        /// The limit given.
        bytes: usize,
    },
    /// The timeout is zero.
    #[error("webhook timeout must not be zero")]
    ZeroTimeout,
    /// The HTTP client could not be built (TLS backend initialisation).
    #[error("webhook http client could not be built")]
    Client(#[source] BoxError),
}

#[async_trait]
impl Notifier for WebhookNotifier {
    async fn deliver(&self, delivery: &Delivery) -> Result<DeliveryReceipt, DeliveryError> {
        let body = self.body(delivery)?;
        let id = delivery.id.to_string();
        let now = self.clock.now();
        let signed = self.signer.headers(&id, now, &body).map_err(|e| match e {
            WebhookSignError::BeforeEpoch => {
                DeliveryError::misconfigured("the notifier's clock is before the Unix epoch")
            }
            other => {
                DeliveryError::misconfigured("the webhook could not be signed").with_source(other)
            }
        })?;
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json");
        for (name, value) in signed.to_pairs() {
            request = request.header(name, value);
        }
        let response = match request.body(body).send().await {
            Ok(r) => r,
            Err(e) => return Err(send_error(e)),
        };
        let status = response.status();
        tracing::debug!(
            delivery = %delivery.id,
            ticket = %delivery.ticket,
            status = status.as_u16(),
            "webhook answered"
        );
        if status.is_success() {
            let header_id = response
                .headers()
                .get(HEADER_MESSAGE_ID)
                .and_then(|v| v.to_str().ok())
                .and_then(message_id);
            let body = read_bounded(response).await;
            let body_id = body.as_deref().and_then(message_id_in_body);
            return Ok(DeliveryReceipt::new(body_id.or(header_id)));
        }
        Err(status_error(status, response.headers(), now))
    }
}

/// The body's members around the card, serialised in this order.
#[derive(Serialize)]
struct Envelope<'a, C> {
    #[serde(rename = "type")]
    event: &'static str,
    timestamp: String,
    data: EnvelopeData<'a, C>,
}

#[derive(Serialize)]
struct EnvelopeData<'a, C> {
    schema: &'static str,
    delivery: String,
    ticket: TicketId,
    kind: DeliveryKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipient: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_message_id: Option<&'a str>,
    card: C,
}

impl<'a> Envelope<'a, ()> {
    fn of(delivery: &'a Delivery) -> Self {
        Envelope {
            event: event_type(delivery.kind),
            timestamp: delivery.card.generated_at.to_string(),
            data: EnvelopeData {
                schema: WEBHOOK_BODY_SCHEMA,
                delivery: delivery.id.to_string(),
                ticket: delivery.ticket,
                kind: delivery.kind,
                recipient: delivery.recipient.as_deref(),
                previous_message_id: delivery
                    .previous_receipt
                    .as_ref()
                    .and_then(|r| r.channel_message_id.as_deref()),
                card: (),
            },
        }
    }

    fn with<'c>(&self, card: &'c ReviewCard) -> Envelope<'a, &'c ReviewCard> {
        Envelope {
            event: self.event,
            timestamp: self.timestamp.clone(),
            data: EnvelopeData {
                schema: self.data.schema,
                delivery: self.data.delivery.clone(),
                ticket: self.data.ticket,
                kind: self.data.kind,
                recipient: self.data.recipient,
                previous_message_id: self.data.previous_message_id,
                card,
            },
        }
    }

    fn to_vec(&self, card: &ReviewCard) -> Vec<u8> {
        // Plain data (string keys, finite numbers): serialising cannot fail.
        serde_json::to_vec(&self.with(card)).unwrap_or_default()
    }

    fn len_with(&self, card: &ReviewCard) -> usize {
        self.to_vec(card).len()
    }
}

fn event_type(kind: DeliveryKind) -> &'static str {
    match kind {
        DeliveryKind::RequestReview => "review.requested",
        DeliveryKind::Update => "review.updated",
        DeliveryKind::Close => "review.closed",
    }
}

/// Scheme, host and port only: the path and query may hold a credential.
struct Origin<'a>(&'a Url);

impl fmt::Debug for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.0;
        write!(f, "\"{}://{}", url.scheme(), url.host_str().unwrap_or(""))?;
        if let Some(port) = url.port() {
            write!(f, ":{port}")?;
        }
        f.write_str("/…\"")
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A failure before any response: the URL is dropped from the source (it may hold a
/// credential).
fn send_error(e: reqwest::Error) -> DeliveryError {
    let e = e.without_url();
    if e.is_builder() {
        DeliveryError::misconfigured("the webhook request could not be built").with_source(e)
    } else if e.is_timeout() {
        DeliveryError::transient("the webhook receiver did not answer in time").with_source(e)
    } else if e.is_connect() {
        DeliveryError::transient("could not connect to the webhook receiver").with_source(e)
    } else {
        DeliveryError::transient("the webhook request failed").with_source(e)
    }
}

/// Maps a non-`2xx` status.
fn status_error(status: StatusCode, headers: &HeaderMap, now: Timestamp) -> DeliveryError {
    let code = status.as_u16();
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| parse_retry_after(v, now));
    match code {
        429 => DeliveryError::rate_limited(retry_after),
        503 if retry_after.is_some() => DeliveryError::rate_limited(retry_after),
        408 | 500..=599 => {
            DeliveryError::transient(format!("the webhook receiver answered {code}"))
        }
        401 | 403 => DeliveryError::misconfigured(format!(
            "the webhook receiver answered {code}: it does not accept our signature"
        )),
        300..=399 => DeliveryError::misconfigured(format!(
            "the webhook receiver answered {code} (a redirect, not followed): configure the final url"
        )),
        400..=499 => DeliveryError::permanent(format!("the webhook receiver answered {code}")),
        // 1xx as a final answer, or codes beyond 599: nothing says retrying cannot help.
        _ => DeliveryError::transient(format!("the webhook receiver answered {code}")),
    }
}

/// `Retry-After`: delay-seconds, or an HTTP date (IMF-fixdate) measured from `now`.
fn parse_retry_after(value: &HeaderValue, now: Timestamp) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // Longer than u64 seconds: as long as it gets (the worker caps it anyway).
        return Some(Duration::from_secs(text.parse().unwrap_or(u64::MAX)));
    }
    let at = OffsetDateTime::parse(text, &Rfc2822).ok()?;
    Some(Timestamp::from(at).saturating_duration_since(now))
}

/// Reads at most [`MAX_RESPONSE_BYTES`] of a response body; `None` if it is longer or the
/// read fails (the delivery was accepted all the same).
async fn read_bounded(mut response: reqwest::Response) -> Option<Vec<u8>> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return None;
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

/// The message id in a JSON object body: its `message_id` or `id` member, string or integer.
fn message_id_in_body(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    ["message_id", "id"]
        .iter()
        .find_map(|k| match value.get(k)? {
            Value::String(s) => message_id(s),
            Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
            _ => None,
        })
}

/// A message id worth keeping: 1 to 256 characters, no control characters.
fn message_id(text: &str) -> Option<String> {
    (!text.is_empty()
        && text.chars().count() <= MAX_MESSAGE_ID_LEN
        && !text.chars().any(char::is_control))
    .then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_unix_millis(secs * 1000)
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = ts(1_445_412_480); // 2015-10-21T07:28:00Z
        let v = |s: &str| parse_retry_after(&HeaderValue::from_str(s).unwrap(), now);
        assert_eq!(v("120"), Some(Duration::from_secs(120)));
        assert_eq!(v(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            v("Wed, 21 Oct 2015 07:29:30 GMT"),
            Some(Duration::from_secs(90))
        );
        // A date in the past: retry now.
        assert_eq!(v("Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(v("-5"), None);
        assert_eq!(v("soon"), None);
        assert_eq!(v(""), None);
    }

    #[test]
    fn statuses_map_to_what_a_retry_can_do() {
        let now = ts(0);
        let none = HeaderMap::new();
        let code = |c: u16| status_error(StatusCode::from_u16(c).unwrap(), &none, now);
        for c in [408, 500, 502, 503, 504, 599] {
            assert_eq!(code(c).code(), "transient", "{c}");
        }
        assert_eq!(code(429).code(), "rate_limited");
        assert_eq!(code(429).retry_after(), None);
        for c in [400, 404, 409, 410, 413, 422] {
            assert_eq!(code(c).code(), "permanent", "{c}");
        }
        for c in [301, 302, 307, 308, 401, 403] {
            assert_eq!(code(c).code(), "misconfigured", "{c}");
        }
        let mut later = HeaderMap::new();
        later.insert(RETRY_AFTER, HeaderValue::from_static("30"));
        let e = status_error(StatusCode::SERVICE_UNAVAILABLE, &later, now);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
        assert!(e.is_retryable());
    }

    #[test]
    fn message_ids_from_bodies() {
        assert_eq!(
            message_id_in_body(br#"{"message_id":"m-1","id":"other"}"#),
            Some("m-1".into())
        );
        assert_eq!(message_id_in_body(br#"{"id":42}"#), Some("42".into()));
        assert_eq!(message_id_in_body(br#"{"id":1.5}"#), None);
        assert_eq!(message_id_in_body(br#"{"id":""}"#), None);
        assert_eq!(message_id_in_body(br#"{"id":"a\nb"}"#), None);
        assert_eq!(message_id_in_body(b"ok"), None);
        assert_eq!(message_id_in_body(b"[1]"), None);
        let long = format!(r#"{{"id":"{}"}}"#, "x".repeat(MAX_MESSAGE_ID_LEN + 1));
        assert_eq!(message_id_in_body(long.as_bytes()), None);
    }
}

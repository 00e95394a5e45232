//! Verifying and parsing Feishu card callbacks, independent of any HTTP framework.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::crypto::{
    ct_eq_str, CallbackSignatureError, DecryptError, EncryptKey, FeishuSecretError,
};
use crate::timestamp::Timestamp;

/// Header carrying the callback signature.
pub const HEADER_SIGNATURE: &str = "X-Lark-Signature";

/// Header carrying the request time, integer Unix seconds.
pub const HEADER_TIMESTAMP: &str = "X-Lark-Request-Timestamp";

/// Header carrying the request's random nonce.
pub const HEADER_NONCE: &str = "X-Lark-Request-Nonce";

/// How far `X-Lark-Request-Timestamp` may lie before or after `now` unless
/// [`FeishuCallbackVerifier::with_tolerance`] says otherwise.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Largest body looked at unless [`FeishuCallbackVerifier::with_max_body_len`] says otherwise.
pub const DEFAULT_MAX_BODY_LEN: usize = 64 * 1024;

/// The event type of card button clicks and other card interactions.
pub const CARD_ACTION_EVENT_TYPE: &str = "card.action.trigger";

/// Longest `header.event_id` accepted, in bytes.
const MAX_EVENT_ID_LEN: usize = 128;

/// Verifies and parses Feishu / Lark callbacks for interactive cards.
///
/// Give it the request's headers and raw body exactly as received; it answers what the request
/// is, or why it is refused:
///
/// 1. the body is at most the size limit ([`BodyTooLarge`]);
/// 2. if the request carries `X-Lark-Signature`, `X-Lark-Request-Timestamp` and
///    `X-Lark-Request-Nonce`, the signature
///    `hex(SHA-256(timestamp + nonce + encrypt_key + raw_body))` is checked in constant time,
///    then the timestamp window against `now` ([`Signature`]) — before anything is decrypted
///    or parsed; a request with only some of the three is refused ([`MissingHeader`]);
/// 3. an `{"encrypt": …}` body is decrypted ([`Decrypt`]);
/// 4. `url_verification` (sent when the callback URL is configured, unsigned): its `token` is
///    compared with the Verification Token in constant time ([`BadVerificationToken`]) and the
///    challenge returned as [`Callback::UrlVerification`];
/// 5. anything else must be signed ([`MissingHeader`]), schema 2.0 ([`UnsupportedSchema`]),
///    carry the Verification Token in `header.token`, and be a `card.action.trigger`
///    ([`UnsupportedEvent`]); it is parsed into [`Callback::CardAction`].
///
/// Deduplication (by [`CardAction::event_id`] and [`CardAction::nonce`]), mapping the operator
/// to a reviewer and applying the decision are the engine's work. Refusals never echo request
/// content except an authenticated request's event type; answer them all alike over HTTP (for
/// example `401` with an empty body), so the refusal kind cannot serve as a decryption oracle.
///
/// [`BodyTooLarge`]: FeishuCallbackError::BodyTooLarge
/// [`Signature`]: FeishuCallbackError::Signature
/// [`MissingHeader`]: FeishuCallbackError::MissingHeader
/// [`Decrypt`]: FeishuCallbackError::Decrypt
/// [`BadVerificationToken`]: FeishuCallbackError::BadVerificationToken
/// [`UnsupportedSchema`]: FeishuCallbackError::UnsupportedSchema
/// [`UnsupportedEvent`]: FeishuCallbackError::UnsupportedEvent
#[derive(Clone)]
pub struct FeishuCallbackVerifier {
    verification_token: String,
    encrypt_key: EncryptKey,
    tolerance: Duration,
    max_body_len: usize,
}

impl FeishuCallbackVerifier {
    /// A verifier for one app: its Verification Token and Encrypt Key (both from the developer
    /// console, "Events & Callbacks" → "Encryption strategy"). The Encrypt Key is required:
    /// without it Feishu does not sign callbacks.
    pub fn new(
        verification_token: impl Into<String>,
        encrypt_key: EncryptKey,
    ) -> Result<Self, FeishuSecretError> {
        let verification_token = verification_token.into();
        if verification_token.is_empty() {
            return Err(FeishuSecretError::Empty);
        }
        Ok(Self {
            verification_token,
            encrypt_key,
            tolerance: DEFAULT_TOLERANCE,
            max_body_len: DEFAULT_MAX_BODY_LEN,
        })
    }

    /// Sets how far the request timestamp may lie before or after `now` (default
    /// [`DEFAULT_TOLERANCE`]); whole seconds count.
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Sets the largest body accepted, in bytes (default [`DEFAULT_MAX_BODY_LEN`]).
    pub fn with_max_body_len(mut self, max_body_len: usize) -> Self {
        self.max_body_len = max_body_len;
        self
    }

    /// Verifies one request: `headers` as `(name, value)` pairs (names compared ASCII
    /// case-insensitively; each signature header at most once), `raw_body` as received, `now`
    /// from the application's clock.
    pub fn verify<K: AsRef<str>, V: AsRef<str>>(
        &self,
        headers: &[(K, V)],
        raw_body: &[u8],
        now: Timestamp,
    ) -> Result<Callback, FeishuCallbackError> {
        if raw_body.len() > self.max_body_len {
            return Err(FeishuCallbackError::BodyTooLarge {
                len: raw_body.len(),
                max: self.max_body_len,
            });
        }
        let signature = single_header(headers, HEADER_SIGNATURE)?;
        let timestamp = single_header(headers, HEADER_TIMESTAMP)?;
        let nonce = single_header(headers, HEADER_NONCE)?;
        let signed = match (signature, timestamp, nonce) {
            (Some(signature), Some(timestamp), Some(nonce)) => {
                let ts = self.encrypt_key.verify_callback_signature(
                    signature,
                    timestamp,
                    nonce,
                    raw_body,
                    now,
                    self.tolerance,
                )?;
                Some((ts, nonce))
            }
            (None, None, None) => None,
            (None, _, _) => return Err(missing(HEADER_SIGNATURE)),
            (_, None, _) => return Err(missing(HEADER_TIMESTAMP)),
            (_, _, None) => return Err(missing(HEADER_NONCE)),
        };

        let plain = self.plaintext(raw_body)?;
        let payload: Payload = serde_json::from_value(plain).map_err(|_| match signed {
            // Unsigned, it could only have been a URL verification; say what is missing.
            None => missing(HEADER_SIGNATURE),
            Some(_) => malformed("fields"),
        })?;

        if payload.kind.as_deref() == Some("url_verification") {
            let token = payload.token.ok_or(malformed("token"))?;
            if !ct_eq_str(&token, &self.verification_token) {
                return Err(FeishuCallbackError::BadVerificationToken);
            }
            let challenge = payload.challenge.ok_or(malformed("challenge"))?;
            return Ok(Callback::UrlVerification { challenge });
        }

        let Some((request_timestamp, nonce)) = signed else {
            return Err(missing(HEADER_SIGNATURE));
        };
        if payload.schema.as_deref() != Some("2.0") {
            return Err(FeishuCallbackError::UnsupportedSchema);
        }
        let header = payload.header.ok_or(malformed("header"))?;
        let token = header.token.ok_or(malformed("header.token"))?;
        if !ct_eq_str(&token, &self.verification_token) {
            return Err(FeishuCallbackError::BadVerificationToken);
        }
        let event_type = header.event_type.unwrap_or_default();
        if event_type != CARD_ACTION_EVENT_TYPE {
            return Err(FeishuCallbackError::UnsupportedEvent {
                event_type: event_type.chars().take(64).collect(),
            });
        }
        let event_id = header
            .event_id
            .filter(|id| !id.is_empty() && id.len() <= MAX_EVENT_ID_LEN)
            .ok_or(malformed("header.event_id"))?;
        let event: CardEvent = payload
            .event
            .ok_or(malformed("event"))
            .and_then(|e| serde_json::from_value(e).map_err(|_| malformed("event")))?;
        let operator = event.operator.ok_or(malformed("event.operator"))?;
        let operator_open_id = operator
            .open_id
            .filter(|id| !id.is_empty())
            .ok_or(malformed("event.operator.open_id"))?;
        let action = event.action.ok_or(malformed("event.action"))?;
        let context = event.context.unwrap_or_default();
        Ok(Callback::CardAction(Box::new(CardAction {
            event_id,
            nonce: nonce.to_owned(),
            request_timestamp,
            operator_open_id,
            operator_user_id: operator.user_id,
            operator_union_id: operator.union_id,
            tenant_key: operator.tenant_key.or(header.tenant_key),
            action_tag: action.tag,
            action_name: action.name,
            action_value: action.value.unwrap_or(Value::Null),
            open_message_id: context.open_message_id,
            open_chat_id: context.open_chat_id,
            update_token: event.token,
        })))
    }

    /// The callback's JSON: the body itself, or the decryption of its `encrypt` field.
    fn plaintext(&self, raw_body: &[u8]) -> Result<Value, FeishuCallbackError> {
        let outer: Value =
            serde_json::from_slice(raw_body).map_err(|_| FeishuCallbackError::NotJson)?;
        let Value::Object(mut outer) = outer else {
            return Err(malformed("body"));
        };
        let inner = match outer.remove("encrypt") {
            None => Value::Object(outer),
            Some(Value::String(encrypt)) => {
                let plain = self.encrypt_key.decrypt(&encrypt)?;
                serde_json::from_slice(&plain).map_err(|_| FeishuCallbackError::NotJson)?
            }
            Some(_) => return Err(malformed("encrypt")),
        };
        if inner.is_object() {
            Ok(inner)
        } else {
            Err(malformed("body"))
        }
    }
}

impl fmt::Debug for FeishuCallbackVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeishuCallbackVerifier")
            .field("verification_token", &"<redacted>")
            .field("encrypt_key", &self.encrypt_key)
            .field("tolerance", &self.tolerance)
            .field("max_body_len", &self.max_body_len)
            .finish()
    }
}

/// What a verified callback asks for.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Callback {
    /// Feishu checks the callback URL: answer `200` with [`Callback::challenge_response`]
    /// within one second.
    UrlVerification {
        /// The value to echo back.
        challenge: String,
    },
    /// A reviewer clicked a card button (or used another interactive element).
    CardAction(Box<CardAction>),
}

impl Callback {
    /// For [`Callback::UrlVerification`], the JSON response body `{"challenge": "…"}`.
    pub fn challenge_response(&self) -> Option<String> {
        match self {
            Callback::UrlVerification { challenge } => {
                Some(serde_json::json!({ "challenge": challenge }).to_string())
            }
            Callback::CardAction(_) => None,
        }
    }
}

/// An authenticated card interaction (`card.action.trigger`, schema 2.0).
///
/// The operator's open id is the identity to resolve through the reviewer directory; the
/// action value carries what our card put on the button (the decision token). `Debug` redacts
/// the action value and the card update token, which are bearer credentials.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct CardAction {
    /// `header.event_id`: unique per callback; dedupe on it.
    pub event_id: String,
    /// `X-Lark-Request-Nonce`: dedupe on it too (within the tolerance window).
    pub nonce: String,
    /// `X-Lark-Request-Timestamp`, Unix seconds (checked against the window).
    pub request_timestamp: i64,
    /// `event.operator.open_id`: who clicked.
    pub operator_open_id: String,
    /// `event.operator.user_id`, when the app may see it.
    pub operator_user_id: Option<String>,
    /// `event.operator.union_id`, when present.
    pub operator_union_id: Option<String>,
    /// The tenant (`event.operator.tenant_key`, else `header.tenant_key`).
    pub tenant_key: Option<String>,
    /// `event.action.tag`: the element type, e.g. `button`.
    pub action_tag: Option<String>,
    /// `event.action.name`: the element's name, when set.
    pub action_name: Option<String>,
    /// `event.action.value`: what the card put on the element (`null` when absent).
    pub action_value: Value,
    /// `event.context.open_message_id`: the card message, for updating it.
    pub open_message_id: Option<String>,
    /// `event.context.open_chat_id`: the chat the card is in.
    pub open_chat_id: Option<String>,
    /// `event.token`: lets the app update the card later (valid for a limited time).
    pub update_token: Option<String>,
}

impl fmt::Debug for CardAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardAction")
            .field("event_id", &self.event_id)
            .field("nonce", &self.nonce)
            .field("request_timestamp", &self.request_timestamp)
            .field("operator_open_id", &self.operator_open_id)
            .field("operator_user_id", &self.operator_user_id)
            .field("operator_union_id", &self.operator_union_id)
            .field("tenant_key", &self.tenant_key)
            .field("action_tag", &self.action_tag)
            .field("action_name", &self.action_name)
            .field("action_value", &"<redacted>")
            .field("open_message_id", &self.open_message_id)
            .field("open_chat_id", &self.open_chat_id)
            .field(
                "update_token",
                &self.update_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: Option<String>,
    challenge: Option<String>,
    token: Option<String>,
    schema: Option<String>,
    header: Option<EventHeader>,
    /// Parsed as a card event only once the event type is known.
    event: Option<Value>,
}

#[derive(Deserialize)]
struct EventHeader {
    event_id: Option<String>,
    token: Option<String>,
    event_type: Option<String>,
    tenant_key: Option<String>,
}

#[derive(Deserialize)]
struct CardEvent {
    operator: Option<Operator>,
    token: Option<String>,
    action: Option<Action>,
    context: Option<Context>,
}

#[derive(Deserialize)]
struct Operator {
    open_id: Option<String>,
    user_id: Option<String>,
    union_id: Option<String>,
    tenant_key: Option<String>,
}

#[derive(Deserialize)]
struct Action {
    value: Option<Value>,
    tag: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize, Default)]
struct Context {
    open_message_id: Option<String>,
    open_chat_id: Option<String>,
}

fn missing(name: &'static str) -> FeishuCallbackError {
    FeishuCallbackError::MissingHeader { name }
}

fn malformed(field: &'static str) -> FeishuCallbackError {
    FeishuCallbackError::MalformedPayload { field }
}

/// The one value of header `name`, `None` if absent, refused if repeated.
fn single_header<'h, K: AsRef<str>, V: AsRef<str>>(
    headers: &'h [(K, V)],
    name: &'static str,
) -> Result<Option<&'h str>, FeishuCallbackError> {
    let mut found = None;
    for (k, v) in headers {
        if k.as_ref().eq_ignore_ascii_case(name) {
            if found.is_some() {
                return Err(FeishuCallbackError::DuplicateHeader { name });
            }
            found = Some(v.as_ref());
        }
    }
    Ok(found)
}

/// A Feishu callback was refused. Variants are distinct so each refusal can be handled and
/// audited as what it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FeishuCallbackError {
    /// The body is larger than the configured limit.
    #[error("callback body is {len} bytes, more than {max}")]
    BodyTooLarge {
        /// Body length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A required header is absent (a card action without a signature, or one of the three
    /// signature headers without the others).
    #[error("callback header `{name}` is missing")]
    MissingHeader {
        /// The header name.
        name: &'static str,
    },
    /// A signature header appears more than once.
    #[error("callback header `{name}` appears more than once")]
    DuplicateHeader {
        /// The header name.
        name: &'static str,
    },
    /// The signature or its timestamp was refused.
    #[error(transparent)]
    Signature(#[from] CallbackSignatureError),
    /// The `encrypt` field could not be decrypted.
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
    /// The body (or the decrypted body) is not JSON.
    #[error("callback body is not JSON")]
    NotJson,
    /// A field is missing or has the wrong type.
    #[error("callback payload field `{field}` is missing or malformed")]
    MalformedPayload {
        /// Which field (`fields` when the types do not match).
        field: &'static str,
    },
    /// The Verification Token in the payload is not this app's.
    #[error("callback verification token does not match")]
    BadVerificationToken,
    /// Not a schema 2.0 callback (the legacy card callback format is not supported).
    #[error("callback is not schema 2.0")]
    UnsupportedSchema,
    /// An authenticated callback of another type than `card.action.trigger`.
    #[error("callback event type `{event_type}` is not supported")]
    UnsupportedEvent {
        /// The event type (cut to 64 characters).
        event_type: String,
    },
}

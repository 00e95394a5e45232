//! Feishu / Lark: custom-bot signatures, card callback verification and decryption, card
//! rendering and delivery.
//!
//! The protocol parts, pure and framework-agnostic (time is passed in, nothing here does I/O):
//!
//! - **Custom bot** messages with signature verification on carry `timestamp` and `sign`,
//!   where `sign = base64(HMAC-SHA256(key = timestamp + "\n" + secret, message = empty))`
//!   ([`CustomBotSecret::sign`]).
//! - **Callbacks** of an app with an Encrypt Key are signed:
//!   `X-Lark-Signature = hex(SHA-256(X-Lark-Request-Timestamp + X-Lark-Request-Nonce +
//!   encrypt_key + raw_body))` ([`EncryptKey::verify_callback_signature`]; plain SHA-256, not
//!   HMAC; the legacy `SHA-1(timestamp + nonce + verification_token + body)` of old card
//!   callbacks is refused). Bodies are `{"encrypt": base64(IV ‖ AES-256-CBC(key =
//!   SHA-256(encrypt_key), PKCS#7))}` ([`EncryptKey::decrypt`]).
//! - [`FeishuCallbackVerifier`] turns (headers, raw body, now) into a [`Callback`]: a
//!   `url_verification` challenge or an authenticated `card.action.trigger`
//!   ([`CardAction`]). Unlike the official SDKs, signatures and tokens are compared in
//!   constant time and the request timestamp must lie within a window around `now`; the
//!   event id and nonce are exposed for deduplication.
//! - [`FeishuCardRenderer`] renders a [`ReviewCard`](crate::notify::ReviewCard) as an
//!   interactive card whose buttons carry decision tokens.
//!
//! The I/O edge: [`FeishuCustomBot`] and [`FeishuAppBot`] deliver cards
//! ([`Notifier`](crate::notify::Notifier)), and `Handoff::handle_feishu_callback` answers card
//! callbacks with a [`FeishuResponse`].
//!
//! Sources: the Feishu open platform documentation (custom bot, event and callback
//! encryption, card callbacks) and the official SDKs `larksuite/oapi-sdk-go` and
//! `larksuite/oapi-sdk-python`, whose schemes the golden vectors in `tests/vectors/feishu_*`
//! reproduce.

mod callback;
mod card;
mod crypto;
mod deliver;

pub use callback::{
    Callback, CardAction, FeishuCallbackError, FeishuCallbackVerifier, CARD_ACTION_EVENT_TYPE,
    DEFAULT_MAX_BODY_LEN, DEFAULT_TOLERANCE, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
pub use card::{
    decision_token, FeishuCardRenderer, DECISION_TOKEN_KEY, FEISHU_CARD_LIMIT, VERDICT_KEY,
};
pub use crypto::{
    CallbackSignatureError, CustomBotSecret, DecryptError, EncryptKey, FeishuSecretError,
    MAX_NONCE_LEN,
};
pub use deliver::{
    FeishuAppBot, FeishuCustomBot, FeishuSetupError, ReceiveIdType, FEISHU_BASE_URL, LARK_BASE_URL,
    TOKEN_REFRESH_MARGIN,
};

/// An HTTP answer to a Feishu callback, for whatever server hosts the endpoint: send `status`
/// with `body` (`application/json` when not empty).
///
/// `Debug` shows the status and the body's length only: an updated card carries decision
/// tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct FeishuResponse {
    /// The HTTP status: `200`, or `401` for a request that could not be authenticated.
    pub status: u16,
    /// The JSON body; empty for `401`.
    pub body: String,
}

impl std::fmt::Debug for FeishuResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeishuResponse")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .finish()
    }
}

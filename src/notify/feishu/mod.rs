//! Feishu / Lark: custom-bot signatures, card callback verification and decryption.
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
//!
//! Sources: the Feishu open platform documentation (custom bot, event and callback
//! encryption, card callbacks) and the official SDKs `larksuite/oapi-sdk-go` and
//! `larksuite/oapi-sdk-python`, whose schemes the golden vectors in `tests/vectors/feishu_*`
//! reproduce.

mod callback;
mod crypto;

pub use callback::{
    Callback, CardAction, FeishuCallbackError, FeishuCallbackVerifier, CARD_ACTION_EVENT_TYPE,
    DEFAULT_MAX_BODY_LEN, DEFAULT_TOLERANCE, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
pub use crypto::{
    CallbackSignatureError, CustomBotSecret, DecryptError, EncryptKey, FeishuSecretError,
    MAX_NONCE_LEN,
};

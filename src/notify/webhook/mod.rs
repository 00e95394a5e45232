//! Signed webhooks per the [Standard Webhooks] specification, version 1 (symmetric).
//!
//! A delivery carries three headers: `webhook-id` (stable across retries of the same delivery;
//! we use the outbox row id, and receivers dedupe on it), `webhook-timestamp` (integer Unix
//! seconds of the attempt) and `webhook-signature`, a space-separated list of
//! `v1,<base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}"))>`, one per secret, so a secret
//! can be rotated without downtime. Secrets are 24 to 64 random bytes, written `whsec_` +
//! base64.
//!
//! [`WebhookSigner`] builds the headers for outgoing deliveries; [`WebhookVerifier`] checks
//! incoming ones (receivers, and our own inbound callbacks): several secrets, a tolerance
//! window around a passed-in `now` (five minutes each way by default), constant-time
//! comparison on fixed 32-byte tags, and refusal of empty, truncated, over-long and non-base64
//! signatures. Pure: no clock reads, no I/O.
//!
//! [`WebhookNotifier`] is the [`Notifier`](crate::notify::Notifier) that POSTs review cards
//! signed this way to one URL (the body format and the mapping of answers to retryable and
//! permanent errors are documented on the type).
//!
//! [Standard Webhooks]: https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md

mod notifier;
mod signature;

pub use notifier::{
    WebhookNotifier, WebhookNotifierBuilder, WebhookNotifierError, DEFAULT_MAX_BODY,
    DEFAULT_TIMEOUT, HEADER_MESSAGE_ID, MIN_MAX_BODY, WEBHOOK_BODY_SCHEMA,
};

pub use signature::{
    sign, VerifiedWebhook, WebhookHeaders, WebhookSecret, WebhookSecretError, WebhookSignError,
    WebhookSigner, WebhookVerifier, WebhookVerifierError, WebhookVerifyError, DEFAULT_TOLERANCE,
    HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, MAX_ID_LEN, MAX_SECRET_LEN, MAX_SIGNATURES,
    MAX_SIGNATURE_HEADER_LEN, MIN_SECRET_LEN, SECRET_PREFIX,
};

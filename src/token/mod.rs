//! Signed decision tokens for links and chat buttons.
//!
//! A token lets its holder submit one verdict on one ticket, for the action as it was shown: it
//! binds the ticket, the reviewer (or none, for group-chat buttons where the platform's
//! authenticated operator is the identity), the verdict, the action's keyed digest, issue and
//! expiry times and a random single-use nonce ([`TokenClaims`]). It is not bound to the ticket
//! version, so the first approval does not void the other reviewers' links. A token alone never
//! decides: the facade also verifies the reviewer's credential, compares identities, burns the
//! nonce in the store and runs the ticket machine.
//!
//! Pure: time and nonces are passed in.
//!
//! # Text form (version 1)
//!
//! ```text
//! ah1.<base64url(payload)>.<base64url(HMAC-SHA256(secret, "ah1." ‖ base64url(payload)))>
//! ```
//!
//! base64url is RFC 4648 §5 without padding, decoded strictly (no padding, no stray trailing
//! bits), so every token has exactly one spelling. The MAC covers the ASCII text before the
//! second `.`, prefix included; the signature part is always 43 characters (32 bytes).
//! Tokens are at most [`MAX_TOKEN_LEN`] bytes (about 150 to 200 characters in practice).
//!
//! The payload is binary, integers big-endian, nothing after the last field:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | key id length `L` (1 to 32) |
//! | `L` | key id, ASCII letters, digits, `.`, `_`, `-` |
//! | 16 | ticket id (UUID bytes) |
//! | 1 | verdict: 1 approve, 2 approve with edits, 3 reject, 4 request changes |
//! | 8 | issued at, signed Unix milliseconds |
//! | 8 | expires at, signed Unix milliseconds |
//! | 16 | nonce |
//! | 32 | keyed action digest |
//! | 2 | reviewer id length `R` (0 = no reviewer) |
//! | `R` | reviewer person id, UTF-8 |
//!
//! # Verification
//!
//! [`TokenKeyRing::open`] refuses, in this order and with distinct errors: malformed text, an
//! unknown key id, a bad signature (compared in constant time on a 32-byte array), then — for
//! authentic tokens only — expired (`now >= expires_at`) and not yet valid
//! (`issued_at > now + max_skew`). The returned [`AuthenticToken`] gives the ticket, reviewer and
//! nonce, and the verdict only through [`AuthenticToken::check_digest`] with the action's
//! current keyed digest, so the digest check cannot be skipped. [`TokenKeyRing::verify`] does
//! both when the digest is already at hand.

mod claims;
mod codec;
mod error;
mod ring;

pub use claims::{TokenClaims, TokenNonce, VerdictKind};
pub use error::{KeyError, MalformedToken, SignError, TokenError};
pub use ring::{
    AuthenticToken, TokenKey, TokenKeyRing, DEFAULT_MAX_SKEW, MAX_TOKEN_LEN, MIN_TOKEN_SECRET_LEN,
    TOKEN_PREFIX,
};

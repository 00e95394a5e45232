//! Keys, signing and verification.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

use super::claims::{TokenClaims, TokenNonce};
use super::codec;
use super::error::{KeyError, MalformedToken, SignError, TokenError};
use crate::action::KeyedDigest;
use crate::id::{PersonId, TicketId};
use crate::timestamp::Timestamp;

type HmacSha256 = Hmac<Sha256>;

/// The version prefix of every token this code writes and reads.
pub const TOKEN_PREFIX: &str = "ah1.";

/// Longest token text looked at, in bytes; longer ones are refused before decoding.
pub const MAX_TOKEN_LEN: usize = 1024;

/// Shortest token secret accepted, in bytes.
pub const MIN_TOKEN_SECRET_LEN: usize = 32;

/// How far in the future a token's issue time may be (clock skew between issuing and verifying
/// nodes) unless [`TokenKeyRing::with_max_skew`] says otherwise.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(60);

/// Length of the base64url form of a 32-byte signature.
const SIGNATURE_B64_LEN: usize = 43;

/// A named HMAC-SHA256 secret for decision tokens. `Debug` never shows the secret.
#[derive(Clone)]
pub struct TokenKey {
    id: String,
    mac: HmacSha256,
}

impl TokenKey {
    /// A key with `id` (1 to 32 ASCII letters, digits, `.`, `_` or `-`; it is written into every
    /// token) and `secret` (at least [`MIN_TOKEN_SECRET_LEN`] random bytes).
    pub fn new(id: impl Into<String>, secret: &[u8]) -> Result<Self, KeyError> {
        let id = id.into();
        if !codec::is_valid_key_id(&id) {
            return Err(KeyError::InvalidId {
                id: id.chars().take(64).collect(),
            });
        }
        if secret.len() < MIN_TOKEN_SECRET_LEN {
            return Err(KeyError::SecretTooShort { len: secret.len() });
        }
        let mac = HmacSha256::new_from_slice(secret)
            .map_err(|_| KeyError::SecretTooShort { len: secret.len() })?;
        Ok(Self { id, mac })
    }

    /// The key id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The keys of one deployment: one signs new tokens, all verify (keep retired keys here until
/// the tokens they signed have expired).
#[derive(Clone)]
pub struct TokenKeyRing {
    signing: TokenKey,
    retired: Vec<TokenKey>,
    max_skew: Duration,
}

impl TokenKeyRing {
    /// A ring signing with `signing` and also accepting tokens signed by `retired` keys.
    /// Refuses two keys with the same id.
    pub fn new(
        signing: TokenKey,
        retired: impl IntoIterator<Item = TokenKey>,
    ) -> Result<Self, KeyError> {
        let mut ring = Self {
            signing,
            retired: Vec::new(),
            max_skew: DEFAULT_MAX_SKEW,
        };
        for key in retired {
            if ring.key(&key.id).is_some() {
                return Err(KeyError::DuplicateId { id: key.id });
            }
            ring.retired.push(key);
        }
        Ok(ring)
    }

    /// Sets how far in the future an issue time may lie (default [`DEFAULT_MAX_SKEW`]).
    pub fn with_max_skew(mut self, max_skew: Duration) -> Self {
        self.max_skew = max_skew;
        self
    }

    /// The id of the key that signs new tokens.
    pub fn signing_key_id(&self) -> &str {
        &self.signing.id
    }

    fn key(&self, id: &str) -> Option<&TokenKey> {
        std::iter::once(&self.signing)
            .chain(&self.retired)
            .find(|k| k.id == id)
    }

    /// Signs `claims` with the signing key into the URL-safe text form.
    pub fn sign(&self, claims: &TokenClaims) -> Result<String, SignError> {
        if claims.expires_at <= claims.issued_at {
            return Err(SignError::ExpiryNotAfterIssue {
                issued_at: claims.issued_at,
                expires_at: claims.expires_at,
            });
        }
        let payload = codec::encode(&self.signing.id, claims);
        let mut text = String::with_capacity(TOKEN_PREFIX.len() + payload.len() * 4 / 3 + 48);
        text.push_str(TOKEN_PREFIX);
        URL_SAFE_NO_PAD.encode_string(&payload, &mut text);
        let tag = self
            .signing
            .mac
            .clone()
            .chain_update(text.as_bytes())
            .finalize()
            .into_bytes();
        text.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut text);
        Ok(text)
    }

    /// Authenticates `token` and checks its validity period at `now`; the digest is checked
    /// next, on the returned [`AuthenticToken`] (the ticket id it names is needed to load the
    /// current digest).
    ///
    /// Checks, in order: form ([`TokenError::Malformed`]), key id
    /// ([`UnknownKey`](TokenError::UnknownKey)), signature in constant time
    /// ([`BadSignature`](TokenError::BadSignature)), then, for authentic tokens only, expiry
    /// ([`Expired`](TokenError::Expired): `now >= expires_at`) and issue time
    /// ([`NotYetValid`](TokenError::NotYetValid): `issued_at > now + max_skew`).
    pub fn open(&self, token: &str, now: Timestamp) -> Result<AuthenticToken, TokenError> {
        let authentic = self.authenticate(token)?;
        let claims = &authentic.claims;
        if now >= claims.expires_at {
            return Err(TokenError::Expired {
                expires_at: claims.expires_at,
            });
        }
        if claims.issued_at > now.saturating_add(self.max_skew) {
            return Err(TokenError::NotYetValid {
                issued_at: claims.issued_at,
            });
        }
        Ok(authentic)
    }

    /// Checks form, key id and signature only, **not** the validity period: what a token
    /// refused by [`open`](Self::open) as expired or not yet valid still proves (it was issued
    /// by this deployment, for the ticket it names), e.g. to file the refusal under that
    /// ticket. Never decide on a token that only this accepted.
    pub fn authenticate(&self, token: &str) -> Result<AuthenticToken, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(MalformedToken::TooLong.into());
        }
        let body = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(MalformedToken::VersionPrefix)?;
        let (payload_b64, signature_b64) = body
            .split_once('.')
            .ok_or(MalformedToken::MissingSignature)?;
        let signed_len = TOKEN_PREFIX.len() + payload_b64.len();
        if signature_b64.len() != SIGNATURE_B64_LEN {
            return Err(MalformedToken::SignatureLength.into());
        }
        let mut signature = [0u8; 32];
        match URL_SAFE_NO_PAD.decode_slice(signature_b64, &mut signature) {
            Ok(32) => {}
            Ok(_) => return Err(MalformedToken::SignatureLength.into()),
            Err(_) => return Err(MalformedToken::Base64.into()),
        }
        let payload = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| MalformedToken::Base64)?;
        let (key_id, claims) = codec::decode(&payload)?;
        let key = self.key(key_id).ok_or_else(|| TokenError::UnknownKey {
            key_id: key_id.to_owned(),
        })?;
        key.mac
            .clone()
            .chain_update(&token.as_bytes()[..signed_len])
            .verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        Ok(AuthenticToken {
            key_id: key.id.clone(),
            claims,
        })
    }

    /// [`open`](Self::open) then [`AuthenticToken::check_digest`] in one call, for callers that
    /// already know the current keyed digest of the action.
    pub fn verify(
        &self,
        token: &str,
        now: Timestamp,
        current_digest: &KeyedDigest,
    ) -> Result<TokenClaims, TokenError> {
        self.open(token, now)?.check_digest(current_digest)
    }
}

impl fmt::Debug for TokenKeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeyRing")
            .field("signing", &self.signing.id)
            .field(
                "retired",
                &self.retired.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .field("max_skew", &self.max_skew)
            .finish()
    }
}

/// A token whose signature and validity period were checked, but not yet its digest: it names
/// the ticket (to load the current digest), the bound reviewer (to compare with the
/// authenticated one) and the nonce (to burn it even when the decision is refused), but yields
/// the verdict only through [`check_digest`](Self::check_digest), so a decision cannot be made
/// on a token for an action that has changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticToken {
    key_id: String,
    claims: TokenClaims,
}

impl AuthenticToken {
    /// The ticket the token is for.
    pub fn ticket(&self) -> TicketId {
        self.claims.ticket
    }

    /// The reviewer the token was issued to; `None` for group-chat buttons.
    pub fn reviewer(&self) -> Option<&PersonId> {
        self.claims.reviewer.as_ref()
    }

    /// The single-use nonce.
    pub fn nonce(&self) -> TokenNonce {
        self.claims.nonce
    }

    /// When the token was issued.
    pub fn issued_at(&self) -> Timestamp {
        self.claims.issued_at
    }

    /// When the token expires.
    pub fn expires_at(&self) -> Timestamp {
        self.claims.expires_at
    }

    /// The id of the key that signed it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Compares the token's digest with the action's current keyed digest and, if equal,
    /// returns all claims including the verdict; else [`TokenError::DigestMismatch`].
    pub fn check_digest(&self, current_digest: &KeyedDigest) -> Result<TokenClaims, TokenError> {
        if &self.claims.digest == current_digest {
            Ok(self.claims.clone())
        } else {
            Err(TokenError::DigestMismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::VerdictKind;
    use uuid::Uuid;

    fn claims() -> TokenClaims {
        TokenClaims {
            ticket: TicketId::from_uuid(Uuid::from_u128(7)),
            reviewer: Some(PersonId::new("alice").unwrap()),
            verdict: VerdictKind::Approve,
            digest: KeyedDigest::from_bytes([1; 32]),
            issued_at: Timestamp::from_unix_millis(1_000_000),
            expires_at: Timestamp::from_unix_millis(2_000_000),
            nonce: TokenNonce::from_bytes([5; 16]),
        }
    }

    fn ring() -> TokenKeyRing {
        TokenKeyRing::new(TokenKey::new("k1", &[7; 32]).unwrap(), []).unwrap()
    }

    #[test]
    fn sign_then_verify_returns_the_claims() {
        let ring = ring();
        let token = ring.sign(&claims()).unwrap();
        assert!(token.starts_with("ah1."));
        let now = Timestamp::from_unix_millis(1_500_000);
        let got = ring.verify(&token, now, &claims().digest).unwrap();
        assert_eq!(got, claims());
        let authentic = ring.open(&token, now).unwrap();
        assert_eq!(authentic.ticket(), claims().ticket);
        assert_eq!(authentic.key_id(), "k1");
    }

    #[test]
    fn signing_refuses_an_expiry_not_after_issue() {
        let mut c = claims();
        c.expires_at = c.issued_at;
        assert!(matches!(
            ring().sign(&c),
            Err(SignError::ExpiryNotAfterIssue { .. })
        ));
    }

    #[test]
    fn ring_refuses_duplicate_ids_and_debug_hides_secrets() {
        let a = TokenKey::new("k1", &[7; 32]).unwrap();
        let b = TokenKey::new("k1", &[8; 32]).unwrap();
        assert_eq!(
            TokenKeyRing::new(a.clone(), [b]).unwrap_err(),
            KeyError::DuplicateId { id: "k1".into() }
        );
        let shown = format!("{:?} {:?}", a, ring());
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains("[7, 7"));
    }

    #[test]
    fn skew_bound_is_configurable() {
        let ring = ring().with_max_skew(Duration::ZERO);
        let token = ring.sign(&claims()).unwrap();
        let just_before = Timestamp::from_unix_millis(999_999);
        assert_eq!(
            ring.open(&token, just_before).unwrap_err(),
            TokenError::NotYetValid {
                issued_at: claims().issued_at
            }
        );
        let lenient = ring.with_max_skew(Duration::from_millis(1));
        assert!(lenient.open(&token, just_before).is_ok());
    }
}

//! Feishu / Lark cryptography: custom-bot signatures, callback signatures, encrypted bodies.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt as _, BlockModeEncrypt as _, KeyIvInit as _};
use hmac::digest::CtOutput;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};

use crate::timestamp::Timestamp;

type HmacSha256 = Hmac<Sha256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;

/// AES block and IV size.
const BLOCK: usize = 16;

/// Longest `X-Lark-Request-Nonce` accepted, in bytes.
pub const MAX_NONCE_LEN: usize = 256;

/// The signing secret of a Feishu custom (group) bot with "signature verification" on.
/// `Debug` never shows it.
#[derive(Clone)]
pub struct CustomBotSecret(String);

impl CustomBotSecret {
    /// The secret shown in the bot's security settings. Refuses an empty one.
    pub fn new(secret: impl Into<String>) -> Result<Self, FeishuSecretError> {
        let secret = secret.into();
        if secret.is_empty() {
            return Err(FeishuSecretError::Empty);
        }
        Ok(Self(secret))
    }

    /// The `sign` field for a message sent with `"timestamp": "<timestamp_secs>"`:
    /// `base64(HMAC-SHA256(key = timestamp + "\n" + secret, message = empty))`.
    ///
    /// The string is the HMAC **key** and the message is empty, as in Feishu's official samples
    /// (keying with the secret and signing the string is a frequent mistake that Feishu answers
    /// with error 19021). Feishu accepts timestamps within an hour of its clock.
    ///
    /// ```
    /// use agent_handoff::notify::feishu::CustomBotSecret;
    ///
    /// let secret = CustomBotSecret::new("golden-custom-bot-secret").unwrap();
    /// assert_eq!(secret.sign(1599360473), "cIgj0b7FoGV/Ab5moHeenEY142wKhmZ/Fs/i44hSdGM=");
    /// ```
    pub fn sign(&self, timestamp_secs: i64) -> String {
        let key = format!("{timestamp_secs}\n{}", self.0);
        // HMAC takes keys of any length; this cannot fail.
        let tag = match HmacSha256::new_from_slice(key.as_bytes()) {
            Ok(mac) => mac.finalize().into_bytes(),
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        };
        STANDARD.encode(tag)
    }
}

impl fmt::Debug for CustomBotSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CustomBotSecret(<redacted>)")
    }
}

/// An app's Encrypt Key (developer console, "Events & Callbacks" → "Encryption strategy"):
/// signs callbacks and encrypts their bodies. `Debug` never shows it.
#[derive(Clone)]
pub struct EncryptKey {
    key: String,
    /// SHA-256 of the key: the AES-256 key.
    aes_key: [u8; 32],
}

impl EncryptKey {
    /// The key as shown in the console. Refuses an empty one.
    pub fn new(key: impl Into<String>) -> Result<Self, FeishuSecretError> {
        let key = key.into();
        if key.is_empty() {
            return Err(FeishuSecretError::Empty);
        }
        let aes_key = Sha256::digest(key.as_bytes()).into();
        Ok(Self { key, aes_key })
    }

    /// The `X-Lark-Signature` of a callback:
    /// `hex(SHA-256(timestamp + nonce + encrypt_key + raw_body))`, lowercase. Plain SHA-256, not
    /// HMAC; `raw_body` is the request body exactly as sent (the `{"encrypt": …}` envelope when
    /// the body is encrypted).
    pub fn callback_signature(&self, timestamp: &str, nonce: &str, raw_body: &[u8]) -> String {
        let digest = self.callback_digest(timestamp, nonce, raw_body);
        let mut hex = String::with_capacity(64);
        for byte in digest {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        hex
    }

    fn callback_digest(&self, timestamp: &str, nonce: &str, raw_body: &[u8]) -> [u8; 32] {
        Sha256::new()
            .chain_update(timestamp.as_bytes())
            .chain_update(nonce.as_bytes())
            .chain_update(self.key.as_bytes())
            .chain_update(raw_body)
            .finalize()
            .into()
    }

    /// Verifies a callback's `X-Lark-Signature` (SHA-256 scheme) and its
    /// `X-Lark-Request-Timestamp` against `now`, returning the timestamp in Unix seconds.
    ///
    /// Checks, in order: form ([`MalformedSignature`]: not 64 hex digits, which also refuses
    /// the 40-digit legacy SHA-1 scheme; [`BadTimestamp`]: not canonical integer seconds;
    /// [`BadNonce`]: empty, longer than [`MAX_NONCE_LEN`] or with control characters), the
    /// signature in constant time ([`BadSignature`]), then, for authentic requests only, the
    /// window ([`TooOld`], [`TooNew`]: more than `tolerance` whole seconds away from `now`).
    /// The official SDKs keep no window; we do, so a captured callback cannot be replayed later.
    ///
    /// [`MalformedSignature`]: CallbackSignatureError::MalformedSignature
    /// [`BadTimestamp`]: CallbackSignatureError::BadTimestamp
    /// [`BadNonce`]: CallbackSignatureError::BadNonce
    /// [`BadSignature`]: CallbackSignatureError::BadSignature
    /// [`TooOld`]: CallbackSignatureError::TooOld
    /// [`TooNew`]: CallbackSignatureError::TooNew
    pub fn verify_callback_signature(
        &self,
        signature: &str,
        timestamp: &str,
        nonce: &str,
        raw_body: &[u8],
        now: Timestamp,
        tolerance: Duration,
    ) -> Result<i64, CallbackSignatureError> {
        let presented =
            decode_hex_32(signature).ok_or(CallbackSignatureError::MalformedSignature)?;
        let ts = parse_seconds(timestamp).ok_or(CallbackSignatureError::BadTimestamp)?;
        if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN || nonce.chars().any(char::is_control) {
            return Err(CallbackSignatureError::BadNonce);
        }
        let expected = self.callback_digest(timestamp, nonce, raw_body);
        if !ct_eq_32(&expected, &presented) {
            return Err(CallbackSignatureError::BadSignature);
        }
        let age = i128::from(now.as_unix_seconds()) - i128::from(ts);
        let tolerance = i128::from(tolerance.as_secs());
        if age > tolerance {
            return Err(CallbackSignatureError::TooOld { timestamp: ts });
        }
        if -age > tolerance {
            return Err(CallbackSignatureError::TooNew { timestamp: ts });
        }
        Ok(ts)
    }

    /// Decrypts the `encrypt` field of an encrypted callback body: base64 (standard, padded)
    /// of `IV (16 bytes) ‖ AES-256-CBC(key = SHA-256(encrypt_key), IV, PKCS#7-padded plaintext)`.
    ///
    /// Refuses text that is not canonical base64, data shorter than an IV and one block or not
    /// a whole number of blocks, and bad padding (a wrong key almost always shows up as bad
    /// padding). The Go SDK instead cuts the plaintext from the first `{` to the last `}`; we
    /// check the padding, like the Python SDK. This is not authentication: verify the request's
    /// signature first whenever it has one.
    pub fn decrypt(&self, encrypt: &str) -> Result<Vec<u8>, DecryptError> {
        let mut data = STANDARD.decode(encrypt).map_err(|_| DecryptError::Base64)?;
        if data.len() < 2 * BLOCK {
            return Err(DecryptError::TooShort { len: data.len() });
        }
        if data.len() % BLOCK != 0 {
            return Err(DecryptError::NotBlockAligned { len: data.len() });
        }
        let mut iv = [0u8; BLOCK];
        iv.copy_from_slice(&data[..BLOCK]);
        let plain_len = Aes256CbcDec::new(&self.aes_key.into(), &iv.into())
            .decrypt_padded::<Pkcs7>(&mut data[BLOCK..])
            .map_err(|_| DecryptError::BadPadding)?
            .len();
        data.copy_within(BLOCK..BLOCK + plain_len, 0);
        data.truncate(plain_len);
        Ok(data)
    }

    /// Encrypts `plaintext` the way Feishu does, with the given IV, into the text of an
    /// `encrypt` field. For tests and fake servers; a real sender must use a fresh random IV
    /// for every message.
    pub fn encrypt(&self, plaintext: &[u8], iv: [u8; BLOCK]) -> String {
        let padded_len = (plaintext.len() / BLOCK + 1) * BLOCK;
        let mut data = vec![0u8; BLOCK + padded_len];
        data[..BLOCK].copy_from_slice(&iv);
        data[BLOCK..BLOCK + plaintext.len()].copy_from_slice(plaintext);
        let encrypted = Aes256CbcEnc::new(&self.aes_key.into(), &iv.into())
            .encrypt_padded::<Pkcs7>(&mut data[BLOCK..], plaintext.len())
            .map(<[u8]>::len);
        match encrypted {
            Ok(len) => debug_assert_eq!(len, padded_len),
            Err(_) => unreachable!("the buffer has room for a full padding block"),
        }
        STANDARD.encode(&data)
    }
}

impl fmt::Debug for EncryptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptKey(<redacted>)")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// 64 hex digits (either case) into 32 bytes; anything else is `None`.
fn decode_hex_32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from((hi << 4) | lo).ok()?;
    }
    Some(out)
}

/// Canonical non-negative decimal seconds: digits only, no sign, no leading zero, fits `i64`.
fn parse_seconds(text: &str) -> Option<i64> {
    if text.is_empty()
        || text.len() > 19
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse().ok()
}

/// Constant-time equality of two 32-byte values (`subtle`, through `digest::CtOutput`).
fn ct_eq_32(a: &[u8; 32], b: &[u8; 32]) -> bool {
    CtOutput::<Sha256>::new((*a).into()) == CtOutput::<Sha256>::new((*b).into())
}

/// Constant-time equality of two strings of any length: their SHA-256 digests are compared,
/// so neither the position of the first difference nor the length leaks through timing.
pub(super) fn ct_eq_str(a: &str, b: &str) -> bool {
    ct_eq_32(
        &Sha256::digest(a.as_bytes()).into(),
        &Sha256::digest(b.as_bytes()).into(),
    )
}

/// A Feishu secret or key could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FeishuSecretError {
    /// The secret, key or token is empty.
    #[error("feishu secret is empty")]
    Empty,
}

/// A callback's signature or timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallbackSignatureError {
    /// `X-Lark-Signature` is not 64 hex digits (for example a 40-digit legacy SHA-1 one).
    #[error("callback signature is not a hex SHA-256 digest")]
    MalformedSignature,
    /// `X-Lark-Request-Timestamp` is not canonical integer seconds.
    #[error("callback timestamp is malformed")]
    BadTimestamp,
    /// `X-Lark-Request-Nonce` is empty, too long or has control characters.
    #[error("callback nonce is malformed")]
    BadNonce,
    /// The signature does not match: forged, altered, signed with another key, or with the
    /// legacy SHA-1 / Verification Token scheme.
    #[error("callback signature does not verify")]
    BadSignature,
    /// Authentic, but older than the tolerance allows (a replay).
    #[error("callback timestamp {timestamp} is too old")]
    TooOld {
        /// The request's timestamp, Unix seconds.
        timestamp: i64,
    },
    /// Authentic, but further in the future than the tolerance allows.
    #[error("callback timestamp {timestamp} is in the future")]
    TooNew {
        /// The request's timestamp, Unix seconds.
        timestamp: i64,
    },
}

/// An encrypted callback body could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecryptError {
    /// The `encrypt` text is not canonical standard base64.
    #[error("encrypted body is not valid base64")]
    Base64,
    /// Shorter than an IV and one block (32 bytes).
    #[error("encrypted body is {len} bytes, at least 32 required")]
    TooShort {
        /// Decoded length.
        len: usize,
    },
    /// Not a whole number of 16-byte blocks.
    #[error("encrypted body is {len} bytes, not a multiple of 16")]
    NotBlockAligned {
        /// Decoded length.
        len: usize,
    },
    /// The PKCS#7 padding is invalid (usually: another Encrypt Key, or altered data).
    #[error("encrypted body has invalid padding")]
    BadPadding,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decoding_is_strict() {
        let lower = "a74730d0eee30fd037a22222adffa022ce2f59270014333aa3bc7db57593b9c5";
        let upper = lower.to_ascii_uppercase();
        assert_eq!(decode_hex_32(lower), decode_hex_32(&upper));
        assert!(decode_hex_32(lower).is_some());
        assert!(decode_hex_32(&lower[..63]).is_none());
        assert!(decode_hex_32(&format!("{lower}0")).is_none());
        assert!(decode_hex_32(&lower.replace('a', "g")).is_none());
        assert!(decode_hex_32(&format!("+{}", &lower[1..])).is_none());
        assert!(decode_hex_32(&"é".repeat(32)).is_none());
    }

    #[test]
    fn constant_time_equality_is_equality() {
        assert!(ct_eq_str("token", "token"));
        assert!(!ct_eq_str("token", "token "));
        assert!(!ct_eq_str("", "x"));
        assert!(ct_eq_32(&[3; 32], &[3; 32]));
        let mut other = [3; 32];
        other[31] = 4;
        assert!(!ct_eq_32(&[3; 32], &other));
    }

    #[test]
    fn debug_hides_keys() {
        let key = EncryptKey::new("super-secret-key").unwrap();
        assert_eq!(format!("{key:?}"), "EncryptKey(<redacted>)");
        let bot = CustomBotSecret::new("super-secret-bot").unwrap();
        assert_eq!(format!("{bot:?}"), "CustomBotSecret(<redacted>)");
    }

    #[test]
    fn encrypt_then_decrypt_round_trips_every_length() {
        let key = EncryptKey::new("k").unwrap();
        for len in 0..=48 {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let text = key.encrypt(&plain, [9; 16]);
            assert_eq!(key.decrypt(&text).unwrap(), plain, "len {len}");
        }
    }
}

//! Signed checkpoints of the chain head, in the text form of C2SP tlog-checkpoint / signed-note.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};

use super::chain::{ChainHash, ChainHead};

type HmacSha256 = Hmac<Sha256>;

/// Shortest checkpoint secret accepted, in bytes.
pub const MIN_CHECKPOINT_SECRET_LEN: usize = 32;

/// Longest checkpoint text accepted by [`Checkpoint::parse`], in bytes.
pub const MAX_CHECKPOINT_LEN: usize = 16 * 1024;

/// Most signature lines accepted by [`Checkpoint::parse`] (signed-note requires at least 16).
pub const MAX_CHECKPOINT_SIGNATURES: usize = 16;

/// The signed-note signature type string that follows the `0xff` type byte in our key ids.
const SIGNATURE_TYPE: &[u8] = b"agent-handoff/checkpoint/hmac-sha256";

const EM_DASH_SPACE: &str = "\u{2014} ";

/// A secret for signing and verifying checkpoints: HMAC-SHA256 under a named key.
///
/// The name is the signed-note key name (e.g. `audit.example.com/2025-01`); the 4-byte key id
/// written in signatures is derived from it ([`key_id`](Self::key_id)). Keep several keys in
/// the verifier's list while rotating. `Debug` never shows the secret.
#[derive(Clone)]
pub struct CheckpointKey {
    id: String,
    key_id: [u8; 4],
    mac: HmacSha256,
}

impl CheckpointKey {
    /// A key named `id` with `secret` (at least [`MIN_CHECKPOINT_SECRET_LEN`] random bytes).
    ///
    /// The name must be non-empty and hold no whitespace, `+` or control characters (the
    /// signed-note key name rules).
    pub fn new(id: impl Into<String>, secret: &[u8]) -> Result<Self, KeyError> {
        let id = id.into();
        if id.is_empty()
            || id.len() > 256
            || id
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '+')
        {
            return Err(KeyError::InvalidId { id });
        }
        if secret.len() < MIN_CHECKPOINT_SECRET_LEN {
            return Err(KeyError::SecretTooShort { len: secret.len() });
        }
        let mac = HmacSha256::new_from_slice(secret)
            .map_err(|_| KeyError::SecretTooShort { len: secret.len() })?;
        let key_id = derive_key_id(&id);
        Ok(Self { id, key_id, mac })
    }

    /// The key name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The signed-note key id: the first 4 bytes, big-endian, of
    /// `SHA-256(name ‖ 0x0a ‖ 0xff ‖ "agent-handoff/checkpoint/hmac-sha256")`.
    pub fn key_id(&self) -> u32 {
        u32::from_be_bytes(self.key_id)
    }

    fn tag(&self, note_text: &[u8]) -> [u8; 32] {
        self.mac
            .clone()
            .chain_update(note_text)
            .finalize()
            .into_bytes()
            .into()
    }
}

impl fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn derive_key_id(name: &str) -> [u8; 4] {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([0x0a, 0xff])
        .chain_update(SIGNATURE_TYPE)
        .finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// A checkpoint key could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key name is empty, too long, or holds whitespace, `+` or control characters.
    #[error("invalid checkpoint key name `{id}`")]
    InvalidId {
        /// The refused name.
        id: String,
    },
    /// The secret is shorter than [`MIN_CHECKPOINT_SECRET_LEN`] bytes.
    #[error("checkpoint secret too short: {len} bytes, at least 32 required")]
    SecretTooShort {
        /// Length given.
        len: usize,
    },
}

/// A checkpoint could not be made, parsed or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The origin is empty, too long, or holds whitespace, `+` or control characters.
    #[error("invalid checkpoint origin `{origin}`")]
    InvalidOrigin {
        /// The refused origin (cut to 64 characters).
        origin: String,
    },
    /// The text is not a checkpoint in our form.
    #[error("malformed checkpoint: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
    /// No signature is by one of the given keys (matched by name and key id).
    #[error("the checkpoint has no signature by a trusted key")]
    NoTrustedSignature,
    /// A signature by a trusted key does not verify: the checkpoint was altered or forged.
    #[error("the checkpoint signature by `{key}` does not verify")]
    BadSignature {
        /// The key name.
        key: String,
    },
    /// The checkpoint is of another chain than the one expected (its origin line differs):
    /// it vouches for nothing here.
    #[error("the checkpoint is of `{found}`, not of `{expected}`")]
    WrongOrigin {
        /// The origin expected (cut to 64 characters).
        expected: String,
        /// The checkpoint's origin (cut to 64 characters).
        found: String,
    },
}

#[derive(Clone, PartialEq, Eq)]
struct NoteSignature {
    name: String,
    key_id: [u8; 4],
    signature: Vec<u8>,
}

/// A signed statement that a chain called `origin` had `size` events with head hash `hash`.
///
/// Text form (a C2SP signed note whose text is a tlog-checkpoint body):
///
/// ```text
/// <origin>\n
/// <size, decimal, no leading zeros>\n
/// <head hash, standard base64 with padding>\n
/// \n
/// — <key name> <standard base64 of (4-byte key id ‖ 32-byte HMAC-SHA256)>\n
/// ```
///
/// The HMAC covers the note text: the three lines including the last newline, not the blank
/// line. See the [module docs](super) for how this deviates from C2SP.
#[derive(Clone, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    head: ChainHead,
    signatures: Vec<NoteSignature>,
}

impl Checkpoint {
    /// Signs `head` of the chain called `origin` with `key`.
    pub fn sign(
        origin: &str,
        head: ChainHead,
        key: &CheckpointKey,
    ) -> Result<Self, CheckpointError> {
        if origin.is_empty()
            || origin.len() > 1024
            || origin
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '+')
        {
            return Err(CheckpointError::InvalidOrigin {
                origin: origin.chars().take(64).collect(),
            });
        }
        let mut checkpoint = Self {
            origin: origin.to_owned(),
            head,
            signatures: Vec::new(),
        };
        checkpoint.cosign(key);
        Ok(checkpoint)
    }

    /// Adds a signature by another key (during a rotation, sign with the old and the new key),
    /// replacing an earlier one by the same key.
    pub fn cosign(&mut self, key: &CheckpointKey) {
        let mut signature = key.key_id.to_vec();
        signature.extend_from_slice(&key.tag(self.note_text().as_bytes()));
        self.signatures
            .retain(|s| !(s.name == key.id && s.key_id == key.key_id));
        self.signatures.push(NoteSignature {
            name: key.id.clone(),
            key_id: key.key_id,
            signature,
        });
    }

    /// Parses the text form. Signatures are not checked: call [`verify`](Self::verify).
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let malformed = |reason| CheckpointError::Malformed { reason };
        if text.len() > MAX_CHECKPOINT_LEN {
            return Err(malformed("longer than 16 KiB"));
        }
        if text.chars().any(|c| c.is_control() && c != '\n') {
            return Err(malformed("contains a control character"));
        }
        if !text.ends_with('\n') {
            return Err(malformed("does not end with a newline"));
        }
        let split = text
            .rfind("\n\n")
            .ok_or(malformed("no blank line before the signatures"))?;
        let (note, signatures) = (&text[..=split], &text[split + 2..]);

        let mut lines = note[..note.len() - 1].split('\n');
        let (Some(origin), Some(size), Some(hash)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(malformed("fewer than three lines before the signatures"));
        };
        if lines.next().is_some() {
            return Err(malformed("extension lines are not supported"));
        }
        if origin.is_empty() {
            return Err(malformed("empty origin"));
        }
        let size = parse_size(size).ok_or(malformed("size is not a canonical decimal u64"))?;
        let hash = decode_hash(hash).ok_or(malformed("head hash is not base64 of 32 bytes"))?;

        let signatures = signatures
            .strip_suffix('\n')
            .ok_or(malformed("no signature lines"))?;
        let mut parsed = Vec::new();
        for line in signatures.split('\n') {
            if parsed.len() == MAX_CHECKPOINT_SIGNATURES {
                return Err(malformed("more than 16 signatures"));
            }
            let rest = line
                .strip_prefix(EM_DASH_SPACE)
                .ok_or(malformed("signature line does not start with an em dash"))?;
            let (name, encoded) = rest
                .split_once(' ')
                .ok_or(malformed("signature line has no key name"))?;
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
                return Err(malformed("invalid key name"));
            }
            let signature = STANDARD
                .decode(encoded)
                .map_err(|_| malformed("signature is not base64"))?;
            if signature.len() < 5 {
                return Err(malformed("signature shorter than a key id and one byte"));
            }
            let key_id = [signature[0], signature[1], signature[2], signature[3]];
            parsed.push(NoteSignature {
                name: name.to_owned(),
                key_id,
                signature,
            });
        }
        Ok(Self {
            origin: origin.to_owned(),
            head: ChainHead { seq: size, hash },
            signatures: parsed,
        })
    }

    /// Checks the signatures against `keys` (several while rotating) and returns the signed
    /// head, following signed-note: signatures by unknown keys (name and key id not both
    /// matching a given key) are ignored; one by a known key that fails refuses the whole
    /// checkpoint; at least one must verify.
    ///
    /// The origin is not checked against anything: compare [`origin`](Self::origin) with the
    /// chain you expect when keys are shared between chains.
    pub fn verify(&self, keys: &[CheckpointKey]) -> Result<ChainHead, CheckpointError> {
        let note = self.note_text();
        let mut verified = false;
        for signature in &self.signatures {
            let Some(key) = keys
                .iter()
                .find(|k| k.id == signature.name && k.key_id == signature.key_id)
            else {
                continue;
            };
            key.mac
                .clone()
                .chain_update(note.as_bytes())
                .verify_slice(&signature.signature[4..])
                .map_err(|_| CheckpointError::BadSignature {
                    key: key.id.clone(),
                })?;
            verified = true;
        }
        if verified {
            Ok(self.head)
        } else {
            Err(CheckpointError::NoTrustedSignature)
        }
    }

    /// [`verify`](Self::verify), after checking that the checkpoint is of the chain called
    /// `origin` ([`CheckpointError::WrongOrigin`] otherwise): what a verifier of one chain
    /// calls, since one key may sign the checkpoints of several chains.
    pub fn verify_for(
        &self,
        origin: &str,
        keys: &[CheckpointKey],
    ) -> Result<ChainHead, CheckpointError> {
        if self.origin != origin {
            return Err(CheckpointError::WrongOrigin {
                expected: origin.chars().take(64).collect(),
                found: self.origin.chars().take(64).collect(),
            });
        }
        self.verify(keys)
    }

    /// The chain's name.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The signed head (size and hash), not verified by itself.
    pub fn head(&self) -> ChainHead {
        self.head
    }

    /// The chain size (number of events).
    pub fn size(&self) -> u64 {
        self.head.seq
    }

    /// The names of the keys that signed (verified or not).
    pub fn signers(&self) -> impl Iterator<Item = &str> {
        self.signatures.iter().map(|s| s.name.as_str())
    }

    /// The text form.
    pub fn to_text(&self) -> String {
        self.to_string()
    }

    fn note_text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.head.seq,
            STANDARD.encode(self.head.hash.as_bytes())
        )
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.note_text())?;
        f.write_str("\n")?;
        for signature in &self.signatures {
            writeln!(
                f,
                "{EM_DASH_SPACE}{} {}",
                signature.name,
                STANDARD.encode(&signature.signature)
            )?;
        }
        Ok(())
    }
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoint")
            .field("origin", &self.origin)
            .field("head", &self.head)
            .field("signers", &self.signers().collect::<Vec<_>>())
            .finish()
    }
}

fn parse_size(text: &str) -> Option<u64> {
    let canonical = text == "0" || (!text.starts_with('0') && !text.is_empty());
    if !canonical || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn decode_hash(text: &str) -> Option<ChainHash> {
    let bytes: [u8; 32] = STANDARD.decode(text).ok()?.try_into().ok()?;
    Some(ChainHash::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, fill: u8) -> CheckpointKey {
        CheckpointKey::new(name, &[fill; 32]).unwrap()
    }

    fn head() -> ChainHead {
        ChainHead {
            seq: 42,
            hash: ChainHash::link(&ChainHash::GENESIS, 1, b"{}"),
        }
    }

    #[test]
    fn text_round_trips_and_verifies() {
        let k = key("audit.example/k1", 1);
        let checkpoint = Checkpoint::sign("audit.example", head(), &k).unwrap();
        let text = checkpoint.to_text();
        assert!(text.starts_with("audit.example\n42\n"));
        assert!(text.contains("\n\n\u{2014} audit.example/k1 "));
        let parsed = Checkpoint::parse(&text).unwrap();
        assert_eq!(parsed, checkpoint);
        assert_eq!(parsed.verify(std::slice::from_ref(&k)), Ok(head()));
    }

    #[test]
    fn key_debug_is_redacted_and_short_secrets_refused() {
        let k = CheckpointKey::new("k", &[0xAB; 32]).unwrap();
        let shown = format!("{k:?}");
        assert!(shown.contains("<redacted>") && !shown.contains("171"));
        assert_eq!(
            CheckpointKey::new("k", &[0; 31]).unwrap_err(),
            KeyError::SecretTooShort { len: 31 }
        );
        assert!(CheckpointKey::new("a b", &[0; 32]).is_err());
        assert!(CheckpointKey::new("a+b", &[0; 32]).is_err());
        assert!(CheckpointKey::new("", &[0; 32]).is_err());
    }

    #[test]
    fn rotation_accepts_either_key_and_ignores_unknown_signatures() {
        let old = key("k-old", 1);
        let new = key("k-new", 2);
        let mut checkpoint = Checkpoint::sign("o", head(), &old).unwrap();
        checkpoint.cosign(&new);
        let parsed = Checkpoint::parse(&checkpoint.to_text()).unwrap();
        assert!(parsed.verify(std::slice::from_ref(&new)).is_ok());
        assert!(parsed.verify(std::slice::from_ref(&old)).is_ok());
        assert_eq!(
            parsed.verify(&[key("other", 3)]),
            Err(CheckpointError::NoTrustedSignature)
        );
    }

    #[test]
    fn a_known_key_with_a_wrong_secret_refuses_the_checkpoint() {
        let signer = key("k", 1);
        let impostor = key("k", 9);
        let checkpoint = Checkpoint::sign("o", head(), &signer).unwrap();
        assert_eq!(
            checkpoint.verify(&[impostor]),
            Err(CheckpointError::BadSignature { key: "k".into() })
        );
    }

    #[test]
    fn altered_fields_fail_verification() {
        let k = key("k", 1);
        let text = Checkpoint::sign("o", head(), &k).unwrap().to_text();
        let bigger = text.replacen("\n42\n", "\n43\n", 1);
        let parsed = Checkpoint::parse(&bigger).unwrap();
        assert!(matches!(
            parsed.verify(std::slice::from_ref(&k)),
            Err(CheckpointError::BadSignature { .. })
        ));
        let renamed = text.replacen("o\n", "p\n", 1);
        assert!(Checkpoint::parse(&renamed)
            .unwrap()
            .verify(std::slice::from_ref(&k))
            .is_err());
    }

    #[test]
    fn malformed_texts_are_refused() {
        let k = key("k", 1);
        let good = Checkpoint::sign("o", head(), &k).unwrap().to_text();
        let cases = [
            good.trim_end().to_owned(),
            good.replacen("\n42\n", "\n042\n", 1),
            good.replacen("\n42\n", "\n-1\n", 1),
            good.replacen("\n42\n", "\n99999999999999999999\n", 1),
            good.replacen("=\n", "\n", 1),
            good.replacen("\n\n", "\next\n\n", 1),
            good.replacen('\u{2014}', "-", 1),
            good.replacen("\n\n", "\n", 1),
            good.replacen("o\n", "\n", 1),
            good.replacen("o\n", "o\r\n", 1),
            format!("{}\n", &good[..good.find("\n\n").unwrap() + 1]),
            good.replacen(" k ", " k+ ", 1),
        ];
        for case in cases {
            assert!(
                matches!(
                    Checkpoint::parse(&case),
                    Err(CheckpointError::Malformed { .. })
                ),
                "accepted {case:?}"
            );
        }
        let many = format!(
            "{good}{}",
            good[good.find("\u{2014}").unwrap()..].repeat(16)
        );
        assert!(Checkpoint::parse(&many).is_err());
        assert!(Checkpoint::sign("with space", head(), &k).is_err());
        assert!(Checkpoint::sign("", head(), &k).is_err());
    }

    #[test]
    fn a_checkpoint_of_another_origin_is_refused_for_this_one() {
        let k = key("k", 1);
        let checkpoint = Checkpoint::sign("prod", head(), &k).unwrap();
        assert_eq!(
            checkpoint.verify_for("prod", std::slice::from_ref(&k)),
            Ok(head())
        );
        assert_eq!(
            checkpoint.verify_for("staging", std::slice::from_ref(&k)),
            Err(CheckpointError::WrongOrigin {
                expected: "staging".into(),
                found: "prod".into()
            })
        );
    }

    #[test]
    fn empty_chain_checkpoint_has_size_zero() {
        let k = key("k", 1);
        let text = Checkpoint::sign("o", ChainHead::GENESIS, &k)
            .unwrap()
            .to_text();
        assert!(text.starts_with("o\n0\n"));
        assert_eq!(
            Checkpoint::parse(&text).unwrap().verify(&[k]),
            Ok(ChainHead::GENESIS)
        );
    }
}

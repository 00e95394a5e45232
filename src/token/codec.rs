//! The binary payload of a version 1 token (layout in the module docs).

use uuid::Uuid;

use super::claims::{TokenClaims, TokenNonce, VerdictKind};
use super::error::MalformedToken;
use crate::action::KeyedDigest;
use crate::id::{PersonId, TicketId};
use crate::timestamp::Timestamp;

/// Longest key id, in bytes.
pub(crate) const MAX_KEY_ID_LEN: usize = 32;

/// Key ids: 1 to 32 ASCII letters, digits, `.`, `_` or `-`.
pub(crate) fn is_valid_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Writes the payload. `key_id` must be valid (checked when the key was built).
pub(crate) fn encode(key_id: &str, claims: &TokenClaims) -> Vec<u8> {
    let reviewer = claims.reviewer.as_ref().map_or("", PersonId::as_str);
    let mut out = Vec::with_capacity(86 + key_id.len() + reviewer.len());
    // Both lengths fit: key ids are at most 32 bytes, person ids at most 256.
    out.push(key_id.len() as u8);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(claims.ticket.as_uuid().as_bytes());
    out.push(claims.verdict.code());
    out.extend_from_slice(&claims.issued_at.as_unix_millis().to_be_bytes());
    out.extend_from_slice(&claims.expires_at.as_unix_millis().to_be_bytes());
    out.extend_from_slice(claims.nonce.as_bytes());
    out.extend_from_slice(claims.digest.as_bytes());
    out.extend_from_slice(&(reviewer.len() as u16).to_be_bytes());
    out.extend_from_slice(reviewer.as_bytes());
    out
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MalformedToken> {
        if self.rest.len() < n {
            return Err(MalformedToken::Payload("payload too short"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MalformedToken> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

/// Reads the payload: the key id (still to be looked up) and the claims (still to be
/// authenticated).
pub(crate) fn decode(payload: &[u8]) -> Result<(&str, TokenClaims), MalformedToken> {
    let mut r = Reader { rest: payload };
    let [key_id_len] = r.array::<1>()?;
    let key_id = std::str::from_utf8(r.take(usize::from(key_id_len))?)
        .ok()
        .filter(|id| is_valid_key_id(id))
        .ok_or(MalformedToken::Payload("invalid key id"))?;
    let ticket = TicketId::from_uuid(Uuid::from_bytes(r.array()?));
    let [verdict] = r.array::<1>()?;
    let verdict =
        VerdictKind::from_code(verdict).ok_or(MalformedToken::Payload("unknown verdict"))?;
    let issued_at = Timestamp::from_unix_millis(i64::from_be_bytes(r.array()?));
    let expires_at = Timestamp::from_unix_millis(i64::from_be_bytes(r.array()?));
    let nonce = TokenNonce::from_bytes(r.array()?);
    let digest = KeyedDigest::from_bytes(r.array()?);
    let reviewer_len = u16::from_be_bytes(r.array()?);
    let reviewer = match reviewer_len {
        0 => None,
        n => {
            let text = std::str::from_utf8(r.take(usize::from(n))?)
                .map_err(|_| MalformedToken::Payload("reviewer id is not UTF-8"))?;
            Some(PersonId::new(text).map_err(|_| MalformedToken::Payload("invalid reviewer id"))?)
        }
    };
    if !r.rest.is_empty() {
        return Err(MalformedToken::Payload("trailing bytes after the payload"));
    }
    Ok((
        key_id,
        TokenClaims {
            ticket,
            reviewer,
            verdict,
            digest,
            issued_at,
            expires_at,
            nonce,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(reviewer: Option<&str>) -> TokenClaims {
        TokenClaims {
            ticket: TicketId::from_uuid(Uuid::from_u128(0x0102)),
            reviewer: reviewer.map(|r| PersonId::new(r).unwrap()),
            verdict: VerdictKind::RequestChanges,
            digest: KeyedDigest::from_bytes([9; 32]),
            issued_at: Timestamp::from_unix_millis(-5),
            expires_at: Timestamp::from_unix_millis(i64::MAX),
            nonce: TokenNonce::from_bytes([3; 16]),
        }
    }

    #[test]
    fn payload_round_trips_with_and_without_reviewer() {
        for reviewer in [None, Some("alice"), Some(&*"é".repeat(128))] {
            let c = claims(reviewer);
            let bytes = encode("k1", &c);
            assert_eq!(decode(&bytes), Ok(("k1", c)));
        }
    }

    #[test]
    fn payload_layout_is_fixed() {
        let bytes = encode("k1", &claims(None));
        assert_eq!(bytes.len(), 1 + 2 + 16 + 1 + 8 + 8 + 16 + 32 + 2);
        assert_eq!(&bytes[..3], b"\x02k1");
        assert_eq!(bytes[19], 4);
        assert_eq!(&bytes[20..28], &(-5i64).to_be_bytes());
    }

    #[test]
    fn bad_payloads_are_refused() {
        let good = encode("k1", &claims(Some("bob")));
        assert!(decode(&good[..good.len() - 1]).is_err());
        let mut longer = good.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        let mut bad_verdict = good.clone();
        bad_verdict[19] = 0;
        assert!(decode(&bad_verdict).is_err());
        let mut bad_key = good.clone();
        bad_key[1] = b' ';
        assert!(decode(&bad_key).is_err());
        let mut empty_key = good;
        empty_key[0] = 0;
        assert!(decode(&empty_key).is_err());
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn key_id_rules() {
        assert!(is_valid_key_id("2025-01.a_b"));
        assert!(!is_valid_key_id(""));
        assert!(!is_valid_key_id(&"a".repeat(33)));
        assert!(!is_valid_key_id("a/b"));
    }
}

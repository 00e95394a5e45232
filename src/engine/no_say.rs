//! Refusals of authenticated people who have no say on a ticket, coalesced.
//!
//! A person the directory knows can still have nothing to do with a ticket: they are in none
//! of its required groups ([`Refusal::NotEligible`](crate::ticket::Refusal::NotEligible)), or
//! they present a decision link issued to someone else (`wrong_reviewer`). Each such attempt
//! changes nothing, yet written one by one they would let anyone with a login fill the audit
//! chain and the decisions table. So per key — (ticket, person, refusal) and, for a link
//! bound to another reviewer, the link too — one attempt per one-minute window is recorded as
//! usual; the others are refused all the same but only counted (by the engine's
//! [`Coalescer`]), and the count is written as one `refused` row of that person
//! (`detail: {coalesced: n, since}`) with the next attempt recorded under the key after the
//! window, or by the first [`Handoff::expire_due`](crate::Handoff::expire_due) sweep after it.
//! A coalesced attempt writes nothing at all: no audit or decision row, and it spends no token
//! (it could not decide anything with it either).

use serde_json::json;

use super::coalesce::{Admit, Coalescer};
use crate::audit::{kind, Actor, AuditRecord};
use crate::codes::{self, Code};
use crate::id::{PersonId, TicketId};
use crate::timestamp::Timestamp;

/// What attempts are counted together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) ticket: TicketId,
    pub(crate) person: PersonId,
    /// The refusal's stable code.
    pub(crate) code: Code,
    /// The link presented, for refusals counted per link.
    pub(crate) token: Option<LinkRef>,
}

/// A decision link, as its audit `token` note names it: the key that signed it and its nonce.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct LinkRef {
    pub(crate) key_id: String,
    pub(crate) nonce: [u8; 16],
}

/// Whether an attempt is recorded.
#[derive(Debug)]
pub(crate) enum Recorded {
    /// Record it, preceded by this summary of the attempts counted before, if any.
    Yes(Option<AuditRecord>),
    /// Counted: write nothing.
    Coalesced,
}

/// The coalescing windows of one engine.
#[derive(Debug, Default)]
pub(crate) struct NoSay {
    windows: Coalescer<Key>,
}

impl NoSay {
    /// Decides whether the attempt under `key` at `now` is recorded.
    pub(crate) fn admit(&mut self, key: &Key, now: Timestamp) -> Recorded {
        match self.windows.admit(key, now, 1) {
            Admit::Count => Recorded::Coalesced,
            Admit::Write { suppressed } => {
                Recorded::Yes(suppressed.map(|(n, since)| summary(key, n, since, now)))
            }
        }
    }

    /// Takes back an admission whose record could not be written, as if it had not been
    /// made: the key's window is closed (its next attempt is recorded) and the count its
    /// `summary` carried, if any, restored.
    pub(crate) fn undo(&mut self, key: &Key, summary: Option<AuditRecord>) {
        self.windows.forget(key);
        self.restore(summary.as_slice());
    }

    /// The summaries of every window over at `now` that counted attempts.
    pub(crate) fn due(&mut self, now: Timestamp) -> Vec<AuditRecord> {
        let mut due = self.windows.due(now);
        due.sort_by_key(|(_, _, since)| *since);
        due.into_iter()
            .map(|(key, n, since)| summary(&key, n, since, now))
            .collect()
    }

    /// Gives summaries that could not be written back to their keys: each is written with the
    /// next attempt recorded under its key, or by the next sweep.
    pub(crate) fn restore(&mut self, records: &[AuditRecord]) {
        for r in records {
            let (Some(ticket), Actor::Reviewer(person)) = (r.ticket, &r.actor) else {
                continue;
            };
            let Some(code) = r.data["refusal"].as_str().and_then(codes::lookup) else {
                continue;
            };
            let detail = &r.data["detail"];
            let (Some(n), Some(since)) = (detail["coalesced"].as_u64(), detail["since"].as_i64())
            else {
                continue;
            };
            let note = &r.data["token"];
            let token = match (note["key_id"].as_str(), note["nonce"].as_str()) {
                (Some(key_id), Some(nonce)) => parse_hex16(nonce).map(|nonce| LinkRef {
                    key_id: key_id.to_owned(),
                    nonce,
                }),
                _ => None,
            };
            let key = Key {
                ticket,
                person: person.clone(),
                code,
                token,
            };
            self.windows
                .restore(key, n, Timestamp::from_unix_millis(since), r.at);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex16(s: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    if s.len() != 32 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The row that writes a window's count.
fn summary(key: &Key, n: u64, since: Timestamp, now: Timestamp) -> AuditRecord {
    let mut data = json!({
        "refusal": key.code,
        "detail": { "coalesced": n, "since": since.as_unix_millis() },
    });
    if let (Some(link), Some(obj)) = (&key.token, data.as_object_mut()) {
        obj.insert(
            "token".to_owned(),
            json!({ "key_id": link.key_id, "nonce": hex(&link.nonce) }),
        );
    }
    AuditRecord::new(
        Some(key.ticket),
        now,
        kind::REFUSED,
        Actor::Reviewer(key.person.clone()),
        data,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: Code) -> Key {
        Key {
            ticket: TicketId::from_uuid(uuid::Uuid::from_bytes([1; 16])),
            person: PersonId::new("erin").unwrap(),
            code,
            token: (code == codes::WRONG_REVIEWER).then(|| LinkRef {
                key_id: "k1".into(),
                nonce: [7; 16],
            }),
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_unix_millis(s * 1000)
    }

    #[test]
    fn one_attempt_per_window_is_recorded_and_the_rest_counted() {
        let mut c = NoSay::default();
        let k = key(codes::WRONG_REVIEWER);
        assert!(matches!(c.admit(&k, at(0)), Recorded::Yes(None)));
        for s in 1..60 {
            assert!(matches!(c.admit(&k, at(s)), Recorded::Coalesced));
        }
        assert!(c.due(at(59)).is_empty(), "the window is not over");
        let Recorded::Yes(Some(summary)) = c.admit(&k, at(60)) else {
            panic!("a new window writes the count")
        };
        assert_eq!(summary.data["detail"]["coalesced"], 59);
        assert_eq!(summary.data["detail"]["since"], 1000);
        assert_eq!(summary.data["token"]["key_id"], "k1");
        assert_eq!(summary.data["token"]["nonce"], hex(&[7; 16]));
        assert_eq!(
            summary.actor,
            Actor::Reviewer(PersonId::new("erin").unwrap())
        );
    }

    #[test]
    fn the_sweep_writes_counts_and_a_failed_write_gives_them_back() {
        let mut c = NoSay::default();
        for k in [key(codes::NOT_ELIGIBLE), key(codes::WRONG_REVIEWER)] {
            let _ = c.admit(&k, at(0));
            let _ = c.admit(&k, at(5));
            let due = c.due(at(61));
            assert_eq!(due.len(), 1);
            assert_eq!(due[0].data["detail"]["coalesced"], 1);
            // Restored after a failed write: written by the next sweep, or with the next
            // attempt recorded.
            c.restore(&due);
            let again = c.due(at(61));
            assert_eq!(again.len(), 1);
            c.restore(&again);
            let Recorded::Yes(Some(summary)) = c.admit(&k, at(62)) else {
                panic!("recorded with the restored count")
            };
            assert_eq!(summary.data["detail"]["coalesced"], 1);
            // An admission taken back: the next attempt is recorded, with the count.
            c.undo(&k, Some(summary));
            let Recorded::Yes(Some(summary)) = c.admit(&k, at(63)) else {
                panic!("recorded again, with the count")
            };
            assert_eq!(summary.data["detail"]["coalesced"], 1);
        }
    }
}

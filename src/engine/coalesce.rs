//! Refusals of authenticated people who have no say on a ticket, coalesced.
//!
//! A person the directory knows can still have nothing to do with a ticket: they are in none
//! of its required groups ([`Refusal::NotEligible`](crate::ticket::Refusal::NotEligible)), or
//! they present a decision link issued to someone else (`wrong_reviewer`). Each such attempt
//! changes nothing, yet written one by one they would let anyone with a login fill the audit
//! chain and the decisions table. So per key — (ticket, person, refusal) and, for a link
//! bound to another reviewer, the link's nonce too — one attempt per one-minute window is
//! recorded as usual; the others are refused all the same but only counted, and the count
//! is written as one `refused` row of that person (`detail: {coalesced: n, since}`) with the
//! next attempt recorded under the key after the window, or by the first
//! [`Handoff::expire_due`](crate::Handoff::expire_due) sweep after it. A coalesced attempt
//! writes nothing at all: no audit or decision row, and it spends no token (it could not
//! decide anything with it either).
//!
//! Memory is bounded: the sweep drops keys whose window is over, and beyond [`MAX_KEYS`]
//! live keys new ones are not tracked (their attempts are recorded one by one, which the
//! number of tickets and people bounds).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::audit::{kind, Actor, AuditRecord};
use crate::id::{PersonId, TicketId};
use crate::timestamp::Timestamp;

/// How long one recorded attempt stands for the attempts of its key that follow it.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// Most keys tracked at once.
pub(crate) const MAX_KEYS: usize = 16_384;

/// What attempts are counted together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) ticket: TicketId,
    pub(crate) person: PersonId,
    /// The refusal's stable code.
    pub(crate) code: &'static str,
    /// The nonce of the link presented, for refusals counted per link.
    pub(crate) token: Option<[u8; 16]>,
}

#[derive(Debug)]
struct Window {
    start: Timestamp,
    /// Attempts counted but not written since `since`.
    suppressed: u64,
    since: Option<Timestamp>,
    /// The `token` note of the recorded attempt, repeated on its summary.
    note: Option<Value>,
}

/// Whether an attempt is recorded.
#[derive(Debug)]
pub(crate) enum Admit {
    /// Record it, preceded by this summary of the attempts counted before, if any.
    Record(Option<AuditRecord>),
    /// Counted: write nothing.
    Coalesced,
}

/// The coalescing windows of one engine.
#[derive(Debug, Default)]
pub(crate) struct Coalescer {
    windows: HashMap<Key, Window>,
}

impl Coalescer {
    /// Decides whether the attempt under `key` at `now` is recorded. `note` is the `token`
    /// note of its audit record, if any.
    pub(crate) fn admit(&mut self, key: Key, now: Timestamp, note: Option<&Value>) -> Admit {
        match self.windows.get_mut(&key) {
            Some(w) if now < w.start.saturating_add(WINDOW) => {
                w.suppressed += 1;
                w.since.get_or_insert(now);
                Admit::Coalesced
            }
            Some(w) => {
                let summary = summary(&key, w, now);
                w.start = now;
                w.note = note.cloned();
                Admit::Record(summary)
            }
            None => {
                if self.windows.len() >= MAX_KEYS {
                    self.windows
                        .retain(|_, w| now < w.start.saturating_add(WINDOW));
                }
                if self.windows.len() < MAX_KEYS {
                    self.windows.insert(
                        key,
                        Window {
                            start: now,
                            suppressed: 0,
                            since: None,
                            note: note.cloned(),
                        },
                    );
                }
                Admit::Record(None)
            }
        }
    }

    /// The summaries of every window over at `now` that counted attempts; those windows are
    /// dropped (the next attempt under their key opens a new one).
    pub(crate) fn due(&mut self, now: Timestamp) -> Vec<AuditRecord> {
        let mut out = Vec::new();
        self.windows.retain(|key, w| {
            if now < w.start.saturating_add(WINDOW) {
                return true;
            }
            out.extend(summary(key, w, now));
            false
        });
        out.sort_by_key(|r| r.data["detail"]["since"].as_i64());
        out
    }

    /// Takes back an admission whose record could not be written, as if it had not been
    /// made: the window it opened is closed (the next attempt under `key` is recorded) and
    /// its `summary`, if any, restored.
    pub(crate) fn undo(&mut self, key: &Key, summary: Option<AuditRecord>) {
        self.windows.remove(key);
        self.restore(summary.as_slice());
    }

    /// Gives summaries that could not be written back to their keys, in windows already over:
    /// each is written with the next attempt recorded under its key, or by the next sweep.
    pub(crate) fn restore(&mut self, records: &[AuditRecord]) {
        for r in records {
            let (Some(ticket), Actor::Reviewer(person)) = (r.ticket, &r.actor) else {
                continue;
            };
            let Some(code) = KNOWN.iter().find(|c| r.data["refusal"] == **c) else {
                continue;
            };
            let detail = &r.data["detail"];
            let (Some(n), Some(since)) = (detail["coalesced"].as_u64(), detail["since"].as_i64())
            else {
                continue;
            };
            let token = r.data["token"]["nonce"].as_str().and_then(parse_hex16);
            let key = Key {
                ticket,
                person: person.clone(),
                code,
                token,
            };
            let w = self.windows.entry(key).or_insert(Window {
                start: r.at.saturating_sub(WINDOW),
                suppressed: 0,
                since: None,
                note: r.data.get("token").cloned(),
            });
            w.suppressed += n;
            let since = Timestamp::from_unix_millis(since);
            w.since = Some(w.since.map_or(since, |s| s.min(since)));
        }
    }
}

/// The refusal codes coalesced here.
const KNOWN: &[&str] = &["not_eligible", "wrong_reviewer"];

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

/// The row that writes a window's count, if it counted anything (taking the count).
fn summary(key: &Key, w: &mut Window, now: Timestamp) -> Option<AuditRecord> {
    if w.suppressed == 0 {
        return None;
    }
    let since = w.since.take().unwrap_or(now);
    let mut data = json!({
        "refusal": key.code,
        "detail": {
            "coalesced": std::mem::take(&mut w.suppressed),
            "since": since.as_unix_millis(),
        },
    });
    if let (Some(note), Some(obj)) = (&w.note, data.as_object_mut()) {
        obj.insert("token".to_owned(), note.clone());
    }
    Some(AuditRecord {
        ticket: Some(key.ticket),
        at: now,
        kind: kind::REFUSED.to_owned(),
        actor: Actor::Reviewer(key.person.clone()),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: &'static str) -> Key {
        Key {
            ticket: TicketId::from_uuid(uuid::Uuid::from_bytes([1; 16])),
            person: PersonId::new("erin").unwrap(),
            code,
            // Links are keyed by their nonce, which the summary's `token` note carries.
            token: (code == "wrong_reviewer").then_some([7; 16]),
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_unix_millis(s * 1000)
    }

    #[test]
    fn one_attempt_per_window_is_recorded_and_the_rest_counted() {
        let mut c = Coalescer::default();
        assert!(matches!(
            c.admit(key("wrong_reviewer"), at(0), None),
            Admit::Record(None)
        ));
        for s in 1..60 {
            assert!(matches!(
                c.admit(key("wrong_reviewer"), at(s), None),
                Admit::Coalesced
            ));
        }
        assert!(c.due(at(59)).is_empty(), "the window is not over");
        let Admit::Record(Some(summary)) = c.admit(key("wrong_reviewer"), at(60), None) else {
            panic!("a new window writes the count")
        };
        assert_eq!(summary.data["detail"]["coalesced"], 59);
        assert_eq!(summary.data["detail"]["since"], 1000);
        assert_eq!(
            summary.actor,
            Actor::Reviewer(PersonId::new("erin").unwrap())
        );
    }

    #[test]
    fn the_sweep_writes_counts_of_windows_over_and_forgets_them() {
        let mut c = Coalescer::default();
        let _ = c.admit(key("not_eligible"), at(0), None);
        let _ = c.admit(key("not_eligible"), at(5), None);
        let due = c.due(at(61));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].data["detail"]["coalesced"], 1);
        assert!(c.windows.is_empty());
        // Restored after a failed write, it is written by the next sweep, or with the next
        // attempt recorded.
        c.restore(&due);
        let again = c.due(at(61));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].data["detail"]["coalesced"], 1);
        c.restore(&again);
        let Admit::Record(Some(summary)) = c.admit(key("not_eligible"), at(62), None) else {
            panic!("recorded with the restored count")
        };
        assert_eq!(summary.data["detail"]["coalesced"], 1);
    }
}

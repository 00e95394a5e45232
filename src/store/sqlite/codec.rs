//! Rows to types and back.

use rusqlite::{params, Connection, Row};

use super::schema::sql_err;
use crate::action::Requester;
use crate::audit::{AuditEvent, ChainHash, RawEvent, TextRef, TextRow};
use crate::backend::{DecisionRow, OutboxEntry, OutboxRow, OutboxStatus, StoreError};
use crate::id::{GroupName, PersonId, TicketId};
use crate::policy::Outcome;
use crate::ticket::{Ticket, TicketState};
use crate::timestamp::Timestamp;

/// The indexed columns of a ticket row.
pub(super) struct TicketRow {
    pub(super) id: [u8; 16],
    pub(super) agent: String,
    /// The principal, `""` for none (see [`principal_column`]).
    pub(super) principal: String,
    pub(super) key: String,
    pub(super) state: &'static str,
    pub(super) version: i64,
    pub(super) digest: [u8; 32],
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) due_at: Option<i64>,
    pub(super) body: String,
}

impl TicketRow {
    pub(super) fn of(ticket: &Ticket) -> Result<Self, StoreError> {
        Ok(Self {
            id: *ticket.id().as_uuid().as_bytes(),
            agent: ticket.requester().agent().as_str().to_owned(),
            principal: principal_column(ticket.requester()).to_owned(),
            key: ticket.idempotency_key().as_str().to_owned(),
            state: ticket.state().name().as_str(),
            version: i64::try_from(ticket.version())
                .map_err(|_| StoreError::Corrupt("version overflow".into()))?,
            digest: *ticket.action_digest().as_bytes(),
            created_at: ticket.created_at().as_unix_millis(),
            updated_at: ticket.updated_at().as_unix_millis(),
            due_at: due_at(ticket).map(Timestamp::as_unix_millis),
            body: serde_json::to_string(ticket)
                .map_err(|e| StoreError::Corrupt(format!("ticket does not serialise: {e}")))?,
        })
    }
}

/// The `principal` column of a requester: the principal's id, or `""` when the agent acts on
/// its own — a value, not `NULL`, so the `UNIQUE (agent, principal, idempotency_key)` index
/// holds for requesters without a principal too (a person id is never empty).
pub(super) fn principal_column(requester: &Requester) -> &str {
    requester.principal().map_or("", |p| p.as_str())
}

/// When the ticket's state changes by time alone, if it can.
pub(crate) fn due_at(ticket: &Ticket) -> Option<Timestamp> {
    match ticket.state() {
        TicketState::Pending => ticket.deadline(),
        TicketState::Approved(a) => Some(a.valid_until),
        TicketState::Executing { lease_expires, .. } => Some(*lease_expires),
        _ => None,
    }
}

/// The groups named by a ticket's review requirements.
pub(super) fn groups_of(ticket: &Ticket) -> Vec<GroupName> {
    match &ticket.ruling().outcome {
        Outcome::Review(plan) => plan
            .requirements
            .iter()
            .flat_map(|r| r.groups.iter().cloned())
            .collect(),
        _ => Vec::new(),
    }
}

pub(super) fn ticket_from_body(body: &str) -> Result<Ticket, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("ticket body: {e}")))
}

pub(super) fn ticket_id(bytes: &[u8]) -> Result<TicketId, StoreError> {
    uuid::Uuid::from_slice(bytes)
        .map(TicketId::from_uuid)
        .map_err(|_| StoreError::Corrupt("ticket id is not 16 bytes".into()))
}

pub(super) fn hash32(bytes: &[u8]) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("hash is not 32 bytes".into()))
}

/// Appends a chained event, stamped with the commit time of its transaction.
pub(super) fn insert_event(
    conn: &Connection,
    event: &AuditEvent,
    committed_at: Timestamp,
) -> Result<(), StoreError> {
    let record = event.record();
    conn.prepare_cached(
        "INSERT INTO audit_events (seq, ticket_id, at, kind, bytes, prev_hash, hash, committed_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut s| {
        s.execute(params![
            event.seq() as i64,
            record.ticket.map(|t| *t.as_uuid().as_bytes()),
            record.at.as_unix_millis(),
            record.kind,
            event.bytes(),
            &event.prev_hash().as_bytes()[..],
            &event.hash().as_bytes()[..],
            committed_at.as_unix_millis(),
        ])
    })
    .map_err(sql_err)?;
    Ok(())
}

/// Keeps the texts of a chained event beside it.
pub(super) fn insert_texts(conn: &Connection, event: &AuditEvent) -> Result<(), StoreError> {
    if event.texts().is_empty() {
        return Ok(());
    }
    let mut s = conn
        .prepare_cached("INSERT INTO audit_texts (seq, name, value, salt) VALUES (?1, ?2, ?3, ?4)")
        .map_err(sql_err)?;
    for text in event.texts() {
        // `check_texts` made sure every text is kept.
        let Some(row) = TextRow::of(event.seq(), text) else {
            return Err(StoreError::InvalidWrite(format!(
                "audit text `{}` is not kept",
                text.name()
            )));
        };
        s.execute(params![
            event.seq() as i64,
            row.name,
            row.value,
            row.salt.as_ref().map(|s| &s[..]),
        ])
        .map_err(sql_err)?;
    }
    Ok(())
}

/// Drops a kept text's value and salt, recording the erasing event.
pub(super) fn erase_text(
    conn: &Connection,
    text: &TextRef,
    erased_by: u64,
) -> Result<(), StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE audit_texts SET value = NULL, salt = NULL, erased_by = ?3 \
             WHERE seq = ?1 AND name = ?2 AND erased_by IS NULL",
        )
        .and_then(|mut s| {
            s.execute(params![
                i64::try_from(text.seq).unwrap_or(i64::MAX),
                text.name,
                erased_by as i64
            ])
        })
        .map_err(sql_err)?;
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::NoSuchText(text.clone()))
    }
}

/// `SELECT seq, name, value, salt, erased_by FROM audit_texts` → a side-table row.
pub(super) fn text_from_row(row: &Row<'_>) -> rusqlite::Result<Result<TextRow, StoreError>> {
    let seq: i64 = row.get(0)?;
    let name: String = row.get(1)?;
    let value: Option<String> = row.get(2)?;
    let salt: Option<Vec<u8>> = row.get(3)?;
    let erased_by: Option<i64> = row.get(4)?;
    Ok((|| {
        let corrupt = |what: &str| StoreError::Corrupt(format!("audit text {what}"));
        Ok(TextRow {
            seq: u64::try_from(seq).map_err(|_| corrupt("seq"))?,
            name,
            value,
            // A salt of another length cannot open a commitment: read as none, so the text
            // shows as altered rather than failing the read.
            salt: salt.and_then(|s| <[u8; 32]>::try_from(s.as_slice()).ok()),
            erased_by: erased_by
                .map(|e| u64::try_from(e).map_err(|_| corrupt("erasing event")))
                .transpose()?,
        })
    })())
}

/// `SELECT seq, bytes, prev_hash, hash` → a stored event, undecoded.
pub(super) fn raw_from_row(row: &Row<'_>) -> rusqlite::Result<Result<RawEvent, StoreError>> {
    let seq: i64 = row.get(0)?;
    let bytes: Vec<u8> = row.get(1)?;
    let prev: Vec<u8> = row.get(2)?;
    let hash: Vec<u8> = row.get(3)?;
    Ok((|| {
        Ok(RawEvent {
            seq: u64::try_from(seq).map_err(|_| StoreError::Corrupt("negative seq".into()))?,
            bytes,
            prev_hash: ChainHash::from_bytes(hash32(&prev)?),
            hash: ChainHash::from_bytes(hash32(&hash)?),
        })
    })())
}

/// `SELECT seq, bytes, prev_hash, hash, ticket_id, kind, at` → a stored event, undecoded,
/// after checking that the unhashed index columns agree with the hashed bytes
/// ([`StoreError::MisfiledAuditEvent`] otherwise).
pub(super) fn filed_raw_from_row(row: &Row<'_>) -> rusqlite::Result<Result<RawEvent, StoreError>> {
    /// The indexed fields of an event's bytes; everything else is skipped unparsed.
    #[derive(serde::Deserialize)]
    struct Filed<'a> {
        #[serde(borrow)]
        kind: std::borrow::Cow<'a, str>,
        at: i64,
        ticket: Option<TicketId>,
    }
    let ticket: Option<Vec<u8>> = row.get(4)?;
    let kind: String = row.get(5)?;
    let at: i64 = row.get(6)?;
    Ok(raw_from_row(row)?.and_then(|raw| {
        let filed = serde_json::from_slice::<Filed<'_>>(&raw.bytes).ok();
        let agrees = filed.is_some_and(|f| {
            f.kind == kind
                && f.at == at
                && f.ticket.map(|t| t.as_uuid().as_bytes().to_vec()) == ticket
        });
        // An event whose own hash does not hold is left to the chain verifier, which names
        // it more precisely (edited bytes, not an edited index).
        if agrees || ChainHash::link(&raw.prev_hash, raw.seq, &raw.bytes) != raw.hash {
            Ok(raw)
        } else {
            Err(StoreError::MisfiledAuditEvent { seq: raw.seq })
        }
    }))
}

/// `SELECT seq, bytes, prev_hash, hash` → a decoded event.
pub(super) fn event_from_row(row: &Row<'_>) -> rusqlite::Result<Result<AuditEvent, StoreError>> {
    Ok(raw_from_row(row)?.and_then(|raw| {
        let seq = raw.seq;
        AuditEvent::decode(raw).map_err(|e| StoreError::Corrupt(format!("audit event {seq}: {e}")))
    }))
}

/// `SELECT ticket_id, person, verdict, refusal, at` → a decision.
pub(super) fn decision_from_row(
    row: &Row<'_>,
) -> rusqlite::Result<Result<DecisionRow, StoreError>> {
    let ticket: Vec<u8> = row.get(0)?;
    let person: Option<String> = row.get(1)?;
    let verdict: String = row.get(2)?;
    let refusal: Option<String> = row.get(3)?;
    let at: i64 = row.get(4)?;
    Ok((|| {
        Ok(DecisionRow {
            ticket: ticket_id(&ticket)?,
            person: person
                .map(PersonId::new)
                .transpose()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            verdict,
            refusal,
            at: Timestamp::from_unix_millis(at),
        })
    })())
}

/// An outbox row from `SELECT id, ticket_id, channel, payload, due_at, attempts, status,
/// receipt, last_error`.
pub(super) fn outbox_from_row(r: &Row<'_>) -> rusqlite::Result<Result<OutboxEntry, StoreError>> {
    let id: Vec<u8> = r.get(0)?;
    let ticket: Vec<u8> = r.get(1)?;
    let channel: String = r.get(2)?;
    let payload: String = r.get(3)?;
    let due: i64 = r.get(4)?;
    let attempts: i64 = r.get(5)?;
    let status: String = r.get(6)?;
    let receipt: Option<String> = r.get(7)?;
    let last_error: Option<String> = r.get(8)?;
    Ok((|| {
        let corrupt = |what: &str| StoreError::Corrupt(format!("outbox {what}"));
        let id = uuid::Uuid::from_slice(&id).map_err(|_| corrupt("id"))?;
        let status = match status.as_str() {
            "pending" => OutboxStatus::Pending,
            "delivered" => OutboxStatus::Delivered,
            "dead" => OutboxStatus::Dead,
            _ => return Err(corrupt("status")),
        };
        Ok(OutboxEntry {
            row: OutboxRow {
                id,
                ticket: ticket_id(&ticket)?,
                channel,
                payload: serde_json::from_str(&payload).map_err(|_| corrupt("payload"))?,
                due: Timestamp::from_unix_millis(due),
            },
            status,
            attempts: u32::try_from(attempts).map_err(|_| corrupt("attempts"))?,
            receipt: receipt
                .map(|r| serde_json::from_str(&r).map_err(|_| corrupt("receipt")))
                .transpose()?,
            last_error,
        })
    })())
}

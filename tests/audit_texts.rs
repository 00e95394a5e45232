//! Free text beside the chain, through the public API: feedback, errors, reasons and
//! precondition values enter the hash chain only as salted commitments, are read back with the
//! ticket's history, can be erased by an audited operator operation without breaking
//! verification, and a side table edited outside the library is reported, never shown as
//! evidence. Also the streams over the chain and over one ticket's history.

#![cfg(feature = "sqlite")]

mod support;

use std::collections::BTreeMap;

use agent_handoff::audit::{TextRef, TextState, VerifyError};
use agent_handoff::ticket::{ExecutionOutcome, Verdict};
use agent_handoff::{AuditError, AuditFinding, DecideError, Proposal, TicketId};
use rusqlite::Connection;
use serde_json::json;
use support::*;

const IBAN: &str = "DE89370400440532013000";

fn pending(p: Proposal) -> TicketId {
    match p {
        Proposal::Pending(p) => p.id,
        other => panic!("expected pending, got {other:?}"),
    }
}

async fn file_harness() -> Harness {
    Harness::with(Setup {
        backing: Backing::File,
        ..Setup::default()
    })
    .await
}

/// The whole stored chain's bytes, as one string.
async fn chain_text(h: &Harness) -> String {
    let mut stream = h.handoff.raw_audit_stream(1);
    let mut text = String::new();
    while let Some(event) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&event.unwrap().bytes));
        text.push('\n');
    }
    text
}

/// A ticket rejected with feedback naming an IBAN, one cancelled with a reason naming it, one
/// failed with an error naming it.
async fn history_with_the_iban(h: &Harness) -> (TicketId, TicketId, TicketId) {
    let ops = h.handoff.agent(agent_id("ops-agent"), None);
    let rejected = pending(ops.propose(request("db.update", "iban-1")).await.unwrap());
    h.handoff
        .decide(
            rejected,
            h.cred("alice"),
            Verdict::Reject {
                feedback: format!("transfer to {IBAN} rejected"),
            },
            None,
        )
        .await
        .unwrap();
    let cancelled = pending(ops.propose(request("db.update", "iban-2")).await.unwrap());
    ops.cancel(cancelled, &format!("{IBAN} is closed"))
        .await
        .unwrap();
    let Proposal::Allowed(grant) = ops.propose(request("db.read", "iban-3")).await.unwrap() else {
        panic!("allowed")
    };
    let failed = grant.ticket();
    let permit = ops.begin(grant, BTreeMap::new()).await.unwrap();
    ops.finish(
        permit,
        ExecutionOutcome::Failed {
            error: format!("bank refused {IBAN}"),
        },
    )
    .await
    .unwrap();
    (rejected, cancelled, failed)
}

#[tokio::test]
async fn free_text_enters_the_chain_only_as_commitments_and_reads_back_with_the_history() {
    let h = Harness::new().await;
    let (rejected, cancelled, failed) = history_with_the_iban(&h).await;
    let chain = chain_text(&h).await;
    assert!(!chain.contains(IBAN), "the chain holds the IBAN in clear");
    assert!(chain.contains("\"feedback\":{\"commitment\":\""));

    for (id, kind, name, text) in [
        (
            rejected,
            "voted",
            "feedback",
            format!("transfer to {IBAN} rejected"),
        ),
        (
            cancelled,
            "cancelled",
            "reason",
            format!("{IBAN} is closed"),
        ),
        (
            failed,
            "execution_finished",
            "error",
            format!("bank refused {IBAN}"),
        ),
    ] {
        let details = h.handoff.ticket(id).await.unwrap().unwrap();
        let event = details
            .audit
            .iter()
            .find(|e| e.record().kind == kind)
            .unwrap_or_else(|| panic!("no {kind} event"));
        let kept = event.text(name).unwrap();
        assert_eq!(kept.state(), TextState::Kept);
        assert_eq!(kept.as_str(), Some(&*text));
        assert!(!format!("{event:?}").contains(IBAN), "Debug shows the text");
    }
    let report = h.handoff.verify_audit().await.unwrap();
    assert_eq!(report.findings, [AuditFinding::NoCheckpoint]);
}

#[tokio::test]
async fn an_operator_erases_a_text_and_the_chain_still_verifies() {
    let h = Harness::new().await;
    let (rejected, _, _) = history_with_the_iban(&h).await;
    h.handoff.checkpoint().await.unwrap();
    let details = h.handoff.ticket(rejected).await.unwrap().unwrap();
    let voted = details
        .audit
        .iter()
        .find(|e| e.record().kind == "voted")
        .unwrap();
    let text = TextRef::new(voted.seq(), "feedback");

    // Not an operator: refused and audited, nothing erased.
    let head = h.head().await;
    assert!(matches!(
        h.handoff.erase_text(h.cred("alice"), &text, "gdpr").await,
        Err(DecideError::NotOperator { .. })
    ));
    assert_eq!(h.head().await.seq, head.seq + 1);

    let by = h
        .handoff
        .erase_text(h.cred("olga"), &text, "erasure request 42")
        .await
        .unwrap();
    let details = h.handoff.ticket(rejected).await.unwrap().unwrap();
    let voted = details.audit.iter().find(|e| e.seq() == text.seq).unwrap();
    assert_eq!(
        voted.text("feedback").unwrap().state(),
        TextState::Erased { by }
    );
    assert_eq!(voted.text("feedback").unwrap().value(), None);
    // The erasure is in the ticket's history, by the operator, its reason a text too.
    let erased = details.audit.last().unwrap();
    assert_eq!(erased.seq(), by);
    assert_eq!(erased.record().kind, "text_erased");
    assert_eq!(
        erased.record().data["text"],
        json!({ "seq": text.seq, "name": "feedback" })
    );
    assert_eq!(
        erased.text("reason").unwrap().as_str(),
        Some("erasure request 42")
    );
    // Verification is untouched: against the stored checkpoint, and with no finding.
    let report = h.handoff.verify_audit().await.unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.checkpoints, 1);

    // Erasing it again, or a text that does not exist: refused, nothing written.
    let head = h.head().await;
    for missing in [
        text.clone(),
        TextRef::new(text.seq, "output"),
        TextRef::new(head.seq + 100, "reason"),
    ] {
        let err = h
            .handoff
            .erase_text(h.cred("olga"), &missing, "again")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DecideError::NoSuchText(t) if *t == missing),
            "{err:?}"
        );
    }
    assert_eq!(h.head().await, head);
}

#[tokio::test]
async fn an_edited_or_deleted_text_row_is_reported_never_shown_as_evidence() {
    let h = file_harness().await;
    let (rejected, cancelled, _) = history_with_the_iban(&h).await;
    let path = h.store_path();
    {
        let conn = Connection::open(&path).unwrap();
        let n = conn
            .execute(
                "UPDATE audit_texts SET value = '\"approved, all good\"' WHERE name = 'feedback'",
                [],
            )
            .unwrap();
        assert_eq!(n, 1);
        let n = conn
            .execute("DELETE FROM audit_texts WHERE name = 'reason'", [])
            .unwrap();
        assert_eq!(n, 1);
    }
    let details = h.handoff.ticket(rejected).await.unwrap().unwrap();
    let voted = details
        .audit
        .iter()
        .find(|e| e.record().kind == "voted")
        .unwrap();
    assert_eq!(voted.text("feedback").unwrap().state(), TextState::Altered);
    assert_eq!(voted.text("feedback").unwrap().value(), None);
    let details = h.handoff.ticket(cancelled).await.unwrap().unwrap();
    let cancel = details.audit.last().unwrap();
    assert_eq!(cancel.text("reason").unwrap().state(), TextState::Missing);

    let report = h.handoff.verify_audit().await.unwrap();
    assert_eq!(
        report.findings,
        [
            AuditFinding::NoCheckpoint,
            AuditFinding::AlteredTexts {
                count: 1,
                first: TextRef::new(voted.seq(), "feedback")
            },
            AuditFinding::MissingTexts {
                count: 1,
                first: TextRef::new(cancel.seq(), "reason")
            },
        ]
    );
    let printed = report.to_string();
    assert!(
        printed.contains("altered_texts") && printed.contains("missing_texts"),
        "{printed}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["findings"][1]["code"], "altered_texts");
}

#[tokio::test]
async fn the_chain_streams_verified_raw_and_by_ticket() {
    let h = file_harness().await;
    let (rejected, _, _) = history_with_the_iban(&h).await;
    h.handoff.checkpoint().await.unwrap();
    let report = h.handoff.verify_audit().await.unwrap();

    // Verified, decoded, with texts: every event, in order.
    let mut stream = h.handoff.audit_stream();
    let mut seqs = Vec::new();
    let mut feedback = None;
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        if let Some(text) = event.text("feedback") {
            feedback = text.as_str().map(str::to_owned);
        }
        seqs.push(event.seq());
    }
    assert!(stream.next().await.is_none(), "the stream stays ended");
    assert_eq!(seqs, (1..=report.events).collect::<Vec<_>>());
    assert_eq!(
        feedback.as_deref(),
        Some(&*format!("transfer to {IBAN} rejected"))
    );

    // Raw, from any point.
    let mut raw = h.handoff.raw_audit_stream(3);
    let mut n = 0;
    while let Some(event) = raw.next().await {
        assert_eq!(event.unwrap().seq, 3 + n);
        n += 1;
    }
    assert_eq!(n, report.events - 2);

    // One ticket's history: what `ticket()` shows, a page at a time.
    let mut history = h.handoff.ticket_history(rejected);
    let mut events = Vec::new();
    while let Some(event) = history.next().await {
        events.push(event.unwrap());
    }
    assert_eq!(
        events,
        h.handoff.ticket(rejected).await.unwrap().unwrap().audit
    );

    // A tampered event ends the verified stream at it, with the error `verify_audit` gives.
    let path = h.store_path();
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("DROP TRIGGER audit_events_no_update;")
            .unwrap();
        conn.execute(
            "UPDATE audit_events SET hash = zeroblob(32) WHERE seq = 4",
            [],
        )
        .unwrap();
    }
    let mut stream = h.handoff.audit_stream();
    let mut ok = 0;
    let err = loop {
        match stream.next().await.expect("the stream ends with the error") {
            Ok(_) => ok += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(ok, 3);
    assert!(
        matches!(err, AuditError::Chain(VerifyError::HashMismatch { seq: 4 })),
        "{err:?}"
    );
    assert!(stream.next().await.is_none());
}

/// A stream that reaches the end of a cut chain reports the stored checkpoint beyond it.
#[tokio::test]
async fn the_verified_stream_checks_the_checkpoints_it_passes_and_the_end() {
    let h = file_harness().await;
    history_with_the_iban(&h).await;
    let kept = h.handoff.checkpoint().await.unwrap();
    let path = h.store_path();
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("DROP TRIGGER audit_events_no_delete;")
            .unwrap();
        conn.execute(
            "DELETE FROM audit_events WHERE seq >= ?1",
            [kept.size() as i64 - 1],
        )
        .unwrap();
    }
    let mut stream = h.handoff.audit_stream();
    let err = loop {
        match stream.next().await.expect("the stream ends with the error") {
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, AuditError::Chain(VerifyError::Truncated { checkpoint_size, .. }) if checkpoint_size == kept.size()),
        "{err:?}"
    );
}

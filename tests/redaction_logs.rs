//! No sensitive parameter value ever reaches a log line or a span field.
//!
//! A subscriber that keeps every span and event field the library emits (at every level) is
//! installed for this binary; a whole life — propose with a secret, card delivery, an edit
//! that carries the secret, decisions, a refused decision, begin, finish — runs through the
//! facade; then the captured text must be non-empty and free of the secret.

mod support;

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use agent_handoff::action::ActionRequest;
use agent_handoff::notify::RecordingNotifier;
use agent_handoff::ticket::{ExecutionOutcome, Verdict};
use agent_handoff::{
    Clock, Credential, Decision, Handoff, ManualClock, Proposal, SqliteOptions, SqliteStore,
    Timestamp,
};
use serde_json::json;
use support::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

const SECRET: &str = "s3cr3t-iban-DE89370400440532013000";

/// Keeps the text of every field of every span and event.
struct Capture {
    text: Arc<Mutex<String>>,
    next: AtomicU64,
}

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={}", field.name(), value);
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut text = self.text.lock().unwrap();
        let _ = write!(text, "\nspan {}", span.metadata().name());
        span.record(&mut Fields(&mut text));
        Id::from_u64(self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, values: &Record<'_>) {
        values.record(&mut Fields(&mut self.text.lock().unwrap()));
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut text = self.text.lock().unwrap();
        let _ = write!(text, "\nevent {}", event.metadata().target());
        event.record(&mut Fields(&mut text));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn captured() -> Arc<Mutex<String>> {
    static TEXT: OnceLock<Arc<Mutex<String>>> = OnceLock::new();
    TEXT.get_or_init(|| {
        let text = Arc::new(Mutex::new(String::new()));
        tracing::subscriber::set_global_default(Capture {
            text: Arc::clone(&text),
            next: AtomicU64::new(0),
        })
        .expect("the only subscriber of this test binary");
        text
    })
    .clone()
}

#[tokio::test]
async fn no_log_line_or_span_field_carries_a_sensitive_value() {
    let text = captured();
    let clock = ManualClock::new(Timestamp::from_unix_millis(START));
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_with(
        dir.path().join("handoff.sqlite3"),
        SqliteOptions::new().with_clock(Arc::clone(&shared)),
    )
    .await
    .unwrap();
    let (directory, creds) = directory();
    let room = RecordingNotifier::new();
    let handoff = Handoff::builder()
        .store(store)
        .policy(standard_policy())
        .identity(directory)
        .shared_clock(shared)
        .digest_key(digest_key())
        .decision_links(decision_links())
        .notifier("room", room.clone())
        .build()
        .unwrap();
    let agent = handoff.agent(agent_id("ops-agent"), Some(person("pat")));

    let request = ActionRequest::builder("db.drop", idem("drop-with-secret"))
        .target("postgres://prod/payouts")
        .parameters(json!({ "table": "payouts", "iban": SECRET }))
        .sensitive("/iban")
        .reason("clean up")
        .build()
        .unwrap();
    let pending = match agent.propose(request).await.unwrap() {
        Proposal::Pending(p) => p,
        other => panic!("expected a review, got {other:?}"),
    };
    handoff.deliver_due().await.unwrap();
    assert_eq!(room.deliveries().len(), 1);

    // An edit that keeps the secret, a self-approval attempt, then the quorum.
    let edited = json!({ "table": "payouts_old", "iban": SECRET });
    let cred = |who: &str| -> &Credential { &creds[who] };
    handoff
        .decide(
            pending.id,
            cred("alice"),
            Verdict::ApproveWithEdits { parameters: edited },
            None,
        )
        .await
        .unwrap();
    assert!(handoff
        .decide(pending.id, cred("pat"), Verdict::Approve, None)
        .await
        .is_err());
    handoff
        .decide(pending.id, cred("bob"), Verdict::Approve, None)
        .await
        .unwrap();
    let grant = match agent.wait(&pending, Duration::from_secs(60)).await.unwrap() {
        Decision::Approved(grant) => grant,
        other => panic!("expected approval, got {other:?}"),
    };
    let permit = agent.begin(grant, Default::default()).await.unwrap();
    agent
        .finish(
            permit,
            ExecutionOutcome::Succeeded {
                output: json!({ "dropped": true }),
            },
        )
        .await
        .unwrap();
    handoff.deliver_due().await.unwrap();
    handoff.verify_audit().await.unwrap();

    let text = text.lock().unwrap().clone();
    assert!(
        text.contains("span propose") && text.contains("span decide"),
        "the subscriber saw the library's spans:\n{text}"
    );
    assert!(
        text.contains(&pending.id.to_string()),
        "spans carry the ticket id"
    );
    assert!(!text.contains(SECRET), "a secret reached the logs:\n{text}");
    assert!(
        !text.contains("DE8937"),
        "part of a secret reached the logs"
    );
}

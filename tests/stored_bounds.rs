//! Oversized and deep values: every text and value a caller hands the engine is bounded
//! (`agent_handoff::limits`), refused over its bound with a typed error before anything is
//! written — no ticket change, no audit row, no spent token, no lost permit — and whatever was
//! accepted can always be read back: the ticket, its history, a listing page, the chain.
//!
//! Before the bounds, a 1 MiB error or feedback made `ticket_audit` and `Handoff::ticket`
//! fail with `Corrupt` forever, and a `finish` output nested 130 levels deep made every read
//! of the ticket (and every listing page holding it) fail on serde_json's recursion limit.

#![cfg(feature = "sqlite")]

mod support;

use std::collections::BTreeMap;

use agent_handoff::action::ActionRequest;
use agent_handoff::backend::TicketFilter;
use agent_handoff::limits::{
    LimitError, MAX_ERROR_LEN, MAX_FEEDBACK_LEN, MAX_REASON_LEN, MAX_VALUE_BYTES, MAX_VALUE_DEPTH,
};
use agent_handoff::ticket::{ExecutionOutcome, StateName, TicketState, Verdict};
use agent_handoff::token::VerdictKind;
use agent_handoff::{
    DecideError, ExecuteError, FreezeScope, Grant, LinkError, Proposal, RunError, TicketId,
    TokenSubmission,
};
use proptest::prelude::*;
use serde_json::{json, Value};
use support::*;

const MIB: usize = 1024 * 1024;

fn nested(levels: usize) -> Value {
    let mut v = json!("bottom");
    for _ in 0..levels {
        v = json!({ "down": v });
    }
    v
}

/// Everything that must still read after a refusal: the ticket with its history, a listing
/// page holding it, and the whole chain (verified).
async fn readable(h: &Harness, id: TicketId) {
    let details = h.handoff.ticket(id).await.unwrap().unwrap();
    assert!(!details.audit.is_empty());
    let page = h
        .store
        .list_tickets(&TicketFilter::default())
        .await
        .unwrap();
    assert!(page.tickets.iter().any(|t| t.id() == id));
    h.handoff.verify_audit().await.unwrap();
}

fn pending(p: Proposal) -> TicketId {
    match p {
        Proposal::Pending(p) => p.id,
        other => panic!("expected pending, got {other:?}"),
    }
}

fn allowed(p: Proposal) -> Grant {
    match p {
        Proposal::Allowed(g) => g,
        other => panic!("expected allowed, got {other:?}"),
    }
}

fn too_long(e: &LimitError, field: &str, max: usize) -> bool {
    matches!(e, LimitError::TextTooLong { field: f, max: m, .. } if *f == field && *m == max)
}

#[tokio::test]
async fn a_feedback_over_its_bound_is_refused_before_anything_is_written() {
    let h = Harness::new().await;
    let ops = h.handoff.agent(agent_id("ops-agent"), None);
    let id = pending(ops.propose(request("db.update", "fb-1")).await.unwrap());
    for len in [MAX_FEEDBACK_LEN + 1, MIB] {
        let head = h.head().await;
        for verdict in [
            Verdict::Reject {
                feedback: "x".repeat(len),
            },
            Verdict::RequestChanges {
                feedback: "x".repeat(len),
            },
        ] {
            let err = h
                .handoff
                .decide(id, h.cred("alice"), verdict, None)
                .await
                .unwrap_err();
            assert!(
                matches!(&err, DecideError::Limit(e) if too_long(e, "feedback", MAX_FEEDBACK_LEN) && e.code() == "too_large"),
                "{err:?}"
            );
            // Refused before the credential: even a wrong one writes nothing.
            assert!(matches!(
                h.handoff
                    .decide(
                        id,
                        &agent_handoff::Credential::token("nobody"),
                        Verdict::Reject {
                            feedback: "x".repeat(len)
                        },
                        None
                    )
                    .await,
                Err(DecideError::Limit(_))
            ));
        }
        assert_eq!(h.head().await, head, "nothing was written");
    }
    assert_eq!(h.ticket(id).await.state(), &TicketState::Pending);
    readable(&h, id).await;

    // At the bound: accepted, kept beside the chain, read back whole.
    let feedback = "é".repeat(MAX_FEEDBACK_LEN / 2);
    assert_eq!(feedback.len(), MAX_FEEDBACK_LEN);
    h.handoff
        .decide(
            id,
            h.cred("alice"),
            Verdict::Reject {
                feedback: feedback.clone(),
            },
            None,
        )
        .await
        .unwrap();
    let details = h.handoff.ticket(id).await.unwrap().unwrap();
    let voted = details
        .audit
        .iter()
        .find(|e| e.record().kind == "voted")
        .unwrap();
    assert_eq!(voted.text("feedback").unwrap().as_str(), Some(&*feedback));
    readable(&h, id).await;
}

#[tokio::test]
async fn a_token_submission_over_its_bound_spends_nothing() {
    let h = Harness::with_links(Setup::default(), LinkSetup::standard()).await;
    let ops = h.handoff.agent(agent_id("ops-agent"), None);
    let id = pending(ops.propose(request("db.update", "fb-2")).await.unwrap());
    let ticket = h.ticket(id).await;
    let links = h
        .handoff
        .mint_links(&ticket, Some(person("alice")), h.now())
        .unwrap();
    let reject = links
        .iter()
        .find(|l| l.verdict == VerdictKind::Reject)
        .unwrap();
    let head = h.head().await;
    let err = h
        .handoff
        .decide_with_token(
            &reject.token,
            h.cred("alice"),
            TokenSubmission::new().with_feedback("x".repeat(MIB)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LinkError::Limit(e) if too_long(e, "feedback", MAX_FEEDBACK_LEN)),
        "{err:?}"
    );
    assert_eq!(h.head().await, head);
    // The token was not spent: the reviewer can still use it.
    h.handoff
        .decide_with_token(
            &reject.token,
            h.cred("alice"),
            TokenSubmission::new().with_feedback("not like this"),
        )
        .await
        .unwrap();
    readable(&h, id).await;
}

#[tokio::test]
async fn an_outcome_over_its_bounds_hands_the_permit_back() {
    let h = Harness::new().await;
    let ops = h.handoff.agent(agent_id("ops-agent"), None);
    let grant = allowed(ops.propose(request("db.read", "out-1")).await.unwrap());
    let id = grant.ticket();
    let mut permit = ops.begin(grant, BTreeMap::new()).await.unwrap();
    let oversized = [
        (
            ExecutionOutcome::Failed {
                error: "e".repeat(MIB),
            },
            "too_large",
        ),
        (
            ExecutionOutcome::Succeeded {
                output: nested(130),
            },
            "too_deep",
        ),
        (
            ExecutionOutcome::Succeeded {
                output: nested(MAX_VALUE_DEPTH + 1),
            },
            "too_deep",
        ),
        (
            ExecutionOutcome::Succeeded {
                output: json!({ "blob": "b".repeat(MAX_VALUE_BYTES) }),
            },
            "too_large",
        ),
    ];
    for (outcome, code) in oversized {
        assert_eq!(outcome.check().unwrap_err().code().as_str(), code);
        let head = h.head().await;
        permit = match ops.finish(permit, outcome).await {
            Err(ExecuteError::OutcomeRefused { error, permit }) => {
                assert_eq!(error.code().as_str(), code);
                *permit
            }
            other => panic!("expected the outcome refused, got {other:?}"),
        };
        assert_eq!(h.head().await, head, "nothing was written");
        assert_eq!(h.ticket(id).await.state().name(), StateName::Executing);
        readable(&h, id).await;
    }
    // The permit handed back finishes the ticket with a bounded outcome, at the bounds.
    let output = nested(MAX_VALUE_DEPTH);
    ExecutionOutcome::Succeeded {
        output: output.clone(),
    }
    .check()
    .unwrap();
    ops.finish(
        permit,
        ExecutionOutcome::Succeeded {
            output: output.clone(),
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        h.ticket(id).await.state(),
        TicketState::Succeeded { output: o, .. } if *o == output
    ));
    let details = h.handoff.ticket(id).await.unwrap().unwrap();
    let finished = details.audit.last().unwrap();
    assert_eq!(finished.text("output").unwrap().value(), Some(&output));
    readable(&h, id).await;

    // An error text at its bound is kept whole.
    let grant = allowed(ops.propose(request("db.read", "out-2")).await.unwrap());
    let id = grant.ticket();
    let permit = ops.begin(grant, BTreeMap::new()).await.unwrap();
    let error = "e".repeat(MAX_ERROR_LEN);
    ops.finish(
        permit,
        ExecutionOutcome::Failed {
            error: error.clone(),
        },
    )
    .await
    .unwrap();
    let details = h.handoff.ticket(id).await.unwrap().unwrap();
    assert_eq!(
        details
            .audit
            .last()
            .unwrap()
            .text("error")
            .unwrap()
            .as_str(),
        Some(&*error)
    );
    readable(&h, id).await;
}

#[tokio::test]
async fn run_cuts_an_overlong_action_error_to_the_bound() {
    let h = Harness::new().await;
    let ops = h.handoff.agent(agent_id("ops-agent"), None);
    let result: Result<(), RunError<String>> = ops
        .run(request("db.read", "run-1"), MIN, |_| async {
            Err("boom ".repeat(MIB / 5))
        })
        .await;
    assert!(matches!(result, Err(RunError::Action(_))));
    let ticket = h.all_tickets().await.pop().unwrap();
    let TicketState::Failed { error, .. } = ticket.state() else {
        panic!("expected failed, got {:?}", ticket.state());
    };
    assert!(
        error.len() <= MAX_ERROR_LEN && error.ends_with('…'),
        "{}",
        error.len()
    );
    assert!(error.starts_with("boom boom"));
    readable(&h, ticket.id()).await;
}

#[tokio::test]
async fn observed_values_are_bounded_and_only_the_expected_names_kept() {
    let h = Harness::new().await;
    let ops = h.handoff.agent(agent_id("ops-agent"), None);
    let with_preconditions = |key: &str| {
        ActionRequest::builder("db.read", idem(key))
            .target("postgres://prod/orders")
            .precondition("row_count", json!(120))
            .precondition("schema", json!({ "version": 7 }))
            .build()
            .unwrap()
    };
    let grant = allowed(ops.propose(with_preconditions("obs-1")).await.unwrap());
    let id = grant.ticket();
    let head = h.head().await;
    let deep: BTreeMap<String, Value> = [
        ("row_count".to_owned(), nested(130)),
        ("schema".to_owned(), json!({ "version": 7 })),
    ]
    .into();
    let err = ops.begin(grant, deep).await.unwrap_err();
    assert!(
        matches!(
            &err,
            ExecuteError::Limit(LimitError::ValueTooDeep {
                field: "observed",
                ..
            })
        ),
        "{err:?}"
    );
    let large: BTreeMap<String, Value> = [
        ("row_count".to_owned(), json!("r".repeat(MAX_VALUE_BYTES))),
        ("schema".to_owned(), json!({ "version": 7 })),
    ]
    .into();
    let grant = h
        .handoff
        .grant(id)
        .await
        .unwrap()
        .expect("the grant is still usable");
    let err = ops.begin(grant, large).await.unwrap_err();
    assert!(
        matches!(
            &err,
            ExecuteError::Limit(LimitError::ValueTooLarge {
                field: "observed",
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(h.head().await, head, "nothing was written");
    assert_eq!(h.ticket(id).await.state().name(), StateName::Approved);

    // Values for names the action does not expect are not looked at, nor kept; the final
    // check fails on the changed row count, and the trail says why.
    let observed: BTreeMap<String, Value> = [
        ("row_count".to_owned(), json!(121)),
        ("schema".to_owned(), json!({ "version": 7 })),
        ("unrelated".to_owned(), nested(130)),
        ("huge".to_owned(), json!("h".repeat(2 * MIB))),
    ]
    .into();
    let grant = h.handoff.grant(id).await.unwrap().unwrap();
    let err = ops.begin(grant, observed).await.unwrap_err();
    assert!(matches!(err, ExecuteError::Refused(_)), "{err:?}");
    let TicketState::Stale { observed, .. } = h.ticket(id).await.state().clone() else {
        panic!("expected stale");
    };
    assert_eq!(
        observed,
        [
            ("row_count".to_owned(), json!(121)),
            ("schema".to_owned(), json!({ "version": 7 }))
        ]
        .into()
    );
    let details = h.handoff.ticket(id).await.unwrap().unwrap();
    let stale = details
        .audit
        .iter()
        .find(|e| e.record().kind == "stale")
        .unwrap();
    assert_eq!(stale.record().data["differing"], json!(["row_count"]));
    assert_eq!(
        stale.text("expected").unwrap().value(),
        Some(&json!({ "row_count": 120, "schema": { "version": 7 } }))
    );
    assert_eq!(
        stale.text("observed").unwrap().value(),
        Some(&json!({ "row_count": 121, "schema": { "version": 7 } }))
    );
    readable(&h, id).await;
}

#[tokio::test]
async fn reasons_over_their_bound_are_refused_everywhere() {
    let h = Harness::new().await;
    let ops = h.handoff.agent(agent_id("ops-agent"), None);
    let olga = h.cred("olga");
    let reason = "r".repeat(MAX_REASON_LEN + 1);
    let is_reason = |e: &LimitError| too_long(e, "reason", MAX_REASON_LEN);

    let id = pending(ops.propose(request("db.update", "why-1")).await.unwrap());
    let head = h.head().await;
    assert!(matches!(ops.cancel(id, &reason).await, Err(ExecuteError::Limit(e)) if is_reason(&e)));
    assert!(matches!(
        h.handoff.cancel_as_operator(id, olga, &reason).await,
        Err(DecideError::Limit(e)) if is_reason(&e)
    ));
    assert!(matches!(
        h.handoff.freeze(olga, FreezeScope::All, &reason).await,
        Err(DecideError::Limit(e)) if is_reason(&e)
    ));
    assert!(matches!(
        h.handoff.rebase_clock(olga, &reason).await,
        Err(DecideError::Limit(e)) if is_reason(&e)
    ));
    h.handoff
        .decide(id, h.cred("alice"), Verdict::Approve, None)
        .await
        .unwrap();
    let head_after_vote = h.head().await;
    assert_ne!(head, head_after_vote);
    assert!(matches!(
        h.handoff.revoke(id, olga, &reason).await,
        Err(DecideError::Limit(e)) if is_reason(&e)
    ));
    let text = agent_handoff::audit::TextRef::new(head_after_vote.seq, "feedback");
    assert!(matches!(
        h.handoff.erase_text(olga, &text, &reason).await,
        Err(DecideError::Limit(e)) if is_reason(&e)
    ));
    assert_eq!(h.head().await, head_after_vote, "nothing was written");

    // Resolve: the outcome is bounded as at finish.
    let grant = h.handoff.grant(id).await.unwrap().unwrap();
    let _permit = ops.begin(grant, BTreeMap::new()).await.unwrap();
    h.clock.advance(HOUR);
    h.handoff.expire_due().await.unwrap();
    assert_eq!(h.ticket(id).await.state().name(), StateName::Unknown);
    let head = h.head().await;
    assert!(matches!(
        h.handoff
            .resolve(
                id,
                olga,
                ExecutionOutcome::Succeeded {
                    output: nested(130)
                }
            )
            .await,
        Err(DecideError::Limit(LimitError::ValueTooDeep { .. }))
    ));
    assert_eq!(h.head().await, head);
    // At the bound: accepted.
    h.handoff
        .revoke(id, olga, "any")
        .await
        .expect_err("not approved any more");
    h.handoff
        .resolve(
            id,
            olga,
            ExecutionOutcome::Failed {
                error: "e".repeat(MAX_ERROR_LEN),
            },
        )
        .await
        .unwrap();
    let id = pending(ops.propose(request("db.update", "why-2")).await.unwrap());
    ops.cancel(id, &"r".repeat(MAX_REASON_LEN)).await.unwrap();
    readable(&h, id).await;
}

/// Every listing page and every ticket read works whatever was stored, because nothing
/// unbounded was: tickets finished at the bounds of depth and size sit among others.
#[tokio::test]
async fn listing_pages_with_values_at_the_bounds_read_back() {
    let h = Harness::new().await;
    let ops = h.handoff.agent(agent_id("ops-agent"), None);
    for i in 0..6 {
        let grant = allowed(
            ops.propose(request("db.read", &format!("list-{i}")))
                .await
                .unwrap(),
        );
        let permit = ops.begin(grant, BTreeMap::new()).await.unwrap();
        let outcome = if i % 2 == 0 {
            ExecutionOutcome::Succeeded {
                output: nested(MAX_VALUE_DEPTH),
            }
        } else {
            ExecutionOutcome::Failed {
                error: "ü".repeat(MAX_ERROR_LEN / 2),
            }
        };
        ops.finish(permit, outcome).await.unwrap();
    }
    let mut filter = TicketFilter {
        limit: 2,
        ..TicketFilter::default()
    };
    let mut seen = 0;
    loop {
        let page = h.store.list_tickets(&filter).await.unwrap();
        for t in &page.tickets {
            seen += 1;
            h.handoff.ticket(t.id()).await.unwrap().unwrap();
        }
        match page.next {
            Some(next) => filter.after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, 6);
    h.handoff.verify_audit().await.unwrap();
}

fn value_strategy() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        "[a-zé]{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(40, 400, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Nesting depth with the value itself at level 1 (scalars are 0), recursively (the values
/// here are shallow enough).
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

proptest! {
    /// The check agrees with the documented bounds: refused exactly when deeper than
    /// `MAX_VALUE_DEPTH` or larger than `MAX_VALUE_BYTES` canonically, and a text exactly
    /// when longer than its bound.
    #[test]
    fn checks_refuse_exactly_what_the_bounds_say(
        value in value_strategy(),
        extra in 0usize..3,
        len in (MAX_ERROR_LEN - 2)..(MAX_ERROR_LEN + 2),
    ) {
        let mut v = value;
        for _ in 0..extra * 10 {
            v = json!([v]);
        }
        let outcome = ExecutionOutcome::Succeeded { output: v.clone() };
        let size = agent_handoff::action::canonical_json(&v).len();
        let expected = if depth(&v) > MAX_VALUE_DEPTH {
            Some("too_deep")
        } else if size > MAX_VALUE_BYTES {
            Some("too_large")
        } else {
            None
        };
        prop_assert_eq!(outcome.check().err().map(|e| e.code().as_str()), expected);
        let failed = ExecutionOutcome::Failed { error: "e".repeat(len) };
        prop_assert_eq!(failed.check().is_ok(), len <= MAX_ERROR_LEN);
    }
}

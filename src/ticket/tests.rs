//! Unit tests of the lifecycle rules, one group per rule.
// Helpers return `apply`'s own result type; see the note in machine.rs.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use super::*;
use crate::action::{ActionDigest, ActionRequest, Requester};
use crate::audit::{kind, Actor};
use crate::id::{AgentId, GroupName, PersonId, TicketId};
use crate::policy::{Outcome, PolicyHash, PolicyRef, ReviewPlan, ReviewRequirement, Ruling};
use crate::timestamp::Timestamp;

const DEADLINE: i64 = 10_000;
const TTL: i64 = 5_000;

fn t(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

fn person(name: &str) -> PersonId {
    PersonId::new(name).unwrap()
}

fn reviewer(name: &str, groups: &[&str]) -> Reviewer {
    Reviewer {
        person: person(name),
        groups: groups.iter().map(|g| GroupName::new(*g).unwrap()).collect(),
    }
}

fn policy_ref() -> PolicyRef {
    PolicyRef {
        version: "v1".into(),
        hash: PolicyHash([7; 32]),
    }
}

fn plan(reqs: &[(&str, u32)], veto: bool) -> ReviewPlan {
    ReviewPlan {
        requirements: reqs
            .iter()
            .map(|(g, n)| ReviewRequirement {
                groups: [GroupName::new(*g).unwrap()].into(),
                approvals: *n,
            })
            .collect(),
        deadline: Duration::from_millis(DEADLINE as u64),
        approval_ttl: Duration::from_millis(TTL as u64),
        veto,
    }
}

fn ruling(outcome: Outcome) -> Ruling {
    Ruling {
        outcome,
        matched: Vec::new(),
        policy: policy_ref(),
    }
}

fn review(reqs: &[(&str, u32)], veto: bool) -> Ruling {
    ruling(Outcome::Review(plan(reqs, veto)))
}

fn allow(ttl_ms: u64) -> Ruling {
    ruling(Outcome::Allow {
        grant_ttl: Duration::from_millis(ttl_ms),
    })
}

fn deny(reason: &str) -> Ruling {
    ruling(Outcome::Deny {
        reason: reason.into(),
    })
}

fn request() -> ActionRequest {
    ActionRequest::builder("payment.send", "key-00000001")
        .target("vendor:acme")
        .parameters(json!({ "amount": "100.00", "iban": "DE0012345678" }))
        .sensitive("/iban")
        .precondition("balance", json!("500.00"))
        .build()
        .unwrap()
}

fn open_ticket(ruling: Ruling, principal: PrincipalCheck) -> Transition {
    let principal_id = match &principal {
        PrincipalCheck::Person(p) => Some(p.clone()),
        PrincipalCheck::Unresolved => Some(person("someone")),
        PrincipalCheck::NoPrincipal => None,
    };
    open(
        TicketId::from_uuid(Uuid::from_u128(1)),
        Requester::new(AgentId::new("agent").unwrap(), principal_id),
        principal,
        request(),
        ruling,
        t(0),
    )
}

fn pending(reqs: &[(&str, u32)], veto: bool) -> Ticket {
    open_ticket(review(reqs, veto), PrincipalCheck::Person(person("pat"))).ticket
}

fn vote(ticket: &Ticket, who: &Reviewer, verdict: Verdict, at: i64) -> Result<Transition, Refused> {
    apply(
        ticket,
        Event::Vote {
            reviewer: who.clone(),
            verdict,
        },
        t(at),
    )
}

fn approve(ticket: &Ticket, who: &Reviewer, at: i64) -> Result<Transition, Refused> {
    vote(ticket, who, Verdict::Approve, at)
}

fn reject(feedback: &str) -> Verdict {
    Verdict::Reject {
        feedback: feedback.into(),
    }
}

fn refusal(result: Result<Transition, Refused>) -> Refused {
    match result {
        Ok(t) => panic!("expected a refusal, got {:?}", t.ticket.state),
        Err(r) => r,
    }
}

fn lease(n: u128) -> LeaseId {
    LeaseId::from_uuid(Uuid::from_u128(n))
}

fn observed_ok() -> BTreeMap<String, Value> {
    [("balance".to_owned(), json!("500.00"))].into()
}

fn begin(
    ticket: &Ticket,
    digest: ActionDigest,
    current: Ruling,
    at: i64,
) -> Result<Transition, Refused> {
    apply(
        ticket,
        Event::Begin {
            digest,
            observed: observed_ok(),
            current,
            lease: lease(9),
            lease_expires: t(at + 1_000),
        },
        t(at),
    )
}

fn kinds(audit: &[crate::audit::AuditRecord]) -> Vec<&str> {
    audit.iter().map(|r| r.kind.as_str()).collect()
}

/// A ticket approved by `alice` and `bob` (2 of dba) at t=100 and t=200.
fn approved_by_two() -> Ticket {
    let p = pending(&[("dba", 2)], true);
    let p = approve(&p, &reviewer("alice", &["dba"]), 100)
        .unwrap()
        .ticket;
    approve(&p, &reviewer("bob", &["dba"]), 200).unwrap().ticket
}

// --- open ---------------------------------------------------------------------------------

#[test]
fn open_follows_the_ruling() {
    let allowed = open_ticket(allow(3_000), PrincipalCheck::NoPrincipal);
    assert_eq!(allowed.ticket.version(), 1);
    let TicketState::Approved(a) = allowed.ticket.state() else {
        panic!("approved expected")
    };
    assert_eq!(a.by, ApprovedBy::Policy);
    assert_eq!(a.valid_until, t(3_000));
    assert_eq!(a.digest, ActionDigest::of(&request()));
    assert_eq!(kinds(&allowed.audit), [kind::PROPOSED, kind::APPROVED]);
    assert_eq!(allowed.audit[1].actor, Actor::Policy);
    assert!(allowed.effects.is_empty());

    let reviewed = open_ticket(review(&[("dba", 1)], true), PrincipalCheck::NoPrincipal);
    assert_eq!(reviewed.ticket.state(), &TicketState::Pending);
    assert_eq!(reviewed.ticket.deadline(), Some(t(DEADLINE)));
    assert_eq!(reviewed.effects, [Effect::RequestReview]);
    assert_eq!(kinds(&reviewed.audit), [kind::PROPOSED]);

    let denied = open_ticket(deny("no payments on sunday"), PrincipalCheck::NoPrincipal);
    assert_eq!(
        denied.ticket.state(),
        &TicketState::Rejected {
            by: RejectedBy::Policy {
                reason: "no payments on sunday".into()
            },
            at: t(0)
        }
    );
    assert_eq!(kinds(&denied.audit), [kind::PROPOSED, kind::REJECTED]);
}

#[test]
fn the_proposed_record_has_the_facts_but_not_the_parameters() {
    let opened = open_ticket(review(&[("dba", 1)], true), PrincipalCheck::NoPrincipal);
    let record = &opened.audit[0];
    assert_eq!(record.actor, Actor::Agent(AgentId::new("agent").unwrap()));
    let data = &record.data;
    assert_eq!(data["kind"], "payment.send");
    assert_eq!(data["targets"], json!(["vendor:acme"]));
    assert_eq!(data["environment"], "production");
    assert_eq!(data["sensitivity"], "regulated");
    assert_eq!(data["reversibility"], "irreversible");
    assert_eq!(data["idempotency_key"], "key-00000001");
    assert_eq!(data["digest"].as_str().unwrap().len(), 64);
    assert_eq!(data["policy"]["version"], "v1");
    assert_eq!(data["policy"]["hash"], "07".repeat(32));
    assert_eq!(data["requirements"], json!(["1 of dba"]));
    let text = data.to_string();
    assert!(
        !text.contains("DE0012345678"),
        "sensitive value leaked: {text}"
    );
    assert!(data.get("parameters").is_none());
}

#[test]
fn a_named_principal_without_a_resolution_fails_closed() {
    let opened = open(
        TicketId::from_uuid(Uuid::from_u128(1)),
        Requester::new(AgentId::new("agent").unwrap(), Some(person("pat"))),
        PrincipalCheck::NoPrincipal,
        request(),
        review(&[("dba", 1)], true),
        t(0),
    );
    assert_eq!(opened.ticket.principal(), &PrincipalCheck::Unresolved);
}

// --- quorum and self-approval ---------------------------------------------------------------

#[test]
fn quorum_of_two_needs_two_distinct_non_self_reviewers() {
    let p = pending(&[("dba", 2)], true);
    let pat = reviewer("pat", &["dba"]);
    let r = refusal(approve(&p, &pat, 10));
    assert_eq!(
        r.refusal,
        Refusal::SelfApproval {
            person: person("pat")
        }
    );
    assert!(r.ticket.is_none());
    assert_eq!(kinds(&r.audit), [kind::REFUSED]);
    assert_eq!(r.audit[0].actor, Actor::Reviewer(person("pat")));
    assert_eq!(r.audit[0].data["refusal"], "self_approval");

    let alice = reviewer("alice", &["dba"]);
    let one = approve(&p, &alice, 20).unwrap();
    assert_eq!(one.ticket.state(), &TicketState::Pending);
    assert_eq!(one.ticket.version(), 2);
    assert_eq!(kinds(&one.audit), [kind::VOTED]);
    assert_eq!(one.audit[0].data["progress"][0]["needed"], 1);
    assert_eq!(one.ticket.progress(t(20))[0].needed, 1);

    // alice again, with a second credential resolving to the same person: counted once
    let again = approve(&one.ticket, &reviewer("alice", &["dba", "ops"]), 30).unwrap();
    assert!(again.is_noop());
    assert_eq!(again.ticket.version(), 2);

    let two = approve(&one.ticket, &reviewer("bob", &["dba"]), 40).unwrap();
    let TicketState::Approved(a) = two.ticket.state() else {
        panic!("approved expected")
    };
    assert_eq!(
        a.by,
        ApprovedBy::Reviewers([person("alice"), person("bob")].into())
    );
    assert_eq!(
        a.valid_until,
        t(20 + TTL),
        "earliest counting approval + ttl"
    );
    assert_eq!(kinds(&two.audit), [kind::VOTED, kind::APPROVED]);
    assert_eq!(two.effects, [Effect::CloseReview]);
}

#[test]
fn an_unresolved_principal_refuses_every_approval_but_not_rejection() {
    let p = open_ticket(review(&[("dba", 1)], true), PrincipalCheck::Unresolved).ticket;
    let alice = reviewer("alice", &["dba"]);
    assert_eq!(
        refusal(approve(&p, &alice, 1)).refusal,
        Refusal::PrincipalUnresolved
    );
    let rejected = vote(&p, &alice, reject("no"), 2).unwrap();
    assert_eq!(rejected.ticket.state().name(), StateName::Rejected);
}

#[test]
fn the_principal_may_reject_their_own_request() {
    let p = pending(&[("dba", 1)], true);
    let out = vote(&p, &reviewer("pat", &["dba"]), reject("changed my mind"), 5).unwrap();
    assert_eq!(
        out.ticket.state(),
        &TicketState::Rejected {
            by: RejectedBy::Reviewer {
                person: person("pat"),
                feedback: "changed my mind".into()
            },
            at: t(5)
        }
    );
}

#[test]
fn every_requirement_must_be_met() {
    let p = pending(&[("dba", 1), ("finance", 1)], true);
    let p = approve(&p, &reviewer("alice", &["dba"]), 1).unwrap().ticket;
    assert_eq!(p.state(), &TicketState::Pending);
    let progress = p.progress(t(1));
    assert_eq!(progress.iter().filter(|r| r.is_met()).count(), 1);
    let done = approve(&p, &reviewer("fred", &["finance"]), 2).unwrap();
    assert_eq!(done.ticket.state().name(), StateName::Approved);
}

#[test]
fn ineligible_reviewers_are_refused_and_cannot_veto() {
    let p = pending(&[("dba", 1)], true);
    let eve = reviewer("eve", &["sales"]);
    assert_eq!(
        refusal(approve(&p, &eve, 1)).refusal,
        Refusal::NotEligible {
            person: person("eve")
        }
    );
    assert_eq!(
        refusal(vote(&p, &eve, reject("no"), 1)).refusal,
        Refusal::NotEligible {
            person: person("eve")
        }
    );
}

// --- veto ---------------------------------------------------------------------------------

#[test]
fn with_veto_one_rejection_rejects() {
    let p = pending(&[("dba", 2)], true);
    let p = approve(&p, &reviewer("alice", &["dba"]), 1).unwrap().ticket;
    let out = vote(&p, &reviewer("bob", &["dba"]), reject("too risky"), 2).unwrap();
    assert_eq!(
        out.ticket.state(),
        &TicketState::Rejected {
            by: RejectedBy::Reviewer {
                person: person("bob"),
                feedback: "too risky".into()
            },
            at: t(2)
        }
    );
    assert_eq!(kinds(&out.audit), [kind::VOTED, kind::REJECTED]);
    assert_eq!(out.effects, [Effect::CloseReview]);

    let changes = vote(
        &p,
        &reviewer("bob", &["dba"]),
        Verdict::RequestChanges {
            feedback: "smaller amount".into(),
        },
        2,
    )
    .unwrap();
    assert!(matches!(
        changes.ticket.state(),
        TicketState::Rejected {
            by: RejectedBy::ChangesRequested { .. },
            ..
        }
    ));
}

#[test]
fn without_veto_a_rejection_waits_for_quorum_or_deadline() {
    let p = pending(&[("dba", 2)], false);
    let bob = reviewer("bob", &["dba"]);
    let p = vote(&p, &bob, reject("no"), 1).unwrap().ticket;
    assert_eq!(p.state(), &TicketState::Pending);
    assert_eq!(
        refusal(approve(&p, &bob, 2)).refusal,
        Refusal::ConflictingVote {
            person: person("bob"),
            previous: VoteKind::Reject
        }
    );
    // repeating the rejection is a no-op, a different rejection conflicts
    assert!(vote(&p, &bob, reject("no"), 3).unwrap().is_noop());
    assert!(matches!(
        refusal(vote(&p, &bob, reject("never"), 3)).refusal,
        Refusal::ConflictingVote { .. }
    ));
    let p = approve(&p, &reviewer("alice", &["dba"]), 4).unwrap().ticket;
    let p = approve(&p, &reviewer("carol", &["dba"]), 5).unwrap().ticket;
    assert_eq!(p.state().name(), StateName::Approved);
}

#[test]
fn an_approval_can_be_replaced_by_a_rejection() {
    let p = pending(&[("dba", 2)], false);
    let alice = reviewer("alice", &["dba"]);
    let p = approve(&p, &alice, 1).unwrap().ticket;
    assert_eq!(p.progress(t(1))[0].needed, 1);
    let out = vote(&p, &alice, reject("on second thought"), 2).unwrap();
    assert_eq!(out.audit[0].data["replaces"], "approve");
    assert_eq!(out.ticket.progress(t(2))[0].needed, 2);
    assert_eq!(out.ticket.votes().len(), 1);
}

// --- repeats ------------------------------------------------------------------------------

#[test]
fn a_repeated_decision_gets_the_same_answer_after_the_ticket_moved_on() {
    let approved = approved_by_two();
    let v = approved.version();
    let again = approve(&approved, &reviewer("bob", &["dba"]), 300).unwrap();
    assert!(again.is_noop());
    assert_eq!(again.ticket, approved);
    assert_eq!(again.ticket.version(), v);
    // someone else is told it is decided
    assert_eq!(
        refusal(approve(&approved, &reviewer("carol", &["dba"]), 300)).refusal,
        Refusal::NotPending {
            state: StateName::Approved
        }
    );
}

// --- approval ttl -------------------------------------------------------------------------

#[test]
fn approvals_lapse_after_their_ttl() {
    let p = pending(&[("dba", 2)], true);
    let alice = reviewer("alice", &["dba"]);
    let p = approve(&p, &alice, 0).unwrap().ticket;
    // alice's approval lapses at exactly TTL: bob alone is not enough
    let p = approve(&p, &reviewer("bob", &["dba"]), TTL).unwrap().ticket;
    assert_eq!(p.state(), &TicketState::Pending);
    assert_eq!(p.progress(t(TTL))[0].approvers, [person("bob")].into());
    // alice repeats: her lapsed approval is renewed and quorum is met
    let out = approve(&p, &alice, TTL + 10).unwrap();
    let TicketState::Approved(a) = out.ticket.state() else {
        panic!("approved expected")
    };
    assert_eq!(
        a.valid_until,
        t(TTL + TTL),
        "bob's approval at TTL is the earliest"
    );
}

#[test]
fn the_grant_lapses_at_valid_until() {
    let approved = approved_by_two();
    let valid_until = t(100 + TTL);
    assert_eq!(
        approved.state_at(t(100 + TTL - 1)).name(),
        StateName::Approved
    );
    assert_eq!(
        approved.state_at(valid_until),
        TicketState::Expired {
            stage: ExpiredStage::Grant,
            at: valid_until
        }
    );
    let digest = approved.action_digest();
    let r = refusal(begin(
        &approved,
        digest,
        review(&[("dba", 2)], true),
        100 + TTL + 7,
    ));
    assert_eq!(r.refusal, Refusal::GrantExpired { valid_until });
    let persisted = r.ticket.expect("expiry persisted");
    assert_eq!(
        persisted.state(),
        &TicketState::Expired {
            stage: ExpiredStage::Grant,
            at: valid_until
        }
    );
    assert_eq!(persisted.version(), approved.version() + 1);
    assert_eq!(kinds(&r.audit), [kind::EXPIRED, kind::REFUSED]);
    assert_eq!(r.audit[0].actor, Actor::System);
}

// --- deadline -----------------------------------------------------------------------------

#[test]
fn approvals_exactly_at_the_deadline_are_refused_and_the_expiry_persisted() {
    let p = pending(&[("dba", 1)], true);
    let alice = reviewer("alice", &["dba"]);
    assert_eq!(p.state_at(t(DEADLINE - 1)), TicketState::Pending);
    assert!(approve(&p, &alice, DEADLINE - 1).is_ok());

    let r = refusal(approve(&p, &alice, DEADLINE));
    assert_eq!(
        r.refusal,
        Refusal::DeadlinePassed {
            deadline: t(DEADLINE)
        }
    );
    let expired = r.ticket.expect("expiry persisted");
    assert_eq!(
        expired.state(),
        &TicketState::Expired {
            stage: ExpiredStage::Review,
            at: t(DEADLINE)
        }
    );
    assert_eq!(r.effects, [Effect::CloseReview]);
    assert_eq!(kinds(&r.audit), [kind::EXPIRED, kind::REFUSED]);

    // noticed much later: still expired at the deadline, not at the time of noticing
    let late = refusal(approve(&p, &alice, DEADLINE + 99_999));
    assert_eq!(
        late.ticket.unwrap().state(),
        &TicketState::Expired {
            stage: ExpiredStage::Review,
            at: t(DEADLINE)
        }
    );
}

#[test]
fn expire_succeeds_only_when_due_and_beats_cancel() {
    let p = pending(&[("dba", 1)], true);
    assert_eq!(
        refusal(apply(&p, Event::Expire, t(DEADLINE - 1))).refusal,
        Refusal::NotDue { due: t(DEADLINE) }
    );
    let out = apply(&p, Event::Expire, t(DEADLINE)).unwrap();
    assert_eq!(out.ticket.state().name(), StateName::Expired);
    assert_eq!(out.effects, [Effect::CloseReview]);
    assert_eq!(out.audit[0].actor, Actor::System);

    let cancel = Event::Cancel {
        by: Actor::Agent(AgentId::new("agent").unwrap()),
        reason: "not needed".into(),
    };
    let r = refusal(apply(&p, cancel.clone(), t(DEADLINE)));
    assert_eq!(
        r.refusal,
        Refusal::DeadlinePassed {
            deadline: t(DEADLINE)
        }
    );
    let ok = apply(&p, cancel, t(DEADLINE - 1)).unwrap();
    assert_eq!(ok.ticket.state().name(), StateName::Cancelled);
    assert_eq!(
        ok.audit[0].actor,
        Actor::Agent(AgentId::new("agent").unwrap())
    );
}

#[test]
fn time_never_runs_backwards_for_a_ticket() {
    let p = pending(&[("dba", 2)], true);
    let p = approve(&p, &reviewer("alice", &["dba"]), DEADLINE - 1)
        .unwrap()
        .ticket;
    // a writer with an older clock still sees the deadline the last write saw
    let out = approve(&p, &reviewer("bob", &["dba"]), 5).unwrap();
    let TicketState::Approved(a) = out.ticket.state() else {
        panic!("approved expected")
    };
    assert_eq!(a.at, t(DEADLINE - 1));
}

// --- edits --------------------------------------------------------------------------------

fn edit(
    ticket: &Ticket,
    who: &Reviewer,
    parameters: Value,
    ruling: Ruling,
    at: i64,
) -> Result<Transition, Refused> {
    apply(
        ticket,
        Event::Edit {
            reviewer: who.clone(),
            parameters,
            ruling,
        },
        t(at),
    )
}

fn edited_params() -> Value {
    json!({ "amount": "50.00", "iban": "DE0012345678" })
}

#[test]
fn an_edit_starts_a_new_round_and_needs_another_approver() {
    let p = pending(&[("dba", 1)], true);
    let alice = reviewer("alice", &["dba"]);
    let bob = reviewer("bob", &["dba"]);
    let ed = edit(&p, &alice, edited_params(), review(&[("dba", 1)], true), 10).unwrap();
    assert_eq!(kinds(&ed.audit), [kind::EDITED]);
    assert_eq!(ed.effects, [Effect::RequestReview]);
    let e = ed.ticket.edit().expect("edit kept");
    assert_eq!(e.editor, person("alice"));
    assert_eq!(e.parameters, edited_params());
    assert_eq!(
        ed.ticket.request().parameters()["amount"],
        "100.00",
        "proposal kept"
    );
    assert_ne!(ed.ticket.action_digest(), ed.ticket.proposed_digest());
    assert_eq!(
        ed.ticket.action_digest(),
        ActionDigest::of(&ed.ticket.approved_request())
    );
    // the editor's approval meets "1 of dba" but quorum needs someone else
    assert_eq!(ed.ticket.state(), &TicketState::Pending);
    assert!(ed.ticket.progress(t(10))[0].is_met());
    assert_eq!(ed.ticket.awaiting_non_editor(t(10)), Some(&person("alice")));
    assert!(approve(&ed.ticket, &alice, 11).unwrap().is_noop());

    let done = approve(&ed.ticket, &bob, 12).unwrap();
    let TicketState::Approved(a) = done.ticket.state() else {
        panic!("approved expected")
    };
    assert_eq!(a.digest, ed.ticket.action_digest());
    assert_eq!(
        a.by,
        ApprovedBy::Reviewers([person("alice"), person("bob")].into())
    );
}

#[test]
fn an_edit_voids_earlier_approvals() {
    let p = pending(&[("dba", 3)], true);
    let p = approve(&p, &reviewer("bob", &["dba"]), 1).unwrap().ticket;
    let p = approve(&p, &reviewer("carol", &["dba"]), 2).unwrap().ticket;
    let ed = edit(
        &p,
        &reviewer("alice", &["dba"]),
        edited_params(),
        review(&[], true),
        3,
    )
    .unwrap();
    assert_eq!(ed.audit[0].data["voided"], json!(["bob", "carol"]));
    assert_eq!(ed.ticket.votes().len(), 1);
    assert_eq!(ed.ticket.progress(t(3))[0].needed, 2);
}

#[test]
fn an_edit_is_re_ruled_and_the_stricter_ruling_applies() {
    let p = pending(&[("dba", 1)], false);
    let alice = reviewer("alice", &["dba", "finance"]);
    let stricter = review(&[("finance", 1)], true);
    let ed = edit(&p, &alice, edited_params(), stricter, 1).unwrap();
    let plan = ed.ticket.plan().unwrap();
    assert_eq!(plan.requirements.len(), 2, "both requirements kept");
    assert!(plan.veto);

    let denied = refusal(edit(&p, &alice, edited_params(), deny("limit"), 1));
    assert_eq!(
        denied.refusal,
        Refusal::EditDenied {
            reason: "limit".into()
        }
    );
    assert!(
        denied.ticket.is_none(),
        "the ticket stays pending, unchanged"
    );
}

#[test]
fn invalid_or_unruled_edits_are_refused() {
    let p = pending(&[("dba", 1)], true);
    let alice = reviewer("alice", &["dba"]);
    assert!(matches!(
        refusal(edit(&p, &alice, json!([1, 2]), review(&[], true), 1)).refusal,
        Refusal::EditInvalid { .. }
    ));
    assert_eq!(
        refusal(vote(
            &p,
            &alice,
            Verdict::ApproveWithEdits {
                parameters: edited_params()
            },
            1
        ))
        .refusal,
        Refusal::EditNotRuled
    );
    // the principal cannot edit (an edit is an approval)
    assert_eq!(
        refusal(edit(
            &p,
            &reviewer("pat", &["dba"]),
            edited_params(),
            review(&[], true),
            1
        ))
        .refusal,
        Refusal::SelfApproval {
            person: person("pat")
        }
    );
}

// --- begin --------------------------------------------------------------------------------

#[test]
fn begin_issues_one_permit() {
    let approved = approved_by_two();
    let digest = approved.action_digest();
    let out = begin(&approved, digest, review(&[("dba", 2)], true), 300).unwrap();
    assert_eq!(
        out.ticket.state(),
        &TicketState::Executing {
            approval: approved.approval().unwrap().clone(),
            lease: lease(9),
            lease_expires: t(1_300),
            started_at: t(300)
        }
    );
    assert_eq!(kinds(&out.audit), [kind::EXECUTION_STARTED]);
    assert_eq!(
        out.audit[0].actor,
        Actor::Agent(AgentId::new("agent").unwrap())
    );
    let again = refusal(begin(&out.ticket, digest, review(&[("dba", 2)], true), 301));
    assert_eq!(
        again.refusal,
        Refusal::NotApplicable {
            state: StateName::Executing,
            event: EventKind::Begin
        }
    );
}

#[test]
fn begin_with_another_digest_makes_the_ticket_stale() {
    let approved = approved_by_two();
    let other = ActionDigest::from_bytes([1; 32]);
    let r = refusal(begin(&approved, other, review(&[("dba", 2)], true), 300));
    assert_eq!(r.refusal, Refusal::DigestMismatch);
    let stale = r.ticket.unwrap();
    assert!(matches!(
        stale.state(),
        TicketState::Stale {
            reason: StaleReason::DigestMismatch { .. },
            ..
        }
    ));
    assert_eq!(kinds(&r.audit), [kind::STALE, kind::REFUSED]);
}

#[test]
fn begin_with_changed_or_missing_preconditions_makes_the_ticket_stale() {
    let approved = approved_by_two();
    for observed in [
        BTreeMap::new(),
        [("balance".to_owned(), json!("499.99"))].into(),
        [("balance".to_owned(), json!(500))].into(),
    ] {
        let r = refusal(apply(
            &approved,
            Event::Begin {
                digest: approved.action_digest(),
                observed: observed.clone(),
                current: review(&[("dba", 2)], true),
                lease: lease(9),
                lease_expires: t(2_000),
            },
            t(300),
        ));
        assert_eq!(
            r.refusal,
            Refusal::PreconditionsChanged {
                differing: vec!["balance".into()]
            }
        );
        let TicketState::Stale {
            observed: recorded, ..
        } = r.ticket.unwrap().state().clone()
        else {
            panic!("stale expected")
        };
        assert_eq!(recorded, observed, "observed values recorded");
    }
}

#[test]
fn begin_under_a_stricter_policy_makes_the_ticket_stale() {
    let approved = approved_by_two();
    let d = approved.action_digest();
    // the same or a looser ruling passes
    assert!(begin(&approved, d, review(&[("dba", 2)], true), 300).is_ok());
    assert!(begin(&approved, d, review(&[("dba", 1)], true), 300).is_ok());
    assert!(begin(&approved, d, allow(10), 300).is_ok());
    // stricter: deny, more approvals, another group
    for current in [
        deny("frozen"),
        review(&[("dba", 3)], true),
        review(&[("dba", 2), ("finance", 1)], true),
    ] {
        let r = refusal(begin(&approved, d, current.clone(), 300));
        assert_eq!(r.refusal, Refusal::PolicyStricter, "{current:?}");
        assert!(matches!(
            r.ticket.unwrap().state(),
            TicketState::Stale {
                reason: StaleReason::PolicyStricter { .. },
                ..
            }
        ));
    }
    // a policy grant is stale under any review
    let granted = open_ticket(allow(1_000), PrincipalCheck::NoPrincipal).ticket;
    let r = refusal(begin(
        &granted,
        granted.action_digest(),
        review(&[("dba", 1)], true),
        10,
    ));
    assert_eq!(r.refusal, Refusal::PolicyStricter);
    assert!(begin(&granted, granted.action_digest(), allow(5), 10).is_ok());
}

#[test]
fn a_recorded_rejection_vetoes_under_a_policy_that_turned_veto_on() {
    let p = pending(&[("dba", 2)], false);
    let p = vote(&p, &reviewer("carol", &["dba"]), reject("no"), 1)
        .unwrap()
        .ticket;
    let p = approve(&p, &reviewer("alice", &["dba"]), 2).unwrap().ticket;
    let approved = approve(&p, &reviewer("bob", &["dba"]), 3).unwrap().ticket;
    let d = approved.action_digest();
    assert!(begin(&approved, d, review(&[("dba", 2)], false), 4).is_ok());
    assert_eq!(
        refusal(begin(&approved, d, review(&[("dba", 2)], true), 4)).refusal,
        Refusal::PolicyStricter
    );
}

// --- lease --------------------------------------------------------------------------------

fn executing() -> Ticket {
    let approved = approved_by_two();
    let d = approved.action_digest();
    begin(&approved, d, review(&[("dba", 2)], true), 300)
        .unwrap()
        .ticket // lease expires 1300
}

#[test]
fn renew_extends_a_live_lease_only() {
    let ex = executing();
    let renewed = apply(
        &ex,
        Event::Renew {
            lease: lease(9),
            lease_expires: t(5_000),
        },
        t(1_000),
    )
    .unwrap();
    assert!(matches!(
        renewed.ticket.state(),
        TicketState::Executing { lease_expires, .. } if *lease_expires == t(5_000)
    ));
    assert_eq!(kinds(&renewed.audit), [kind::LEASE_RENEWED]);
    let wrong = Event::Renew {
        lease: lease(8),
        lease_expires: t(5_000),
    };
    assert_eq!(
        refusal(apply(&ex, wrong, t(1_000))).refusal,
        Refusal::LeaseMismatch
    );
    let late = Event::Renew {
        lease: lease(9),
        lease_expires: t(5_000),
    };
    assert_eq!(
        refusal(apply(&ex, late, t(1_300))).refusal,
        Refusal::LeaseExpired {
            expired_at: t(1_300)
        }
    );
}

#[test]
fn a_late_finish_after_the_lease_was_lost_is_accepted() {
    let ex = executing();
    assert_eq!(
        refusal(apply(&ex, Event::LeaseLost { lease: lease(9) }, t(1_299))).refusal,
        Refusal::NotDue { due: t(1_300) }
    );
    let lost = apply(&ex, Event::LeaseLost { lease: lease(9) }, t(2_000)).unwrap();
    assert_eq!(
        lost.ticket.state(),
        &TicketState::Unknown {
            lease: lease(9),
            since: t(1_300)
        }
    );
    assert_eq!(lost.audit[0].actor, Actor::System);
    let wrong = Event::Finish {
        lease: lease(8),
        outcome: ExecutionOutcome::Failed { error: "x".into() },
    };
    assert_eq!(
        refusal(apply(&lost.ticket, wrong, t(2_100))).refusal,
        Refusal::LeaseMismatch
    );
    let finish = Event::Finish {
        lease: lease(9),
        outcome: ExecutionOutcome::Succeeded {
            output: json!({ "id": 7 }),
        },
    };
    let done = apply(&lost.ticket, finish, t(2_200)).unwrap();
    assert_eq!(
        done.ticket.state(),
        &TicketState::Succeeded {
            output: json!({ "id": 7 }),
            at: t(2_200),
            resolved_by: None
        }
    );
    assert_eq!(done.audit[0].data["late"], true);
    // The output stays out of the chain: a text beside the event, committed once sealed.
    assert_eq!(done.audit[0].data["output"], Value::Null);
    let text = done.audit[0].text("output").unwrap();
    assert_eq!(text.value(), Some(&json!({ "id": 7 })));
    let mut record = done.audit[0].clone();
    record.seal(|| [3; 32]);
    assert_eq!(
        record.data["output"]["commitment"].as_str(),
        record.text("output").unwrap().commitment().as_deref()
    );
}

#[test]
fn an_operator_resolves_an_unknown_outcome() {
    let ex = executing();
    let lost = apply(&ex, Event::LeaseLost { lease: lease(9) }, t(2_000))
        .unwrap()
        .ticket;
    let out = apply(
        &lost,
        Event::Resolve {
            operator: person("olga"),
            outcome: ExecutionOutcome::Failed {
                error: "never ran".into(),
            },
        },
        t(3_000),
    )
    .unwrap();
    assert_eq!(
        out.ticket.state(),
        &TicketState::Failed {
            error: "never ran".into(),
            at: t(3_000),
            resolved_by: Some(person("olga"))
        }
    );
    assert_eq!(out.audit[0].kind, kind::RESOLVED);
    assert_eq!(out.audit[0].actor, Actor::Operator(person("olga")));
}

#[test]
fn an_operator_revokes_an_unused_approval() {
    let approved = approved_by_two();
    let out = apply(
        &approved,
        Event::Revoke {
            operator: person("olga"),
            reason: "incident".into(),
        },
        t(300),
    )
    .unwrap();
    assert_eq!(
        out.ticket.state(),
        &TicketState::Cancelled {
            by: Actor::Operator(person("olga")),
            reason: "incident".into(),
            at: t(300)
        }
    );
    assert_eq!(kinds(&out.audit), [kind::REVOKED]);
    let ex = executing();
    assert!(matches!(
        refusal(apply(
            &ex,
            Event::Revoke {
                operator: person("olga"),
                reason: "late".into()
            },
            t(400)
        ))
        .refusal,
        Refusal::NotApplicable { .. }
    ));
}

// --- misc ---------------------------------------------------------------------------------

#[test]
fn only_votes_commute() {
    assert!(Event::Vote {
        reviewer: reviewer("a", &["dba"]),
        verdict: Verdict::Approve
    }
    .commutes_with_votes());
    assert!(Event::Vote {
        reviewer: reviewer("a", &["dba"]),
        verdict: reject("x")
    }
    .commutes_with_votes());
    assert!(!Event::Edit {
        reviewer: reviewer("a", &["dba"]),
        parameters: json!({}),
        ruling: allow(1)
    }
    .commutes_with_votes());
    assert!(!Event::Expire.commutes_with_votes());
}

#[test]
fn refusal_messages_are_lowercase_without_trailing_period() {
    let samples = [
        Refusal::NotPending {
            state: StateName::Approved,
        },
        Refusal::PreconditionsChanged {
            differing: vec!["a".into(), "b".into()],
        },
        Refusal::NotApplicable {
            state: StateName::Stale,
            event: EventKind::LeaseLost,
        },
        Refusal::PrincipalUnresolved,
    ];
    for r in samples {
        let m = r.to_string();
        assert!(
            m.chars().next().unwrap().is_lowercase() || m.starts_with('`'),
            "{m}"
        );
        assert!(!m.ends_with('.'), "{m}");
    }
    assert_eq!(
        Refusal::PreconditionsChanged {
            differing: vec!["a".into(), "b".into()]
        }
        .to_string(),
        "preconditions changed since approval: `a`, `b`"
    );
}

#[test]
fn public_types_are_send_and_sync() {
    fn ensure<T: Send + Sync>() {}
    ensure::<Ticket>();
    ensure::<Event>();
    ensure::<Transition>();
    ensure::<Refused>();
    ensure::<Refusal>();
    ensure::<RequirementProgress>();
}

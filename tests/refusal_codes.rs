//! Stable refusal codes: one list (`agent_handoff::codes`), every typed refusal maps into it,
//! no code is listed twice or left unused, and the codes the engine writes into the audit trail
//! are the listed ones.
//!
//! The doors (HTTP problem+json `type`, MCP error data, Python exception classes) derive from
//! this list, so a code that changes name breaks them: the table below pins each variant's
//! code.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use agent_handoff::action::{CanonicalError, ParseDigestError, ValidationError};
use agent_handoff::audit::{AuditEvent, CheckpointError, VerifyError};
use agent_handoff::backend::DirectoryError;
use agent_handoff::codes::{self, Code, Kind, Retry};
use agent_handoff::limits::LimitError;
use agent_handoff::policy::{Policy, PolicyError};
use agent_handoff::ticket::{EventKind, Refusal, StateName, Verdict};
use agent_handoff::token::{MalformedToken, SignError, TokenError};
use agent_handoff::{
    AuditError, DecideError, Error, ExecuteError, IdentityError, InvalidId, LinkError, PersonId,
    ProposeError, RunError, StoreError, TicketId, Timestamp, WaitError,
};
use support::{request, Harness};

fn t() -> Timestamp {
    Timestamp::from_unix_millis(1_700_000_000_000)
}

fn id() -> TicketId {
    TicketId::from_uuid(uuid::Uuid::from_u128(1))
}

fn alice() -> PersonId {
    PersonId::new("alice").unwrap()
}

fn boxed() -> Box<dyn std::error::Error + Send + Sync> {
    "backend down".into()
}

fn refusals() -> Vec<(Refusal, &'static str)> {
    vec![
        (
            Refusal::NotPending {
                state: StateName::Approved,
            },
            "not_pending",
        ),
        (Refusal::DeadlinePassed { deadline: t() }, "deadline_passed"),
        (Refusal::NotDue { due: t() }, "not_due"),
        (Refusal::NotEligible { person: alice() }, "not_eligible"),
        (Refusal::SelfApproval { person: alice() }, "self_approval"),
        (Refusal::PrincipalUnresolved, "principal_unresolved"),
        (
            Refusal::ConflictingVote {
                person: alice(),
                previous: agent_handoff::ticket::VoteKind::Reject,
            },
            "conflicting_vote",
        ),
        (Refusal::EditNotRuled, "edit_not_ruled"),
        (
            Refusal::EditDenied {
                reason: "no".into(),
            },
            "edit_denied",
        ),
        (
            Refusal::EditInvalid {
                source: ValidationError::ParametersNotObject,
            },
            "edit_invalid",
        ),
        (Refusal::DigestMismatch, "digest_mismatch"),
        (
            Refusal::PreconditionsChanged {
                differing: vec!["rows".into()],
            },
            "preconditions_changed",
        ),
        (Refusal::PolicyStricter, "policy_stricter"),
        (Refusal::GrantExpired { valid_until: t() }, "grant_expired"),
        (Refusal::LeaseMismatch, "lease_mismatch"),
        (Refusal::LeaseExpired { expired_at: t() }, "lease_expired"),
        (
            Refusal::NotApplicable {
                state: StateName::Succeeded,
                event: EventKind::Vote,
            },
            "not_applicable",
        ),
    ]
}

fn store_errors() -> Vec<(StoreError, &'static str)> {
    vec![
        (
            StoreError::VersionConflict {
                ticket: id(),
                expected: 1,
            },
            "version_conflict",
        ),
        (StoreError::DuplicateKey { existing: id() }, "duplicate_key"),
        (StoreError::NonceReused, "nonce_reused"),
        (
            StoreError::TooLate {
                at: t(),
                limit: t(),
            },
            "too_late",
        ),
        (
            StoreError::OutboxConflict {
                id: uuid::Uuid::nil(),
            },
            "outbox_conflict",
        ),
        (StoreError::NotFound(id()), "not_found"),
        (
            StoreError::Frozen {
                scope: agent_handoff::FreezeScope::All,
                reason: "x".into(),
            },
            "frozen",
        ),
        (
            StoreError::ClockJump {
                clock: t(),
                expected: t(),
            },
            "clock_jump",
        ),
        (
            StoreError::FloorAhead {
                floor: t(),
                clock: t(),
            },
            "floor_ahead",
        ),
        (StoreError::Closed, "store_closed"),
        (
            StoreError::SchemaTooNew {
                found: 9,
                supported: 2,
            },
            "store_schema_too_new",
        ),
        (StoreError::InvalidWrite("x".into()), "invalid_write"),
        (StoreError::MisfiledAuditEvent { seq: 3 }, "audit_misfiled"),
        (StoreError::Corrupt("x".into()), "store_corrupt"),
        (StoreError::Backend(boxed()), "store_unavailable"),
        (
            StoreError::NoSuchText(agent_handoff::audit::TextRef::new(3, "feedback")),
            "no_such_text",
        ),
    ]
}

fn identity_errors() -> Vec<(IdentityError, &'static str)> {
    vec![
        (IdentityError::Unknown, "unauthenticated"),
        (IdentityError::Unsupported("x"), "credential_unsupported"),
        (IdentityError::Backend(boxed()), "identity_unavailable"),
    ]
}

fn validation_errors() -> Vec<(ValidationError, &'static str)> {
    use ValidationError as V;
    let p = || "/x".to_owned();
    vec![
        (V::EmptyKind, "invalid_kind"),
        (
            V::InvalidKind {
                kind: "A".into(),
                problem: "x",
            },
            "invalid_kind",
        ),
        (V::ConfidenceOutOfRange(2.0), "invalid_confidence"),
        (
            V::IdempotencyKeyTooShort { len: 2 },
            "invalid_idempotency_key",
        ),
        (
            V::IdempotencyKeyTooLong { len: 300 },
            "invalid_idempotency_key",
        ),
        (V::IdempotencyKeyCharacters, "invalid_idempotency_key"),
        (V::BadPointer { pointer: p() }, "invalid_sensitive_pointer"),
        (
            V::PointerNotFound { pointer: p() },
            "invalid_sensitive_pointer",
        ),
        (V::PointerTooLong { len: 9999 }, "invalid_sensitive_pointer"),
        (
            V::DuplicatePointer { pointer: p() },
            "invalid_sensitive_pointer",
        ),
        (
            V::TooManySensitivePointers { count: 999 },
            "invalid_sensitive_pointer",
        ),
        (V::ParametersNotObject, "invalid_parameters"),
        (
            V::Field {
                field: "environment",
                problem: "x".into(),
            },
            "invalid_field",
        ),
        (V::Json("x".into()), "malformed_request"),
        (
            V::Malformed(CanonicalError::Syntax {
                line: 1,
                column: 1,
                problem: "x",
            }),
            "malformed_json",
        ),
        (
            V::UnknownField {
                field: "requester".into(),
            },
            "malformed_request",
        ),
        (V::TooManyTargets { count: 999 }, "invalid_targets"),
        (V::EmptyTarget { index: 0 }, "invalid_targets"),
        (
            V::TargetTooLong {
                index: 0,
                len: 9999,
            },
            "invalid_targets",
        ),
        (V::TargetControlCharacter { index: 0 }, "invalid_targets"),
        (
            V::TextTooLong {
                field: "justification.reason",
                len: 9,
                max: 1,
            },
            "too_large",
        ),
        (V::TooManyRiskFactors { count: 999 }, "too_large"),
        (
            V::RiskFactorTooLong {
                index: 0,
                len: 9999,
            },
            "too_large",
        ),
        (
            V::TooManyEntries {
                field: "attributes",
                count: 999,
            },
            "too_large",
        ),
        (
            V::InvalidName {
                field: "attributes",
                name: "a b".into(),
                problem: "x",
            },
            "invalid_field",
        ),
        (
            V::TooLarge {
                field: "parameters",
                len: 1 << 30,
            },
            "too_large",
        ),
        (
            V::TooDeep {
                field: "parameters",
            },
            "too_deep",
        ),
        (
            V::UnsafeInteger {
                field: "parameters",
                pointer: p(),
            },
            "unsafe_integer",
        ),
        (
            V::InvalidUnit {
                unit: "U S D".into(),
                problem: "x",
            },
            "invalid_field",
        ),
    ]
}

fn link_errors() -> Vec<(LinkError, &'static str)> {
    vec![
        (LinkError::NotConfigured("x"), "not_configured"),
        (
            LinkError::Malformed(MalformedToken::TooLong),
            "token_malformed",
        ),
        (
            LinkError::UnknownKey {
                key_id: "k9".into(),
            },
            "token_unknown_key",
        ),
        (LinkError::BadSignature, "token_bad_signature"),
        (LinkError::Expired { expires_at: t() }, "token_expired"),
        (
            LinkError::NotYetValid { issued_at: t() },
            "token_not_yet_valid",
        ),
        (
            LinkError::Unauthenticated(IdentityError::Unknown),
            "unauthenticated",
        ),
        (
            LinkError::WrongReviewer {
                bound: alice(),
                presented: PersonId::new("bob").unwrap(),
            },
            "wrong_reviewer",
        ),
        (LinkError::DigestChanged, "digest_changed"),
        (LinkError::Replayed, "replayed"),
        (LinkError::Frozen { reason: "x".into() }, "frozen"),
        (LinkError::NotFound(id()), "not_found"),
        (LinkError::InvalidSubmission("x"), "invalid_submission"),
        (
            LinkError::NotPending {
                state: StateName::Expired,
            },
            "not_pending",
        ),
        (
            LinkError::Refused(Refusal::SelfApproval { person: alice() }),
            "self_approval",
        ),
        (
            LinkError::Sign(SignError::ExpiryNotAfterIssue {
                issued_at: t(),
                expires_at: t(),
            }),
            "token_sign_failed",
        ),
        (
            LinkError::Random(getrandom::Error::UNSUPPORTED),
            "random_failed",
        ),
        (LinkError::Store(StoreError::Closed), "store_closed"),
        (LinkError::Limit(text_too_long()), "too_large"),
    ]
}

fn text_too_long() -> LimitError {
    LimitError::TextTooLong {
        field: "feedback",
        len: 5000,
        max: 4096,
    }
}

fn policy_errors() -> Vec<(PolicyError, &'static str)> {
    let parts = || (None, String::new(), None, "x".to_owned());
    let mut out = Vec::new();
    for (make, code) in [
        (
            (|(rule, field, line, message)| PolicyError::Syntax {
                rule,
                field,
                line,
                message,
            }) as fn((Option<String>, String, Option<usize>, String)) -> PolicyError,
            "policy_syntax",
        ),
        (
            |(rule, field, line, message)| PolicyError::UnknownField {
                rule,
                field,
                line,
                message,
            },
            "policy_unknown_field",
        ),
        (
            |(rule, field, line, message)| PolicyError::Schema {
                rule,
                field,
                line,
                message,
            },
            "policy_schema",
        ),
        (
            |(rule, field, line, message)| PolicyError::InvalidValue {
                rule,
                field,
                line,
                message,
            },
            "policy_invalid_value",
        ),
        (
            |(rule, field, line, message)| PolicyError::InvalidGlob {
                rule,
                field,
                line,
                message,
            },
            "policy_invalid_glob",
        ),
        (
            |(rule, field, line, message)| PolicyError::OutOfBounds {
                rule,
                field,
                line,
                message,
            },
            "policy_out_of_bounds",
        ),
        (
            |(rule, field, line, message)| PolicyError::DuplicateRuleId {
                rule,
                field,
                line,
                message,
            },
            "policy_duplicate_rule_id",
        ),
        (
            |(rule, field, line, message)| PolicyError::HighRiskAllow {
                rule,
                field,
                line,
                message,
            },
            "policy_high_risk_allow",
        ),
    ] {
        out.push((make(parts()), code));
    }
    out
}

/// Every variant of every typed refusal, with the code it must answer.
fn table() -> Vec<(String, Code, &'static str)> {
    let mut rows: Vec<(String, Code, &'static str)> = Vec::new();
    macro_rules! add {
        ($list:expr) => {
            for (e, code) in $list {
                rows.push((format!("{e:?}"), e.code(), code));
            }
        };
    }
    add!(refusals());
    add!(store_errors());
    add!(identity_errors());
    add!(validation_errors());
    add!(link_errors());
    add!(policy_errors());
    add!([
        (ProposeError::Frozen { reason: "x".into() }, "frozen"),
        (ProposeError::RateLimited, "rate_limited"),
        (
            ProposeError::IdempotencyConflict { existing: id() },
            "idempotency_conflict"
        ),
        (
            ProposeError::Identity(IdentityError::Backend(boxed())),
            "identity_unavailable"
        ),
        (
            ProposeError::Store(StoreError::DuplicateKey { existing: id() }),
            "duplicate_key"
        ),
    ]);
    add!([
        (
            DecideError::Unauthenticated(IdentityError::Unknown),
            "unauthenticated"
        ),
        (
            DecideError::NotOperator {
                person: "bob".into()
            },
            "not_operator"
        ),
        (DecideError::NotFound(id()), "not_found"),
        (DecideError::Frozen { reason: "x".into() }, "frozen"),
        (
            DecideError::StaleVersion {
                expected: 1,
                current: 3
            },
            "stale_version"
        ),
        (
            DecideError::Refused(Refusal::PolicyStricter),
            "policy_stricter"
        ),
        (
            DecideError::Store(StoreError::Backend(boxed())),
            "store_unavailable"
        ),
        (DecideError::Limit(text_too_long()), "too_large"),
        (
            DecideError::Limit(LimitError::ValueTooDeep {
                field: "output",
                max: 32
            }),
            "too_deep"
        ),
        (
            DecideError::Limit(LimitError::ValueTooLarge {
                field: "output",
                len: 70_000,
                max: 65_536
            }),
            "too_large"
        ),
        (
            DecideError::NoSuchText(agent_handoff::audit::TextRef::new(3, "reason")),
            "no_such_text"
        ),
    ]);
    add!([
        (ExecuteError::NotFound(id()), "not_found"),
        (
            ExecuteError::Refused(Refusal::DigestMismatch),
            "digest_mismatch"
        ),
        (
            ExecuteError::PreconditionsNotObserved,
            "preconditions_not_observed"
        ),
        (ExecuteError::Frozen { reason: "x".into() }, "frozen"),
        (ExecuteError::Store(StoreError::Closed), "store_closed"),
        (ExecuteError::Limit(text_too_long()), "too_large"),
    ]);
    add!([
        (WaitError::NotFound(id()), "not_found"),
        (WaitError::Store(StoreError::Closed), "store_closed"),
    ]);
    add!([
        (
            AuditError::Chain(VerifyError::HashMismatch { seq: 1 }),
            "audit_chain_broken"
        ),
        (
            AuditError::Checkpoint(CheckpointError::NoTrustedSignature),
            "audit_checkpoint_invalid"
        ),
        (AuditError::NoCheckpointKey, "not_configured"),
        (
            AuditError::CheckpointRefused {
                previous: Some(7),
                source: VerifyError::Rewritten { seq: 7 }
            },
            "audit_checkpoint_refused"
        ),
        (
            AuditError::Checkpoint(CheckpointError::WrongOrigin {
                expected: "a".into(),
                found: "b".into()
            }),
            "audit_checkpoint_invalid"
        ),
        (AuditError::Store(StoreError::Closed), "store_closed"),
    ]);
    add!([
        (
            RunError::<std::io::Error>::Propose(ProposeError::RateLimited),
            "rate_limited"
        ),
        (
            RunError::NotApproved {
                ticket: id(),
                state: StateName::Rejected,
                reason: "x".into()
            },
            "not_approved"
        ),
        (RunError::StillPending(id()), "still_pending"),
        (RunError::Wait(WaitError::NotFound(id())), "not_found"),
        (
            RunError::Execute(ExecuteError::PreconditionsNotObserved),
            "preconditions_not_observed"
        ),
        (
            RunError::Action(std::io::Error::other("x")),
            "action_failed"
        ),
    ]);
    add!([
        (Error::Build("x"), "invalid_configuration"),
        (
            Error::StoreContract {
                implemented: 0,
                required: 1
            },
            "store_contract_too_old"
        ),
        (Error::ClockMismatch, "clock_mismatch"),
        (Error::Link(LinkError::Replayed), "replayed"),
        (Error::Store(StoreError::NonceReused), "nonce_reused"),
    ]);
    add!([
        (
            TokenError::Malformed(MalformedToken::Base64),
            "token_malformed"
        ),
        (
            TokenError::UnknownKey { key_id: "k".into() },
            "token_unknown_key"
        ),
        (TokenError::BadSignature, "token_bad_signature"),
        (TokenError::Expired { expires_at: t() }, "token_expired"),
        (
            TokenError::NotYetValid { issued_at: t() },
            "token_not_yet_valid"
        ),
        (TokenError::DigestMismatch, "digest_changed"),
    ]);
    add!([
        (DirectoryError::UnknownPerson("x".into()), "unknown_person"),
        (DirectoryError::Random("x".into()), "random_failed"),
    ]);
    add!([(PersonId::new("").unwrap_err(), "invalid_id")]);
    add!([(
        "zz".parse::<agent_handoff::action::ActionDigest>()
            .unwrap_err(),
        "invalid_digest"
    )]);
    let too_deep = agent_handoff::action::parse_strict_json(&"[".repeat(200)).unwrap_err();
    add!([(too_deep, "malformed_json")]);
    let errors = Policy::from_toml("version = 1").unwrap_err();
    rows.push((format!("{errors:?}"), errors.code(), "policy_invalid"));
    let _: Option<&ParseDigestError> = None;
    let _: Option<&InvalidId> = None;
    rows
}

#[test]
fn every_variant_answers_its_listed_code() {
    for (what, code, expected) in table() {
        assert_eq!(code.as_str(), expected, "{what}");
        assert_eq!(
            codes::lookup(code.as_str()),
            Some(code),
            "{what}: `{code}` is not in the list"
        );
        assert!(codes::ALL.contains(&code), "{what}");
    }
}

#[test]
fn the_list_has_no_duplicates_and_every_code_is_used() {
    let mut seen = BTreeSet::new();
    for code in codes::ALL {
        assert!(seen.insert(code.as_str()), "`{code}` is listed twice");
        assert!(
            code.as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'),
            "`{code}` is not snake case"
        );
        assert!(!code.meaning().is_empty());
    }
    // Every listed code is answered by some variant, or written by the engine into the audit
    // trail (the Feishu handler's own refusals).
    let answered: BTreeSet<&str> = table().iter().map(|(_, code, _)| code.as_str()).collect();
    let audit_only = ["feishu_callback_refused", "feishu_no_decision_token"];
    for code in codes::ALL {
        assert!(
            answered.contains(code.as_str()) || audit_only.contains(&code.as_str()),
            "`{code}` is listed but nothing answers it"
        );
    }
}

#[test]
fn a_code_carries_what_a_door_needs_to_map_it() {
    let c = codes::lookup("rate_limited").unwrap();
    assert_eq!((c.kind(), c.retry()), (Kind::RateLimited, Retry::Later));
    assert_eq!(codes::NOT_FOUND.kind(), Kind::NotFound);
    assert_eq!(codes::STALE_VERSION.retry(), Retry::AfterRefresh);
    assert_eq!(codes::STORE_UNAVAILABLE.retry(), Retry::Later);
    assert_eq!(codes::SELF_APPROVAL.kind(), Kind::Forbidden);
    // Serialised as the bare name, so a door can put it into JSON as is.
    assert_eq!(
        serde_json::to_value(codes::NOT_PENDING).unwrap(),
        serde_json::json!("not_pending")
    );
    assert_eq!(
        serde_json::to_value(Kind::NotFound).unwrap(),
        serde_json::json!("not_found")
    );
    assert_eq!(Kind::Unavailable.as_str(), "unavailable");
    assert_eq!(Retry::AfterRefresh.as_str(), "after_refresh");
    assert_eq!(codes::REPLAYED.to_string(), "replayed");
    assert_eq!(codes::REPLAYED, "replayed");
}

/// The codes in `refusal` members and decision rows are codes of the list: refusals written by
/// the engine (credential, freeze, stale version, tokens) name listed codes.
#[tokio::test]
async fn the_audit_trail_names_listed_codes() {
    let h = Harness::new().await;
    let agent = h.handoff.agent(
        agent_handoff::AgentId::new("ops").unwrap(),
        Some(PersonId::new("pat").unwrap()),
    );
    let pending = match agent.propose(request("db.drop", "codes-1")).await.unwrap() {
        agent_handoff::Proposal::Pending(p) => p,
        other => panic!("{other:?}"),
    };
    let stranger = agent_handoff::Credential::token("aht_nobody");
    let refusals: Vec<Code> = vec![
        h.handoff
            .decide(pending.id, &stranger, Verdict::Approve, None)
            .await
            .unwrap_err()
            .code(),
        h.handoff
            .decide(pending.id, h.cred("pat"), Verdict::Approve, None)
            .await
            .unwrap_err()
            .code(),
        h.handoff
            .decide(pending.id, h.cred("erin"), Verdict::Approve, None)
            .await
            .unwrap_err()
            .code(),
        h.handoff
            .decide(pending.id, h.cred("alice"), Verdict::Approve, Some(99))
            .await
            .unwrap_err()
            .code(),
        h.handoff
            .revoke(pending.id, h.cred("alice"), "x")
            .await
            .unwrap_err()
            .code(),
    ];
    assert_eq!(
        refusals,
        [
            codes::UNAUTHENTICATED,
            codes::SELF_APPROVAL,
            codes::NOT_ELIGIBLE,
            codes::STALE_VERSION,
            codes::NOT_OPERATOR,
        ]
    );
    let mut in_trail: BTreeMap<String, usize> = BTreeMap::new();
    for raw in h.handoff.store().audit_events(1, 1000).await.unwrap() {
        let event = AuditEvent::decode(raw).unwrap();
        if let Some(code) = event.record().data["refusal"].as_str() {
            assert!(codes::lookup(code).is_some(), "`{code}` is not listed");
            *in_trail.entry(code.to_owned()).or_default() += 1;
        }
    }
    for code in &refusals {
        assert!(in_trail.contains_key(code.as_str()), "{code} not audited");
    }
    for row in h.handoff.store().decisions(pending.id).await.unwrap() {
        if let Some(code) = &row.refusal {
            assert!(codes::lookup(code).is_some(), "`{code}` is not listed");
        }
    }
}

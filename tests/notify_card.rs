//! Review cards, markup escaping and the `Notifier` port, through the public API.
//!
//! Tickets are built with `ticket::open` and a fixed ruling (as in `ticket_table.rs`). What is
//! proved here: a card shows the action that would run with sensitive values redacted and a
//! keyed (never bare) digest; facts and the agent's claims are kept apart; no `Debug`,
//! `Display`, JSON or rendering of a card or a ticket prints a redacted value; cards fit size
//! limits with visible markers and never show parameters in part; escaping leaves no link,
//! mention or tag for random injection attempts; the notifier port is object safe and its
//! recording double retries and deduplicates like a channel.

use std::sync::Arc;
use std::time::Duration;

use agent_handoff::action::{
    ActionDigest, ActionRequest, Amount, DigestKey, Environment, Impact, Justification, Requester,
    Reversibility, Sensitivity, REDACTED,
};
use agent_handoff::notify::{
    CardTooLarge, DecisionLink, Delivery, DeliveryError, DeliveryKind, DeliveryReceipt, Markup,
    Notifier, RecordingNotifier, ReviewCard, AGENT_CLAIMS_LABEL, CARD_SCHEMA,
};
use agent_handoff::policy::{
    MatchedRule, Outcome, PolicyHash, PolicyRef, ReviewPlan, ReviewRequirement, Ruling,
};
use agent_handoff::ticket::{
    apply, open, Event, PrincipalCheck, Reviewer, StateName, Ticket, Verdict,
};
use agent_handoff::token::VerdictKind;
use agent_handoff::{AgentId, GroupName, PersonId, RuleId, TicketId, Timestamp};
use hmac::{KeyInit, Mac};
use proptest::prelude::*;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

/// A value that must never appear anywhere outside the store.
const SECRET: &str = "hunter2-S3CR3T-iban-DE89370400440532013000";
const FEISHU_CARD_MAX: usize = 30 * 1024;

fn t(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

fn person(name: &str) -> PersonId {
    PersonId::new(name).unwrap()
}

fn group(name: &str) -> GroupName {
    GroupName::new(name).unwrap()
}

fn key() -> DigestKey {
    DigestKey::from_bytes([7; 32])
}

fn reviewer(name: &str, groups: &[&str]) -> Reviewer {
    Reviewer {
        person: person(name),
        groups: groups.iter().map(|g| group(g)).collect(),
    }
}

fn plan() -> ReviewPlan {
    ReviewPlan {
        requirements: [
            ReviewRequirement {
                groups: [group("dba")].into(),
                approvals: 2,
            },
            ReviewRequirement {
                groups: [group("finance")].into(),
                approvals: 1,
            },
        ]
        .into(),
        deadline: Duration::from_secs(3600),
        approval_ttl: Duration::from_secs(600),
        veto: true,
    }
}

fn ruling(plan: ReviewPlan) -> Ruling {
    Ruling {
        outcome: Outcome::Review(plan),
        matched: vec![MatchedRule {
            rule: RuleId::new("big-payments").unwrap(),
            reasons: vec!["kind `payment.send` matches `payment.*`".into()],
            fail_closed: None,
        }],
        policy: PolicyRef {
            version: "2026-11-01".into(),
            hash: PolicyHash([0; 32]),
        },
    }
}

fn payment() -> ActionRequest {
    ActionRequest::builder("payment.send", "invoice-2024-0042")
        .target("vendor:acme")
        .parameters(json!({ "iban": SECRET, "amount": "4200.50", "memo": "March invoice" }))
        .sensitive("/iban")
        .environment(Environment::Production)
        .sensitivity(Sensitivity::Confidential)
        .impact(Impact::new(Amount::parse("4200.50").unwrap(), "USD"))
        .reversibility(Reversibility::Compensable)
        .confidence(0.93)
        .justification(Justification {
            reason: "pay the March invoice".into(),
            expected_effect: "vendor receives 4200.50 USD".into(),
            risk_factors: vec!["wrong IBAN".into()],
            rollback_plan: Some("ask the bank for a recall".into()),
        })
        .build()
        .unwrap()
}

fn open_ticket(request: ActionRequest) -> Ticket {
    open(
        TicketId::from_uuid(Uuid::from_u128(1)),
        Requester::new(AgentId::new("pay-agent").unwrap(), Some(person("pat"))),
        PrincipalCheck::Person(person("pat")),
        request,
        ruling(plan()),
        t(0),
    )
    .ticket
}

fn applied(ticket: &Ticket, event: Event, at: i64) -> Ticket {
    match apply(ticket, event, t(at)) {
        Ok(tr) => tr.ticket,
        Err(r) => panic!("refused: {}", r.refusal),
    }
}

fn links() -> Vec<DecisionLink> {
    vec![
        DecisionLink::new(
            VerdictKind::Approve,
            "https://review.example/d/ah1.APPROVE-TOKEN",
        ),
        DecisionLink::new(
            VerdictKind::Reject,
            "https://review.example/d/ah1.REJECT-TOKEN",
        ),
    ]
}

fn card(ticket: &Ticket, at: i64) -> ReviewCard {
    ReviewCard::from_ticket(ticket, t(at), &key(), &links())
}

/// Every textual form of a card.
fn all_forms(card: &ReviewCard) -> Vec<(String, String)> {
    let mut forms = vec![
        ("debug".to_owned(), format!("{card:?}")),
        ("pretty debug".to_owned(), format!("{card:#?}")),
        ("display".to_owned(), card.to_string()),
        (
            "json".to_owned(),
            String::from_utf8(card.to_json()).unwrap(),
        ),
    ];
    for m in Markup::ALL {
        forms.push((format!("render {m}"), card.render(m)));
    }
    forms
}

fn assert_no_secret(card: &ReviewCard) {
    for (form, text) in all_forms(card) {
        assert!(!text.contains(SECRET), "{form} shows the secret:\n{text}");
        assert!(!text.contains("hunter2"), "{form} shows part of the secret");
    }
}

fn json(card: &ReviewCard) -> Value {
    serde_json::from_slice(&card.to_json()).unwrap()
}

// --- content ---------------------------------------------------------------------------

#[test]
fn a_card_shows_facts_and_claims_apart() {
    let ticket = open_ticket(payment());
    let card = card(&ticket, 10);
    let v = json(&card);
    assert_eq!(v["schema"], CARD_SCHEMA);
    assert_eq!(v["ticket"], ticket.id().to_string());
    assert_eq!(v["ticket_version"], 1);
    assert_eq!(v["state"], "pending");

    let facts = &v["facts"];
    assert_eq!(facts["kind"], "payment.send");
    assert_eq!(facts["targets"], json!(["vendor:acme"]));
    assert_eq!(facts["environment"], "production");
    assert_eq!(facts["sensitivity"], "confidential");
    assert_eq!(
        facts["impact"],
        json!({ "amount": "4200.5", "unit": "USD" })
    );
    assert_eq!(facts["reversibility"], "compensable");
    assert_eq!(facts["requester"]["agent"], "pay-agent");
    assert_eq!(
        facts["parameters"]["redacted"],
        json!({ "iban": REDACTED, "amount": "4200.50", "memo": "March invoice" })
    );
    assert_eq!(facts["parameters"]["omitted"], Value::Null);
    assert_eq!(facts["ruling"]["policy_version"], "2026-11-01");
    assert_eq!(facts["ruling"]["rules"][0]["rule"], "big-payments");
    assert_eq!(
        facts["ruling"]["rules"][0]["reasons"][0],
        "kind `payment.send` matches `payment.*`"
    );
    assert_eq!(facts["deadline"], 3_600_000);
    // Nothing the agent wrote about itself sits among the facts.
    for claim in [
        "reason",
        "expected_effect",
        "risk_factors",
        "rollback_plan",
        "confidence",
    ] {
        assert!(facts.get(claim).is_none(), "{claim} among the facts");
    }

    let claims = &v["agent_claims"];
    assert_eq!(claims["label"], AGENT_CLAIMS_LABEL);
    assert_eq!(claims["reason"], "pay the March invoice");
    assert_eq!(claims["expected_effect"], "vendor receives 4200.50 USD");
    assert_eq!(claims["risk_factors"], json!(["wrong IBAN"]));
    assert_eq!(claims["rollback_plan"], "ask the bank for a recall");
    assert_eq!(claims["confidence"], 0.93);

    // Only what the card is for: no attributes, preconditions, idempotency key or raw request.
    let text = String::from_utf8(card.to_json()).unwrap();
    for absent in [
        "invoice-2024-0042",
        "preconditions",
        "attributes",
        "sensitive\"",
    ] {
        assert!(!text.contains(absent), "card JSON contains {absent}");
    }

    // Serde round trip (an outbox row can carry the card).
    let back: ReviewCard = serde_json::from_slice(&card.to_json()).unwrap();
    assert_eq!(back, card);
}

#[test]
fn the_digest_is_keyed_never_bare() {
    let ticket = open_ticket(payment());
    let card = card(&ticket, 10);
    assert_eq!(card.facts.digest, key().keyed(&ticket.action_digest()));
    assert!(key().verify(&ticket.action_digest(), &card.facts.digest));
    let bare = ticket.action_digest().to_string();
    for (form, text) in all_forms(&card) {
        assert!(!text.contains(&bare), "{form} carries the bare SHA-256");
    }
    // Another key, another digest: the card's digest is useless without the store's key.
    let other = ReviewCard::from_ticket(&ticket, t(10), &DigestKey::from_bytes([8; 32]), &[]);
    assert_ne!(other.facts.digest, card.facts.digest);
}

#[test]
fn the_parameter_fingerprint_matches_its_golden_vector() {
    // Independent computation of the documented construction ...
    let params = payment().parameters().clone();
    let jcs = br#"{"amount":"4200.50","iban":"hunter2-S3CR3T-iban-DE89370400440532013000","memo":"March invoice"}"#;
    assert_eq!(agent_handoff::action::canonical_json(&params), jcs.to_vec());
    let mut inner = Sha256::new();
    inner.update(b"agent-handoff/card-parameters/v1\x00");
    inner.update(jcs);
    let inner: [u8; 32] = inner.finalize().into();
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&[7; 32]).unwrap();
    mac.update(b"agent-handoff/keyed-action-digest/v1\x00");
    mac.update(&inner);
    let expected: [u8; 32] = mac.finalize().into_bytes().into();
    let card = card(&open_ticket(payment()), 10);
    assert_eq!(card.facts.parameters.fingerprint.as_bytes(), &expected);

    // ... and a fixed vector, computed with Python's hashlib/hmac over the JCS bytes of
    // {"amount":"4200.50","iban":"DE89370400440532013000"} with the key 0x07 × 32.
    let request = ActionRequest::builder("payment.send", "invoice-2024-0042")
        .parameters(json!({ "iban": "DE89370400440532013000", "amount": "4200.50" }))
        .sensitive("/iban")
        .build()
        .unwrap();
    let card = ReviewCard::from_ticket(&open_ticket(request), t(10), &key(), &[]);
    assert_eq!(
        card.facts.parameters.fingerprint.to_string(),
        "408bcc4aaceaa84ebf62335d85d796cec589c53c41d570a758a0bdce19c5a226"
    );
}

#[test]
fn progress_shows_what_is_still_needed() {
    let ticket = open_ticket(payment());
    let ticket = applied(
        &ticket,
        Event::Vote {
            reviewer: reviewer("alice", &["dba"]),
            verdict: Verdict::Approve,
        },
        100,
    );
    let card = card(&ticket, 200);
    assert_eq!(card.ticket_version, 2);
    let reqs = &card.facts.requirements;
    assert_eq!(reqs.len(), 2);
    let dba = reqs
        .iter()
        .find(|p| p.requirement.groups.contains(&group("dba")))
        .unwrap();
    assert_eq!(dba.needed, 1);
    assert_eq!(dba.approvers, [person("alice")].into());
    let fin = reqs
        .iter()
        .find(|p| p.requirement.groups.contains(&group("finance")))
        .unwrap();
    assert_eq!(fin.needed, 1);
    assert!(fin.approvers.is_empty());
    let text = card.to_string();
    assert!(
        text.contains("2 of dba: 1 more needed (approved by alice)"),
        "{text}"
    );
    assert!(text.contains("1 of finance: 1 more needed"), "{text}");
}

#[test]
fn an_edit_is_shown_as_the_action_that_would_run() {
    let ticket = open_ticket(payment());
    let edited = applied(
        &ticket,
        Event::Edit {
            reviewer: reviewer("bob", &["finance"]),
            parameters: json!({ "iban": SECRET, "amount": "4000.00", "memo": "March invoice" }),
            ruling: ruling(plan()),
        },
        100,
    );
    let card = card(&edited, 200);
    assert_eq!(card.facts.edited_by, Some(person("bob")));
    assert_eq!(card.facts.awaiting_non_editor, Some(person("bob")));
    assert_eq!(card.facts.digest, key().keyed(&edited.action_digest()));
    assert_eq!(
        card.facts.parameters.redacted.as_ref().unwrap()["amount"],
        "4000.00"
    );
    assert_no_secret(&card);
}

#[test]
fn links_are_carried_while_pending_and_never_displayed() {
    let ticket = open_ticket(payment());
    let card = card(&ticket, 10);
    assert_eq!(card.links, links());
    let display = card.to_string();
    let debug = format!("{card:?}");
    for text in [&display, &debug] {
        assert!(
            !text.contains("APPROVE-TOKEN") && !text.contains("ah1."),
            "{text}"
        );
    }
    assert!(display.contains("Decisions offered: Approve, Reject (links not shown)"));
    assert!(debug.contains("https://review.example/…"));
    // Rendered for a channel, the links are there.
    assert!(card
        .render(Markup::Markdown)
        .contains("[Approve](https://review.example/d/ah1.APPROVE-TOKEN)"));
    assert!(card
        .render(Markup::PlainText)
        .contains("Reject: https://review.example/d/ah1.REJECT-TOKEN"));

    // A decided ticket's card offers no decision, and says who decided.
    let rejected = applied(
        &ticket,
        Event::Vote {
            reviewer: reviewer("carol", &["dba"]),
            verdict: Verdict::Reject {
                feedback: "no".into(),
            },
        },
        100,
    );
    let closed = self::card(&rejected, 200);
    assert_eq!(closed.state, StateName::Rejected);
    assert!(closed.links.is_empty());
    assert_eq!(closed.decided_by, vec![person("carol")]);
    assert!(closed
        .to_string()
        .starts_with("Review closed: payment.send (rejected)"));

    // Past the deadline, a pending ticket reads as expired.
    let late = self::card(&ticket, 3_600_000);
    assert_eq!(late.state, StateName::Expired);
    assert!(late.links.is_empty());
}

// --- redaction ---------------------------------------------------------------------------

#[test]
fn no_form_of_a_card_prints_a_redacted_value() {
    let full = card(&open_ticket(payment()), 10);
    assert!(format!("{full:?}").contains(REDACTED));
    assert_no_secret(&full);
    assert_no_secret(&full.clone().bounded(FEISHU_CARD_MAX).unwrap());

    // Cut to any size, with the parameters kept or omitted.
    let request = ActionRequest::builder("payment.send", "invoice-2024-0042")
        .parameters(json!({ "iban": SECRET, "memo": "m".repeat(2000) }))
        .sensitive("/iban")
        .reason("r".repeat(3000))
        .build()
        .unwrap();
    let full = card(&open_ticket(request), 10);
    let (mut kept, mut omitted) = (false, false);
    for limit in (1_500..full.json_len()).step_by(97) {
        let small = full.clone().bounded(limit).unwrap();
        assert_no_secret(&small);
        kept |= small.facts.parameters.redacted.is_some();
        omitted |= small.facts.parameters.redacted.is_none();
    }
    assert!(kept && omitted);
}

#[test]
fn a_sensitive_value_nested_anywhere_is_replaced_whole() {
    let request = ActionRequest::builder("secrets.rotate", "rotate-key-0001")
        .parameters(json!({
            "credentials": { "user": "deploy", "password": SECRET, "pin": 4921 },
            "list": [ { "token": SECRET } ],
        }))
        .sensitive("/credentials")
        .sensitive("/list/0/token")
        .build()
        .unwrap();
    let card = card(&open_ticket(request), 10);
    assert_eq!(
        card.facts.parameters.redacted,
        Some(json!({ "credentials": REDACTED, "list": [ { "token": REDACTED } ] }))
    );
    assert_no_secret(&card);
    for (form, text) in all_forms(&card) {
        assert!(!text.contains("4921"), "{form} shows the pin");
    }
}

#[test]
fn ticket_debug_never_prints_a_redacted_value() {
    let ticket = open_ticket(payment());
    let approved = applied(
        &applied(
            &applied(
                &ticket,
                Event::Vote {
                    reviewer: reviewer("alice", &["dba"]),
                    verdict: Verdict::Approve,
                },
                100,
            ),
            Event::Vote {
                reviewer: reviewer("dave", &["dba"]),
                verdict: Verdict::Approve,
            },
            110,
        ),
        Event::Vote {
            reviewer: reviewer("fred", &["finance"]),
            verdict: Verdict::Approve,
        },
        120,
    );
    assert_eq!(approved.state().name(), StateName::Approved);
    for t in [&ticket, &approved] {
        for text in [format!("{t:?}"), format!("{t:#?}")] {
            assert!(text.contains(REDACTED), "{text}");
            assert!(
                !text.contains(SECRET),
                "ticket Debug shows the secret:\n{text}"
            );
        }
    }
}

/// An edited ticket keeps the edited parameters in `Edit`; neither it, nor the event, nor the
/// verdict that carried them print them in `Debug`.
#[test]
fn edited_ticket_debug_never_prints_a_redacted_value() {
    let parameters = json!({ "iban": SECRET, "amount": "4000.00", "memo": "March invoice" });
    let event = Event::Edit {
        reviewer: reviewer("bob", &["finance"]),
        parameters: parameters.clone(),
        ruling: ruling(plan()),
    };
    let verdict = agent_handoff::ticket::Verdict::ApproveWithEdits { parameters };
    let event_text = format!("{event:?} {event:#?} {verdict:?} {verdict:#?}");
    assert!(!event_text.contains(SECRET), "{event_text}");
    let edited = applied(&open_ticket(payment()), event, 100);
    for text in [format!("{edited:?}"), format!("{edited:#?}")] {
        assert!(
            !text.contains(SECRET),
            "edited ticket Debug shows the secret:\n{text}"
        );
    }
}

// --- size bounds -------------------------------------------------------------------------

/// A request at the validation limits: 64 targets of 1 KiB, 32 risk factors of 1 KiB, 4 KiB
/// texts with multi-byte characters, ~60 KB of parameters with a secret inside.
fn huge() -> ActionRequest {
    let mut builder = ActionRequest::builder("db.table.drop", "drop-orders-0001");
    for i in 0..64 {
        builder = builder.target(format!("postgres://prod/orders_{i:02}/{}", "é".repeat(490)));
    }
    let blob: Vec<String> = (0..110)
        .map(|i| format!("{i:04}-{}", "x".repeat(500)))
        .collect();
    builder
        .parameters(json!({ "rows": blob, "password": SECRET }))
        .sensitive("/password")
        .justification(Justification {
            reason: "ü".repeat(2048),
            expected_effect: "🙂".repeat(1024),
            risk_factors: (0..32)
                .map(|i| format!("risk {i} {}", "ß".repeat(500)))
                .collect(),
            rollback_plan: Some("r".repeat(4096)),
        })
        .build()
        .unwrap()
}

#[test]
fn a_card_that_fits_is_left_alone() {
    let full = card(&open_ticket(payment()), 10);
    let bounded = full.clone().bounded(FEISHU_CARD_MAX).unwrap();
    assert_eq!(bounded, full);
    assert!(!bounded.cut);
}

#[test]
fn a_huge_card_fits_feishus_30_kb() {
    let full = card(&open_ticket(huge()), 10);
    assert!(full.json_len() > 150_000, "{}", full.json_len());
    let card = full.bounded(FEISHU_CARD_MAX).unwrap();
    assert!(card.json_len() <= FEISHU_CARD_MAX, "{}", card.json_len());
    assert!(card.cut);
    // The parameters are far over half the limit: omitted whole, with size and fingerprint.
    let params = &card.facts.parameters;
    assert!(params.redacted.is_none());
    assert!(params.omitted.as_deref().unwrap().contains("too large"));
    assert!(params.bytes > 50_000);
    let text = String::from_utf8(card.to_json()).unwrap();
    assert!(
        !text.contains("0001-xxx"),
        "no part of the parameters is shown"
    );
    assert!(text.contains(&params.fingerprint.to_string()));
    // Long texts end with a visible marker; never-cut facts are intact.
    assert!(card
        .agent_claims
        .reason
        .ends_with("full text in the ticket]"));
    assert!(card.agent_claims.reason.starts_with('ü'));
    assert_eq!(card.links, links());
    assert_eq!(card.facts.requirements.len(), 2);
    assert!(card.to_string().contains("full detail is in the ticket"));
    assert_no_secret(&card);
}

#[test]
fn a_tiny_limit_cuts_lists_too_and_still_fits() {
    let full = card(&open_ticket(huge()), 10);
    let card = full.clone().bounded(3_000).unwrap();
    assert!(card.json_len() <= 3_000, "{}", card.json_len());
    let targets = &card.facts.targets;
    assert!(targets.len() < 64);
    assert!(targets
        .last()
        .unwrap()
        .contains("more targets; full list in the ticket]"));

    // Below the smallest form: a typed error saying how much is needed.
    let err = full.bounded(200).unwrap_err();
    assert_eq!(err.limit, 200);
    assert!(err.needed > 200);
    assert_eq!(
        err.to_string(),
        format!(
            "the smallest form of the review card is {} bytes, over the limit of 200",
            err.needed
        )
    );
    let _: CardTooLarge = err;
}

#[test]
fn small_parameters_survive_when_only_text_is_cut() {
    let request = ActionRequest::builder("payment.send", "invoice-2024-0042")
        .parameters(json!({ "iban": SECRET, "amount": "1" }))
        .sensitive("/iban")
        .reason("y".repeat(4096))
        .build()
        .unwrap();
    let full = card(&open_ticket(request), 10);
    let card = full.clone().bounded(full.json_len() - 1000).unwrap();
    assert_eq!(card.facts.parameters, full.facts.parameters);
    assert!(card.agent_claims.reason.len() < 3200);
    assert!(card
        .agent_claims
        .reason
        .ends_with("more bytes; full text in the ticket]"));
}

#[test]
fn bounded_by_measures_whatever_the_channel_sends() {
    let full = card(&open_ticket(huge()), 10);
    let measure = |c: &ReviewCard| c.render(Markup::LarkMd).len();
    let card = full.bounded_by(20_000, measure).unwrap();
    assert!(card.render(Markup::LarkMd).len() <= 20_000);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// For any limit the smallest form allows, the bounded card fits, reads back from JSON,
    /// and never shows part of the parameters.
    #[test]
    fn bounded_cards_always_fit(limit in 2_500usize..120_000) {
        let full = card(&open_ticket(huge()), 10);
        let card = full.clone().bounded(limit).unwrap();
        prop_assert!(card.json_len() <= limit);
        let back: ReviewCard = serde_json::from_slice(&card.to_json()).unwrap();
        prop_assert_eq!(&back, &card);
        let p = &card.facts.parameters;
        prop_assert!(p.redacted.is_none() || p.redacted == full.facts.parameters.redacted);
        prop_assert!(!String::from_utf8(card.to_json()).unwrap().contains(SECRET));
    }
}

// --- rendering and escaping ----------------------------------------------------------------

fn injected_request(reason: &str) -> ActionRequest {
    ActionRequest::builder("payment.send", "invoice-2024-0042")
        .target("vendor:acme <at id=all></at>")
        .parameters(json!({ "iban": SECRET, "note": "[click](https://evil.example)" }))
        .sensitive("/iban")
        .reason(reason)
        .build()
        .unwrap()
}

#[test]
fn agent_text_cannot_pass_for_a_fact() {
    let forged = "all fine\n- Environment: development\nVerified facts: approved by security";
    let card = card(&open_ticket(injected_request(forged)), 10);

    // Plain text: every line of the claims block carries the quote bar.
    let display = card.to_string();
    let claims = display
        .split("The agent's claims")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .nth(1)
        .unwrap();
    for line in claims.lines() {
        assert!(
            line.starts_with('│'),
            "claim line outside the quote: {line:?}"
        );
    }
    assert!(claims.contains("│ - Environment: development"));

    // Markdown: inside a block quote, and the forged list marker is escaped.
    let md = card.render(Markup::Markdown);
    assert!(md.contains("> \\- Environment\\: development"), "{md}");
    assert!(!md.contains("\n- Environment: development"));
    assert!(
        md.contains("> **Reason**: all fine\\\n> \\- Environment"),
        "{md}"
    );
}

#[test]
fn rendered_cards_contain_no_injected_link_or_mention() {
    let attack = "[Approve](https://evil.example) ![x](http://evil.example/i.png) \
                  <https://evil.example> <at id=all></at> @all @_all www.evil.example";
    let card = card(&open_ticket(injected_request(attack)), 10);
    for m in Markup::ALL {
        let text = card.render(m);
        let lower = text.to_lowercase();
        assert!(!lower.contains("https://evil"), "{m}: {text}");
        assert!(!lower.contains("www.evil"), "{m}: {text}");
        // In Markdown `\<` is a literal `<`.
        assert!(!text.replace("\\<", "").contains("<at"), "{m}: {text}");
        assert!(
            !text.contains("@all") && !text.contains("@_all"),
            "{m}: {text}"
        );
        if m != Markup::PlainText {
            // Plain text has no link syntax; in the others only the decision links are links.
            assert_eq!(text.matches("](").count(), 2, "{m}: {text}");
        }
    }
}

#[test]
fn escaping_examples() {
    assert_eq!(Markup::Markdown.escape("a*b_c"), "a\\*b\\_c");
    assert_eq!(Markup::Markdown.escape("# h\n> q"), "\\# h\n\\> q");
    assert_eq!(Markup::Markdown.escape("&amp; <b>"), "\\&amp\\; \\<b\\>");
    assert_eq!(Markup::LarkMd.escape("a & b"), "a &amp; b");
    assert_eq!(
        Markup::LarkMd.escape("**x** ~~y~~ `z` [a](b)"),
        "&#42;&#42;x&#42;&#42; &#126;&#126;y&#126;&#126; &#96;z&#96; &#91;a&#93;&#40;b&#41;"
    );
    assert_eq!(
        Markup::LarkMd.escape("<font color=red>"),
        "&lt;font color=red&gt;"
    );
    assert_eq!(
        Markup::PlainText.escape("<at user_id=\"all\">"),
        "<\u{200B}at user_id=\"all\">"
    );
    assert_eq!(Markup::PlainText.escape("a < b"), "a < b");
    assert_eq!(
        Markup::PlainText.escape("mail bob@example.com"),
        "mail bob@\u{200B}example.com"
    );
    assert_eq!(Markup::PlainText.escape("x\u{202E}y\r\nz"), "x\u{FFFD}y\nz");
    for m in Markup::ALL {
        assert_eq!(m.escape("plain words 42"), "plain words 42");
        assert_eq!(m.escape(""), "");
    }
}

/// Fragments an attacker would try, mixed with arbitrary text.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[Approve](https://evil.example/a?b=c)".to_owned()),
        Just("![img](http://evil.example/x.png)".to_owned()),
        Just("<https://evil.example>".to_owned()),
        Just("<a href=\"https://evil.example\">x</a>".to_owned()),
        Just("<at id=all></at>".to_owned()),
        Just("<at user_id=\"all\">everyone</at>".to_owned()),
        Just("<at id=ou_123></at>".to_owned()),
        Just("@all".to_owned()),
        Just("@_all".to_owned()),
        Just("@everyone @here <!channel> <@U123>".to_owned()),
        Just("www.evil.example".to_owned()),
        Just("WwW.Evil.Example".to_owned()),
        Just("HTTPS://EVIL.EXAMPLE".to_owned()),
        Just("ftp://x".to_owned()),
        Just("[x]($urlVal)".to_owned()),
        Just("&lt;at id=all&gt;".to_owned()),
        Just("&#64;all".to_owned()),
        Just("\\[x\\](y)".to_owned()),
        Just("**bold** __u__ ~~s~~ `code` ```fence```".to_owned()),
        Just("\n# heading\n> quote\n- item\n1. one\n---\n| a | b |".to_owned()),
        Just("<font color='red'>x</font>".to_owned()),
        Just("\u{202E}evil\u{202C}".to_owned()),
        Just("\r\n".to_owned()),
        Just("http:".to_owned()),
        Just("//".to_owned()),
        Just("www".to_owned()),
        Just(".".to_owned()),
        Just("@".to_owned()),
        Just("<".to_owned()),
        Just("\\".to_owned()),
        Just("&".to_owned()),
        "[ -~]{0,12}",
        "\\PC{0,6}",
    ]
}

fn attack() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..12).prop_map(|parts| parts.concat())
}

/// Defanged URL and mention patterns that must not appear in any markup's output.
fn assert_defanged(m: Markup, out: &str) {
    let lower = out.to_lowercase();
    assert!(!lower.contains("://"), "{m}: URL scheme in {out:?}");
    assert!(!lower.contains("www."), "{m}: www. in {out:?}");
    let chars: Vec<char> = out.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let next = chars.get(i + 1).copied();
        // No `@` directly before a word character: no mention, no mail link.
        assert!(
            !(*c == '@' && next.is_some_and(|n| n.is_alphanumeric() || n == '_')),
            "{m}: mention in {out:?}"
        );
        // No hidden reordering or control characters.
        let hidden = (c.is_control() && !matches!(c, '\n' | '\t'))
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
        assert!(!hidden, "{m}: hidden character in {out:?}");
    }
}

/// Undoes Markdown escaping: every `\` must be followed by ASCII punctuation and every ASCII
/// punctuation character must be escaped.
fn unescape_markdown(out: &str) -> String {
    let mut plain = String::new();
    let mut chars = out.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let n = chars.next().expect("a backslash ends the text");
            assert!(
                n.is_ascii_punctuation(),
                "backslash before {n:?} in {out:?}"
            );
            plain.push(n);
        } else {
            assert!(!c.is_ascii_punctuation(), "unescaped {c:?} in {out:?}");
            plain.push(c);
        }
    }
    plain
}

/// Undoes lark_md escaping: no character with a meaning appears raw, and `&` only starts one
/// of the entities the escaper writes.
fn unescape_lark(out: &str) -> String {
    const ENTITIES: &[(&str, char)] = &[
        ("&amp;", '&'),
        ("&lt;", '<'),
        ("&gt;", '>'),
        ("&#42;", '*'),
        ("&#95;", '_'),
        ("&#126;", '~'),
        ("&#96;", '`'),
        ("&#91;", '['),
        ("&#93;", ']'),
        ("&#40;", '('),
        ("&#41;", ')'),
        ("&#92;", '\\'),
        ("&#64;", '@'),
        ("&#35;", '#'),
        ("&#124;", '|'),
        ("&#36;", '$'),
        ("&#45;", '-'),
        ("&#43;", '+'),
        ("&#61;", '='),
        ("&#46;", '.'),
    ];
    let mut plain = String::new();
    let mut rest = out;
    while let Some(c) = rest.chars().next() {
        if c == '&' {
            let (entity, ch) = ENTITIES
                .iter()
                .find(|(e, _)| rest.starts_with(e))
                .unwrap_or_else(|| panic!("stray & in {out:?}"));
            plain.push(*ch);
            rest = &rest[entity.len()..];
        } else {
            assert!(!"<>*_~`[]()\\@#|$".contains(c), "raw {c:?} in {out:?}");
            plain.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    plain
}

/// The defanged text without its inserted separators, for round trips of inputs without `[`
/// or hidden characters.
fn undefang(text: &str) -> String {
    text.replace('\u{200B}', "")
        .replace("[:]", ":")
        .replace("[.]", ".")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn escaped_text_has_no_live_link_mention_or_tag(input in attack()) {
        for m in Markup::ALL {
            let out = m.escape(&input);
            assert_defanged(m, &out);
            match m {
                Markup::Markdown => {
                    // Every punctuation character escaped: no link, image, autolink, HTML,
                    // entity, emphasis or block syntax can start.
                    unescape_markdown(&out);
                }
                Markup::LarkMd => {
                    let plain = unescape_lark(&out);
                    prop_assert!(!out.contains("<at") && !out.contains("@all"));
                    prop_assert!(!plain.to_lowercase().contains("://"));
                }
                _ => {
                    // No tag can open: `<` is never directly followed by a tag character.
                    let chars: Vec<char> = out.chars().collect();
                    for w in chars.windows(2) {
                        prop_assert!(
                            !(w[0] == '<'
                                && (w[1].is_alphanumeric() || "!@#/?".contains(w[1]))),
                            "tag opens in {:?}", out
                        );
                    }
                }
            }
        }
    }

    /// Escaping loses nothing: undoing it gives the input back (up to the documented
    /// defanging), for printable ASCII without `[`.
    #[test]
    fn escaping_round_trips(input in "[ -Z\\\\-~\n]{0,80}") {
        let md = undefang(&unescape_markdown(&Markup::Markdown.escape(&input)));
        prop_assert_eq!(&md, &input);
        let lark = undefang(&unescape_lark(&Markup::LarkMd.escape(&input)));
        prop_assert_eq!(&lark, &input);
        let plain = undefang(&Markup::PlainText.escape(&input));
        prop_assert_eq!(&plain, &input);
    }
}

// --- the Notifier port -------------------------------------------------------------------

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn the_port_types_are_send_sync_and_object_safe() {
    assert_send_sync::<Arc<dyn Notifier>>();
    assert_send_sync::<Delivery>();
    assert_send_sync::<DeliveryError>();
    assert_send_sync::<ReviewCard>();
    assert_send_sync::<RecordingNotifier>();
    let _boxed: Box<dyn Notifier> = Box::new(RecordingNotifier::new());
}

fn delivery(id: u128, kind: DeliveryKind) -> Delivery {
    let card = card(&open_ticket(payment()), 10);
    Delivery::new(Uuid::from_u128(id), kind, card)
}

#[tokio::test]
async fn the_recorder_fails_as_told_then_delivers_once_per_id() {
    let recorder = RecordingNotifier::new();
    let notifier: Arc<dyn Notifier> = Arc::new(recorder.clone());
    recorder.fail_next(2);
    recorder.push_failure(DeliveryError::rate_limited(Some(Duration::from_secs(3))));
    let d = delivery(7, DeliveryKind::RequestReview).with_recipient("oc_chat");
    assert_eq!(d.ticket, TicketId::from_uuid(Uuid::from_u128(1)));

    let e1 = notifier.deliver(&d).await.unwrap_err();
    assert!(e1.is_retryable());
    assert_eq!(e1.code(), "transient");
    assert_eq!(
        e1.to_string(),
        "delivery failed and may succeed if retried: injected failure 1 of 2"
    );
    assert!(notifier.deliver(&d).await.is_err());
    let e3 = notifier.deliver(&d).await.unwrap_err();
    assert_eq!(e3.retry_after(), Some(Duration::from_secs(3)));
    assert_eq!(
        e3.to_string(),
        "the channel is rate limiting deliveries, retry after 3000 ms"
    );
    assert!(recorder.deliveries().is_empty());

    let receipt = notifier.deliver(&d).await.unwrap();
    assert_eq!(
        receipt.channel_message_id.as_deref(),
        Some("recorded-00000000-0000-0000-0000-000000000007")
    );
    // A retry of the same row (say, after a timeout) does not post again.
    assert_eq!(notifier.deliver(&d).await.unwrap(), receipt);
    assert_eq!(recorder.deliveries(), vec![d.clone()]);
    assert_eq!(recorder.attempts(), 5);
    assert_eq!(recorder.attempts_for(d.id), 5);

    // A card update carries the first receipt.
    let update = delivery(8, DeliveryKind::Update).with_previous_receipt(receipt.clone());
    notifier.deliver(&update).await.unwrap();
    let recorded = recorder.deliveries();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[1].previous_receipt, Some(receipt));
    assert_eq!(recorder.attempts_for(update.id), 1);
}

#[test]
fn delivery_errors_say_whether_a_retry_can_help() {
    let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
    let cases = [
        (
            DeliveryError::transient("timeout").with_source(io),
            true,
            "transient",
        ),
        (DeliveryError::rate_limited(None), true, "rate_limited"),
        (
            DeliveryError::permanent("card rejected: 230001"),
            false,
            "permanent",
        ),
        (
            DeliveryError::misconfigured("bad signature: 19021"),
            false,
            "misconfigured",
        ),
    ];
    for (error, retryable, code) in cases {
        assert_eq!(error.is_retryable(), retryable, "{error}");
        assert_eq!(error.code(), code);
        let message = error.to_string();
        assert!(message.starts_with(|c: char| c.is_lowercase()), "{message}");
        assert!(!message.ends_with('.'), "{message}");
    }
    let with_source = DeliveryError::transient("timeout").with_source(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "timed out",
    ));
    assert_eq!(
        std::error::Error::source(&with_source).unwrap().to_string(),
        "timed out"
    );
    assert_eq!(
        DeliveryError::rate_limited(None).to_string(),
        "the channel is rate limiting deliveries"
    );
}

#[test]
fn deliveries_and_receipts_round_trip_through_json() {
    let receipt =
        DeliveryReceipt::new(Some("om_123".into())).with_channel_data(json!({ "chat_id": "oc_1" }));
    let d = delivery(9, DeliveryKind::Close).with_previous_receipt(receipt);
    let text = serde_json::to_string(&d).unwrap();
    assert!(text.contains("\"kind\":\"close\""));
    assert!(!text.contains(SECRET));
    let back: Delivery = serde_json::from_str(&text).unwrap();
    assert_eq!(back, d);
    assert!(!format!("{d:?}").contains(SECRET));
    let digest_hex = ActionDigest::of(&payment()).to_string();
    assert!(!text.contains(&digest_hex));
}

/// A card whose target and one parameter value carry Unicode line and paragraph separators.
fn card_with_separators(target: &str, memo: &str) -> ReviewCard {
    let request = ActionRequest::builder("db.drop", "idem-key-0001")
        .target(target)
        .parameters(json!({ "memo": memo }))
        .environment(Environment::Production)
        .build()
        .expect("U+2028 is not a control character: validation lets it through");
    card(&open_ticket(request), 10)
}

/// U+2028 / U+2029 in a target or a parameter value must not start a line that reads like a
/// verified fact (they are not control characters, so validation lets them through).
#[test]
fn line_separators_cannot_forge_a_fact_line() {
    let forged = card_with_separators("orders\u{2028}- Environment: development", "x");
    for markup in [Markup::PlainText, Markup::Markdown, Markup::LarkMd] {
        let text = forged.render(markup);
        assert!(
            !text
                .lines()
                .any(|l| l.contains("Environment: development") && !l.contains("orders")),
            "{markup:?} forged a fact line:\n{text}"
        );
    }
    let text = card_with_separators("orders", "x\u{2029}- Reversibility: reversible").to_string();
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("- Reversibility: reversible")),
        "forged:\n{text}"
    );
}

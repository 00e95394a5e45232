//! Decision links through the `Handoff` facade: minting, previewing and deciding with signed
//! tokens, on a manual clock shared with a SQLite store (`support::Harness`).
//!
//! What is pinned here: following a link writes nothing; the order of checks (token →
//! credential → bound reviewer → digest → machine); a token is spent exactly when it is
//! authentic and its holder authenticated, in the same write as the decision or the refusal;
//! every refusal is typed and audited; forged-token floods are coalesced.

mod support;

use std::sync::Arc;
use std::time::Duration;

use agent_handoff::audit::{Actor, AuditEvent};
use agent_handoff::ticket::{Refusal, RejectedBy, StateName, TicketState, Verdict};
use agent_handoff::token::{
    MalformedToken, TokenClaims, TokenKey, TokenKeyRing, TokenNonce, VerdictKind,
};
use agent_handoff::{
    AgentHandle, Credential, Decided, DecisionLinks, Error, Handoff, Limits, LinkError, MintedLink,
    PendingTicket, Proposal, TicketId, Timestamp, TokenSubmission,
};
use serde_json::{json, Value};
use support::*;
use tokio::sync::Barrier;

fn at(offset: Duration) -> Timestamp {
    Timestamp::from_unix_millis(START).saturating_add(offset)
}

#[track_caller]
fn pending(p: Proposal) -> PendingTicket {
    match p {
        Proposal::Pending(p) => p,
        other => panic!("expected a pending ticket, got {other:?}"),
    }
}

/// The token of the link for `verdict`.
#[track_caller]
fn token(links: &[MintedLink], verdict: VerdictKind) -> String {
    links
        .iter()
        .find(|l| l.verdict == verdict)
        .unwrap_or_else(|| panic!("no {verdict:?} link"))
        .token
        .clone()
}

fn approve() -> TokenSubmission {
    TokenSubmission::new()
}

/// The `refused` records of the whole store, as (ticket, actor, refusal code).
fn refusals(events: &[AuditEvent]) -> Vec<(Option<TicketId>, Actor, String)> {
    events
        .iter()
        .map(AuditEvent::record)
        .filter(|r| r.kind == "refused")
        .map(|r| {
            (
                r.ticket,
                r.actor.clone(),
                r.data["refusal"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn reviewer(name: &str) -> Actor {
    Actor::Reviewer(person(name))
}

impl Harness {
    async fn links_harness() -> Self {
        Harness::with_links(Setup::default(), LinkSetup::standard()).await
    }

    fn ops(&self) -> AgentHandle {
        self.handoff.agent(agent_id("ops-agent"), None)
    }

    /// The agent acting for `pat` (a DBA), to attempt self-approval.
    fn for_pat(&self) -> AgentHandle {
        self.handoff
            .agent(agent_id("pat-agent"), Some(person("pat@example.com")))
    }

    /// Proposes `kind` under `key` with the ops agent.
    async fn pending(&self, kind: &str, key: &str) -> TicketId {
        pending(self.ops().propose(request(kind, key)).await.unwrap()).id
    }

    /// Links for a ticket as stored now.
    async fn mint(&self, id: TicketId, reviewer: Option<&str>) -> Vec<MintedLink> {
        let ticket = self.ticket(id).await;
        self.handoff
            .mint_links(&ticket, reviewer.map(person), self.now())
            .unwrap()
    }

    async fn use_token(
        &self,
        token: &str,
        who: &str,
        submission: TokenSubmission,
    ) -> Result<agent_handoff::ticket::Ticket, LinkError> {
        self.handoff
            .decide_with_token(token, self.cred(who), submission)
            .await
            .map(Decided::into_ticket)
    }

    /// The refused records written since `before` (a count of all audit events).
    async fn refusals_since(&self, before: usize) -> Vec<(Option<TicketId>, Actor, String)> {
        refusals(&self.all_audit().await[before..])
    }

    async fn audit_len(&self) -> usize {
        self.all_audit().await.len()
    }

    /// Accepted votes on the ticket, by person.
    async fn voters(&self, id: TicketId) -> Vec<String> {
        self.ticket(id)
            .await
            .votes()
            .iter()
            .map(|v| v.person.to_string())
            .collect()
    }

    async fn assert_audit_ok(&self) {
        let report = self.handoff.verify_audit().await.expect("audit verifies");
        assert_eq!(report.events, self.audit_len().await as u64);
    }
}

// ---------------------------------------------------------------------------------------------
// Minting.

#[tokio::test]
async fn links_are_minted_per_verdict_into_urls_under_the_base_url() {
    let h = Harness::links_harness().await;
    let id = h.pending("db.update", "u-1").await;
    let links = h.mint(id, Some("alice")).await;
    let verdicts: Vec<VerdictKind> = links.iter().map(|l| l.verdict).collect();
    assert_eq!(
        verdicts,
        [
            VerdictKind::Approve,
            VerdictKind::Reject,
            VerdictKind::RequestChanges
        ]
    );
    let ticket = h.ticket(id).await;
    let keyed = h.handoff.keyed_digest(&ticket).unwrap();
    let mut nonces = std::collections::BTreeSet::new();
    for link in &links {
        assert_eq!(link.url, format!("{LINK_BASE}?t={}", link.token));
        assert!(link
            .token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        assert_eq!(link.reviewer, Some(person("alice")));
        // The ttl (15 min) is shorter than the review deadline (1 h).
        assert_eq!(link.expires_at, at(15 * MIN));
        // The token binds what it says, under the deployment's key and keyed digest.
        let claims = token_ring()
            .verify(&link.token, h.now(), &keyed)
            .expect("a token of the test ring");
        assert_eq!(claims.ticket, id);
        assert_eq!(claims.verdict, link.verdict);
        assert_eq!(claims.reviewer, Some(person("alice")));
        assert_eq!(claims.issued_at, h.now());
        assert!(nonces.insert(claims.nonce), "every token has its own nonce");
        let shown = format!("{link:?}");
        assert!(
            !shown.contains(&link.token),
            "Debug hides the token: {shown}"
        );
    }
    // Minting writes nothing.
    assert_eq!(h.audit_kinds(id).await, ["proposed"]);
}

#[tokio::test]
async fn a_token_never_outlives_the_review_deadline() {
    let h = Harness::with_links(
        Setup::default(),
        LinkSetup {
            links: Some(DecisionLinks {
                token_ttl: 2 * HOUR,
                ..decision_links()
            }),
            ..LinkSetup::standard()
        },
    )
    .await;
    let id = h.pending("db.update", "u-1").await;
    h.clock.advance(10 * MIN);
    for link in h.mint(id, None).await {
        assert_eq!(link.expires_at, at(HOUR), "clamped to the deadline");
        assert_eq!(link.reviewer, None);
    }
}

#[tokio::test]
async fn links_are_minted_only_for_pending_tickets_and_only_when_configured() {
    let h = Harness::links_harness().await;
    let id = h.pending("db.update", "u-1").await;
    h.use_token(
        &token(&h.mint(id, Some("alice")).await, VerdictKind::Approve),
        "alice",
        approve(),
    )
    .await
    .unwrap();
    let ticket = h.ticket(id).await;
    assert!(matches!(
        h.handoff.mint_links(&ticket, None, h.now()),
        Err(LinkError::NotPending {
            state: StateName::Approved
        })
    ));
    // Pending in storage but past its deadline: expired, no links.
    let late = h.pending("db.update", "u-2").await;
    let ticket = h.ticket(late).await;
    assert!(matches!(
        h.handoff.mint_links(&ticket, None, at(HOUR)),
        Err(LinkError::NotPending {
            state: StateName::Expired
        })
    ));

    // Without a digest key (or without links) the features are unavailable, typed.
    for links in [
        LinkSetup {
            digest_key: None,
            ..LinkSetup::standard()
        },
        LinkSetup {
            links: None,
            ..LinkSetup::standard()
        },
    ] {
        let h = Harness::with_links(Setup::default(), links).await;
        let id = h.pending("db.update", "u-1").await;
        let ticket = h.ticket(id).await;
        assert!(matches!(
            h.handoff.mint_links(&ticket, None, h.now()),
            Err(LinkError::NotConfigured(_))
        ));
        assert!(matches!(
            h.handoff.preview_token("ah1.x.y").await,
            Err(LinkError::NotConfigured(_))
        ));
        assert!(matches!(
            h.use_token("ah1.x.y", "alice", approve()).await,
            Err(LinkError::NotConfigured(_))
        ));
    }
}

#[tokio::test]
async fn the_builder_refuses_unusable_link_settings() {
    for links in [
        DecisionLinks {
            base_url: String::new(),
            ..decision_links()
        },
        DecisionLinks {
            base_url: "https://review.example/decide#frag".into(),
            ..decision_links()
        },
        DecisionLinks {
            token_ttl: Duration::ZERO,
            ..decision_links()
        },
    ] {
        let h = Harness::new().await;
        let built = Handoff::builder()
            .shared_store(Arc::clone(&h.store))
            .policy(standard_policy())
            .identity(directory().0)
            .decision_links(links)
            .digest_key(digest_key())
            .build();
        assert!(matches!(built, Err(Error::Build(_))), "{built:?}");
    }
}

#[tokio::test]
async fn a_base_url_with_a_query_gets_the_token_as_another_parameter() {
    let h = Harness::with_links(
        Setup::default(),
        LinkSetup {
            links: Some(DecisionLinks {
                base_url: "https://review.example/decide?tenant=acme".into(),
                ..decision_links()
            }),
            ..LinkSetup::standard()
        },
    )
    .await;
    let id = h.pending("db.update", "u-1").await;
    for link in h.mint(id, None).await {
        assert_eq!(
            link.url,
            format!("https://review.example/decide?tenant=acme&t={}", link.token)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The happy path, and following a link deciding nothing.

/// Whoever holds a link can preview it, so the preview is what a channel shows: the redacted
/// card, never the stored ticket with its sensitive parameters.
#[tokio::test]
async fn a_preview_shows_the_redacted_card_not_the_sensitive_parameters() {
    const IBAN: &str = "DE89370400440532013000";
    let h = Harness::links_harness().await;
    let request = agent_handoff::action::ActionRequest::builder("db.update", idem("sensitive-1"))
        .parameters(json!({ "iban": IBAN, "amount": "10" }))
        .sensitive("/iban")
        .build()
        .unwrap();
    let p = pending(h.ops().propose(request).await.unwrap());
    let links = h.mint(p.id, None).await;
    let preview = h
        .handoff
        .preview_token(&token(&links, VerdictKind::Approve))
        .await
        .unwrap();
    assert_eq!(preview.card.ticket, p.id);
    assert!(
        preview.card.links.is_empty(),
        "the page confirms; the preview carries no links"
    );
    let parameters = preview.card.facts.parameters.redacted.as_ref().unwrap();
    assert_eq!(parameters["amount"], "10");
    assert_ne!(parameters["iban"], IBAN);
    for shown in [
        format!("{preview:?}"),
        serde_json::to_string(&preview.card).unwrap(),
        preview.card.to_string(),
    ] {
        assert!(
            !shown.contains(IBAN),
            "the preview shows a sensitive value: {shown}"
        );
    }
}

#[tokio::test]
async fn mint_preview_and_decide_counts_the_vote_and_the_preview_writes_nothing() {
    let h = Harness::links_harness().await;
    let agent = h.ops();
    let p = pending(agent.propose(request("db.update", "u-1")).await.unwrap());
    let links = h.mint(p.id, Some("alice")).await;
    let approve_token = token(&links, VerdictKind::Approve);

    // Following the link (a mail scanner, a link preview, the reviewer opening it) writes
    // nothing: the audit head and the decisions are unchanged, even when done twice.
    let head = h.head().await;
    for _ in 0..2 {
        let preview = h.handoff.preview_token(&approve_token).await.unwrap();
        assert_eq!(preview.card.ticket, p.id);
        assert_eq!(preview.verdict, Some(VerdictKind::Approve));
        assert!(preview.digest_current);
        assert!(preview.pending);
        assert_eq!(preview.reviewer, Some(person("alice")));
        assert_eq!(preview.expires_at, at(15 * MIN));
    }
    assert_eq!(h.head().await, head, "a preview writes nothing");
    assert!(h.decisions(p.id).await.is_empty());

    // The explicit submission decides.
    let ticket = h
        .use_token(&approve_token, "alice", approve())
        .await
        .unwrap();
    assert_eq!(ticket.state().name(), StateName::Approved);
    assert_eq!(h.voters(p.id).await, ["alice"]);
    let decisions = h.decisions(p.id).await;
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].person, Some(person("alice")));
    assert_eq!(decisions[0].verdict, "approve");
    assert_eq!(decisions[0].refusal, None);
    // The audit records of the decision name the token's key and nonce.
    let audit = h.audit(p.id).await;
    let voted = audit
        .iter()
        .map(AuditEvent::record)
        .find(|r| r.kind == "voted")
        .expect("the vote is audited");
    assert_eq!(voted.actor, reviewer("alice"));
    assert_eq!(voted.data["token"]["key_id"], "k1");
    assert_eq!(voted.data["token"]["nonce"].as_str().unwrap().len(), 32);

    // The agent sees the approval.
    match agent.wait(&p, Duration::ZERO).await.unwrap() {
        agent_handoff::Decision::Approved(grant) => assert_eq!(grant.ticket(), p.id),
        other => panic!("expected an approval, got {other:?}"),
    }
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn reject_and_request_changes_links_carry_the_reviewers_feedback() {
    let h = Harness::links_harness().await;
    let id = h.pending("db.update", "u-1").await;
    let links = h.mint(id, Some("bob")).await;
    let ticket = h
        .use_token(
            &token(&links, VerdictKind::Reject),
            "bob",
            TokenSubmission::new().with_feedback("not during business hours"),
        )
        .await
        .unwrap();
    assert_eq!(
        ticket.state(),
        &TicketState::Rejected {
            by: RejectedBy::Reviewer {
                person: person("bob"),
                feedback: "not during business hours".into()
            },
            at: h.now()
        }
    );

    let id = h.pending("db.update", "u-2").await;
    let links = h.mint(id, None).await;
    let ticket = h
        .use_token(
            &token(&links, VerdictKind::RequestChanges),
            "carol",
            TokenSubmission::new().with_feedback("limit 10 first"),
        )
        .await
        .unwrap();
    assert!(matches!(
        ticket.state(),
        TicketState::Rejected {
            by: RejectedBy::ChangesRequested { .. },
            ..
        }
    ));
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn a_submission_that_does_not_fit_the_verdict_records_nothing_and_spends_nothing() {
    let h = Harness::links_harness().await;
    let id = h.pending("db.update", "u-1").await;
    let approve_token = token(&h.mint(id, Some("alice")).await, VerdictKind::Approve);
    let head = h.head().await;
    let with_parameters = TokenSubmission::new().with_parameters(json!({ "limit": 1 }));
    assert!(
        !format!("{with_parameters:?}").contains("limit"),
        "Debug hides parameters"
    );
    assert!(matches!(
        h.use_token(&approve_token, "alice", with_parameters).await,
        Err(LinkError::InvalidSubmission(_))
    ));
    assert_eq!(h.head().await, head);
    // The token still works.
    h.use_token(&approve_token, "alice", approve())
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Single use.

#[tokio::test]
async fn a_token_used_twice_is_refused_as_a_replay_and_audited() {
    let h = Harness::links_harness().await;
    // Two approvals needed, so the ticket is still pending when the token comes back: the
    // repeat would be an accepted no-op vote if the nonce did not refuse it.
    let id = h.pending("db.drop", "d-1").await;
    let approve_token = token(&h.mint(id, Some("alice")).await, VerdictKind::Approve);
    h.use_token(&approve_token, "alice", approve())
        .await
        .unwrap();
    let version = h.ticket(id).await.version();
    let before = h.audit_len().await;

    assert!(matches!(
        h.use_token(&approve_token, "alice", approve()).await,
        Err(LinkError::Replayed)
    ));
    assert_eq!(h.ticket(id).await.version(), version, "nothing changed");
    assert_eq!(h.voters(id).await, ["alice"]);
    assert_eq!(
        h.refusals_since(before).await,
        [(Some(id), reviewer("alice"), "replayed".to_owned())]
    );
    let last = h.decisions(id).await.pop().unwrap();
    assert_eq!(last.refusal.as_deref(), Some("replayed"));
    // The replay names the same nonce as the vote it repeats.
    let audit = h.audit(id).await;
    let nonce_of = |kind: &str| {
        audit
            .iter()
            .map(AuditEvent::record)
            .find(|r| r.kind == kind)
            .map(|r| r.data["token"]["nonce"].clone())
            .unwrap()
    };
    assert_eq!(nonce_of("voted"), nonce_of("refused"));
    assert!(nonce_of("voted").is_string());

    // A second link of the same reviewer with the same verdict is a repeat: accepted, counted
    // once — and spent, so it cannot come back either.
    let again = token(&h.mint(id, Some("alice")).await, VerdictKind::Approve);
    let ticket = h.use_token(&again, "alice", approve()).await.unwrap();
    assert_eq!(ticket.version(), version, "a repeat changes nothing");
    assert!(matches!(
        h.use_token(&again, "alice", approve()).await,
        Err(LinkError::Replayed)
    ));

    // On a decided ticket the replay is still reported as such.
    let approve_bob = token(&h.mint(id, Some("bob")).await, VerdictKind::Approve);
    h.use_token(&approve_bob, "bob", approve()).await.unwrap();
    assert_eq!(h.ticket(id).await.state().name(), StateName::Approved);
    assert!(matches!(
        h.use_token(&approve_bob, "bob", approve()).await,
        Err(LinkError::Replayed)
    ));
    h.assert_audit_ok().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_token_used_concurrently_from_two_tasks_is_accepted_exactly_once() {
    let h = Harness::with_links(
        Setup {
            backing: Backing::File,
            ..Setup::default()
        },
        LinkSetup::standard(),
    )
    .await;
    const TICKETS: usize = 12;
    let mut work = Vec::new();
    for i in 0..TICKETS {
        // Two approvals needed: the loser's vote would otherwise be an accepted repeat.
        let id = h.pending("db.drop", &format!("d-{i}")).await;
        work.push((
            id,
            token(&h.mint(id, Some("alice")).await, VerdictKind::Approve),
        ));
    }
    let barrier = Arc::new(Barrier::new(2 * TICKETS));
    let mut tasks = Vec::new();
    for (id, tok) in &work {
        for _ in 0..2 {
            let (handoff, cred, barrier, tok, id) = (
                h.handoff.clone(),
                h.cred("alice").clone(),
                Arc::clone(&barrier),
                tok.clone(),
                *id,
            );
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                (
                    id,
                    handoff
                        .decide_with_token(&tok, &cred, TokenSubmission::new())
                        .await,
                )
            }));
        }
    }
    let mut accepted = std::collections::BTreeMap::<TicketId, usize>::new();
    let mut replayed = 0;
    for task in tasks {
        let (id, result) = task.await.unwrap();
        match result {
            Ok(_) => *accepted.entry(id).or_default() += 1,
            Err(LinkError::Replayed) => replayed += 1,
            Err(other) => panic!("the loser must be refused as a replay, got {other:?}"),
        }
    }
    assert_eq!(replayed, TICKETS);
    assert_eq!(accepted.len(), TICKETS);
    assert!(accepted.values().all(|&n| n == 1), "{accepted:?}");
    for (id, _) in &work {
        assert_eq!(h.voters(*id).await, ["alice"]);
        let refusals: Vec<_> = h
            .decisions(*id)
            .await
            .into_iter()
            .map(|d| d.refusal)
            .collect();
        assert_eq!(refusals, [None, Some("replayed".to_owned())]);
    }
    h.assert_audit_ok().await;
}

// ---------------------------------------------------------------------------------------------
// Forwarded links and credentials.

#[tokio::test]
async fn an_unverified_credential_does_not_spend_the_token() {
    let h = Harness::links_harness().await;
    let id = h.pending("db.update", "u-1").await;
    let approve_token = token(&h.mint(id, Some("alice")).await, VerdictKind::Approve);
    let before = h.audit_len().await;
    match h
        .handoff
        .decide_with_token(
            &approve_token,
            &Credential::token("forwarded-and-guessed"),
            approve(),
        )
        .await
    {
        Err(LinkError::Unauthenticated(_)) => {}
        other => panic!("expected a refused credential, got {other:?}"),
    }
    assert_eq!(
        h.refusals_since(before).await,
        [(
            Some(id),
            Actor::Unauthenticated,
            "unauthenticated".to_owned()
        )]
    );
    assert!(h.decisions(id).await.is_empty());
    // The rightful reviewer can still use the link.
    let ticket = h
        .use_token(&approve_token, "alice", approve())
        .await
        .unwrap();
    assert_eq!(ticket.state().name(), StateName::Approved);
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn a_forwarded_link_used_by_another_reviewer_is_refused_audited_and_not_spent() {
    let h = Harness::links_harness().await;
    let id = h.pending("db.drop", "d-1").await;
    let approve_token = token(&h.mint(id, Some("alice")).await, VerdictKind::Approve);
    let before = h.audit_len().await;
    match h.use_token(&approve_token, "bob", approve()).await {
        Err(LinkError::WrongReviewer { bound, presented }) => {
            assert_eq!((bound, presented), (person("alice"), person("bob")));
        }
        other => panic!("expected the wrong reviewer, got {other:?}"),
    }
    assert_eq!(
        h.refusals_since(before).await,
        [(Some(id), reviewer("bob"), "wrong_reviewer".to_owned())]
    );
    let audit = h.all_audit().await;
    let record = audit.last().unwrap().record();
    assert_eq!(record.data["detail"]["bound"], "alice");
    assert_eq!(record.data["token"]["key_id"], "k1");
    assert!(
        h.voters(id).await.is_empty(),
        "bob's attempt counted nothing"
    );
    let decision = h.decisions(id).await.pop().unwrap();
    assert_eq!(
        (decision.person, decision.verdict, decision.refusal),
        (
            Some(person("bob")),
            "approve".to_owned(),
            Some("wrong_reviewer".to_owned())
        )
    );
    // Bob pressing it again and again writes nothing more: one row per link, person and
    // minute; the others are counted.
    let before = h.audit_len().await;
    for _ in 0..20 {
        assert!(matches!(
            h.use_token(&approve_token, "bob", approve()).await,
            Err(LinkError::WrongReviewer { .. })
        ));
    }
    assert!(h.refusals_since(before).await.is_empty(), "coalesced");
    assert_eq!(h.decisions(id).await.len(), 1);
    // Nothing was spent: alice's own click still decides (DESIGN: a forwarded link must not
    // let anyone cancel the rightful reviewer's vote).
    let ticket = h
        .use_token(&approve_token, "alice", approve())
        .await
        .unwrap();
    assert_eq!(h.voters(id).await, ["alice"]);
    assert_eq!(ticket.votes().len(), 1);
    // And now it is spent, for her and for bob alike.
    assert!(matches!(
        h.use_token(&approve_token, "alice", approve()).await,
        Err(LinkError::Replayed)
    ));
    // The twenty coalesced attempts are counted in one row once the minute is over.
    h.clock.advance(Duration::from_secs(61));
    let before = h.audit_len().await;
    h.handoff.expire_due().await.unwrap();
    let summary = h.all_audit().await.pop().unwrap();
    assert_eq!(
        h.refusals_since(before).await,
        [(Some(id), reviewer("bob"), "wrong_reviewer".to_owned())]
    );
    assert_eq!(summary.record().data["detail"]["coalesced"], 20);
    assert_eq!(summary.record().data["token"]["key_id"], "k1");
    h.assert_audit_ok().await;
}

// ---------------------------------------------------------------------------------------------
// Group chats.

#[tokio::test]
async fn a_group_link_works_for_any_eligible_reviewer_but_not_for_the_principal() {
    let h = Harness::links_harness().await;
    let id = pending(
        h.for_pat()
            .propose(request("db.drop", "d-1"))
            .await
            .unwrap(),
    )
    .id;
    let group = h.mint(id, None).await;
    let ticket = h
        .use_token(&token(&group, VerdictKind::Approve), "alice", approve())
        .await
        .unwrap();
    assert_eq!(ticket.state(), &TicketState::Pending);
    assert_eq!(h.voters(id).await, ["alice"]);

    // The same kind of button pressed by the requester's principal (a DBA): self-approval.
    let group = h.mint(id, None).await;
    let before = h.audit_len().await;
    match h
        .use_token(&token(&group, VerdictKind::Approve), "pat", approve())
        .await
    {
        Err(LinkError::Refused(Refusal::SelfApproval { person: p })) => {
            assert_eq!(p, person("pat"));
        }
        other => panic!("expected self-approval, got {other:?}"),
    }
    let refused = h.refusals_since(before).await;
    assert_eq!(
        refused,
        [(Some(id), reviewer("pat"), "self_approval".to_owned())]
    );
    // Someone outside the required groups.
    match h
        .use_token(&token(&group, VerdictKind::Reject), "erin", approve())
        .await
    {
        Err(LinkError::Refused(Refusal::NotEligible { person: p })) => {
            assert_eq!(p, person("erin"));
        }
        other => panic!("expected not eligible, got {other:?}"),
    }
    // Refusals by the machine spend the token too — for the person refused.
    assert!(matches!(
        h.use_token(&token(&group, VerdictKind::Approve), "pat", approve())
            .await,
        Err(LinkError::Replayed)
    ));
    assert_eq!(h.voters(id).await, ["alice"]);
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn a_group_link_is_single_use_per_reviewer_so_a_quorum_can_share_one_button() {
    let h = Harness::links_harness().await;
    let id = h.pending("db.drop", "d-2").await;
    let group = h.mint(id, None).await;
    let approve_link = token(&group, VerdictKind::Approve);
    let after_alice = h
        .use_token(&approve_link, "alice", approve())
        .await
        .unwrap();
    assert_eq!(after_alice.state(), &TicketState::Pending);
    // Alice pressing the same button again is a replay …
    assert!(matches!(
        h.use_token(&approve_link, "alice", approve()).await,
        Err(LinkError::Replayed)
    ));
    // … while Bob, a second DBA, can press it once and completes the quorum of two.
    let after_bob = h.use_token(&approve_link, "bob", approve()).await.unwrap();
    assert_eq!(after_bob.state().name(), StateName::Approved);
    assert_eq!(h.voters(id).await, ["alice", "bob"]);
    h.assert_audit_ok().await;
}

// ---------------------------------------------------------------------------------------------
// The action changed.

#[tokio::test]
async fn an_edit_by_another_reviewer_makes_earlier_links_digest_changed() {
    let h = Harness::links_harness().await;
    let id = h.pending("db.update", "u-1").await;
    let old = h.mint(id, Some("alice")).await;
    h.handoff
        .decide(
            id,
            h.cred("bob"),
            Verdict::ApproveWithEdits {
                parameters: json!({ "table": "orders", "limit": 10 }),
            },
            None,
        )
        .await
        .unwrap();

    let preview = h
        .handoff
        .preview_token(&token(&old, VerdictKind::Approve))
        .await
        .unwrap();
    assert!(!preview.digest_current);
    assert_eq!(preview.verdict, None, "the verdict is for an action gone");
    assert!(preview.pending);

    let before = h.audit_len().await;
    assert!(matches!(
        h.use_token(&token(&old, VerdictKind::Approve), "alice", approve())
            .await,
        Err(LinkError::DigestChanged)
    ));
    assert_eq!(
        h.refusals_since(before).await,
        [(Some(id), reviewer("alice"), "digest_changed".to_owned())]
    );
    assert_eq!(h.voters(id).await, ["bob"], "only the editor");
    // Spent.
    assert!(matches!(
        h.use_token(&token(&old, VerdictKind::Approve), "alice", approve())
            .await,
        Err(LinkError::Replayed)
    ));
    // A link minted for the edited action works.
    let fresh = h.mint(id, Some("alice")).await;
    let ticket = h
        .use_token(&token(&fresh, VerdictKind::Approve), "alice", approve())
        .await
        .unwrap();
    assert_eq!(ticket.state().name(), StateName::Approved);
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn an_edit_between_the_check_and_the_commit_is_caught_in_the_loop() {
    let h = Harness::with_links(
        Setup {
            interpose: true,
            ..Setup::default()
        },
        LinkSetup::standard(),
    )
    .await;
    let id = h.pending("db.update", "u-1").await;
    let approve_token = token(&h.mint(id, Some("alice")).await, VerdictKind::Approve);
    // Bob's edit commits between alice's checks and her compare-and-swap.
    let (handoff, bob) = (h.handoff.clone(), h.cred("bob").clone());
    h.interpose
        .as_ref()
        .unwrap()
        .before_next_commit(async move {
            handoff
                .decide(
                    id,
                    &bob,
                    Verdict::ApproveWithEdits {
                        parameters: json!({ "table": "orders", "limit": 10 }),
                    },
                    None,
                )
                .await
                .unwrap();
        });
    assert!(matches!(
        h.use_token(&approve_token, "alice", approve()).await,
        Err(LinkError::DigestChanged)
    ));
    assert!(!h.interpose.as_ref().unwrap().armed());
    assert_eq!(h.voters(id).await, ["bob"]);
    h.assert_audit_ok().await;
}

// ---------------------------------------------------------------------------------------------
// Expired and forged tokens.

#[tokio::test]
async fn an_expired_token_is_refused_and_audited() {
    let h = Harness::links_harness().await;
    let id = h.pending("db.update", "u-1").await;
    let approve_token = token(&h.mint(id, Some("alice")).await, VerdictKind::Approve);
    h.clock.advance(15 * MIN);
    let before = h.audit_len().await;
    assert!(matches!(
        h.handoff.preview_token(&approve_token).await,
        Err(LinkError::Expired { expires_at }) if expires_at == at(15 * MIN)
    ));
    assert!(matches!(
        h.use_token(&approve_token, "alice", approve()).await,
        Err(LinkError::Expired { expires_at }) if expires_at == at(15 * MIN)
    ));
    // Authentic although expired: filed under the ticket it names, with the token's key id
    // and nonce, so the ticket's history shows the attempt.
    assert_eq!(
        h.refusals_since(before).await,
        [(Some(id), Actor::Unauthenticated, "token_expired".to_owned())]
    );
    let history = h.handoff.ticket(id).await.unwrap().unwrap().audit;
    let refusal = history.last().unwrap().record();
    assert_eq!(refusal.data["refusal"], "token_expired");
    assert!(refusal.data["detail"]["token"]["nonce"].is_string());
    assert!(h.voters(id).await.is_empty());
}

/// A token that is not authentic names no ticket the refusal could be filed under.
#[tokio::test]
async fn a_forged_token_with_a_real_ticket_is_filed_under_no_ticket() {
    let h = Harness::links_harness().await;
    let id = h.pending("db.update", "u-1").await;
    let good = token(&h.mint(id, Some("alice")).await, VerdictKind::Approve);
    let forged = flip(&good, good.len() - 3);
    let before = h.audit_len().await;
    assert!(matches!(
        h.use_token(&forged, "alice", approve()).await,
        Err(LinkError::BadSignature)
    ));
    assert_eq!(
        h.refusals_since(before).await,
        [(
            None,
            Actor::Unauthenticated,
            "token_bad_signature".to_owned()
        )]
    );
}

#[tokio::test]
async fn a_token_that_expires_before_its_write_commits_is_refused_unspent() {
    let h = Harness::with_links(
        Setup {
            interpose: true,
            ..Setup::default()
        },
        LinkSetup::standard(),
    )
    .await;
    let id = h.pending("db.update", "u-1").await;
    let approve_token = token(&h.mint(id, Some("alice")).await, VerdictKind::Approve);
    h.clock.advance(15 * MIN - Duration::from_millis(1));
    let clock = h.clock.clone();
    h.interpose
        .as_ref()
        .unwrap()
        .before_next_commit(async move { clock.advance(Duration::from_millis(1)) });
    let before = h.audit_len().await;
    assert!(matches!(
        h.use_token(&approve_token, "alice", approve()).await,
        Err(LinkError::Expired { .. })
    ));
    assert!(h.voters(id).await.is_empty());
    assert_eq!(
        h.refusals_since(before).await,
        [(Some(id), reviewer("alice"), "token_expired".to_owned())]
    );
    assert_eq!(h.ticket(id).await.state(), &TicketState::Pending);
    h.assert_audit_ok().await;
}

/// Replaces the character at `index` with another base64url character.
fn flip(token: &str, index: usize) -> String {
    let mut bytes = token.as_bytes().to_vec();
    bytes[index] = if bytes[index] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn tampered_and_forged_tokens_are_refused_with_distinct_errors_and_audited() {
    let h = Harness::links_harness().await;
    let id = h.pending("db.update", "u-1").await;
    let good = token(&h.mint(id, Some("alice")).await, VerdictKind::Approve);
    let ticket = h.ticket(id).await;
    let claims = TokenClaims {
        ticket: id,
        reviewer: Some(person("alice")),
        verdict: VerdictKind::Approve,
        digest: h.handoff.keyed_digest(&ticket).unwrap(),
        issued_at: h.now(),
        expires_at: at(10 * MIN),
        nonce: TokenNonce::from_bytes([1; 16]),
    };
    let same_id_other_secret = TokenKeyRing::new(TokenKey::new("k1", &[12u8; 32]).unwrap(), [])
        .unwrap()
        .sign(&claims)
        .unwrap();
    let unknown_key = TokenKeyRing::new(TokenKey::new("k9", &[11u8; 32]).unwrap(), [])
        .unwrap()
        .sign(&claims)
        .unwrap();
    // Byte 8 of the payload text lies in the ticket id: still a well-formed payload.
    let payload_flipped = flip(&good, "ah1.".len() + 8);
    let signature_flipped = flip(&good, good.len() - 10);
    let truncated = good[..good.len() - 1].to_owned();

    let before = h.audit_len().await;
    let cases: [(&str, &str); 6] = [
        (&payload_flipped, "token_bad_signature"),
        (&signature_flipped, "token_bad_signature"),
        (&same_id_other_secret, "token_bad_signature"),
        (&unknown_key, "token_unknown_key"),
        (&truncated, "token_malformed"),
        ("not a token", "token_malformed"),
    ];
    for (text, code) in cases {
        let result = h.use_token(text, "alice", approve()).await;
        let preview = h.handoff.preview_token(text).await;
        for err in [result.unwrap_err(), preview.unwrap_err()] {
            match (code, &err) {
                ("token_bad_signature", LinkError::BadSignature)
                | ("token_unknown_key", LinkError::UnknownKey { .. })
                | ("token_malformed", LinkError::Malformed(_)) => {}
                _ => panic!("{text}: expected {code}, got {err:?}"),
            }
        }
    }
    assert!(matches!(
        h.use_token(&truncated, "alice", approve()).await,
        Err(LinkError::Malformed(MalformedToken::SignatureLength))
    ));
    let refused = h.refusals_since(before).await;
    let codes: Vec<&str> = refused.iter().map(|(_, _, c)| c.as_str()).collect();
    assert_eq!(
        codes,
        [
            "token_bad_signature",
            "token_bad_signature",
            "token_bad_signature",
            "token_unknown_key",
            "token_malformed",
            "token_malformed",
            "token_malformed",
        ]
    );
    assert!(refused
        .iter()
        .all(|(t, a, _)| t.is_none() && *a == Actor::Unauthenticated));
    // Nothing was decided and the genuine token still works.
    assert!(h.decisions(id).await.is_empty());
    h.use_token(&good, "alice", approve()).await.unwrap();
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn a_flood_of_forged_tokens_is_coalesced_in_the_audit_trail() {
    let h = Harness::with_links(
        Setup {
            limits: Limits {
                unauthenticated_audit_per_minute: 3,
                ..Limits::default()
            },
            ..Setup::default()
        },
        LinkSetup::standard(),
    )
    .await;
    let id = h.pending("db.update", "u-1").await;
    let good = token(&h.mint(id, None).await, VerdictKind::Approve);
    let forged = flip(&good, good.len() - 10);
    let before = h.audit_len().await;
    for _ in 0..10 {
        assert!(matches!(
            h.use_token(&forged, "alice", approve()).await,
            Err(LinkError::BadSignature)
        ));
    }
    // Forged tokens and refused credentials share the budget.
    assert!(matches!(
        h.handoff
            .decide_with_token(&good, &Credential::token("nobody"), approve())
            .await,
        Err(LinkError::Unauthenticated(_))
    ));
    assert_eq!(h.refusals_since(before).await.len(), 3);

    h.clock.advance(MIN);
    let mid = h.audit_len().await;
    assert!(h.use_token(&forged, "alice", approve()).await.is_err());
    let audit = h.all_audit().await;
    let summary = audit[mid].record();
    assert_eq!(summary.actor, Actor::Unauthenticated);
    assert_eq!(summary.data["detail"]["coalesced"], Value::from(8));
    assert_eq!(
        audit[mid + 1].record().data["refusal"],
        "token_bad_signature"
    );
    assert_eq!(audit.len(), mid + 2);
    // The genuine token was never spent.
    h.use_token(&good, "alice", approve()).await.unwrap();
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn a_repeated_vote_through_a_new_link_spends_it_and_is_recorded_in_the_chain() {
    let h = Harness::links_harness().await;
    let id = h.pending("db.drop", "d-3").await;
    let first = h.mint(id, Some("alice")).await;
    h.use_token(&token(&first, VerdictKind::Approve), "alice", approve())
        .await
        .unwrap();
    let second = h.mint(id, Some("alice")).await;
    let link = token(&second, VerdictKind::Approve);
    let ticket = h.use_token(&link, "alice", approve()).await.unwrap();
    assert_eq!(ticket.state(), &TicketState::Pending, "counted once");
    assert_eq!(h.voters(id).await, ["alice"]);
    let kinds = h.audit_kinds(id).await;
    assert_eq!(
        kinds.iter().filter(|k| k.as_str() == "repeated").count(),
        1,
        "the spent token's use is in the chain: {kinds:?}"
    );
    assert!(matches!(
        h.use_token(&link, "alice", approve()).await,
        Err(LinkError::Replayed)
    ));
    h.assert_audit_ok().await;
}

/// A vote already on record, submitted again with a second link, is accepted (the token's use
/// is recorded) and answered as a repeat, counted once.
#[tokio::test]
async fn a_second_link_for_a_vote_on_record_is_answered_as_a_repeat() {
    let h = Harness::links_harness().await;
    let p = pending(
        h.handoff
            .agent(agent_id("ops"), None)
            .propose(request("db.drop", "repeat-link"))
            .await
            .unwrap(),
    );
    let first = token(&h.mint(p.id, Some("alice")).await, VerdictKind::Approve);
    let second = token(&h.mint(p.id, Some("alice")).await, VerdictKind::Approve);
    let recorded = h
        .handoff
        .decide_with_token(&first, h.cred("alice"), approve())
        .await
        .unwrap();
    assert!(!recorded.is_repeated());
    let repeated = h
        .handoff
        .decide_with_token(&second, h.cred("alice"), approve())
        .await
        .unwrap();
    assert!(repeated.is_repeated(), "{repeated:?}");
    assert_eq!(repeated.ticket().version(), recorded.ticket().version());
    assert_eq!(repeated.ticket().state().name(), StateName::Pending);
    // The second token is spent too.
    assert!(matches!(
        h.use_token(&second, "alice", approve()).await,
        Err(LinkError::Replayed)
    ));
}

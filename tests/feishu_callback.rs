//! Feishu card callbacks end to end through `Handoff::handle_feishu_callback`: signed and
//! encrypted button clicks decide tickets; operators who are not reviewers, replayed events
//! and bad signatures are refused and audited.

#![cfg(feature = "feishu")]

mod support;

use std::sync::Arc;

use agent_handoff::audit::{Actor, AuditEvent};
use agent_handoff::notify::feishu::{
    EncryptKey, FeishuCallbackVerifier, DECISION_TOKEN_KEY, HEADER_NONCE, HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
};
use agent_handoff::ticket::StateName;
use agent_handoff::token::VerdictKind;
use agent_handoff::{
    Clock, Handoff, ManualClock, Proposal, SqliteOptions, SqliteStore, StaticDirectory, Store,
    TicketId, Timestamp,
};
use serde_json::{json, Value};
use support::*;

const VERIFICATION_TOKEN: &str = "v-token";
const ENCRYPT_KEY: &str = "test-encrypt-key";

struct Env {
    handoff: Handoff,
    clock: ManualClock,
    store: Arc<dyn Store>,
    /// The same store, to make a commit fail.
    interpose: Arc<Interpose>,
    verifier: FeishuCallbackVerifier,
    key: EncryptKey,
}

async fn env() -> Env {
    let clock = ManualClock::new(Timestamp::from_unix_millis(START));
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let sqlite = SqliteStore::in_memory_with(SqliteOptions::new().with_clock(Arc::clone(&shared)))
        .await
        .unwrap();
    let interpose = Arc::new(Interpose::new(sqlite));
    let store: Arc<dyn Store> = Arc::clone(&interpose) as Arc<dyn Store>;
    let mut dir = StaticDirectory::new();
    dir.add_person("alice", ["dba"]).unwrap();
    dir.add_person("bob", ["dba"]).unwrap();
    dir.add_person("erin", ["marketing"]).unwrap();
    dir.add_platform_user("feishu", "ou_alice", "alice")
        .unwrap();
    dir.add_platform_user("feishu", "ou_bob", "bob").unwrap();
    dir.add_platform_user("feishu", "ou_erin", "erin").unwrap();
    let handoff = Handoff::builder()
        .shared_store(Arc::clone(&store))
        .policy(standard_policy())
        .identity(dir)
        .shared_clock(shared)
        .decision_links(decision_links())
        .digest_key(digest_key())
        .build()
        .unwrap();
    let key = EncryptKey::new(ENCRYPT_KEY).unwrap();
    let verifier = FeishuCallbackVerifier::new(VERIFICATION_TOKEN, key.clone()).unwrap();
    Env {
        handoff,
        clock,
        store,
        interpose,
        verifier,
        key,
    }
}

impl Env {
    async fn pending(&self, kind: &str, key: &str) -> TicketId {
        match self
            .handoff
            .agent(agent_id("ops-agent"), None)
            .propose(request(kind, key))
            .await
            .unwrap()
        {
            Proposal::Pending(p) => p.id,
            other => panic!("expected pending, got {other:?}"),
        }
    }

    /// The group-chat (verdict-only) token for `verdict` on ticket `id`.
    async fn token(&self, id: TicketId, verdict: VerdictKind) -> String {
        let ticket = self.store.ticket(id).await.unwrap().unwrap();
        self.handoff
            .mint_links(&ticket, None, self.clock.now())
            .unwrap()
            .into_iter()
            .find(|l| l.verdict == verdict)
            .unwrap()
            .token
    }

    async fn state(&self, id: TicketId) -> StateName {
        let ticket = self.store.ticket(id).await.unwrap().unwrap();
        ticket.state_at(self.clock.now()).name()
    }

    /// A `card.action.trigger` body from `open_id` pressing a button carrying `token`.
    fn action(&self, event_id: &str, open_id: &str, token: &str) -> Vec<u8> {
        json!({
            "schema": "2.0",
            "header": {
                "event_id": event_id,
                "token": VERIFICATION_TOKEN,
                "create_time": "1700000000000000",
                "event_type": "card.action.trigger",
                "tenant_key": "tenant",
                "app_id": "cli_test",
            },
            "event": {
                "operator": { "open_id": open_id, "tenant_key": "tenant" },
                "token": "c-update-token",
                "action": { "tag": "button", "value": { DECISION_TOKEN_KEY: token, "verdict": "approve" } },
                "context": { "open_message_id": "om_1", "open_chat_id": "oc_1" },
            },
        })
        .to_string()
        .into_bytes()
    }

    /// Headers signing `body` now, the way Feishu does.
    fn signed(&self, body: &[u8], nonce: &str) -> Vec<(String, String)> {
        let ts = self.clock.now().as_unix_seconds().to_string();
        vec![
            (HEADER_TIMESTAMP.to_owned(), ts.clone()),
            (HEADER_NONCE.to_owned(), nonce.to_owned()),
            (
                HEADER_SIGNATURE.to_owned(),
                self.key.callback_signature(&ts, nonce, body),
            ),
        ]
    }

    async fn call(&self, headers: &[(String, String)], body: &[u8]) -> (u16, Value) {
        let r = self
            .handoff
            .handle_feishu_callback(&self.verifier, headers, body)
            .await;
        let body = if r.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&r.body).unwrap()
        };
        (r.status, body)
    }

    /// Every `refused` audit record as (actor, refusal code).
    async fn refusals(&self) -> Vec<(Actor, String)> {
        self.store
            .audit_events(1, 100_000)
            .await
            .unwrap()
            .into_iter()
            .map(|raw| AuditEvent::decode(raw).unwrap())
            .filter(|e| e.record().kind == "refused")
            .map(|e| {
                let r = e.record();
                (
                    r.actor.clone(),
                    r.data["refusal"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

fn toast_type(body: &Value) -> &str {
    body["toast"]["type"].as_str().unwrap()
}

fn toast_text(body: &Value) -> &str {
    body["toast"]["content"].as_str().unwrap()
}

fn has_buttons(card: &Value) -> bool {
    card["elements"].as_array().unwrap().iter().any(|e| {
        e["tag"] == "action"
            && e["actions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a.get("value").is_some())
    })
}

#[tokio::test]
async fn url_verification_echoes_the_challenge() {
    let env = env().await;
    let body =
        json!({ "challenge": "c-123", "token": VERIFICATION_TOKEN, "type": "url_verification" })
            .to_string();
    let (status, answer) = env.call(&[], body.as_bytes()).await;
    assert_eq!(status, 200);
    assert_eq!(answer, json!({ "challenge": "c-123" }));
}

#[tokio::test]
async fn a_signed_click_from_a_reviewer_decides_and_updates_the_card() {
    let env = env().await;
    let id = env.pending("db.update", "signed").await;
    let token = env.token(id, VerdictKind::Approve).await;
    let body = env.action("ev-signed", "ou_alice", &token);
    let (status, answer) = env.call(&env.signed(&body, "n-1"), &body).await;
    assert_eq!(status, 200);
    assert_eq!(toast_type(&answer), "success", "{answer}");
    assert_eq!(env.state(id).await, StateName::Approved);
    let card = &answer["card"]["data"];
    assert_eq!(answer["card"]["type"], "raw");
    assert!(!has_buttons(card), "a decided card offers no decision");
    assert_eq!(card["header"]["template"], "green");
}

#[tokio::test]
async fn an_encrypted_click_decides_too_and_a_pending_card_keeps_its_buttons() {
    let env = env().await;
    // Two DBAs needed: after one approval the ticket is still pending.
    let id = env.pending("db.drop", "encrypted").await;
    let token = env.token(id, VerdictKind::Approve).await;
    let plain = env.action("ev-enc", "ou_bob", &token);
    let body = json!({ "encrypt": env.key.encrypt(&plain, [7u8; 16]) })
        .to_string()
        .into_bytes();
    let (status, answer) = env.call(&env.signed(&body, "n-2"), &body).await;
    assert_eq!(status, 200);
    assert_eq!(toast_type(&answer), "success", "{answer}");
    let ticket = env.store.ticket(id).await.unwrap().unwrap();
    assert_eq!(ticket.votes().len(), 1);
    assert_eq!(env.state(id).await, StateName::Pending);
    assert!(has_buttons(&answer["card"]["data"]));
}

#[tokio::test]
async fn operators_who_are_not_reviewers_are_refused_and_audited() {
    let env = env().await;
    let id = env.pending("db.update", "strangers").await;
    let token = env.token(id, VerdictKind::Approve).await;

    // Unknown to the directory: refused by the identity verifier, token not spent.
    let body = env.action("ev-stranger", "ou_stranger", &token);
    let (status, answer) = env.call(&env.signed(&body, "n-3"), &body).await;
    assert_eq!(status, 200);
    assert_eq!(toast_type(&answer), "error");
    assert!(
        !answer.to_string().contains("ou_stranger"),
        "no internal details"
    );

    // Known, but in none of the required groups: refused by the machine.
    let body = env.action("ev-erin", "ou_erin", &token);
    let (status, answer) = env.call(&env.signed(&body, "n-4"), &body).await;
    assert_eq!(status, 200);
    assert_eq!(toast_type(&answer), "error");

    assert_eq!(env.state(id).await, StateName::Pending);
    let refusals = env.refusals().await;
    assert!(
        refusals.contains(&(Actor::Unauthenticated, "unauthenticated".into())),
        "{refusals:?}"
    );
    assert!(
        refusals
            .iter()
            .any(|(actor, _)| *actor == Actor::Reviewer(person("erin"))),
        "{refusals:?}"
    );

    // The rightful reviewer can still use the same button.
    let body = env.action("ev-alice", "ou_alice", &token);
    let (_, answer) = env.call(&env.signed(&body, "n-5"), &body).await;
    assert_eq!(toast_type(&answer), "success", "{answer}");
    assert_eq!(env.state(id).await, StateName::Approved);
}

#[tokio::test]
async fn a_replayed_event_is_refused_and_audited() {
    let env = env().await;
    let id = env.pending("db.drop", "replay").await;
    let token = env.token(id, VerdictKind::Approve).await;
    let body = env.action("ev-replay", "ou_alice", &token);
    let headers = env.signed(&body, "n-6");
    let (_, first) = env.call(&headers, &body).await;
    assert_eq!(toast_type(&first), "success");

    // The same callback again: its event id was consumed with the decision, so it decides
    // nothing more; the reviewer is told the button was used.
    let (status, again) = env.call(&headers, &body).await;
    assert_eq!(status, 200);
    assert_eq!(toast_type(&again), "error");
    assert_eq!(toast_text(&again), "You already used this button.");
    let ticket = env.store.ticket(id).await.unwrap().unwrap();
    assert_eq!(ticket.votes().len(), 1, "counted once");
    assert!(env
        .refusals()
        .await
        .contains(&(Actor::Reviewer(person("alice")), "replayed".into())));

    // A new event with the same button by the same reviewer: the token's own nonce refuses it.
    let body = env.action("ev-replay-2", "ou_alice", &token);
    let (_, third) = env.call(&env.signed(&body, "n-7"), &body).await;
    assert_eq!(toast_type(&third), "error");
    assert!(env
        .refusals()
        .await
        .contains(&(Actor::Reviewer(person("alice")), "replayed".into())));
}

#[tokio::test]
async fn a_bad_signature_is_401_with_an_empty_body_and_audited() {
    let env = env().await;
    let id = env.pending("db.update", "forged").await;
    let token = env.token(id, VerdictKind::Approve).await;
    let body = env.action("ev-forged", "ou_alice", &token);
    let mut headers = env.signed(&body, "n-8");
    headers[2].1 = "0".repeat(64);
    let r = env
        .handoff
        .handle_feishu_callback(&env.verifier, &headers, &body)
        .await;
    assert_eq!((r.status, r.body.as_str()), (401, ""));

    // Unsigned card actions and stale timestamps alike.
    let r = env
        .handoff
        .handle_feishu_callback(&env.verifier, &[], &body)
        .await;
    assert_eq!((r.status, r.body.as_str()), (401, ""));
    let headers = env.signed(&body, "n-9");
    env.clock.advance(10 * MIN);
    let r = env
        .handoff
        .handle_feishu_callback(&env.verifier, &headers, &body)
        .await;
    assert_eq!((r.status, r.body.as_str()), (401, ""));

    assert_eq!(env.state(id).await, StateName::Pending);
    let refused = env.refusals().await;
    assert_eq!(
        refused
            .iter()
            .filter(|r| r.1 == "feishu_callback_refused")
            .count(),
        3,
        "{refused:?}"
    );
}

/// A stranger (an `open_id` the directory does not know) pressing a genuine button 500 times:
/// every click is refused, nothing is decided, and nothing is written before anyone is
/// authenticated — no nonce (the event id is consumed only with a decision), and audit rows
/// only up to the flood budget, the rest counted in one summary row.
#[tokio::test]
async fn a_strangers_clicks_write_no_nonce_and_their_audit_rows_are_coalesced() {
    let env = env().await;
    let id = env.pending("db.update", "stranger").await;
    let token = env.token(id, VerdictKind::Approve).await;
    let nonces = env.store.health().await.unwrap().nonces;
    let refusals = env.refusals().await.len();
    for i in 0..500 {
        let body = env.action(&format!("ev-stranger-{i}"), "ou_stranger", &token);
        let (status, answer) = env
            .call(&env.signed(&body, &format!("n-s-{i}")), &body)
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            toast_text(&answer),
            "You are not a reviewer known to this approval system."
        );
    }
    assert_eq!(env.state(id).await, StateName::Pending);
    assert_eq!(
        env.store.health().await.unwrap().nonces,
        nonces,
        "no nonce written for a click nobody authenticated"
    );
    let written = env.refusals().await.len() - refusals;
    assert_eq!(written, 60, "the default budget of 60 rows a minute");
    env.clock.advance(2 * MIN);
    env.handoff.expire_due().await.unwrap();
    let rows = env
        .store
        .audit_events(1, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|raw| AuditEvent::decode(raw).unwrap())
        .filter(|e| e.record().data["detail"]["coalesced"].is_u64())
        .map(|e| e.record().data["detail"]["coalesced"].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(rows, 440, "the other clicks counted");
    // The rightful reviewer's click still decides (a group button: any eligible reviewer).
    let body = env.action("ev-alice-s", "ou_alice", &token);
    let (_, answer) = env.call(&env.signed(&body, "n-s-alice"), &body).await;
    assert_eq!(toast_type(&answer), "success", "{answer}");
    assert_eq!(
        env.store.health().await.unwrap().nonces,
        nonces + 2,
        "the token's use and the event id, in the decision's write"
    );
}

/// A click whose decision hits a transient store failure is not lost: the event id is
/// consumed in the same write as the decision, so nothing was consumed and the same
/// callback, delivered again, is decided.
#[tokio::test]
async fn a_click_whose_write_failed_is_decided_when_the_callback_comes_again() {
    let env = env().await;
    let id = env.pending("db.update", "transient").await;
    let token = env.token(id, VerdictKind::Approve).await;
    let body = env.action("ev-transient", "ou_alice", &token);
    let headers = env.signed(&body, "n-t");
    env.interpose.fail_next_commit();
    let (status, first) = env.call(&headers, &body).await;
    assert_eq!(status, 200);
    assert_eq!(
        toast_text(&first),
        "Could not record the decision; try again."
    );
    assert_eq!(env.state(id).await, StateName::Pending);
    let (_, again) = env.call(&headers, &body).await;
    assert_eq!(toast_type(&again), "success", "{again}");
    assert_eq!(env.state(id).await, StateName::Approved);
}

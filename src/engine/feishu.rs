//! Feishu / Lark card callbacks on the facade: verify, deduplicate, authenticate the operator,
//! decide with the button's token, answer with a toast and the updated card.

use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::error::LinkError;
use super::review::Decided;
use super::Handoff;
use crate::audit::Actor;
use crate::backend::{Credential, NonceUse, PlatformIdentity};
use crate::codes::{self, Code};
use crate::notify::feishu::{
    Callback, CardAction, FeishuCallbackVerifier, FeishuCardRenderer, FeishuResponse,
    DECISION_TOKEN_KEY,
};
use crate::notify::{DeliveryKind, ReviewCard};
use crate::ticket::{Refusal, Ticket, TicketState};
use crate::token::VerdictKind;
use crate::TokenSubmission;

/// How long a callback's `event_id` is remembered. Longer than any sensible
/// [`FeishuCallbackVerifier::with_tolerance`]: a replay older than the tolerance is refused by
/// its timestamp, a newer one by the remembered id.
const EVENT_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// The platform name in [`Credential::Platform`].
const PLATFORM: &str = "feishu";

impl Handoff {
    /// Answers one Feishu / Lark card callback: `headers` and `raw_body` exactly as received.
    /// Framework-agnostic: any HTTP server can host it and send back the [`FeishuResponse`].
    ///
    /// 1. The request is verified by `verifier` (signature, timestamp window against this
    ///    engine's clock, decryption, Verification Token). A refusal is audited as
    ///    unauthenticated (coalesced under
    ///    [`Limits::unauthenticated_audit_per_minute`](crate::Limits)) and answered `401` with
    ///    an empty body, whatever the reason.
    /// 2. `url_verification`: `200 {"challenge": …}`.
    /// 3. `card.action.trigger`: the operator's `open_id` becomes a
    ///    [`Credential::Platform`] for platform `feishu` (this verified handler is one of the
    ///    only producers of platform identities, see
    ///    [`PlatformIdentity`](crate::backend::PlatformIdentity)), and the button's
    ///    [`DECISION_TOKEN_KEY`] goes to [`Handoff::decide_with_token`], which authenticates the
    ///    operator through the [`IdentityVerifier`](crate::IdentityVerifier), applies the
    ///    decision and audits every refusal. The callback's `header.event_id` is consumed in
    ///    the store's nonce table (durable, shared by every process on the store, remembered
    ///    for a day) **in the same write as the token's use**: a callback is decided at most
    ///    once (a repeat is refused as [`Replayed`](LinkError::Replayed)), a click refused
    ///    before anyone is authenticated (an unknown `open_id`, a forged token, no token)
    ///    writes no nonce — only its audit row, coalesced under the flood limit — and a click
    ///    whose write failed in the store consumed nothing, so the same callback delivered
    ///    again is decided.
    ///
    /// Authenticated requests are answered `200` with `{"toast": {"type", "content"}}` — a
    /// success, or the refusal's reason in words for the reviewer, never internal details —
    /// plus `"card": {"type": "raw", "data": …}`, the card rendered from the ticket as it is
    /// now (with fresh buttons while it is pending, the outcome once it is not) when the token
    /// still leads to a ticket.
    pub async fn handle_feishu_callback(
        &self,
        verifier: &FeishuCallbackVerifier,
        headers: &[(String, String)],
        raw_body: &[u8],
    ) -> FeishuResponse {
        self.handle_feishu_callback_with(verifier, &FeishuCardRenderer::new(), headers, raw_body)
            .await
    }

    /// [`handle_feishu_callback`](Self::handle_feishu_callback), rendering the updated card
    /// with `renderer` (e.g. one with a review-page link).
    pub async fn handle_feishu_callback_with(
        &self,
        verifier: &FeishuCallbackVerifier,
        renderer: &FeishuCardRenderer,
        headers: &[(String, String)],
        raw_body: &[u8],
    ) -> FeishuResponse {
        let inner = &self.inner;
        let now = inner.clock.now();
        let action = match verifier.verify(headers, raw_body, now) {
            Ok(Callback::UrlVerification { challenge }) => {
                return FeishuResponse {
                    status: 200,
                    body: json!({ "challenge": challenge }).to_string(),
                }
            }
            Ok(Callback::CardAction(action)) => action,
            Err(e) => {
                tracing::info!(
                    refusal = codes::FEISHU_CALLBACK_REFUSED.as_str(),
                    "feishu callback refused"
                );
                self.audit_unauthenticated(
                    codes::FEISHU_CALLBACK_REFUSED,
                    json!({ "error": e.to_string() }),
                )
                .await;
                return unauthorized();
            }
        };

        let Some(token) = action
            .action_value
            .get(DECISION_TOKEN_KEY)
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        else {
            self.audit_unauthenticated(
                codes::FEISHU_NO_DECISION_TOKEN,
                json!({ "event_id": action.event_id }),
            )
            .await;
            return toast("error", "This button does not carry a decision.", None);
        };

        // The callback's signature, time window and Verification Token were checked above:
        // this handler is one of the verified ones that may vouch for a platform user.
        let credential = Credential::Platform(PlatformIdentity::verified(
            PLATFORM,
            action.operator_open_id.clone(),
        ));
        // The event id is consumed with the token, in the write that records the decision: a
        // request refused before anyone was authenticated writes no nonce (only its audit row,
        // coalesced), and one whose write failed is not lost — delivered again, it is decided.
        let outcome = self
            .decide_with_token_spending(
                token,
                &credential,
                TokenSubmission::new(),
                Some(self.event_nonce(&action)),
            )
            .await;
        let card = self.updated_card(renderer, token).await;
        match outcome {
            Ok(Decided::Repeated(_)) => {
                toast("success", "Your decision was already recorded.", card)
            }
            Ok(Decided::Recorded(ticket)) => {
                let text = match ticket.state() {
                    TicketState::Pending => "Your decision was recorded; the review continues.",
                    _ => "Your decision was recorded.",
                };
                toast("success", text, card)
            }
            Err(e) => toast("error", refusal_text(&e), card),
        }
    }

    /// The callback's event id as a nonce for the store's nonce table.
    fn event_nonce(&self, action: &CardAction) -> NonceUse {
        let mut h = Sha256::new();
        h.update(b"agent-handoff/feishu-event/v1\0");
        h.update(action.event_id.as_bytes());
        let digest: [u8; 32] = h.finalize().into();
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&digest[..16]);
        let expires = self.inner.clock.now().saturating_add(EVENT_MEMORY);
        NonceUse::new(nonce, expires)
    }

    /// Audits a refusal of a request whose sender is not authenticated, coalesced under the
    /// flood limit. A store failure is logged: the request is refused either way.
    async fn audit_unauthenticated(&self, code: Code, detail: Value) {
        let inner = &self.inner;
        let record = inner.refusal_record(None, Actor::Unauthenticated, code, detail);
        let records = inner.flood_records(record);
        if !records.is_empty() {
            if let Err(e) = inner.audit_only(records).await {
                tracing::warn!(error = %e, "feishu callback refusal could not be audited");
            }
        }
    }

    /// The card for the token's ticket as it is now: fresh buttons (bound like the token) while
    /// pending, the outcome otherwise. `None` if the token leads nowhere or the card cannot be
    /// built.
    async fn updated_card(&self, renderer: &FeishuCardRenderer, token: &str) -> Option<Value> {
        let (preview, ticket) = self.inner.preview(token).await.ok()?;
        let now = self.inner.clock.now();
        let (_, key) = self.inner.link_config().ok()?;
        let ticket: &Ticket = &ticket;
        let (links, kind) = if preview.pending {
            let minted = self
                .mint_links(ticket, preview.reviewer.clone(), now)
                .ok()?;
            let links: Vec<_> = minted
                .iter()
                .filter(|l| l.verdict != VerdictKind::ApproveWithEdits)
                .map(|l| l.to_card_link())
                .collect();
            (links, DeliveryKind::Update)
        } else {
            (Vec::new(), DeliveryKind::Close)
        };
        let card = ReviewCard::from_ticket(ticket, now, key, &links);
        let (_, rendered) = renderer.bounded(card, kind).ok()?;
        Some(rendered)
    }
}

fn unauthorized() -> FeishuResponse {
    FeishuResponse {
        status: 401,
        body: String::new(),
    }
}

fn toast(kind: &str, content: &str, card: Option<Value>) -> FeishuResponse {
    let mut body = json!({ "toast": { "type": kind, "content": content } });
    if let Some(card) = card {
        body["card"] = json!({ "type": "raw", "data": card });
    }
    FeishuResponse {
        status: 200,
        body: body.to_string(),
    }
}

/// What the reviewer is told about a refusal: its kind in words, no internal details.
fn refusal_text(e: &LinkError) -> &'static str {
    match e {
        LinkError::Unauthenticated(_) => "You are not a reviewer known to this approval system.",
        LinkError::WrongReviewer { .. } => "This card was sent to another reviewer.",
        LinkError::Replayed => "You already used this button.",
        LinkError::Expired { .. } => "This decision button has expired.",
        LinkError::Frozen { .. } => {
            "Approvals for this agent are frozen by an operator; try again once they are lifted."
        }
        LinkError::DigestChanged => {
            "The action changed since this card was sent; review the current version."
        }
        LinkError::Refused(r) => match r {
            Refusal::NotEligible { .. } => "You are not among the reviewers this request needs.",
            Refusal::SelfApproval { .. } => "You may not approve a request made on your behalf.",
            Refusal::NotPending { .. } | Refusal::DeadlinePassed { .. } => {
                "This request no longer takes decisions."
            }
            Refusal::ConflictingVote { .. } => "You already voted differently on this request.",
            _ => "The decision was refused.",
        },
        LinkError::Malformed(_)
        | LinkError::UnknownKey { .. }
        | LinkError::BadSignature
        | LinkError::NotYetValid { .. }
        | LinkError::NotFound(_) => "This decision button is not valid.",
        _ => "Could not record the decision; try again.",
    }
}

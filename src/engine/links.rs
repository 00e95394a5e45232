//! Decision links: mint signed tokens into links, preview what a link leads to, and decide
//! with a token and a credential.
//!
//! A link carries a [`token`](crate::token) that binds one ticket, one verdict, the keyed
//! digest of the action as shown, an expiry, a single-use nonce and — for links sent to one
//! person — the reviewer. Following a link decides nothing (mail scanners and link previews
//! follow links): the page behind it calls [`Handoff::preview_token`] to show a confirmation,
//! and only the reviewer's explicit submission calls [`Handoff::decide_with_token`] with
//! their credential.
//!
//! # Link form
//!
//! `<base_url>?t=<token>`, or `<base_url>&t=<token>` when the base URL already has a query.
//! Tokens are base64url text with `.` separators, so they need no escaping in a URL.
//!
//! [`Handoff::decide_with_token`] documents the order of checks, what is audited and when a
//! token is spent.

use std::fmt;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tracing::Instrument;

use super::error::{Error, LinkError};
use super::review::{verdict_event, verdict_name, AuthError, Decided};
use super::{no_say, DriveError, Driven, Handoff, Inner, Spend};
use crate::action::{DigestKey, KeyedDigest};
use crate::audit::{Actor, AuditRecord};
use crate::backend::{lock, Credential, DecisionRow, NonceUse, StoreError, Write};
use crate::codes::{self, Code};
use crate::id::{PersonId, TicketId};
use crate::notify::ReviewCard;
use crate::ticket::{Reviewer, StateName, Ticket, TicketState, Verdict};
use crate::timestamp::Timestamp;
use crate::token::{
    AuthenticToken, TokenClaims, TokenError, TokenKeyRing, TokenNonce, VerdictKind,
};

/// Configuration of decision links (see [`HandoffBuilder::decision_links`](crate::HandoffBuilder::decision_links)).
#[derive(Debug, Clone)]
pub struct DecisionLinks {
    /// The confirmation page links lead to, e.g. `https://review.example.com/decide`. Links
    /// are `<base_url>?t=<token>`, or `<base_url>&t=<token>` if it already has a query; tokens
    /// are base64url text with `.` separators, so they need no escaping. Must not be empty or
    /// contain whitespace or a fragment (`#`). The page shows
    /// [`Handoff::preview_token`] and submits to [`Handoff::decide_with_token`].
    pub base_url: String,
    /// The keys that sign new tokens and verify presented ones (keep retired keys until their
    /// tokens have expired).
    pub ring: TokenKeyRing,
    /// How long a token lasts at most; it never outlives the ticket's review deadline.
    pub token_ttl: Duration,
}

impl DecisionLinks {
    /// Refuses a configuration that cannot mint usable links.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.base_url.is_empty() {
            return Err(Error::Build("decision link base url is empty"));
        }
        if self.base_url.contains('#') || self.base_url.chars().any(char::is_whitespace) {
            return Err(Error::Build(
                "decision link base url must not contain `#` or whitespace",
            ));
        }
        if self.token_ttl.is_zero() {
            return Err(Error::Build("decision link token ttl must not be zero"));
        }
        Ok(())
    }

    fn url(&self, token: &str) -> String {
        let sep = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}t={token}", self.base_url)
    }
}

/// One minted link: a verdict, the URL that leads to its confirmation page, and what its token
/// is bound to. A review card carries it as a [`notify::DecisionLink`](crate::notify::DecisionLink)
/// ([`to_card_link`](Self::to_card_link)).
///
/// `Debug` does not show the token (nor the URL that contains it).
#[derive(Clone, PartialEq, Eq)]
pub struct MintedLink {
    /// The verdict the link submits once confirmed.
    pub verdict: VerdictKind,
    /// `base_url?t=<token>`.
    pub url: String,
    /// The token alone (for chat buttons that carry it in their value).
    pub token: String,
    /// The reviewer it is bound to; `None` for group chats.
    pub reviewer: Option<PersonId>,
    /// When it stops working.
    pub expires_at: Timestamp,
}

impl MintedLink {
    /// The link as a review card shows it (verdict and URL).
    pub fn to_card_link(&self) -> crate::notify::DecisionLink {
        crate::notify::DecisionLink::new(self.verdict, self.url.clone())
    }
}

impl fmt::Debug for MintedLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedLink")
            .field("verdict", &self.verdict)
            .field("reviewer", &self.reviewer)
            .field("expires_at", &self.expires_at)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// What a confirmation page needs to show for a token, from [`Handoff::preview_token`].
///
/// Whoever holds a link can preview it, so it shows what a channel shows — the redacted
/// [`ReviewCard`] — never the stored ticket: sensitive parameters stay hidden until the reviewer
/// signs in (and decides through [`Handoff::decide_with_token`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TokenPreview {
    /// The ticket as a channel shows it now: redacted, keyed digest, no decision links (the
    /// page offers the confirmation instead).
    pub card: ReviewCard,
    /// The verdict the token submits, if the action is still the one it was issued for;
    /// `None` once the action changed (the token reveals its verdict only for the current
    /// action), in which case the page should send the reviewer to the current version.
    pub verdict: Option<VerdictKind>,
    /// Whether the token's keyed digest is the current action's. If not, submitting it is
    /// refused with [`LinkError::DigestChanged`].
    pub digest_current: bool,
    /// The reviewer the token is bound to (`None`: any eligible reviewer, group chats).
    pub reviewer: Option<PersonId>,
    /// Whether the ticket still takes decisions (pending, deadline not passed).
    pub pending: bool,
    /// When the token expires.
    pub expires_at: Timestamp,
}

/// What the reviewer submits with a token, besides their credential: feedback for a reject or
/// request-changes token, edited parameters for an approve-with-edits token.
///
/// `Debug` does not show the parameters (they may hold sensitive values).
#[derive(Clone, Default, PartialEq)]
pub struct TokenSubmission {
    feedback: String,
    parameters: Option<Value>,
}

impl TokenSubmission {
    /// A submission with nothing to add (enough for an approve token).
    pub fn new() -> Self {
        Self::default()
    }

    /// The reviewer's feedback, for a reject or request-changes token (ignored otherwise).
    pub fn with_feedback(mut self, feedback: impl Into<String>) -> Self {
        self.feedback = feedback.into();
        self
    }

    /// Edited parameters (a JSON object), for an approve-with-edits token only.
    pub fn with_parameters(mut self, parameters: Value) -> Self {
        self.parameters = Some(parameters);
        self
    }

    /// The verdict for a token's verdict kind.
    fn verdict(self, kind: VerdictKind) -> Result<Verdict, LinkError> {
        match (kind, self.parameters) {
            (VerdictKind::ApproveWithEdits, Some(parameters)) => {
                Ok(Verdict::ApproveWithEdits { parameters })
            }
            (VerdictKind::ApproveWithEdits, None) => Err(LinkError::InvalidSubmission(
                "an approve-with-edits token needs the edited parameters",
            )),
            (_, Some(_)) => Err(LinkError::InvalidSubmission(
                "parameters are accepted only with an approve-with-edits token",
            )),
            (VerdictKind::Reject, None) => Ok(Verdict::Reject {
                feedback: self.feedback,
            }),
            (VerdictKind::RequestChanges, None) => Ok(Verdict::RequestChanges {
                feedback: self.feedback,
            }),
            (_, None) => Ok(Verdict::Approve),
        }
    }
}

impl fmt::Debug for TokenSubmission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSubmission")
            .field("feedback", &self.feedback)
            .field(
                "parameters",
                &self.parameters.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The verdicts links are minted for. Approving with edits needs a form: the review page
/// submits it through [`Handoff::decide`].
const LINK_VERDICTS: [VerdictKind; 3] = [
    VerdictKind::Approve,
    VerdictKind::Reject,
    VerdictKind::RequestChanges,
];

/// Why the token-decision loop stopped before the machine ruled.
enum Pre {
    Expired(Timestamp),
    DigestChanged,
}

/// What a use of the token consumes in the store's nonce table.
///
/// A token bound to one reviewer is single use: its nonce. A verdict-only token (a group
/// chat's button, seen by every reviewer) is single use **per reviewer**: the nonce is derived
/// from the token's nonce and the authenticated person, so a quorum of two can both press the
/// same "approve" button while each of them can press it only once.
fn spent_nonce(token: &AuthenticToken, person: &PersonId) -> [u8; 16] {
    let nonce = *token.nonce().as_bytes();
    if token.reviewer().is_some() {
        return nonce;
    }
    let mut h = Sha256::new();
    h.update(b"agent-handoff/group-link-use/v1\0");
    h.update(nonce);
    h.update(person.as_str().as_bytes());
    let digest: [u8; 32] = h.finalize().into();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// The audit `token` note: which key signed it and which nonce it spends (a spent nonce is no
/// secret). Lets an auditor tie a decision, a refusal and a replay to one link.
fn token_note(token: &AuthenticToken) -> Value {
    json!({ "key_id": token.key_id(), "nonce": hex(&token.nonce()) })
}

fn hex(nonce: &TokenNonce) -> String {
    nonce
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl From<TokenError> for LinkError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Malformed(m) => LinkError::Malformed(m),
            TokenError::UnknownKey { key_id } => LinkError::UnknownKey { key_id },
            TokenError::BadSignature => LinkError::BadSignature,
            TokenError::Expired { expires_at } => LinkError::Expired { expires_at },
            TokenError::NotYetValid { issued_at } => LinkError::NotYetValid { issued_at },
            TokenError::DigestMismatch => LinkError::DigestChanged,
        }
    }
}

/// A refusal of an authenticated reviewer's token use, to record (spending the token if
/// `spend` is set). The record's data is `{refusal, detail, token}`, `token` as in the records
/// of accepted token decisions.
struct Recorded<'a> {
    ticket: TicketId,
    person: &'a PersonId,
    verdict: &'a str,
    code: Code,
    detail: Value,
    token: &'a AuthenticToken,
    spend: Option<&'a Spend>,
    /// Written just before the refusal's own record (a summary of coalesced attempts).
    before: Option<AuditRecord>,
}

impl Handoff {
    fn links(&self) -> Result<(&DecisionLinks, &DigestKey), LinkError> {
        self.inner.link_config()
    }

    /// The keyed digest of the action that may run on `ticket` (the edited one, if any): what
    /// tokens, cards and webhook bodies carry instead of the bare digest.
    pub fn keyed_digest(&self, ticket: &Ticket) -> Result<KeyedDigest, LinkError> {
        let key = self
            .inner
            .digest_key
            .as_ref()
            .ok_or(LinkError::NotConfigured("no digest key in the builder"))?;
        Ok(key.keyed(&ticket.action_digest()))
    }

    /// Mints the decision links for one pending ticket: approve, reject and request changes,
    /// each with its own token and fresh random nonce.
    ///
    /// `reviewer` binds the links to one directory person id (direct messages, mail: only that
    /// reviewer's credential can use them); `None` mints verdict-only links for group chats,
    /// usable by any eligible reviewer who authenticates. Tokens bind the ticket, the keyed
    /// digest of the current action and expire at the earlier of the ticket's review deadline
    /// and `now + token_ttl`. Minting writes nothing.
    pub fn mint_links(
        &self,
        ticket: &Ticket,
        reviewer: Option<PersonId>,
        now: Timestamp,
    ) -> Result<Vec<MintedLink>, LinkError> {
        self.inner.mint_links(ticket, reviewer, now)
    }

    /// What a confirmation page shows for a token: checks its signature and expiry, loads the
    /// ticket and tells whether the action is still the one the token was issued for.
    ///
    /// Reads only: nothing is written, audited or spent, so a mail scanner or link preview
    /// that follows the link changes nothing. A refusal here is one of
    /// [`Malformed`](LinkError::Malformed), [`UnknownKey`](LinkError::UnknownKey),
    /// [`BadSignature`](LinkError::BadSignature), [`Expired`](LinkError::Expired),
    /// [`NotYetValid`](LinkError::NotYetValid), [`NotFound`](LinkError::NotFound). A token
    /// already used previews like a fresh one; submitting it is refused.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn preview_token(&self, token: &str) -> Result<TokenPreview, LinkError> {
        self.inner.preview(token).await.map(|(preview, _)| preview)
    }

    /// Decides with a token and the reviewer's credential: the confirmation page's explicit
    /// submission, never the mere following of a link. Returns the ticket after the decision,
    /// as [`Decided::Repeated`] if it repeated a vote already on record.
    ///
    /// Checks, in this order:
    ///
    /// 1. Token form, key, signature and expiry ([`Malformed`](LinkError::Malformed),
    ///    [`UnknownKey`](LinkError::UnknownKey), [`BadSignature`](LinkError::BadSignature),
    ///    [`Expired`](LinkError::Expired), [`NotYetValid`](LinkError::NotYetValid)). Anyone can
    ///    send these: they are audited as unauthenticated and coalesced under
    ///    [`Limits::unauthenticated_audit_per_minute`](crate::Limits).
    /// 2. The credential, by the configured [`IdentityVerifier`](crate::IdentityVerifier)
    ///    ([`Unauthenticated`](LinkError::Unauthenticated), audited the same way). A refused
    ///    credential does **not** spend the token, so whoever holds a forwarded link cannot
    ///    cancel the reviewer's vote.
    /// 3. The token's reviewer, if it names one, must be the authenticated reviewer
    ///    ([`WrongReviewer`](LinkError::WrongReviewer)). This refusal spends **nothing** — a
    ///    forwarded link must not let anyone cancel the rightful reviewer's vote — and is
    ///    recorded once per link, person and minute, further attempts counted (see
    ///    [`Limits`](crate::Limits#coalesced-refusals)).
    /// 4. The token's keyed digest must be the current action's
    ///    ([`DigestChanged`](LinkError::DigestChanged): a reviewer edited it since).
    /// 5. The ticket state machine ([`Refused`](LinkError::Refused): already decided, expired,
    ///    not eligible, self-approval…).
    ///
    /// From step 4 on, the token is spent — its nonce consumed in the same store transaction
    /// as the decision or the refusal's audit row, both recorded as the authenticated
    /// reviewer's — so it can never be used twice: a second use is refused with
    /// [`Replayed`](LinkError::Replayed) and audited. That includes an accepted repeat of a
    /// vote already counted, which changes nothing else. The one exception is a
    /// [`NotEligible`](crate::ticket::Refusal::NotEligible) refusal coalesced with an earlier
    /// one of the same person on the ticket (see [`Limits`](crate::Limits#coalesced-refusals)),
    /// which writes nothing at all. Steps 4 and 5 are repeated on every compare-and-swap
    /// retry (a vote that lost to another vote is re-applied, by the store or here), and the
    /// write must commit before the token expires (else [`Expired`](LinkError::Expired),
    /// unspent).
    ///
    /// A token refused at step 1 although authentic (expired, not yet valid) is filed under the
    /// ticket it names, with its key id and nonce; the other refusals after step 1 are
    /// filed under the ticket as the authenticated reviewer's.
    ///
    /// A feedback over [`MAX_FEEDBACK_LEN`](crate::limits::MAX_FEEDBACK_LEN) is refused with
    /// [`Limit`](LinkError::Limit) before anything else: nothing recorded, nothing spent.
    ///
    /// `submission` carries feedback (reject, request changes) or edited parameters (approve
    /// with edits) as the token's verdict needs; one that does not fit is refused with
    /// [`InvalidSubmission`](LinkError::InvalidSubmission) after step 4, recording and spending
    /// nothing.
    pub async fn decide_with_token(
        &self,
        token: &str,
        credential: &Credential,
        submission: TokenSubmission,
    ) -> Result<Decided, LinkError> {
        self.decide_with_token_spending(token, credential, submission, None)
            .await
    }

    /// [`decide_with_token`](Self::decide_with_token), consuming `also` (a channel's request
    /// id) with the token in whatever write spends it, so a request that recorded nothing —
    /// refused before the token was spent, or failed in the store — leaves nothing consumed
    /// and can be delivered again.
    pub(crate) async fn decide_with_token_spending(
        &self,
        token: &str,
        credential: &Credential,
        submission: TokenSubmission,
        also: Option<NonceUse>,
    ) -> Result<Decided, LinkError> {
        let _op = crate::failpoint::operation("decide_token");
        let span = tracing::info_span!(
            "decide_with_token",
            ticket = tracing::field::Empty,
            reviewer = tracing::field::Empty
        );
        self.decide_with_token_inner(token, credential, submission, also)
            .instrument(span)
            .await
    }

    async fn decide_with_token_inner(
        &self,
        token: &str,
        credential: &Credential,
        submission: TokenSubmission,
        also: Option<NonceUse>,
    ) -> Result<Decided, LinkError> {
        let inner = &self.inner;
        let (links, key) = self.links()?;
        crate::limits::check_text(
            "feedback",
            &submission.feedback,
            crate::limits::MAX_FEEDBACK_LEN,
        )?;

        // 1. Signature and expiry. Anyone can send these: audited as unauthenticated, filed
        // under the ticket an authentic (expired, not yet valid) token names.
        let authentic = match links.ring.open(token, inner.clock.now()) {
            Ok(t) => t,
            Err(e) => {
                tracing::info!(refusal = %e.code(), "token refused");
                let signed = match e {
                    TokenError::Expired { .. } | TokenError::NotYetValid { .. } => {
                        links.ring.authenticate(token).ok()
                    }
                    _ => None,
                };
                let mut detail = json!({ "error": e.to_string() });
                if let Some(signed) = &signed {
                    detail["token"] = token_note(signed);
                }
                let record = inner.refusal_record(
                    signed.as_ref().map(AuthenticToken::ticket),
                    Actor::Unauthenticated,
                    e.code(),
                    detail,
                );
                let records = inner.flood_records(record);
                if !records.is_empty() {
                    inner.audit_only(records).await?;
                }
                return Err(e.into());
            }
        };
        let id = authentic.ticket();
        tracing::Span::current().record("ticket", tracing::field::display(id));

        // 2. The credential. A refusal does not spend the token.
        let reviewer: Reviewer = match self.verify_credential(Some(id), credential).await {
            Ok(r) => r,
            Err(AuthError::Refused(e)) => return Err(LinkError::Unauthenticated(e)),
            Err(AuthError::Store(e)) => return Err(LinkError::Store(e)),
        };
        let person = reviewer.person.clone();
        tracing::Span::current().record("reviewer", tracing::field::display(&person));
        // From here on the token is authentic and its holder authenticated: every outcome
        // spends it, except a use by someone it was not issued to and a coalesced refusal.
        let spend = Spend {
            nonces: std::iter::once(NonceUse {
                nonce: spent_nonce(&authentic, &person),
                expires: authentic.expires_at(),
            })
            .chain(also)
            .collect(),
            note: token_note(&authentic),
        };

        let Some(ticket) = inner.store.ticket(id).await? else {
            return Err(self
                .record_link_refusal(
                    Recorded {
                        ticket: id,
                        person: &person,
                        verdict: "token",
                        code: codes::NOT_FOUND,
                        detail: Value::Null,
                        token: &authentic,
                        spend: Some(&spend),
                        before: None,
                    },
                    LinkError::NotFound(id),
                    false,
                )
                .await);
        };
        // Read the verdict now (for the records), report in the documented order.
        let current = authentic.check_digest(&key.keyed(&ticket.action_digest()));
        let verdict_kind = current.as_ref().ok().map(|c| c.verdict);
        let asked = verdict_kind.map_or("token", |k| kind_name(k));

        // 3. The token's reviewer. A use by someone else spends nothing (a forwarded link
        // must not cancel the rightful reviewer's vote) and is coalesced per link and person.
        if let Some(bound) = authentic.reviewer() {
            if *bound != person {
                let err = LinkError::WrongReviewer {
                    bound: bound.clone(),
                    presented: person.clone(),
                };
                tracing::info!(
                    refusal = codes::WRONG_REVIEWER.as_str(),
                    "token decision refused"
                );
                let key = no_say::Key {
                    ticket: id,
                    person: person.clone(),
                    code: codes::WRONG_REVIEWER,
                    token: Some(no_say::LinkRef {
                        key_id: authentic.key_id().to_owned(),
                        nonce: *authentic.nonce().as_bytes(),
                    }),
                };
                let before = match lock(&inner.no_say).admit(&key, inner.clock.now()) {
                    no_say::Recorded::Coalesced => return Err(err),
                    no_say::Recorded::Yes(summary) => summary,
                };
                let answer = self
                    .record_link_refusal(
                        Recorded {
                            ticket: id,
                            person: &person,
                            verdict: asked,
                            code: codes::WRONG_REVIEWER,
                            detail: json!({ "bound": bound.as_str() }),
                            token: &authentic,
                            spend: None,
                            before: before.clone(),
                        },
                        err,
                        true,
                    )
                    .await;
                if matches!(answer, LinkError::Store(_)) {
                    // Nothing was recorded: the next attempt under the key is, with the count.
                    lock(&inner.no_say).undo(&key, before);
                }
                return Err(answer);
            }
        }

        // 4. The digest (again inside the loop, against the ticket actually written).
        let Some(kind) = verdict_kind else {
            return Err(self.digest_changed(id, &person, &authentic, &spend).await);
        };
        let verdict = submission.verdict(kind)?;
        let verdict_label = verdict_name(&verdict).to_owned();

        // 5. The machine, consuming the nonce in the same write.
        let driven = inner
            .drive::<Pre>(
                id,
                Some((Some(person.clone()), verdict_label.clone())),
                Some(&spend),
                |t, now| {
                    if now >= authentic.expires_at() {
                        return Err(Pre::Expired(authentic.expires_at()));
                    }
                    if authentic
                        .check_digest(&key.keyed(&t.action_digest()))
                        .is_err()
                    {
                        return Err(Pre::DigestChanged);
                    }
                    Ok(verdict_event(inner, t, &reviewer, &verdict))
                },
            )
            .await;
        match driven {
            Ok(Driven::Applied { ticket, repeated }) => {
                crate::failpoint::failpoint("decide_token.committed");
                Ok(Decided::of(ticket, repeated))
            }
            Ok(Driven::Refused(refusal)) => {
                tracing::info!(refusal = %refusal.code(), "token decision refused");
                Err(LinkError::Refused(refusal))
            }
            Err(DriveError::Pre(Pre::DigestChanged)) => {
                Err(self.digest_changed(id, &person, &authentic, &spend).await)
            }
            Err(DriveError::Pre(Pre::Expired(expires_at))) => Err(self
                .record_link_refusal(
                    Recorded {
                        ticket: id,
                        person: &person,
                        verdict: &verdict_label,
                        code: codes::TOKEN_EXPIRED,
                        detail: json!({ "expires_at": expires_at.as_unix_millis() }),
                        token: &authentic,
                        spend: None,
                        before: None,
                    },
                    LinkError::Expired { expires_at },
                    true,
                )
                .await),
            Err(DriveError::NotFound(id)) => Err(self
                .record_link_refusal(
                    Recorded {
                        ticket: id,
                        person: &person,
                        verdict: &verdict_label,
                        code: codes::NOT_FOUND,
                        detail: Value::Null,
                        token: &authentic,
                        spend: Some(&spend),
                        before: None,
                    },
                    LinkError::NotFound(id),
                    false,
                )
                .await),
            Err(DriveError::Store(StoreError::NonceReused)) => {
                Err(self.replayed(id, &person, &verdict_label, &authentic).await)
            }
            Err(DriveError::Store(StoreError::Frozen { reason, .. })) => {
                // The write was refused whole: the token is not spent.
                let refused = super::freeze::Refused::Event {
                    ticket: id,
                    event: super::review::frozen_event(&verdict),
                    state: StateName::Pending.as_str(),
                    decision: Some((&person, &verdict_label)),
                };
                inner
                    .refused_frozen(ticket.requester().agent(), refused)
                    .await?;
                tracing::info!(refusal = "frozen", "token decision refused");
                Err(LinkError::Frozen { reason })
            }
            Err(DriveError::Store(e)) => Err(LinkError::Store(e)),
        }
    }

    async fn digest_changed(
        &self,
        id: TicketId,
        person: &PersonId,
        token: &AuthenticToken,
        spend: &Spend,
    ) -> LinkError {
        self.record_link_refusal(
            Recorded {
                ticket: id,
                person,
                verdict: "token",
                code: codes::DIGEST_CHANGED,
                detail: Value::Null,
                token,
                spend: Some(spend),
                before: None,
            },
            LinkError::DigestChanged,
            true,
        )
        .await
    }

    async fn replayed(
        &self,
        id: TicketId,
        person: &PersonId,
        verdict: &str,
        token: &AuthenticToken,
    ) -> LinkError {
        tracing::info!("token replayed");
        self.record_link_refusal(
            Recorded {
                ticket: id,
                person,
                verdict,
                code: codes::REPLAYED,
                detail: Value::Null,
                token,
                spend: None,
                before: None,
            },
            LinkError::Replayed,
            true,
        )
        .await
    }

    /// Records a refusal of an authenticated reviewer's token use (audit row, and a decision
    /// row when the ticket exists), spending the token in the same write if asked. Returns the
    /// error to answer: `err`, or [`LinkError::Replayed`] if the token turns out to have been
    /// spent already, or [`LinkError::Expired`] if it expired before the write could commit.
    async fn record_link_refusal(
        &self,
        r: Recorded<'_>,
        err: LinkError,
        decision_row: bool,
    ) -> LinkError {
        let inner = &self.inner;
        let mut record = inner.refusal_record(
            Some(r.ticket),
            Actor::Reviewer(r.person.clone()),
            r.code,
            r.detail.clone(),
        );
        if let Some(data) = record.data.as_object_mut() {
            data.insert("token".to_owned(), token_note(r.token));
        }
        let write = Write {
            decision: decision_row.then(|| DecisionRow {
                ticket: r.ticket,
                person: Some(r.person.clone()),
                verdict: r.verdict.to_owned(),
                refusal: Some(r.code.as_str().to_owned()),
                at: record.at,
            }),
            audit: r.before.clone().into_iter().chain([record]).collect(),
            nonces: r.spend.map(|s| s.nonces.clone()).unwrap_or_default(),
            ..Write::default()
        };
        tracing::info!(refusal = r.code.as_str(), "token decision refused");
        match inner.store.commit(write).await {
            Ok(_) => err,
            Err(StoreError::NonceReused) if r.spend.is_some() => {
                Box::pin(self.replayed(r.ticket, r.person, r.verdict, r.token)).await
            }
            Err(StoreError::TooLate { .. }) if r.spend.is_some() => {
                let expires_at = r.token.expires_at();
                Box::pin(self.record_link_refusal(
                    Recorded {
                        code: codes::TOKEN_EXPIRED,
                        detail: json!({ "expires_at": expires_at.as_unix_millis() }),
                        spend: None,
                        before: None,
                        ..r
                    },
                    LinkError::Expired { expires_at },
                    decision_row,
                ))
                .await
            }
            Err(e) => LinkError::Store(e),
        }
    }
}

fn kind_name(kind: VerdictKind) -> &'static str {
    match kind {
        VerdictKind::Approve => "approve",
        VerdictKind::ApproveWithEdits => "approve_with_edits",
        VerdictKind::Reject => "reject",
        VerdictKind::RequestChanges => "request_changes",
    }
}

impl Inner {
    /// [`Handoff::preview_token`], with the stored ticket for the crate's own handlers (which
    /// mint fresh links for it).
    pub(crate) async fn preview(&self, token: &str) -> Result<(TokenPreview, Ticket), LinkError> {
        let (links, key) = self.link_config()?;
        let now = self.clock.now();
        let authentic = links.ring.open(token, now)?;
        let ticket = self
            .store
            .ticket(authentic.ticket())
            .await?
            .ok_or(LinkError::NotFound(authentic.ticket()))?;
        let verdict = authentic
            .check_digest(&key.keyed(&ticket.action_digest()))
            .ok()
            .map(|claims| claims.verdict);
        let preview = TokenPreview {
            card: ReviewCard::from_ticket(&ticket, now, key, &[]),
            pending: matches!(ticket.state_at(now), TicketState::Pending),
            verdict,
            digest_current: verdict.is_some(),
            reviewer: authentic.reviewer().cloned(),
            expires_at: authentic.expires_at(),
        };
        Ok((preview, ticket))
    }

    pub(crate) fn link_config(&self) -> Result<(&DecisionLinks, &DigestKey), LinkError> {
        let links = self
            .links
            .as_ref()
            .ok_or(LinkError::NotConfigured("no decision links in the builder"))?;
        let key = self
            .digest_key
            .as_ref()
            .ok_or(LinkError::NotConfigured("no digest key in the builder"))?;
        Ok((links, key))
    }

    /// See [`Handoff::mint_links`].
    pub(crate) fn mint_links(
        &self,
        ticket: &Ticket,
        reviewer: Option<PersonId>,
        now: Timestamp,
    ) -> Result<Vec<MintedLink>, LinkError> {
        let (links, key) = self.link_config()?;
        let state = ticket.state_at(now);
        let deadline = match (&state, ticket.deadline()) {
            (TicketState::Pending, Some(deadline)) => deadline,
            _ => {
                return Err(LinkError::NotPending {
                    state: state.name(),
                })
            }
        };
        let expires_at = deadline.min(now.saturating_add(links.token_ttl));
        let digest = key.keyed(&ticket.action_digest());
        LINK_VERDICTS
            .iter()
            .map(|&verdict| {
                let mut nonce = [0u8; 16];
                getrandom::fill(&mut nonce).map_err(LinkError::Random)?;
                let claims = TokenClaims {
                    ticket: ticket.id(),
                    reviewer: reviewer.clone(),
                    verdict,
                    digest,
                    issued_at: now,
                    expires_at,
                    nonce: TokenNonce::from_bytes(nonce),
                };
                let token = links.ring.sign(&claims).map_err(LinkError::Sign)?;
                Ok(MintedLink {
                    verdict,
                    url: links.url(&token),
                    token,
                    reviewer: reviewer.clone(),
                    expires_at,
                })
            })
            .collect()
    }
}

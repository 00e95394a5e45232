//! The review card: what a reviewer is shown about one ticket.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::markup::Markup;
use crate::action::{
    canonical_json, ActionDigest, ActionKind, Confidence, DigestKey, Environment, Impact,
    KeyedDigest, Requester, Reversibility, Sensitivity,
};
use crate::id::{PersonId, TicketId};
use crate::policy::MatchedRule;
use crate::ticket::{ApprovedBy, RejectedBy, RequirementProgress, StateName, Ticket, TicketState};
use crate::timestamp::Timestamp;
use crate::token::VerdictKind;

/// The `schema` member of every card, so receivers of webhook bodies can tell versions apart.
pub const CARD_SCHEMA: &str = "agent-handoff/review-card/v1";

/// The label carried by [`AgentClaims`] (and shown above them), so nobody mistakes the agent's
/// own account for something the host checked.
pub const AGENT_CLAIMS_LABEL: &str = "The agent's own account, not verified by the host";

/// The domain-separation label of [`CardParameters::fingerprint`].
pub const PARAMETERS_FINGERPRINT_LABEL: &str = "agent-handoff/card-parameters/v1";

/// Texts this short are never cut: a cut marker would be about as long.
const MARKER_RESERVE: usize = 64;

/// A link that lets a reviewer submit one verdict (the URL carries a signed decision token,
/// minted elsewhere). Following it never decides by itself: the page behind it asks the
/// reviewer to confirm and to authenticate.
///
/// `Debug` shows the verdict and the URL's scheme and host only, never the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionLink {
    /// The verdict the link submits.
    pub verdict: VerdictKind,
    /// The full URL, decision token included.
    pub url: String,
}

impl DecisionLink {
    /// A link submitting `verdict` at `url`.
    pub fn new(verdict: VerdictKind, url: impl Into<String>) -> Self {
        Self {
            verdict,
            url: url.into(),
        }
    }

    /// The verdict's label on buttons and links (`Approve`, `Approve with edits`, `Reject`,
    /// `Request changes`).
    pub fn label(&self) -> &'static str {
        verdict_label(self.verdict)
    }
}

impl fmt::Debug for DecisionLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Scheme and authority only: the path or query holds the decision token.
        let origin = match self.url.split_once("://") {
            Some((scheme, rest)) => {
                let host = rest.split(['/', '?', '#']).next().unwrap_or("");
                // Userinfo (`user:pass@host`) is a credential too.
                let host = host.rsplit('@').next().unwrap_or(host);
                format!("{scheme}://{host}/…")
            }
            None => "…".to_owned(),
        };
        f.debug_struct("DecisionLink")
            .field("verdict", &self.verdict)
            .field("url", &origin)
            .finish()
    }
}

fn verdict_label(verdict: VerdictKind) -> &'static str {
    match verdict {
        VerdictKind::Approve => "Approve",
        VerdictKind::ApproveWithEdits => "Approve with edits",
        VerdictKind::Reject => "Reject",
        VerdictKind::RequestChanges => "Request changes",
    }
}

/// What a reviewer sees about one ticket: the facts the host holds the agent to, the agent's
/// own account kept apart and labelled as such, what the review still needs, and the decision
/// links.
///
/// Built by [`from_ticket`](Self::from_ticket); serialised as JSON for webhook bodies (the
/// member names below are the JSON names). A card contains:
///
/// - no sensitive parameter value: parameters are [redacted] (each sensitive value replaced
///   whole by [`REDACTED`](crate::action::REDACTED)), or omitted with a keyed fingerprint when
///   they do not fit ([`bounded`](Self::bounded));
/// - no bare SHA-256: the action digest is keyed ([`DigestKey::keyed`]);
/// - no conversation history, credentials, attributes, preconditions or execution output:
///   only what the ticket says about the action and its review.
///
/// Agent-written strings (targets, justification, parameter values) are held raw: escape them
/// for the channel's markup when rendering ([`Markup::escape`], or [`render`](Self::render)).
/// Text the agent can still put anywhere it writes — a secret in its reason or a target — is
/// beyond redaction: sensitive pointers cover parameters only.
///
/// `Debug` and `Display` show what the JSON shows, with decision links reduced to their verdict
/// and host; `Display` is a plain-text rendering without links.
///
/// [redacted]: crate::action::ActionRequest::redacted_parameters
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReviewCard {
    /// [`CARD_SCHEMA`].
    pub schema: String,
    /// The ticket.
    pub ticket: TicketId,
    /// The ticket version the card was built from.
    pub ticket_version: u64,
    /// The time the card was built for (state and progress are as of this instant).
    pub generated_at: Timestamp,
    /// The ticket's state as of `generated_at` (a pending ticket past its deadline reads as
    /// expired).
    pub state: StateName,
    /// Who decided, once decided: the approvers, or the reviewer who rejected or asked for
    /// changes. Empty otherwise (and for decisions by policy or an operator).
    pub decided_by: Vec<PersonId>,
    /// What the host holds the agent to.
    pub facts: CardFacts,
    /// What the agent says about it, unverified.
    pub agent_claims: AgentClaims,
    /// Decision links; empty unless the ticket is pending.
    pub links: Vec<DecisionLink>,
    /// Whether anything was cut or omitted to fit a size limit (the full detail stays in the
    /// ticket).
    pub cut: bool,
}

/// The facts on a card: what policy ruled on and the action digest binds, so the action that
/// can run is exactly this one, and what the review needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CardFacts {
    /// The action kind.
    pub kind: ActionKind,
    /// The agent and the principal it acts for, as bound by the host.
    pub requester: Requester,
    /// The resources the action touches (long lists and long targets may be cut).
    pub targets: Vec<String>,
    /// Where it takes effect.
    pub environment: Environment,
    /// The sensitivity of the data touched.
    pub sensitivity: Sensitivity,
    /// The stated maximum impact; `None` counts as unbounded in policy.
    pub impact: Option<Impact>,
    /// Whether it can be undone.
    pub reversibility: Reversibility,
    /// The parameters of the action that would run, redacted.
    pub parameters: CardParameters,
    /// Set when a reviewer edited the parameters (the parameters shown are the edit).
    pub edited_by: Option<PersonId>,
    /// The keyed digest of the action that would run (decision tokens are bound to it).
    pub digest: KeyedDigest,
    /// The ruling that put the ticket up for review.
    pub ruling: CardRuling,
    /// The review deadline: unanswered by then means denied.
    pub deadline: Option<Timestamp>,
    /// Each review requirement with its counting approvers and how many are still needed.
    pub requirements: Vec<RequirementProgress>,
    /// Set while an edited action still needs an approver other than its editor (this person).
    pub awaiting_non_editor: Option<PersonId>,
}

/// The action's parameters as a card shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CardParameters {
    /// The parameters with every sensitive value replaced by
    /// [`REDACTED`](crate::action::REDACTED); `None` when omitted to fit a size limit (never
    /// shown in part).
    pub redacted: Option<Value>,
    /// Size of the redacted parameters' canonical JSON, in bytes.
    pub bytes: usize,
    /// A keyed fingerprint of the parameters that would run (sensitive values included), for
    /// comparing with the ticket when the parameters are omitted:
    ///
    /// ```text
    /// HMAC-SHA256(key, KEYED_DIGEST_LABEL ‖ 0x00 ‖
    ///              SHA-256(PARAMETERS_FINGERPRINT_LABEL ‖ 0x00 ‖ JCS(parameters)))
    /// ```
    ///
    /// that is [`DigestKey::keyed`] over the SHA-256 of the label
    /// [`PARAMETERS_FINGERPRINT_LABEL`], a zero byte and the parameters' RFC 8785 canonical
    /// JSON. Keyed, so low-entropy values cannot be brute-forced from it.
    pub fingerprint: KeyedDigest,
    /// Why the parameters are not shown, when omitted.
    pub omitted: Option<String>,
}

/// The ruling as a card shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CardRuling {
    /// The policy document's version.
    pub policy_version: String,
    /// Whether the document's default outcome decided (no rule definitively matched).
    pub decided_by_default: bool,
    /// Every rule that matched, with why (long lists and reasons may be cut).
    pub rules: Vec<MatchedRule>,
    /// How many further matched rules were cut to fit a size limit.
    pub rules_cut: usize,
}

impl CardRuling {
    /// `version …` of the policy, and whether its default decided (unescaped text).
    pub fn policy_text(&self) -> String {
        format!(
            "version {}{}",
            self.policy_version,
            if self.decided_by_default {
                ", decided by its default"
            } else {
                ""
            }
        )
    }

    /// One line per matched rule with its reasons and any fail-closed note, then a cut marker
    /// if rules were cut (unescaped text; each channel escapes it for its markup).
    pub fn rule_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .rules
            .iter()
            .map(|rule| {
                let mut line = format!("rule {}", rule.rule);
                if !rule.reasons.is_empty() {
                    line.push_str(": ");
                    line.push_str(&rule.reasons.join("; "));
                }
                if let Some(why) = &rule.fail_closed {
                    line.push_str(&format!(
                        " (could not be evaluated, counted as matching: {why})"
                    ));
                }
                line
            })
            .collect();
        if self.rules_cut > 0 {
            lines.push(format!(
                "… [cut: {} more rules; full list in the ticket]",
                self.rules_cut
            ));
        }
        lines
    }
}

/// The agent's own account of the action: shown to reviewers, never checked by the host, and
/// not part of the action digest (except confidence, which policy may read but which is still
/// only what the agent says).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AgentClaims {
    /// [`AGENT_CLAIMS_LABEL`].
    pub label: String,
    /// Why the agent wants the action.
    pub reason: String,
    /// What the agent expects to happen.
    pub expected_effect: String,
    /// What could go wrong, according to the agent.
    pub risk_factors: Vec<String>,
    /// How to undo it, according to the agent.
    pub rollback_plan: Option<String>,
    /// The agent's stated confidence (absent counts as zero in policy).
    pub confidence: Option<Confidence>,
}

/// A card could not be made to fit a size limit even with every text cut and the parameters
/// omitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the smallest form of the review card is {needed} bytes, over the limit of {limit}")]
pub struct CardTooLarge {
    /// Bytes the smallest form needs.
    pub needed: usize,
    /// The limit.
    pub limit: usize,
}

impl ReviewCard {
    /// Builds the card for `ticket` as of `now`.
    ///
    /// The action shown is the one that would run ([`Ticket::approved_request`]: the proposal,
    /// or a reviewer's edit), its parameters redacted, its digest keyed with `key` (the same key
    /// decision tokens are bound with). `links` are carried as given while the ticket is
    /// pending at `now`, and dropped otherwise (a closed card offers no decision). Nothing is
    /// cut: use [`bounded`](Self::bounded) for a channel's size limit.
    pub fn from_ticket(
        ticket: &Ticket,
        now: Timestamp,
        key: &DigestKey,
        links: &[DecisionLink],
    ) -> ReviewCard {
        let request = ticket.approved_request();
        let redacted = request.redacted_parameters();
        let state = ticket.state_at(now);
        let decided_by = match &state {
            TicketState::Approved(approval) | TicketState::Executing { approval, .. } => {
                match &approval.by {
                    ApprovedBy::Reviewers(people) => people.iter().cloned().collect(),
                    ApprovedBy::Policy => Vec::new(),
                }
            }
            TicketState::Rejected {
                by:
                    RejectedBy::Reviewer { person, .. } | RejectedBy::ChangesRequested { person, .. },
                ..
            } => vec![person.clone()],
            _ => Vec::new(),
        };
        let pending = state.name() == StateName::Pending;
        let justification = request.justification();
        ReviewCard {
            schema: CARD_SCHEMA.to_owned(),
            ticket: ticket.id(),
            ticket_version: ticket.version(),
            generated_at: now,
            state: state.name(),
            decided_by,
            facts: CardFacts {
                kind: request.kind().clone(),
                requester: ticket.requester().clone(),
                targets: request.targets().to_vec(),
                environment: request.environment().clone(),
                sensitivity: request.sensitivity(),
                impact: request.impact().cloned(),
                reversibility: request.reversibility(),
                parameters: CardParameters {
                    bytes: canonical_json(&redacted).len(),
                    redacted: Some(redacted),
                    fingerprint: parameters_fingerprint(key, request.parameters()),
                    omitted: None,
                },
                edited_by: ticket.edit().map(|e| e.editor.clone()),
                digest: key.keyed(&ticket.action_digest()),
                ruling: CardRuling {
                    policy_version: ticket.ruling().policy.version.clone(),
                    decided_by_default: ticket.ruling().decided_by_default(),
                    rules: ticket.ruling().matched.clone(),
                    rules_cut: 0,
                },
                deadline: ticket.deadline(),
                requirements: ticket.progress(now),
                awaiting_non_editor: ticket.awaiting_non_editor(now).cloned(),
            },
            agent_claims: AgentClaims {
                label: AGENT_CLAIMS_LABEL.to_owned(),
                reason: justification.reason.clone(),
                expected_effect: justification.expected_effect.clone(),
                risk_factors: justification.risk_factors.clone(),
                rollback_plan: justification.rollback_plan.clone(),
                confidence: request.confidence(),
            },
            links: if pending { links.to_vec() } else { Vec::new() },
            cut: false,
        }
    }

    /// The card's JSON (the webhook body form).
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain data (string keys, finite numbers) cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The length of [`to_json`](Self::to_json), in bytes.
    pub fn json_len(&self) -> usize {
        self.to_json().len()
    }

    /// The card cut down until its JSON is at most `max_bytes` long (Feishu cards:
    /// `30 * 1024`); see [`bounded_by`](Self::bounded_by).
    pub fn bounded(self, max_bytes: usize) -> Result<ReviewCard, CardTooLarge> {
        self.bounded_by(max_bytes, ReviewCard::json_len)
    }

    /// The card cut down until `measure(&card) <= limit` — for a channel that renders the card
    /// into its own format, `measure` renders and counts (escaping can make text longer).
    ///
    /// A card that already fits is returned unchanged. Otherwise, in this order:
    ///
    /// 1. Parameters whose redacted JSON is over half the limit are omitted whole: replaced by
    ///    a note, their size and their keyed [fingerprint](CardParameters::fingerprint). They are
    ///    never shown in part, so no cut can fall inside or next to a redacted value.
    /// 2. Long texts — the agent's reason, expected effect, risk factors and rollback plan,
    ///    targets, rule reasons — are cut to a common length, the longest that fits, at a UTF-8
    ///    character boundary, each followed by a visible marker
    ///    `… [cut: N more bytes; full text in the ticket]`. Texts under 64 bytes stay whole.
    /// 3. If that is not enough, lists (targets, risk factors, rules, each rule's reasons) keep
    ///    their first items, the longest count that fits, and end with a marker item
    ///    `… [cut: N more …; full list in the ticket]` (for rules: [`CardRuling::rules_cut`]).
    /// 4. If even that is not enough, the parameters are omitted as in 1 and 2–3 are retried.
    ///
    /// Facts that are not text — kind, environment, sensitivity, impact, reversibility, digest,
    /// deadline, requirements — and the decision links are never cut. [`cut`](Self::cut) is set
    /// when anything changed. Fails with [`CardTooLarge`] when the smallest form still does not
    /// fit.
    pub fn bounded_by(
        self,
        limit: usize,
        measure: impl Fn(&ReviewCard) -> usize,
    ) -> Result<ReviewCard, CardTooLarge> {
        if measure(&self) <= limit {
            return Ok(self);
        }
        let fits = |caps: Caps| {
            let card = self.shrunk(caps);
            (measure(&card) <= limit).then_some(card)
        };
        let longest_text = self.longest_text();
        let longest_list = self.longest_list();
        let params_small = self.facts.parameters.bytes <= limit / 2;
        let params_choices: &[bool] = if params_small {
            &[true, false]
        } else {
            &[false]
        };
        for &parameters in params_choices {
            let caps = |text, items| Caps {
                text,
                items,
                parameters,
            };
            if fits(caps(0, longest_list)).is_some() {
                let text = largest(0, longest_text, |t| fits(caps(t, longest_list)).is_some());
                return Ok(self.shrunk(caps(text, longest_list)));
            }
            if fits(caps(0, 0)).is_some() {
                let items = largest(0, longest_list, |n| fits(caps(0, n)).is_some());
                let text = largest(0, longest_text, |t| fits(caps(t, items)).is_some());
                return Ok(self.shrunk(caps(text, items)));
            }
        }
        let needed = params_choices
            .iter()
            .map(|&parameters| {
                measure(&self.shrunk(Caps {
                    text: 0,
                    items: 0,
                    parameters,
                }))
            })
            .min()
            .unwrap_or(usize::MAX);
        Err(CardTooLarge { needed, limit })
    }

    /// The card rendered as text in `markup`, links included: verified facts first, then the
    /// agent's claims in a block of their own (a quote in Markdown, lines prefixed `│ `
    /// otherwise) so no line of them can pass for a fact, then the decision links. Every
    /// string that did not come from this crate is escaped with [`Markup::escape`].
    pub fn render(&self, markup: Markup) -> String {
        render_blocks(&self.blocks(markup, true), markup)
    }

    /// The card with texts cut to `caps.text` bytes, lists to `caps.items` entries, and the
    /// parameters omitted unless `caps.parameters`.
    fn shrunk(&self, caps: Caps) -> ReviewCard {
        let mut card = self.clone();
        let mut cut = false;
        let params = &mut card.facts.parameters;
        if !caps.parameters && params.redacted.is_some() {
            params.redacted = None;
            params.omitted = Some(format!(
                "parameters omitted: their redacted JSON is {} bytes, too large for this \
                 channel; compare the fingerprint with the ticket",
                params.bytes
            ));
            cut = true;
        }
        let facts = &mut card.facts;
        let claims = &mut card.agent_claims;
        cut |= cut_list(&mut facts.targets, caps, "targets");
        cut |= cut_list(&mut claims.risk_factors, caps, "risk factors");
        if facts.ruling.rules.len() > caps.items {
            facts.ruling.rules_cut += facts.ruling.rules.len() - caps.items;
            facts.ruling.rules.truncate(caps.items);
            cut = true;
        }
        for rule in &mut facts.ruling.rules {
            cut |= cut_list(&mut rule.reasons, caps, "reasons");
            if let Some(why) = &mut rule.fail_closed {
                cut |= cut_text(why, caps.text);
            }
        }
        cut |= cut_text(&mut claims.reason, caps.text);
        cut |= cut_text(&mut claims.expected_effect, caps.text);
        if let Some(plan) = &mut claims.rollback_plan {
            cut |= cut_text(plan, caps.text);
        }
        card.cut |= cut;
        card
    }

    fn texts(&self) -> impl Iterator<Item = &String> {
        let rules = self.facts.ruling.rules.iter();
        self.facts
            .targets
            .iter()
            .chain(&self.agent_claims.risk_factors)
            .chain(rules.flat_map(|r| r.reasons.iter().chain(&r.fail_closed)))
            .chain([
                &self.agent_claims.reason,
                &self.agent_claims.expected_effect,
            ])
            .chain(&self.agent_claims.rollback_plan)
    }

    fn longest_text(&self) -> usize {
        self.texts().map(String::len).max().unwrap_or(0)
    }

    fn longest_list(&self) -> usize {
        let rules = &self.facts.ruling.rules;
        [
            self.facts.targets.len(),
            self.agent_claims.risk_factors.len(),
            rules.len(),
        ]
        .into_iter()
        .chain(rules.iter().map(|r| r.reasons.len()))
        .max()
        .unwrap_or(0)
    }

    /// The card as blocks of rendered lines.
    fn blocks(&self, m: Markup, with_links: bool) -> Vec<Block> {
        let e = |s: &str| m.escape(s);
        let field = |label: &str, value: String| format!("{}: {value}", m.bold(label));
        let mut blocks = Vec::new();
        let facts = &self.facts;

        let title = if self.state == StateName::Pending {
            "Review requested"
        } else {
            "Review closed"
        };
        let mut head = vec![format!(
            "{}: {} ({})",
            m.bold(title),
            e(facts.kind.as_str()),
            e(self.state.as_str())
        )];
        head.push(format!(
            "Ticket {}, version {}",
            e(&self.ticket.to_string()),
            self.ticket_version
        ));
        if !self.decided_by.is_empty() {
            head.push(field("Decided by", e(&join(&self.decided_by))));
        }
        if let Some(deadline) = facts.deadline {
            head.push(field(
                "Deadline",
                e(&format!("{deadline} (unanswered means denied)")),
            ));
        }
        blocks.push(Block::Para(head));

        if self.state == StateName::Pending && !facts.requirements.is_empty() {
            let mut needs = Vec::new();
            for p in &facts.requirements {
                let mut line = if p.is_met() {
                    format!("{}: met", p.requirement)
                } else {
                    format!("{}: {} more needed", p.requirement, p.needed)
                };
                if !p.approvers.is_empty() {
                    line.push_str(&format!(" (approved by {})", join(&p.approvers)));
                }
                needs.push(vec![e(&line)]);
            }
            if let Some(editor) = &facts.awaiting_non_editor {
                needs.push(vec![e(&format!(
                    "an approver other than {editor}, who edited the action"
                ))]);
            }
            blocks.push(Block::Para(vec![m.bold("Still needed")]));
            blocks.push(Block::List(needs));
        }

        blocks.push(Block::Para(vec![m.bold(
            "Verified facts (policy ruled on these; the action that would run is exactly this)",
        )]));
        let mut items: Vec<Vec<String>> = Vec::new();
        items.push(vec![field("Kind", e(facts.kind.as_str()))]);
        let requester = match facts.requester.principal() {
            Some(p) => format!("agent {} on behalf of {p}", facts.requester.agent()),
            None => format!("agent {}", facts.requester.agent()),
        };
        items.push(vec![field("Requested by", e(&requester))]);
        let mut targets = vec![if facts.targets.is_empty() {
            field("Targets", "none given".to_owned())
        } else {
            format!("{}:", m.bold("Targets"))
        }];
        targets.extend(facts.targets.iter().map(|t| format!("· {}", e(t))));
        items.push(targets);
        items.push(vec![field("Environment", e(facts.environment.as_str()))]);
        items.push(vec![field("Sensitivity", e(facts.sensitivity.as_str()))]);
        let impact = match &facts.impact {
            Some(i) => format!("at most {} {}", i.amount, i.unit),
            None => "not stated (counted as unbounded)".to_owned(),
        };
        items.push(vec![field("Impact", e(&impact))]);
        items.push(vec![field(
            "Reversibility",
            e(facts.reversibility.as_str()),
        )]);
        let params = &facts.parameters;
        let shown = match (&params.redacted, &params.omitted) {
            (Some(value), _) => String::from_utf8_lossy(&canonical_json(value)).into_owned(),
            (None, note) => format!(
                "{} (fingerprint {})",
                note.as_deref().unwrap_or("parameters omitted"),
                params.fingerprint
            ),
        };
        items.push(vec![field(
            "Parameters (sensitive values redacted)",
            e(&shown),
        )]);
        if let Some(editor) = &facts.edited_by {
            items.push(vec![field(
                "Edited by",
                e(&format!("{editor} (the parameters above are the edit)")),
            )]);
        }
        let mut ruling = vec![field("Policy", e(&facts.ruling.policy_text()))];
        ruling.extend(
            facts
                .ruling
                .rule_lines()
                .iter()
                .map(|line| format!("· {}", e(line))),
        );
        items.push(ruling);
        items.push(vec![field(
            "Action digest (keyed)",
            e(&facts.digest.to_string()),
        )]);
        blocks.push(Block::List(items));

        let claims = &self.agent_claims;
        blocks.push(Block::Para(vec![m.bold(&format!(
            "The agent's claims ({})",
            AGENT_CLAIMS_LABEL.to_lowercase()
        ))]));
        let mut quote = Vec::new();
        let mut claim = |label: &str, text: &str| {
            let escaped = e(text);
            let mut lines = escaped.split('\n');
            quote.push(field(label, lines.next().unwrap_or("").to_owned()));
            quote.extend(lines.map(str::to_owned));
        };
        claim("Reason", nonempty(&claims.reason));
        claim("Expected effect", nonempty(&claims.expected_effect));
        if claims.risk_factors.is_empty() {
            claim("Risk factors", "none given");
        }
        for risk in &claims.risk_factors {
            claim("Risk", risk);
        }
        claim(
            "Rollback plan",
            claims
                .rollback_plan
                .as_deref()
                .map_or("none given", nonempty),
        );
        let confidence = match claims.confidence {
            Some(c) => c.get().to_string(),
            None => "not stated (counted as zero)".to_owned(),
        };
        claim("Confidence", &confidence);
        blocks.push(Block::Quote(quote));

        if !self.links.is_empty() {
            if with_links {
                let links = self
                    .links
                    .iter()
                    .map(|l| vec![m.link(l.label(), &l.url)])
                    .collect();
                blocks.push(Block::Para(vec![m.bold("Decide")]));
                blocks.push(Block::List(links));
            } else {
                let verdicts: Vec<&str> = self.links.iter().map(DecisionLink::label).collect();
                blocks.push(Block::Para(vec![e(&format!(
                    "Decisions offered: {} (links not shown)",
                    verdicts.join(", ")
                ))]));
            }
        }
        if self.cut {
            blocks.push(Block::Para(vec![e(
                "Some of this was cut to fit the channel; the full detail is in the ticket.",
            )]));
        }
        blocks
    }
}

impl fmt::Display for ReviewCard {
    /// Plain text, as [`render`](ReviewCard::render) with [`Markup::PlainText`] but without
    /// the decision links (a logged card must not carry decision tokens).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let markup = Markup::PlainText;
        f.write_str(&render_blocks(&self.blocks(markup, false), markup))
    }
}

/// How far [`ReviewCard::shrunk`] cuts.
#[derive(Clone, Copy)]
struct Caps {
    text: usize,
    items: usize,
    parameters: bool,
}

/// Cuts `text` to at most `cap` bytes (at a character boundary) plus a marker, when that makes
/// it shorter: texts within `cap + MARKER_RESERVE` bytes stay whole, which keeps the cut length
/// non-decreasing in `cap`.
fn cut_text(text: &mut String, cap: usize) -> bool {
    if text.len() <= cap.saturating_add(MARKER_RESERVE) {
        return false;
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let rest = text.len() - end;
    text.truncate(end);
    text.push_str(&format!(
        "… [cut: {rest} more bytes; full text in the ticket]"
    ));
    true
}

/// Keeps the first `caps.items` entries, cuts each to `caps.text`, and appends a marker entry
/// when entries were dropped.
fn cut_list(list: &mut Vec<String>, caps: Caps, what: &str) -> bool {
    let mut cut = false;
    let dropped = list.len().saturating_sub(caps.items);
    list.truncate(caps.items);
    for item in list.iter_mut() {
        cut |= cut_text(item, caps.text);
    }
    if dropped > 0 {
        list.push(format!(
            "… [cut: {dropped} more {what}; full list in the ticket]"
        ));
        cut = true;
    }
    cut
}

/// The largest `x` in `lo..=hi` with `ok(x)`, given `ok(lo)` and `ok` true up to some point
/// and false after it.
fn largest(lo: usize, hi: usize, ok: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (lo, hi);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if ok(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// `HMAC(key, label ‖ 0 ‖ SHA-256(PARAMETERS_FINGERPRINT_LABEL ‖ 0 ‖ JCS(parameters)))`; see
/// [`CardParameters::fingerprint`].
fn parameters_fingerprint(key: &DigestKey, parameters: &Value) -> KeyedDigest {
    let mut hash = Sha256::new();
    hash.update(PARAMETERS_FINGERPRINT_LABEL.as_bytes());
    hash.update([0u8]);
    hash.update(canonical_json(parameters));
    key.keyed(&ActionDigest::from_bytes(hash.finalize().into()))
}

fn join<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn nonempty(text: &str) -> &str {
    if text.trim().is_empty() {
        "none given"
    } else {
        text
    }
}

/// A rendered block: lines are already escaped or trusted.
enum Block {
    /// Lines of one paragraph.
    Para(Vec<String>),
    /// Items of a bulleted list, each one or more lines.
    List(Vec<Vec<String>>),
    /// Lines quoted as one block (the agent's claims).
    Quote(Vec<String>),
}

fn render_blocks(blocks: &[Block], m: Markup) -> String {
    let rendered: Vec<String> = blocks
        .iter()
        .map(|block| match block {
            Block::Para(lines) => join_lines(lines, m, ""),
            Block::List(items) => items
                .iter()
                .map(|item| format!("- {}", join_lines(item, m, "  ")))
                .collect::<Vec<_>>()
                .join("\n"),
            Block::Quote(lines) => {
                let prefix = if m == Markup::Markdown { "> " } else { "│ " };
                let quoted: Vec<String> = lines
                    .iter()
                    .map(|l| format!("{prefix}{l}").trim_end().to_owned())
                    .collect();
                join_lines(&quoted, m, "")
            }
        })
        .collect();
    rendered.join("\n\n")
}

/// Joins lines with line breaks that hold in `m`: in Markdown a backslash before the newline
/// (a hard break) between non-empty lines, since a bare newline would merge them.
fn join_lines(lines: &[String], m: Markup, indent: &str) -> String {
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        out.push_str(line);
        if let Some(next) = lines.get(i + 1) {
            let blank = |l: &str| l.trim_start_matches('>').trim().is_empty();
            if m == Markup::Markdown && !blank(line) && !blank(next) {
                out.push('\\');
            }
            out.push('\n');
            out.push_str(indent);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_text_respects_char_boundaries_and_the_reserve() {
        let mut short = "é".repeat(40); // 80 bytes: within 20 + 64
        assert!(!cut_text(&mut short, 20));
        let mut long = "é".repeat(100); // 200 bytes
        assert!(cut_text(&mut long, 21));
        assert!(long.starts_with(&"é".repeat(10)));
        assert!(
            long.ends_with("… [cut: 180 more bytes; full text in the ticket]"),
            "{long}"
        );
        let mut zero = "x".repeat(100);
        assert!(cut_text(&mut zero, 0));
        assert_eq!(zero, "… [cut: 100 more bytes; full text in the ticket]");
        assert!(zero.len() < MARKER_RESERVE);
    }

    #[test]
    fn largest_finds_the_boundary() {
        assert_eq!(largest(0, 100, |x| x <= 37), 37);
        assert_eq!(largest(0, 100, |_| true), 100);
        assert_eq!(largest(0, 100, |x| x == 0), 0);
        assert_eq!(largest(5, 5, |_| true), 5);
    }

    #[test]
    fn link_debug_hides_the_token() {
        let link = DecisionLink::new(
            VerdictKind::Approve,
            "https://user:pw@review.example/d/ah1.SECRET?x=1",
        );
        let shown = format!("{link:?}");
        assert!(shown.contains("https://review.example/…"), "{shown}");
        assert!(
            !shown.contains("SECRET") && !shown.contains("pw"),
            "{shown}"
        );
    }
}

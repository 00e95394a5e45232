//! Rendering a [`ReviewCard`] as a Feishu / Lark interactive card (message card JSON).
//!
//! Layout (card JSON 1.0, which both the `im/v1/messages` API and custom bots accept):
//!
//! - a header coloured by risk: `red` for irreversible actions, production, or regulated data;
//!   `orange` for other pending reviews; once closed `green` (approved / succeeded) or `grey`;
//! - the verified facts as short fields and `lark_md` blocks;
//! - the agent's claims in a block of their own, labelled with
//!   [`AGENT_CLAIMS_LABEL`](crate::notify::AGENT_CLAIMS_LABEL), every line prefixed `│ `;
//! - while pending: one button per decision link whose `value` is
//!   `{"decision_token": <the link's t= parameter>, "verdict": "approve"}`, plus a link button
//!   to the full review page when one is configured;
//! - `"config": {"update_multi": true}` so the card can be updated for everyone after a
//!   decision.
//!
//! Every string that did not come from this crate is escaped with [`Markup::LarkMd`] (in
//! `lark_md` text) or [`Markup::PlainText`] (in `plain_text`).

use serde_json::{json, Map, Value};

use crate::action::{canonical_json, Environment, Reversibility, Sensitivity};
use crate::notify::{CardTooLarge, DeliveryKind, Markup, ReviewCard};
use crate::ticket::StateName;
use crate::token::VerdictKind;

/// The largest card Feishu accepts, in bytes of card JSON (30 KB).
pub const FEISHU_CARD_LIMIT: usize = 30 * 1024;

/// The member of a button's `value` that carries the decision token.
pub const DECISION_TOKEN_KEY: &str = "decision_token";

/// The member of a button's `value` that names the verdict (informational; the token is
/// authoritative).
pub const VERDICT_KEY: &str = "verdict";

/// Renders review cards as Feishu interactive cards.
///
/// ```
/// use agent_handoff::notify::feishu::FeishuCardRenderer;
///
/// let renderer = FeishuCardRenderer::new()
///     .with_review_page("https://review.example/tickets/{ticket}");
/// # drop(renderer);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeishuCardRenderer {
    review_page: Option<String>,
}

impl FeishuCardRenderer {
    /// A renderer without a review-page link.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a "Full review" link button; `{ticket}` in the template is replaced by the
    /// ticket id. The template is configuration, trusted as given.
    #[must_use]
    pub fn with_review_page(mut self, url_template: impl Into<String>) -> Self {
        self.review_page = Some(url_template.into());
        self
    }

    /// The card JSON for `card`. Buttons are rendered only while the card is pending and
    /// `kind` is not [`DeliveryKind::Close`]; a closed card shows the outcome instead.
    pub fn render(&self, card: &ReviewCard, kind: DeliveryKind) -> Value {
        let open = card.state == StateName::Pending && kind != DeliveryKind::Close;
        let mut elements = Vec::new();
        let facts = &card.facts;
        let md = |s: &str| Markup::LarkMd.escape(s);
        let bold = |s: &str| Markup::LarkMd.bold(s);

        // Outcome or what is still needed.
        if open {
            let mut lines = Vec::new();
            if let Some(deadline) = facts.deadline {
                lines.push(format!(
                    "{}: {}",
                    bold("Deadline"),
                    md(&format!("{deadline} (unanswered means denied)"))
                ));
            }
            for p in &facts.requirements {
                let mut line = if p.is_met() {
                    format!("{}: met", p.requirement)
                } else {
                    format!("{}: {} more needed", p.requirement, p.needed)
                };
                if !p.approvers.is_empty() {
                    let names: Vec<String> = p.approvers.iter().map(|a| a.to_string()).collect();
                    line.push_str(&format!(" (approved by {})", names.join(", ")));
                }
                lines.push(format!("{}: {}", bold("Still needed"), md(&line)));
            }
            if let Some(editor) = &facts.awaiting_non_editor {
                lines.push(md(&format!(
                    "Needs an approver other than {editor}, who edited the action"
                )));
            }
            if !lines.is_empty() {
                elements.push(div(lines.join("\n")));
            }
        } else {
            let mut line = format!("{}: {}", bold("Outcome"), md(card.state.as_str()));
            if !card.decided_by.is_empty() {
                let names: Vec<String> = card.decided_by.iter().map(|p| p.to_string()).collect();
                line.push_str(&format!(", {} {}", bold("by"), md(&names.join(", "))));
            }
            elements.push(div(line));
        }

        // Verified facts.
        elements.push(div(bold(
            "Verified facts (policy ruled on these; the action that would run is exactly this)",
        )));
        let impact = match &facts.impact {
            Some(i) => format!("at most {} {}", i.amount, i.unit),
            None => "not stated (counted as unbounded)".to_owned(),
        };
        let requester = match facts.requester.principal() {
            Some(p) => format!("agent {} on behalf of {p}", facts.requester.agent()),
            None => format!("agent {}", facts.requester.agent()),
        };
        let short = [
            ("Kind", facts.kind.as_str().to_owned()),
            ("Environment", facts.environment.as_str().to_owned()),
            ("Sensitivity", facts.sensitivity.as_str().to_owned()),
            ("Reversibility", facts.reversibility.as_str().to_owned()),
            ("Impact", impact),
            ("Requested by", requester),
            (
                "Ticket",
                format!("{} (version {})", card.ticket, card.ticket_version),
            ),
        ];
        let fields: Vec<Value> = short
            .iter()
            .map(|(label, value)| {
                json!({
                    "is_short": true,
                    "text": { "tag": "lark_md", "content": format!("{}\n{}", bold(label), md(value)) }
                })
            })
            .collect();
        elements.push(json!({ "tag": "div", "fields": fields }));

        let mut targets = vec![bold("Targets")];
        if facts.targets.is_empty() {
            targets.push("none given".to_owned());
        }
        targets.extend(facts.targets.iter().map(|t| format!("· {}", md(t))));
        elements.push(div(targets.join("\n")));

        let params = &facts.parameters;
        let shown = match (&params.redacted, &params.omitted) {
            (Some(value), _) => String::from_utf8_lossy(&canonical_json(value)).into_owned(),
            (None, note) => format!(
                "{} (fingerprint {})",
                note.as_deref().unwrap_or("parameters omitted"),
                params.fingerprint
            ),
        };
        elements.push(div(format!(
            "{}\n{}",
            bold("Parameters (sensitive values redacted)"),
            md(&shown)
        )));
        if let Some(editor) = &facts.edited_by {
            elements.push(div(format!(
                "{}: {}",
                bold("Edited by"),
                md(&format!("{editor} (the parameters above are the edit)"))
            )));
        }

        let mut ruling = vec![format!(
            "{}: {}",
            bold("Policy"),
            md(&facts.ruling.policy_text())
        )];
        ruling.extend(
            facts
                .ruling
                .rule_lines()
                .iter()
                .map(|line| format!("· {}", md(line))),
        );
        ruling.push(format!(
            "{}: {}",
            bold("Action digest (keyed)"),
            md(&facts.digest.to_string())
        ));
        elements.push(div(ruling.join("\n")));

        // The agent's claims, apart and labelled.
        elements.push(json!({ "tag": "hr" }));
        let claims = &card.agent_claims;
        let mut quote = vec![bold(&format!(
            "The agent's claims ({})",
            md(&claims.label.to_lowercase())
        ))];
        let mut claim = |label: &str, text: &str| {
            let text = if text.trim().is_empty() {
                "none given"
            } else {
                text
            };
            let escaped = md(text);
            let mut lines = escaped.split('\n');
            quote.push(format!(
                "│ {}: {}",
                bold(label),
                lines.next().unwrap_or_default()
            ));
            quote.extend(lines.map(|l| format!("│ {l}")));
        };
        claim("Reason", &claims.reason);
        claim("Expected effect", &claims.expected_effect);
        if claims.risk_factors.is_empty() {
            claim("Risk factors", "none given");
        }
        for risk in &claims.risk_factors {
            claim("Risk", risk);
        }
        claim(
            "Rollback plan",
            claims.rollback_plan.as_deref().unwrap_or("none given"),
        );
        let confidence = match claims.confidence {
            Some(c) => c.get().to_string(),
            None => "not stated (counted as zero)".to_owned(),
        };
        claim("Confidence", &confidence);
        elements.push(div(quote.join("\n")));

        // Buttons.
        let mut actions = Vec::new();
        if open {
            for link in &card.links {
                let Some(token) = decision_token(&link.url) else {
                    continue;
                };
                let style = match link.verdict {
                    VerdictKind::Approve | VerdictKind::ApproveWithEdits => "primary",
                    VerdictKind::Reject => "danger",
                    VerdictKind::RequestChanges => "default",
                };
                actions.push(json!({
                    "tag": "button",
                    "text": { "tag": "plain_text", "content": link.label() },
                    "type": style,
                    "value": { DECISION_TOKEN_KEY: token, VERDICT_KEY: verdict_name(link.verdict) },
                }));
            }
        }
        if let Some(template) = &self.review_page {
            actions.push(json!({
                "tag": "button",
                "text": { "tag": "plain_text", "content": "Full review" },
                "type": "default",
                "url": template.replace("{ticket}", &card.ticket.to_string()),
            }));
        }
        if !actions.is_empty() {
            elements.push(json!({ "tag": "action", "actions": actions }));
        }
        if card.cut {
            elements.push(json!({
                "tag": "note",
                "elements": [{ "tag": "plain_text", "content": "Some of this was cut to fit the channel; the full detail is in the ticket." }]
            }));
        }

        let title = if open {
            format!("Review requested: {}", facts.kind.as_str())
        } else {
            format!(
                "Review closed: {} ({})",
                facts.kind.as_str(),
                card.state.as_str()
            )
        };
        let mut root = Map::new();
        root.insert(
            "config".into(),
            json!({ "wide_screen_mode": true, "update_multi": true }),
        );
        root.insert(
            "header".into(),
            json!({
                "template": header_colour(card, open),
                "title": { "tag": "plain_text", "content": Markup::PlainText.escape(&title) },
            }),
        );
        root.insert("elements".into(), Value::Array(elements));
        Value::Object(root)
    }

    /// [`render`](Self::render) as a JSON string.
    pub fn render_string(&self, card: &ReviewCard, kind: DeliveryKind) -> String {
        self.render(card, kind).to_string()
    }

    /// The card cut down (with [`ReviewCard::bounded_by`]) until its rendered JSON is at most
    /// [`FEISHU_CARD_LIMIT`] bytes, rendered.
    pub fn bounded(
        &self,
        card: ReviewCard,
        kind: DeliveryKind,
    ) -> Result<(ReviewCard, Value), CardTooLarge> {
        let card = card.bounded_by(FEISHU_CARD_LIMIT, |c| self.render_string(c, kind).len())?;
        let rendered = self.render(&card, kind);
        Ok((card, rendered))
    }
}

/// The decision token of a decision link URL: the value of its `t` query parameter.
///
/// ```
/// use agent_handoff::notify::feishu::decision_token;
///
/// assert_eq!(decision_token("https://r.example/d?x=1&t=ah1.abc#f"), Some("ah1.abc"));
/// assert_eq!(decision_token("https://r.example/d"), None);
/// ```
pub fn decision_token(url: &str) -> Option<&str> {
    let (_, query) = url.split_once('?')?;
    let query = query.split('#').next().unwrap_or_default();
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("t="))
        .filter(|t| !t.is_empty())
}

fn div(content: String) -> Value {
    json!({ "tag": "div", "text": { "tag": "lark_md", "content": content } })
}

fn verdict_name(verdict: VerdictKind) -> &'static str {
    match verdict {
        VerdictKind::Approve => "approve",
        VerdictKind::ApproveWithEdits => "approve_with_edits",
        VerdictKind::Reject => "reject",
        VerdictKind::RequestChanges => "request_changes",
    }
}

/// Feishu header templates: `red` when the action is irreversible, in production, or touches
/// regulated data; `orange` for other pending reviews; closed cards `green` when approved or
/// run, `grey` otherwise.
fn header_colour(card: &ReviewCard, open: bool) -> &'static str {
    if !open {
        return match card.state {
            StateName::Approved | StateName::Executing | StateName::Succeeded => "green",
            _ => "grey",
        };
    }
    let facts = &card.facts;
    let high = facts.reversibility == Reversibility::Irreversible
        || facts.environment == Environment::Production
        || facts.sensitivity == Sensitivity::Regulated;
    if high {
        "red"
    } else {
        "orange"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_the_t_parameter() {
        assert_eq!(decision_token("https://a/d?t=x.y"), Some("x.y"));
        assert_eq!(decision_token("https://a/d?at=1&t=x.y&u=2"), Some("x.y"));
        assert_eq!(decision_token("https://a/d?at=1"), None);
        assert_eq!(decision_token("https://a/d?t="), None);
        assert_eq!(decision_token("https://a/d#t=x"), None);
    }
}

//! What a policy answers: the outcome, and the rules that decided it.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::action::ActionRequest;
use crate::id::{GroupName, RuleId};
use crate::timestamp::duration_ms;

/// Anything that can rule on an action. Our [`Policy`](super::Policy) implements it; other
/// engines (Cedar, OPA) can be plugged in behind the same trait.
///
/// Evaluation is pure and synchronous: no I/O, no clock. An engine that cannot complete an
/// evaluation must answer with a stricter ruling (fail closed), never a looser one.
pub trait PolicyEngine: Send + Sync {
    /// Rules on one action.
    fn evaluate(&self, request: &ActionRequest) -> Ruling;

    /// The version and content hash of the rules in force.
    fn policy_ref(&self) -> PolicyRef;
}

/// The ruling on one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruling {
    /// What must happen.
    pub outcome: Outcome,
    /// Every rule that matched (or was assumed to match because it could not be evaluated),
    /// with why. Empty when the document's default decided.
    pub matched: Vec<MatchedRule>,
    /// Which policy decided.
    pub policy: PolicyRef,
}

impl Ruling {
    /// Whether the document's default outcome took part: no rule definitively matched (every
    /// listed rule, if any, is there only because it could not be evaluated).
    pub fn decided_by_default(&self) -> bool {
        self.matched.iter().all(|m| m.fail_closed.is_some())
    }

    /// The rules that could not be evaluated and were assumed to match (fail closed).
    pub fn fail_closed(&self) -> impl Iterator<Item = &MatchedRule> {
        self.matched.iter().filter(|m| m.fail_closed.is_some())
    }
}

/// One rule that contributed to a ruling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchedRule {
    /// The rule's id (`default` for the document's default outcome).
    pub rule: RuleId,
    /// Why it matched, one entry per condition (`kind \`payment.send\` matches \`payment.*\``).
    pub reasons: Vec<String>,
    /// Set when a condition could not be evaluated and the rule was assumed to match so the
    /// ruling errs strict (fail closed); says why.
    pub fail_closed: Option<String>,
}

/// Identifies the policy that produced a ruling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PolicyRef {
    /// The document's `version` field.
    pub version: String,
    /// SHA-256 of the document's source text.
    pub hash: PolicyHash,
}

/// SHA-256 content hash of a policy document.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PolicyHash(pub [u8; 32]);

impl fmt::Debug for PolicyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyHash({self})")
    }
}

impl fmt::Display for PolicyHash {
    /// Lowercase hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Allow, require review, or deny.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Proceed without review; the grant lasts `grant_ttl`.
    Allow {
        /// How long the policy grant stays usable.
        #[serde(with = "duration_ms")]
        grant_ttl: Duration,
    },
    /// A human decision is needed.
    Review(ReviewPlan),
    /// Refused.
    Deny {
        /// Why (shown to the agent and recorded).
        reason: String,
    },
}

impl Outcome {
    /// 0 for allow, 1 for review, 2 for deny.
    pub fn severity(&self) -> u8 {
        match self {
            Outcome::Allow { .. } => 0,
            Outcome::Review(_) => 1,
            Outcome::Deny { .. } => 2,
        }
    }

    /// Whether `self` is at least as strict as `other`: a higher severity, or the same
    /// severity with nothing looser (see [`ReviewPlan::is_at_least_as_strict_as`]; an allow
    /// is at least as strict as another with an equal or longer `grant_ttl`; any deny is as
    /// strict as any other).
    ///
    /// A sound, conservative partial order: `true` means every way of getting `self` through
    /// also gets `other` through. [`join`](Self::join) always returns an outcome at least as
    /// strict as both of its inputs.
    pub fn is_at_least_as_strict_as(&self, other: &Outcome) -> bool {
        match (self, other) {
            (Outcome::Deny { .. }, _) => true,
            (Outcome::Review(a), Outcome::Review(b)) => a.is_at_least_as_strict_as(b),
            (Outcome::Review(_), Outcome::Allow { .. }) => true,
            (Outcome::Allow { grant_ttl: a }, Outcome::Allow { grant_ttl: b }) => a <= b,
            (Outcome::Allow { .. } | Outcome::Review(_), _) => false,
        }
    }

    /// Combines two outcomes the way matching rules combine: deny beats review beats allow;
    /// two reviews keep every requirement of both, the shortest deadline and ttl, and veto if
    /// either has it; two allows keep the shorter ttl; two denies keep both reasons.
    pub fn join(self, other: Outcome) -> Outcome {
        match (self, other) {
            (Outcome::Deny { reason: a }, Outcome::Deny { reason: b }) => Outcome::Deny {
                reason: if a == b || b.is_empty() {
                    a
                } else if a.is_empty() {
                    b
                } else {
                    format!("{a}; {b}")
                },
            },
            (deny @ Outcome::Deny { .. }, _) | (_, deny @ Outcome::Deny { .. }) => deny,
            (Outcome::Review(a), Outcome::Review(b)) => Outcome::Review(a.join(b)),
            (review @ Outcome::Review(_), _) | (_, review @ Outcome::Review(_)) => review,
            (Outcome::Allow { grant_ttl: a }, Outcome::Allow { grant_ttl: b }) => Outcome::Allow {
                grant_ttl: a.min(b),
            },
        }
    }
}

/// What a review needs: every requirement met, before the deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewPlan {
    /// Every one of these must be met (a set, sorted, without duplicates).
    pub requirements: BTreeSet<ReviewRequirement>,
    /// How long reviewers have, from the proposal; unanswered means denied.
    #[serde(with = "duration_ms")]
    pub deadline: Duration,
    /// How long an approval stays valid; the grant lasts until the earliest counting approval
    /// plus this.
    #[serde(with = "duration_ms")]
    pub approval_ttl: Duration,
    /// Whether one rejection by an eligible reviewer rejects the ticket.
    pub veto: bool,
}

impl ReviewPlan {
    /// Whether meeting `self` always meets `other` as well, with no more time: every
    /// requirement of `other` is implied by one of `self` (see
    /// [`ReviewRequirement::implies`]), the deadline and approval ttl are no longer, and veto
    /// is on if `other` has it.
    pub fn is_at_least_as_strict_as(&self, other: &ReviewPlan) -> bool {
        self.deadline <= other.deadline
            && self.approval_ttl <= other.approval_ttl
            && (self.veto || !other.veto)
            && other
                .requirements
                .iter()
                .all(|theirs| self.requirements.iter().any(|ours| ours.implies(theirs)))
    }

    /// Keeps every requirement of both, the shorter deadline and ttl, veto if either has it.
    pub fn join(mut self, other: ReviewPlan) -> ReviewPlan {
        self.requirements.extend(other.requirements);
        ReviewPlan {
            requirements: self.requirements,
            deadline: self.deadline.min(other.deadline),
            approval_ttl: self.approval_ttl.min(other.approval_ttl),
            veto: self.veto || other.veto,
        }
    }
}

/// `approvals` distinct reviewers, each a member of at least one of `groups`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReviewRequirement {
    /// Groups whose members count toward this requirement.
    pub groups: BTreeSet<GroupName>,
    /// How many distinct reviewers (at least 1).
    pub approvals: u32,
}

impl ReviewRequirement {
    /// Whether meeting `self` always meets `other`: at least as many approvals, drawn from no
    /// group `other` does not accept.
    pub fn implies(&self, other: &ReviewRequirement) -> bool {
        self.approvals >= other.approvals && self.groups.is_subset(&other.groups)
    }
}

impl fmt::Display for ReviewRequirement {
    /// `2 of dba` / `1 of finance|treasury`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of ", self.approvals)?;
        for (i, g) in self.groups.iter().enumerate() {
            if i > 0 {
                f.write_str("|")?;
            }
            f.write_str(g.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(group: &str, n: u32) -> ReviewRequirement {
        ReviewRequirement {
            groups: [GroupName::new(group).unwrap()].into(),
            approvals: n,
        }
    }

    fn review(reqs: &[ReviewRequirement], deadline: u64, veto: bool) -> Outcome {
        Outcome::Review(ReviewPlan {
            requirements: reqs.iter().cloned().collect(),
            deadline: Duration::from_secs(deadline),
            approval_ttl: Duration::from_secs(deadline * 2),
            veto,
        })
    }

    #[test]
    fn join_is_strictest() {
        let allow = Outcome::Allow {
            grant_ttl: Duration::from_secs(60),
        };
        let deny = Outcome::Deny {
            reason: "no".into(),
        };
        let r1 = review(&[req("dba", 2)], 600, false);
        let r2 = review(&[req("finance", 1)], 300, true);
        assert_eq!(allow.clone().join(deny.clone()), deny);
        assert_eq!(r1.clone().join(allow.clone()), r1);
        let Outcome::Review(both) = r1.join(r2) else {
            panic!("review expected")
        };
        assert_eq!(both.requirements.len(), 2, "requirements are kept as a set");
        assert_eq!(both.deadline, Duration::from_secs(300));
        assert!(both.veto);
    }

    #[test]
    fn strictness_orders_outcomes() {
        let allow = |s| Outcome::Allow {
            grant_ttl: Duration::from_secs(s),
        };
        let deny = Outcome::Deny {
            reason: "no".into(),
        };
        let dba2 = review(&[req("dba", 2)], 600, false);
        let dba1 = review(&[req("dba", 1)], 600, false);
        let finance = review(&[req("finance", 1)], 600, false);
        assert!(deny.is_at_least_as_strict_as(&dba2));
        assert!(!dba2.is_at_least_as_strict_as(&deny));
        assert!(dba1.is_at_least_as_strict_as(&allow(60)));
        assert!(!allow(60).is_at_least_as_strict_as(&dba1));
        assert!(allow(60).is_at_least_as_strict_as(&allow(120)));
        assert!(!allow(120).is_at_least_as_strict_as(&allow(60)));
        assert!(
            dba2.is_at_least_as_strict_as(&dba1),
            "more approvals of the same group"
        );
        assert!(!dba1.is_at_least_as_strict_as(&dba2));
        assert!(
            !dba2.is_at_least_as_strict_as(&finance),
            "another group is not implied"
        );
        let both = dba2.clone().join(finance.clone());
        assert!(both.is_at_least_as_strict_as(&dba2) && both.is_at_least_as_strict_as(&finance));
        let shorter = review(&[req("dba", 2)], 300, false);
        assert!(
            !dba2.is_at_least_as_strict_as(&shorter),
            "a longer deadline is looser"
        );
        let vetoing = review(&[req("dba", 2)], 600, true);
        assert!(
            !dba2.is_at_least_as_strict_as(&vetoing),
            "no veto is looser"
        );
        let either = ReviewRequirement {
            groups: [
                GroupName::new("dba").unwrap(),
                GroupName::new("sre").unwrap(),
            ]
            .into(),
            approvals: 2,
        };
        assert!(
            req("dba", 2).implies(&either),
            "dba only is narrower than dba|sre"
        );
        assert!(!either.implies(&req("dba", 2)));
    }

    #[test]
    fn default_decided_when_nothing_matched_definitively() {
        let policy = PolicyRef {
            version: "1".into(),
            hash: PolicyHash([0; 32]),
        };
        let rule = |fail: Option<&str>| MatchedRule {
            rule: RuleId::new("r").unwrap(),
            reasons: vec![],
            fail_closed: fail.map(str::to_owned),
        };
        let ruling = |matched| Ruling {
            outcome: Outcome::Deny { reason: "x".into() },
            matched,
            policy: policy.clone(),
        };
        assert!(ruling(vec![]).decided_by_default());
        assert!(ruling(vec![rule(Some("absent"))]).decided_by_default());
        assert!(!ruling(vec![rule(Some("absent")), rule(None)]).decided_by_default());
        assert_eq!(
            ruling(vec![rule(Some("absent")), rule(None)])
                .fail_closed()
                .count(),
            1
        );
    }
}

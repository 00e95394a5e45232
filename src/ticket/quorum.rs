//! Counting approvals against a review plan: eligibility, lapse, distinct reviewers, the
//! editor rule.
//!
//! Everything here is a pure function of the plan, the votes of the current round, the
//! requester's principal and the time, so the machine, the read views
//! ([`Ticket::progress`](super::Ticket::progress)) and the final check at `begin` agree.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::state::{PrincipalCheck, Vote, VoteKind};
use crate::id::{GroupName, PersonId};
use crate::policy::{ReviewPlan, ReviewRequirement};
use crate::timestamp::Timestamp;

/// How far one review requirement is from being met.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequirementProgress {
    /// The requirement (`2 of dba`).
    pub requirement: ReviewRequirement,
    /// The distinct reviewers whose approvals count toward it now: members of one of its
    /// groups, not the requester's principal, approval not lapsed.
    pub approvers: BTreeSet<PersonId>,
    /// Approvals still needed (zero when met).
    pub needed: u32,
}

impl RequirementProgress {
    /// Whether the requirement is met.
    pub fn is_met(&self) -> bool {
        self.needed == 0
    }
}

/// Whether a reviewer with these groups counts toward at least one requirement of the plan.
/// Reviewers who count toward none are refused and cannot veto.
pub(crate) fn is_eligible(plan: &ReviewPlan, groups: &BTreeSet<GroupName>) -> bool {
    plan.requirements
        .iter()
        .any(|r| !r.groups.is_disjoint(groups))
}

/// Whether an approval given at `at` has lapsed at `now` (approvals older than the ttl lapse;
/// one given at `t` counts strictly before `t + ttl`).
pub(crate) fn lapsed(plan: &ReviewPlan, at: Timestamp, now: Timestamp) -> bool {
    now >= at.saturating_add(plan.approval_ttl)
}

/// Whether this person may approve for the requester's principal.
pub(crate) fn may_approve(principal: &PrincipalCheck, person: &PersonId) -> bool {
    match principal {
        PrincipalCheck::NoPrincipal => true,
        PrincipalCheck::Person(p) => p != person,
        PrincipalCheck::Unresolved => false,
    }
}

/// The approvals that count now: approvals (one per person: votes are kept one per person),
/// not lapsed, by someone other than the principal, eligible for the plan by the groups
/// recorded with the vote.
pub(crate) fn counting_approvals<'a>(
    plan: &ReviewPlan,
    votes: &'a [Vote],
    principal: &PrincipalCheck,
    now: Timestamp,
) -> Vec<&'a Vote> {
    let mut seen = BTreeSet::new();
    votes
        .iter()
        .filter(|v| v.kind == VoteKind::Approve)
        .filter(|v| !lapsed(plan, v.at, now))
        .filter(|v| may_approve(principal, &v.person))
        .filter(|v| is_eligible(plan, &v.groups))
        .filter(|v| seen.insert(&v.person))
        .collect()
}

/// Progress of each requirement of the plan.
pub(crate) fn progress(
    plan: &ReviewPlan,
    votes: &[Vote],
    principal: &PrincipalCheck,
    now: Timestamp,
) -> Vec<RequirementProgress> {
    let counting = counting_approvals(plan, votes, principal, now);
    plan.requirements
        .iter()
        .map(|requirement| {
            let approvers: BTreeSet<PersonId> = counting
                .iter()
                .filter(|v| !v.groups.is_disjoint(&requirement.groups))
                .map(|v| v.person.clone())
                .collect();
            let counted = u32::try_from(approvers.len()).unwrap_or(u32::MAX);
            RequirementProgress {
                requirement: requirement.clone(),
                approvers,
                needed: requirement.approvals.saturating_sub(counted),
            }
        })
        .collect()
}

/// A met quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Quorum {
    /// Every reviewer whose approval counts.
    pub(crate) approvers: BTreeSet<PersonId>,
    /// The earliest counting approval plus the approval ttl.
    pub(crate) valid_until: Timestamp,
}

/// Whether the votes meet the plan now: every requirement met by distinct counting
/// approvers, at least one counting approver, and — after an edit — at least one counting
/// approver other than the editor.
pub(crate) fn quorum(
    plan: &ReviewPlan,
    votes: &[Vote],
    principal: &PrincipalCheck,
    editor: Option<&PersonId>,
    now: Timestamp,
) -> Option<Quorum> {
    let counting = counting_approvals(plan, votes, principal, now);
    let earliest = counting.iter().map(|v| v.at).min()?;
    if let Some(editor) = editor {
        if counting.iter().all(|v| &v.person == editor) {
            return None;
        }
    }
    if !progress(plan, votes, principal, now)
        .iter()
        .all(RequirementProgress::is_met)
    {
        return None;
    }
    Some(Quorum {
        approvers: counting.iter().map(|v| v.person.clone()).collect(),
        valid_until: earliest.saturating_add(plan.approval_ttl),
    })
}

/// Whether, under `plan`, an eligible reviewer's rejection or change request is on record
/// (which vetoes when the plan has veto on).
pub(crate) fn vetoed(plan: &ReviewPlan, votes: &[Vote]) -> bool {
    plan.veto
        && votes
            .iter()
            .any(|v| v.kind != VoteKind::Approve && is_eligible(plan, &v.groups))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn group(name: &str) -> GroupName {
        GroupName::new(name).unwrap()
    }

    fn person(name: &str) -> PersonId {
        PersonId::new(name).unwrap()
    }

    fn plan(reqs: &[(&[&str], u32)], ttl_ms: u64) -> ReviewPlan {
        ReviewPlan {
            requirements: reqs
                .iter()
                .map(|(groups, n)| ReviewRequirement {
                    groups: groups.iter().map(|g| group(g)).collect(),
                    approvals: *n,
                })
                .collect(),
            deadline: Duration::from_secs(3600),
            approval_ttl: Duration::from_millis(ttl_ms),
            veto: true,
        }
    }

    fn approve(who: &str, groups: &[&str], at: i64) -> Vote {
        Vote {
            person: person(who),
            groups: groups.iter().map(|g| group(g)).collect(),
            kind: VoteKind::Approve,
            feedback: None,
            at: Timestamp::from_unix_millis(at),
        }
    }

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(ms)
    }

    #[test]
    fn every_requirement_must_be_met_not_a_union() {
        let p = plan(&[(&["dba"], 2), (&["finance"], 1)], 1_000);
        let none = PrincipalCheck::NoPrincipal;
        let two_dba = [approve("a", &["dba"], 0), approve("b", &["dba"], 0)];
        assert_eq!(quorum(&p, &two_dba, &none, None, t(1)), None);
        let mut all = two_dba.to_vec();
        all.push(approve("c", &["finance"], 10));
        let q = quorum(&p, &all, &none, None, t(11)).expect("met");
        assert_eq!(q.approvers.len(), 3);
        assert_eq!(q.valid_until, t(1_000), "earliest approval + ttl");
    }

    #[test]
    fn one_reviewer_counts_toward_each_requirement_they_are_in() {
        let p = plan(&[(&["dba"], 1), (&["finance"], 1)], 1_000);
        let both = [approve("a", &["dba", "finance"], 0)];
        assert!(quorum(&p, &both, &PrincipalCheck::NoPrincipal, None, t(1)).is_some());
    }

    #[test]
    fn approvals_lapse_at_exactly_their_ttl() {
        let p = plan(&[(&["dba"], 1)], 100);
        let votes = [approve("a", &["dba"], 0)];
        let none = PrincipalCheck::NoPrincipal;
        assert!(quorum(&p, &votes, &none, None, t(99)).is_some());
        assert_eq!(quorum(&p, &votes, &none, None, t(100)), None);
        assert_eq!(progress(&p, &votes, &none, t(100))[0].needed, 1);
    }

    #[test]
    fn the_principal_and_unresolved_principals_never_count() {
        let p = plan(&[(&["dba"], 1)], 100);
        let votes = [approve("a", &["dba"], 0)];
        assert_eq!(
            quorum(&p, &votes, &PrincipalCheck::Person(person("a")), None, t(1)),
            None
        );
        assert_eq!(
            quorum(&p, &votes, &PrincipalCheck::Unresolved, None, t(1)),
            None
        );
    }

    #[test]
    fn an_editor_needs_another_approver() {
        let p = plan(&[(&["dba"], 1)], 100);
        let votes = [approve("ed", &["dba"], 0)];
        let none = PrincipalCheck::NoPrincipal;
        assert_eq!(quorum(&p, &votes, &none, Some(&person("ed")), t(1)), None);
        let votes = [approve("ed", &["dba"], 0), approve("b", &["dba"], 1)];
        assert!(quorum(&p, &votes, &none, Some(&person("ed")), t(2)).is_some());
    }

    #[test]
    fn ineligible_approvals_do_not_count_and_cannot_veto() {
        let p = plan(&[(&["dba"], 1)], 100);
        let votes = [approve("x", &["sales"], 0)];
        let none = PrincipalCheck::NoPrincipal;
        assert_eq!(quorum(&p, &votes, &none, None, t(1)), None);
        let mut reject = approve("x", &["sales"], 0);
        reject.kind = VoteKind::Reject;
        assert!(!vetoed(&p, &[reject.clone()]));
        reject.groups = [group("dba")].into();
        assert!(vetoed(&p, &[reject]));
    }
}

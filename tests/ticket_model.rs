//! Model test of the ticket machine: random event sequences are applied both to
//! `ticket::apply` and to a small reference model written here from the lifecycle rules;
//! after every step the two agree and the invariants hold.
//!
//! Cases: 256 by default; `PROPTEST_CASES=10000 cargo test --test ticket_model` for a long run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use agent_handoff::action::{ActionDigest, ActionRequest, Requester};
use agent_handoff::audit::{kind, Actor};
use agent_handoff::policy::{
    Outcome, PolicyHash, PolicyRef, ReviewPlan, ReviewRequirement, Ruling,
};
use agent_handoff::ticket::{
    apply, open, ApprovedBy, Event, ExecutionOutcome, LeaseId, PrincipalCheck, Reviewer, StateName,
    Ticket, TicketState, Verdict, VoteKind,
};
use agent_handoff::{AgentId, GroupName, PersonId, TicketId, Timestamp};
use proptest::prelude::*;
use serde_json::{json, Value};
use uuid::Uuid;

// --- the world --------------------------------------------------------------------------------

/// The reviewer pool: name and groups. `pat` is the requester's principal in most cases;
/// `eve` is in no group any requirement names.
const POOL: [(&str, &[&str]); 6] = [
    ("alice", &["dba"]),
    ("bob", &["dba"]),
    ("carol", &["dba", "fin"]),
    ("fred", &["fin"]),
    ("pat", &["dba", "fin"]),
    ("eve", &["sales"]),
];

const FEEDBACK: [&str; 2] = ["too risky", "wrong table"];
const WRONG_LEASE: u128 = 1;

/// A review plan as the model sees it.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    reqs: BTreeSet<(BTreeSet<&'static str>, u32)>,
    ttl: i64,
    deadline: i64,
    veto: bool,
}

/// A ruling as the model sees it.
#[derive(Debug, Clone, PartialEq)]
enum Rule {
    Allow(i64),
    Review(Plan),
    Deny,
}

fn plan(reqs: &[(&[&'static str], u32)], ttl: i64, deadline: i64, veto: bool) -> Plan {
    Plan {
        reqs: reqs
            .iter()
            .map(|(g, n)| (g.iter().copied().collect(), *n))
            .collect(),
        ttl,
        deadline,
        veto,
    }
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap())
}

fn to_ruling(rule: &Rule) -> Ruling {
    let outcome = match rule {
        Rule::Allow(ttl) => Outcome::Allow {
            grant_ttl: ms(*ttl),
        },
        Rule::Deny => Outcome::Deny {
            reason: "denied".into(),
        },
        Rule::Review(p) => Outcome::Review(ReviewPlan {
            requirements: p
                .reqs
                .iter()
                .map(|(groups, n)| ReviewRequirement {
                    groups: groups.iter().map(|g| GroupName::new(*g).unwrap()).collect(),
                    approvals: *n,
                })
                .collect(),
            deadline: ms(p.deadline),
            approval_ttl: ms(p.ttl),
            veto: p.veto,
        }),
    };
    Ruling {
        outcome,
        matched: Vec::new(),
        policy: PolicyRef {
            version: "v1".into(),
            hash: PolicyHash([3; 32]),
        },
    }
}

/// Rulings on the edited action.
fn edit_rule(variant: u8) -> Rule {
    match variant {
        0 => Rule::Review(plan(&[(&["dba"], 1)], 6_000, 20_000, false)),
        1 => Rule::Review(plan(&[(&["fin"], 1)], 1_000, 20_000, true)),
        2 => Rule::Deny,
        _ => Rule::Allow(3_000),
    }
}

/// The current policy's ruling at begin (0: the ruling the ticket was opened with).
fn current_rule(variant: u8, opened: &Rule) -> Rule {
    match variant {
        0 => opened.clone(),
        1 => Rule::Deny,
        2 => Rule::Allow(3_000),
        3 => Rule::Review(plan(&[(&["dba"], 1)], 6_000, 20_000, false)),
        4 => Rule::Review(plan(&[(&["dba"], 2), (&["fin"], 1)], 6_000, 20_000, true)),
        // veto on, but only `dba` is eligible: a recorded `fin`-only rejection does not veto
        _ => Rule::Review(plan(&[(&["dba"], 1)], 6_000, 20_000, true)),
    }
}

fn edit_params(variant: u8) -> Value {
    match variant {
        0 => json!({ "table": "orders_a" }),
        1 => json!({ "table": "orders_b" }),
        _ => json!(["not", "an", "object"]),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Principal {
    None,
    Pat,
    Unresolved,
}

#[derive(Debug, Clone)]
enum Op {
    Vote {
        who: usize,
        verdict: u8,
        feedback: usize,
    },
    Edit {
        who: usize,
        params: u8,
        ruling: u8,
    },
    Cancel,
    Expire,
    Advance(i64),
    Begin {
        digest_ok: bool,
        observed: u8,
        current: u8,
        lease_for: i64,
    },
    Renew {
        right: bool,
        extend: i64,
    },
    Finish {
        right: bool,
        ok: bool,
    },
    LeaseLost {
        right: bool,
    },
    Resolve {
        ok: bool,
    },
    Revoke,
}

fn op() -> impl Strategy<Value = Op> {
    use proptest::bool::weighted;
    // verdicts: 0..=3 approve, 4 reject, 5 request changes, 6 approve-with-edits as a plain vote
    let verdict = prop_oneof![8 => Just(0u8), 2 => Just(4u8), 1 => Just(5u8), 1 => Just(6u8)];
    prop_oneof![
        12 => (0..POOL.len(), verdict, 0..FEEDBACK.len())
            .prop_map(|(who, verdict, feedback)| Op::Vote { who, verdict, feedback }),
        2 => (0..POOL.len(), prop_oneof![4 => 0..2u8, 1 => Just(2u8)], 0..4u8)
            .prop_map(|(who, params, ruling)| Op::Edit { who, params, ruling }),
        1 => Just(Op::Cancel),
        2 => Just(Op::Expire),
        // multiples of 250 land exactly on deadlines, ttls and lease expiries; 1 steps past them
        6 => prop_oneof![Just(1i64), Just(250i64), Just(500i64), Just(1_000i64), Just(2_500i64)]
            .prop_map(Op::Advance),
        4 => (
            weighted(0.85),
            prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
            prop_oneof![4 => Just(0u8), 1 => Just(1u8), 2 => Just(2u8), 2 => Just(3u8), 1 => Just(4u8), 2 => Just(5u8)],
            prop_oneof![Just(500i64), Just(3_000i64)],
        )
            .prop_map(|(digest_ok, observed, current, lease_for)| Op::Begin {
                digest_ok,
                observed,
                current,
                lease_for,
            }),
        3 => (weighted(0.85), prop_oneof![Just(100i64), Just(4_000i64)])
            .prop_map(|(right, extend)| Op::Renew { right, extend }),
        3 => (weighted(0.85), any::<bool>()).prop_map(|(right, ok)| Op::Finish { right, ok }),
        3 => weighted(0.85).prop_map(|right| Op::LeaseLost { right }),
        2 => any::<bool>().prop_map(|ok| Op::Resolve { ok }),
        1 => Just(Op::Revoke),
    ]
}

fn opening() -> impl Strategy<Value = (Rule, Principal)> {
    let review = (
        proptest::sample::subsequence(vec![0usize, 1, 2, 3], 1..=3),
        prop_oneof![Just(2_000i64), Just(6_000i64)],
        prop_oneof![Just(5_000i64), Just(20_000i64)],
        any::<bool>(),
    )
        .prop_map(|(which, ttl, deadline, veto)| {
            let all: [(&[&'static str], u32); 4] = [
                (&["dba"], 1),
                (&["dba"], 2),
                (&["fin"], 1),
                (&["dba", "fin"], 1),
            ];
            let reqs: Vec<_> = which.iter().map(|i| all[*i]).collect();
            Rule::Review(plan(&reqs, ttl, deadline, veto))
        });
    let rule = prop_oneof![
        1 => Just(Rule::Allow(3_000)),
        1 => Just(Rule::Deny),
        6 => review,
    ];
    let principal = prop_oneof![
        1 => Just(Principal::None),
        3 => Just(Principal::Pat),
        1 => Just(Principal::Unresolved),
    ];
    (rule, principal)
}

// --- the reference model --------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum K {
    Approve,
    Reject,
    Changes,
}

#[derive(Debug, Clone)]
struct MVote {
    kind: K,
    feedback: Option<usize>,
    at: i64,
    groups: BTreeSet<&'static str>,
}

/// What the model expects of one step.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// A transition to this state.
    Moved(StateName),
    /// An unchanged ticket (repeated decision).
    Same,
    /// A refusal with this code, persisting this state if any.
    Refused(&'static str, Option<StateName>),
}

#[derive(Debug, Clone)]
struct Model {
    state: StateName,
    version: u64,
    principal: Principal,
    opened: Rule,
    plan: Option<Plan>,
    deadline: i64,
    votes: BTreeMap<&'static str, MVote>,
    editor: Option<&'static str>,
    edit_params: Option<u8>,
    by_policy: bool,
    valid_until: i64,
    lease: Option<u128>,
    lease_expires: i64,
    begins: u32,
}

impl Model {
    fn open(rule: &Rule, principal: Principal) -> Model {
        let mut m = Model {
            state: StateName::Pending,
            version: 1,
            principal,
            opened: rule.clone(),
            plan: None,
            deadline: 0,
            votes: BTreeMap::new(),
            editor: None,
            edit_params: None,
            by_policy: false,
            valid_until: 0,
            lease: None,
            lease_expires: 0,
            begins: 0,
        };
        match rule {
            Rule::Allow(ttl) => {
                m.state = StateName::Approved;
                m.by_policy = true;
                m.valid_until = *ttl;
            }
            Rule::Deny => m.state = StateName::Rejected,
            Rule::Review(p) => {
                m.plan = Some(p.clone());
                m.deadline = p.deadline;
            }
        }
        m
    }

    fn may_approve(&self, who: &str) -> bool {
        match self.principal {
            Principal::None => true,
            Principal::Pat => who != "pat",
            Principal::Unresolved => false,
        }
    }

    fn eligible(plan: &Plan, groups: &BTreeSet<&'static str>) -> bool {
        plan.reqs
            .iter()
            .any(|(g, _)| g.intersection(groups).next().is_some())
    }

    /// Quorum under `plan` at `now`: the earliest counting approval + ttl, if met.
    fn quorum(&self, plan: &Plan, now: i64) -> Option<i64> {
        let counting: Vec<(&str, &MVote)> = self
            .votes
            .iter()
            .filter(|(who, v)| {
                v.kind == K::Approve
                    && now < v.at + plan.ttl
                    && self.may_approve(who)
                    && Self::eligible(plan, &v.groups)
            })
            .map(|(who, v)| (*who, v))
            .collect();
        if counting.is_empty() {
            return None;
        }
        if let Some(editor) = self.editor {
            if counting.iter().all(|(who, _)| *who == editor) {
                return None;
            }
        }
        for (groups, n) in &plan.reqs {
            let have = counting
                .iter()
                .filter(|(_, v)| v.groups.intersection(groups).next().is_some())
                .count();
            if (have as u32) < *n {
                return None;
            }
        }
        counting.iter().map(|(_, v)| v.at + plan.ttl).min()
    }

    fn vetoed(&self, plan: &Plan) -> bool {
        plan.veto
            && self
                .votes
                .values()
                .any(|v| v.kind != K::Approve && Self::eligible(plan, &v.groups))
    }

    fn moved(&mut self, state: StateName) -> Expect {
        self.state = state;
        self.version += 1;
        Expect::Moved(state)
    }

    fn persisted(&mut self, code: &'static str, state: StateName) -> Expect {
        self.state = state;
        self.version += 1;
        Expect::Refused(code, Some(state))
    }

    fn lapsed(&self, at: i64, now: i64) -> bool {
        self.plan.as_ref().is_some_and(|p| now >= at + p.ttl)
    }

    fn step(&mut self, op: &Op, now: i64, next_lease: u128) -> Expect {
        use StateName as S;
        if matches!(op, Op::Advance(_)) {
            return Expect::Same;
        }
        let is_expire = matches!(op, Op::Expire);
        // lazy expiry
        let due = match self.state {
            S::Pending if now >= self.deadline => Some("deadline_passed"),
            S::Approved if now >= self.valid_until => Some("grant_expired"),
            _ => None,
        };
        if let Some(code) = due {
            return if is_expire {
                self.moved(S::Expired)
            } else {
                self.persisted(code, S::Expired)
            };
        }
        let na = Expect::Refused("not_applicable", None);
        match *op {
            Op::Advance(_) => Expect::Same,
            Op::Vote {
                who,
                verdict,
                feedback,
            } => {
                let (name, groups) = POOL[who];
                let groups: BTreeSet<&'static str> = groups.iter().copied().collect();
                let (k, fb) = match verdict {
                    0..=3 => (K::Approve, None),
                    4 => (K::Reject, Some(feedback)),
                    5 => (K::Changes, Some(feedback)),
                    _ => return Expect::Refused("edit_not_ruled", None),
                };
                let repeat = self
                    .votes
                    .get(name)
                    .is_some_and(|v| v.kind == k && v.feedback == fb);
                if self.state != S::Pending {
                    return if repeat {
                        Expect::Same
                    } else {
                        Expect::Refused("not_pending", None)
                    };
                }
                let plan = self.plan.clone().expect("pending has a plan");
                if !Self::eligible(&plan, &groups) {
                    return Expect::Refused("not_eligible", None);
                }
                if k == K::Approve {
                    match self.principal {
                        Principal::Unresolved => {
                            return Expect::Refused("principal_unresolved", None)
                        }
                        Principal::Pat if name == "pat" => {
                            return Expect::Refused("self_approval", None)
                        }
                        _ => {}
                    }
                }
                if let Some(prior) = self.votes.get(name) {
                    match (prior.kind, k) {
                        (K::Approve, K::Approve) if now < prior.at + plan.ttl => {
                            return Expect::Same
                        }
                        (K::Approve, _) => {}
                        _ if repeat => return Expect::Same,
                        _ => return Expect::Refused("conflicting_vote", None),
                    }
                }
                self.votes.insert(
                    name,
                    MVote {
                        kind: k,
                        feedback: fb,
                        at: now,
                        groups,
                    },
                );
                if k != K::Approve {
                    return if plan.veto {
                        self.moved(S::Rejected)
                    } else {
                        self.moved(S::Pending)
                    };
                }
                match self.quorum(&plan, now) {
                    Some(valid_until) => {
                        self.valid_until = valid_until;
                        self.moved(S::Approved)
                    }
                    None => self.moved(S::Pending),
                }
            }
            Op::Edit {
                who,
                params,
                ruling,
            } => {
                let (name, groups) = POOL[who];
                let groups: BTreeSet<&'static str> = groups.iter().copied().collect();
                let repeat = self.editor == Some(name)
                    && self.edit_params == Some(params)
                    && self
                        .votes
                        .get(name)
                        .is_some_and(|v| v.kind == K::Approve && !self.lapsed(v.at, now));
                if self.state != S::Pending {
                    return if repeat {
                        Expect::Same
                    } else {
                        Expect::Refused("not_pending", None)
                    };
                }
                let plan = self.plan.clone().expect("pending has a plan");
                if !Self::eligible(&plan, &groups) {
                    return Expect::Refused("not_eligible", None);
                }
                match self.principal {
                    Principal::Unresolved => return Expect::Refused("principal_unresolved", None),
                    Principal::Pat if name == "pat" => {
                        return Expect::Refused("self_approval", None)
                    }
                    _ => {}
                }
                if self.votes.get(name).is_some_and(|v| v.kind != K::Approve) {
                    return Expect::Refused("conflicting_vote", None);
                }
                if repeat {
                    return Expect::Same;
                }
                if params >= 2 {
                    return Expect::Refused("edit_invalid", None);
                }
                let joined = match edit_rule(ruling) {
                    Rule::Deny => return Expect::Refused("edit_denied", None),
                    Rule::Allow(_) => plan,
                    Rule::Review(other) => Plan {
                        reqs: plan.reqs.union(&other.reqs).cloned().collect(),
                        ttl: plan.ttl.min(other.ttl),
                        deadline: plan.deadline.min(other.deadline),
                        veto: plan.veto || other.veto,
                    },
                };
                self.plan = Some(joined);
                self.editor = Some(name);
                self.edit_params = Some(params);
                self.votes = [(
                    name,
                    MVote {
                        kind: K::Approve,
                        feedback: None,
                        at: now,
                        groups,
                    },
                )]
                .into();
                self.moved(S::Pending)
            }
            Op::Cancel => match self.state {
                S::Pending | S::Approved => self.moved(S::Cancelled),
                _ => na,
            },
            Op::Expire => match self.state {
                S::Pending | S::Approved => Expect::Refused("not_due", None),
                _ => na,
            },
            Op::Begin {
                digest_ok,
                observed,
                current,
                lease_for,
            } => {
                if self.state != S::Approved {
                    return na;
                }
                if !digest_ok {
                    return self.persisted("digest_mismatch", S::Stale);
                }
                if observed != 0 {
                    return self.persisted("preconditions_changed", S::Stale);
                }
                let stricter = match current_rule(current, &self.opened) {
                    Rule::Deny => true,
                    Rule::Allow(_) => false,
                    Rule::Review(_) if self.by_policy => true,
                    Rule::Review(p) => self.vetoed(&p) || self.quorum(&p, now).is_none(),
                };
                if stricter {
                    return self.persisted("policy_stricter", S::Stale);
                }
                self.lease = Some(next_lease);
                self.lease_expires = now + lease_for;
                self.begins += 1;
                self.moved(S::Executing)
            }
            Op::Renew { right, extend } => {
                if self.state != S::Executing {
                    return na;
                }
                if !right {
                    return Expect::Refused("lease_mismatch", None);
                }
                if now >= self.lease_expires {
                    return Expect::Refused("lease_expired", None);
                }
                self.lease_expires = now + extend;
                self.moved(S::Executing)
            }
            Op::Finish { right, ok } => match self.state {
                S::Executing | S::Unknown if !right => Expect::Refused("lease_mismatch", None),
                S::Executing | S::Unknown => self.moved(if ok { S::Succeeded } else { S::Failed }),
                _ => na,
            },
            Op::LeaseLost { right } => {
                if self.state != S::Executing {
                    return na;
                }
                if !right {
                    return Expect::Refused("lease_mismatch", None);
                }
                if now < self.lease_expires {
                    return Expect::Refused("not_due", None);
                }
                self.moved(S::Unknown)
            }
            Op::Resolve { ok } => match self.state {
                S::Unknown => self.moved(if ok { S::Succeeded } else { S::Failed }),
                _ => na,
            },
            Op::Revoke => match self.state {
                S::Approved => self.moved(S::Cancelled),
                _ => na,
            },
        }
    }
}

// --- driving the real machine -------------------------------------------------------------

fn t(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

fn reviewer(who: usize) -> Reviewer {
    let (name, groups) = POOL[who];
    Reviewer {
        person: PersonId::new(name).unwrap(),
        groups: groups.iter().map(|g| GroupName::new(*g).unwrap()).collect(),
    }
}

fn lease_id(n: u128) -> LeaseId {
    LeaseId::from_uuid(Uuid::from_u128(n))
}

fn held_lease(ticket: &Ticket) -> Option<LeaseId> {
    match ticket.state() {
        TicketState::Executing { lease, .. } | TicketState::Unknown { lease, .. } => Some(*lease),
        _ => None,
    }
}

fn outcome(ok: bool) -> ExecutionOutcome {
    if ok {
        ExecutionOutcome::Succeeded {
            output: json!({ "dropped": true }),
        }
    } else {
        ExecutionOutcome::Failed {
            error: "timeout".into(),
        }
    }
}

fn to_event(op: &Op, ticket: &Ticket, opened: &Rule, now: i64, next_lease: u128) -> Option<Event> {
    let right_lease = held_lease(ticket).unwrap_or(lease_id(WRONG_LEASE + 1));
    let lease = |right: bool| {
        if right {
            right_lease
        } else {
            lease_id(WRONG_LEASE)
        }
    };
    Some(match *op {
        Op::Advance(_) => return None,
        Op::Vote {
            who,
            verdict,
            feedback,
        } => Event::Vote {
            reviewer: reviewer(who),
            verdict: match verdict {
                0..=3 => Verdict::Approve,
                4 => Verdict::Reject {
                    feedback: FEEDBACK[feedback].into(),
                },
                5 => Verdict::RequestChanges {
                    feedback: FEEDBACK[feedback].into(),
                },
                _ => Verdict::ApproveWithEdits {
                    parameters: edit_params(0),
                },
            },
        },
        Op::Edit {
            who,
            params,
            ruling,
        } => Event::Edit {
            reviewer: reviewer(who),
            parameters: edit_params(params),
            ruling: to_ruling(&edit_rule(ruling)),
        },
        Op::Cancel => Event::Cancel {
            by: Actor::Agent(AgentId::new("agent").unwrap()),
            reason: "no longer needed".into(),
        },
        Op::Expire => Event::Expire,
        Op::Begin {
            digest_ok,
            observed,
            current,
            lease_for,
        } => Event::Begin {
            digest: if digest_ok {
                ticket.action_digest()
            } else {
                ActionDigest::from_bytes([0xee; 32])
            },
            observed: match observed {
                0 => [("rows".to_owned(), json!(10))].into(),
                1 => [("rows".to_owned(), json!(11))].into(),
                _ => BTreeMap::new(),
            },
            current: to_ruling(&current_rule(current, opened)),
            lease: lease_id(next_lease),
            lease_expires: t(now + lease_for),
        },
        Op::Renew { right, extend } => Event::Renew {
            lease: lease(right),
            lease_expires: t(now + extend),
        },
        Op::Finish { right, ok } => Event::Finish {
            lease: lease(right),
            outcome: outcome(ok),
        },
        Op::LeaseLost { right } => Event::LeaseLost {
            lease: lease(right),
        },
        Op::Resolve { ok } => Event::Resolve {
            operator: PersonId::new("olga").unwrap(),
            outcome: outcome(ok),
        },
        Op::Revoke => Event::Revoke {
            operator: PersonId::new("olga").unwrap(),
            reason: "incident".into(),
        },
    })
}

fn open_ticket(rule: &Rule, principal: Principal) -> Ticket {
    let request = ActionRequest::builder("db.table.drop", "drop-orders-0001")
        .target("postgres://prod/orders")
        .parameters(json!({ "table": "orders" }))
        .precondition("rows", json!(10))
        .build()
        .unwrap();
    let pat = PersonId::new("pat").unwrap();
    let (named, check) = match principal {
        Principal::None => (None, PrincipalCheck::NoPrincipal),
        Principal::Pat => (Some(pat.clone()), PrincipalCheck::Person(pat)),
        Principal::Unresolved => (Some(pat), PrincipalCheck::Unresolved),
    };
    open(
        TicketId::from_uuid(Uuid::from_u128(7)),
        Requester::new(AgentId::new("agent").unwrap(), named),
        check,
        request,
        to_ruling(rule),
        t(0),
    )
    .ticket
}

/// Approved by reviewers ⇒ every requirement met by distinct, non-self, non-lapsed approvers,
/// and at least one approver other than the editor. Checked from the ticket's raw data.
fn check_reviewed_approval(ticket: &Ticket, now: i64) -> Result<(), TestCaseError> {
    let TicketState::Approved(approval) = ticket.state() else {
        return Ok(());
    };
    let ApprovedBy::Reviewers(approvers) = &approval.by else {
        return Ok(());
    };
    let plan = ticket.plan().expect("reviewed tickets have a plan");
    let principal = match ticket.principal() {
        PrincipalCheck::Person(p) => Some(p),
        PrincipalCheck::NoPrincipal => None,
        PrincipalCheck::Unresolved => {
            return Err(TestCaseError::fail("approved with an unresolved principal"))
        }
    };
    let ttl = i64::try_from(plan.approval_ttl.as_millis()).unwrap();
    let counting: Vec<_> = ticket
        .votes()
        .iter()
        .filter(|v| v.kind == VoteKind::Approve)
        .filter(|v| now < v.at.as_unix_millis() + ttl)
        .filter(|v| Some(&v.person) != principal)
        .collect();
    let persons: BTreeSet<_> = counting.iter().map(|v| &v.person).collect();
    prop_assert_eq!(persons.len(), counting.len(), "one vote per person");
    for requirement in &plan.requirements {
        let met = counting
            .iter()
            .filter(|v| !v.groups.is_disjoint(&requirement.groups))
            .count();
        prop_assert!(met as u32 >= requirement.approvals, "{} unmet", requirement);
    }
    for a in approvers {
        prop_assert!(persons.contains(a), "approver {} does not count", a);
    }
    if let Some(edit) = ticket.edit() {
        prop_assert!(
            persons.iter().any(|p| **p != edit.editor),
            "only the editor approved"
        );
        prop_assert_eq!(approval.digest, edit.digest);
    }
    Ok(())
}

fn run(rule: Rule, principal: Principal, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut ticket = open_ticket(&rule, principal);
    let mut model = Model::open(&rule, principal);
    prop_assert_eq!(ticket.state().name(), model.state);
    prop_assert_eq!(ticket.version(), 1);
    let mut now = 0i64;
    let mut next_lease = 1_000u128;
    let mut executions = 0u32;
    for (i, op) in ops.iter().enumerate() {
        if let Op::Advance(dt) = op {
            now += dt;
            continue;
        }
        next_lease += 1;
        let before = ticket.clone();
        let event = to_event(op, &ticket, &rule, now, next_lease).expect("not an advance");
        let expected = model.step(op, now, next_lease);
        let got = match apply(&ticket, event, t(now)) {
            Ok(tr) if tr.is_noop() => {
                prop_assert_eq!(
                    &tr.ticket,
                    &before,
                    "step {}: a no-op returns the ticket",
                    i
                );
                Expect::Same
            }
            Ok(tr) => {
                prop_assert!(tr.audit.iter().all(|r| r.kind != kind::REFUSED));
                ticket = tr.ticket;
                Expect::Moved(ticket.state().name())
            }
            Err(refused) => {
                prop_assert_eq!(
                    refused.audit.last().map(|r| r.kind.as_str()),
                    Some(kind::REFUSED)
                );
                let persisted = refused.ticket.map(|next| {
                    ticket = next;
                    ticket.state().name()
                });
                Expect::Refused(refused.refusal.code().as_str(), persisted)
            }
        };
        prop_assert_eq!(
            &got,
            &expected,
            "step {} {:?} at {} from {:?}",
            i,
            op,
            now,
            before.state().name()
        );
        prop_assert_eq!(ticket.state().name(), model.state, "step {}", i);

        // version +1 exactly when the ticket changed
        let changed = ticket != before;
        let expected_version = before.version() + u64::from(changed);
        prop_assert_eq!(ticket.version(), expected_version, "step {}", i);
        prop_assert_eq!(ticket.version(), model.version, "step {}", i);

        // terminal states never change; unknown only to an outcome
        let from = before.state().name();
        if from.is_terminal() && from != StateName::Unknown {
            prop_assert_eq!(&ticket, &before, "step {}: terminal {} changed", i, from);
        }
        if from == StateName::Unknown && changed {
            prop_assert!(matches!(
                ticket.state().name(),
                StateName::Succeeded | StateName::Failed
            ));
        }

        // at most one execution per ticket
        if from != StateName::Executing && ticket.state().name() == StateName::Executing {
            executions += 1;
        }
        prop_assert!(executions <= 1, "step {}: a second permit", i);
        prop_assert_eq!(executions, model.begins);

        check_reviewed_approval(&ticket, now)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn machine_agrees_with_the_reference_model(
        (rule, principal) in opening(),
        ops in proptest::collection::vec(op(), 1..64),
    ) {
        run(rule, principal, ops)?;
    }
}

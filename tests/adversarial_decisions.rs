//! Adversarial decisions: a seeded generator throws bad decisions at every entry point a
//! reviewer's decision can come through — [`Handoff::decide`] (credentials),
//! [`Handoff::decide_with_token`] (signed links) and, with feature `feishu`,
//! `Handoff::handle_feishu_callback` — interleaved with legitimate decisions as controls.
//!
//! Kinds of attempt, each thrown at each entry point where it means something:
//!
//! | kind | credential | token | Feishu |
//! |---|---|---|---|
//! | forged | unknown bearer token or platform user | random, truncated, bit-flipped (payload, signature), re-signed with a wrong key or an unknown key id; a genuine link with a forged credential | random or wrong-key signature, body edited after signing, headers missing, unsigned; a signed callback carrying a forged token or none |
//! | replayed | (a repeated vote is accepted once, by design) | a spent token used again | the same callback delivered twice (its event id was consumed with the token); a spent token in a new callback |
//! | expired | ticket past its review deadline | link past its expiry; issued in the future | timestamp outside the window; an expired button; a replay older than the window |
//! | wrong reviewer | a person in no reviewing group | a link minted for Alice used with Bob's credential | an unknown `open_id`; Alice's button pressed by Bob |
//! | wrong group | a reviewer of another group | a group link used by someone outside the required groups | the same by button |
//! | self-approval | the requester's principal (host alias or direct id, either of two credentials), approving or editing | a group link or a link bound to the principal | the principal's `open_id` |
//! | stale version | `expected_version` before an edit, or from the future | a link minted before an edit | a button minted before an edit |
//! | wrong digest | — | a genuinely signed token bound to another ticket's digest, another digest key or random bytes | the same by button |
//! | wrong ticket | an unknown ticket | a token for an unknown ticket; a token for A with its ticket bytes replaced by B's | the same by button |
//! | flood | 5–30 ineligible votes in a row by one person | the same by group links; one link bound to Alice pressed again and again by another | the same by button; a stranger's burst of clicks |
//!
//! After every attempt: the outcome is the typed refusal expected for its kind (the variant and
//! its fields, or for Feishu the status and the reviewer's toast); no ticket changed (the
//! stored ticket is the one read before, except that a review deadline already passed may be
//! persisted as the expiry it already was) and no accepted decision row was added; the
//! audit rows the attempt wrote are exactly the ones expected — one `refused` row of the
//! authenticated reviewer, or, for unauthenticated refusals, the row or nothing as the
//! coalescing budget ([`Limits::unauthenticated_audit_per_minute`]) says, with the summary row
//! (`coalesced: n`) where it is due; for the refusals of people who have no say on the ticket
//! (`not_eligible`; `wrong_reviewer`, per link) one row per key and minute, the others only
//! counted (`Limits`' "Coalesced refusals"); and the nonces it consumed are exactly those of a
//! token use recorded from step 4 on (two through Feishu: the token's and the event id, in
//! one write) — none before anyone is authenticated (a stranger's clicks write no nonce), none
//! for a link used by someone it was not issued to (which its reviewer then uses: a forwarded
//! link cannot burn another's vote), a replay or a coalesced refusal. After each batch, the audit trail is reconciled with the
//! attempts independently of that attribution: the unauthenticated rows written one by one
//! plus the counts of the summary rows equal the unauthenticated attempts, and the refused
//! rows of authenticated reviewers equal the other attempts code by code and person by
//! person; every ticket's votes and accepted decision rows are exactly the controls'.
//!
//! Controls (legitimate decisions by eligible reviewers through the same three entry points)
//! must be accepted, so the gate is shown not to be simply shut; links refused for a forged
//! credential, or to someone they were not issued to, are later used by their rightful holder
//! (neither refusal spends anything).
//!
//! # Running
//!
//! CI size (about 2 000 adversarial attempts):
//!
//! ```text
//! cargo test --all-features --test adversarial_decisions
//! ```
//!
//! Big run (≥ 100 000 attempts), with the summary printed:
//!
//! ```text
//! ADVERSARIAL_CASES=100000 cargo test --release --all-features --test adversarial_decisions -- --nocapture
//! ```
//!
//! `ADVERSARIAL_SEED=<u64>` replays a run (a failure prints its seed);
//! `ADVERSARIAL_FLOOD_LIMIT=<n>` sets the coalescing budget per minute (default 8).

mod rng;
mod support;
use rng::Rng;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_handoff::action::{ActionRequest, DigestKey, KeyedDigest};
use agent_handoff::audit::{Actor, AuditEvent};
use agent_handoff::backend::DecisionRow;
use agent_handoff::ticket::{Refusal, StateName, Ticket, TicketState, Verdict, VoteKind};
use agent_handoff::token::{
    MalformedToken, TokenClaims, TokenError, TokenKey, TokenKeyRing, TokenNonce, VerdictKind,
};
use agent_handoff::{
    AgentHandle, Clock, Credential, DecideError, Decided, Handoff, Limits, LinkError, ManualClock,
    PersonId, Proposal, SqliteOptions, SqliteStore, Store, TicketId, Timestamp, TokenSubmission,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::json;
#[cfg(feature = "feishu")]
use serde_json::Value;
use support::*;

#[cfg(feature = "feishu")]
use agent_handoff::notify::feishu::{
    EncryptKey, FeishuCallbackVerifier, FeishuResponse, DECISION_TOKEN_KEY, HEADER_NONCE,
    HEADER_SIGNATURE, HEADER_TIMESTAMP,
};

// ---------------------------------------------------------------------------------------------
// Sizes and seeds.

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be an unsigned integer, got `{v}`")),
        Err(_) => default,
    }
}

/// Adversarial attempts per batch (the flood budget is flushed and the trail reconciled after
/// each batch).
const BATCH: u64 = 250;

/// One control in about this many attempts.
const CONTROL_EVERY: u64 = 10;

// ---------------------------------------------------------------------------------------------
// The people and the deployment.

/// Reviewers of the ticket kinds below, and the two people in no reviewing group.
const DBAS: &[&str] = &["alice", "bob", "carol"];
const OUTSIDERS: &[&str] = &["erin", "olga"];
/// Every person of the directory (`pat` is the principal every agent here acts for).
const EVERYONE: &[&str] = &["alice", "bob", "carol", "dave", "erin", "olga", "pat"];
/// People with a Feishu `open_id` (`ou_<name>`); `olga` has none.
#[cfg(feature = "feishu")]
const ON_FEISHU: &[&str] = &["alice", "bob", "carol", "dave", "erin", "pat"];

fn groups_of(p: &str) -> &'static [&'static str] {
    PEOPLE
        .iter()
        .find(|(name, _)| *name == p)
        .map(|(_, g)| *g)
        .unwrap_or_else(|| panic!("unknown person {p}"))
}

/// The groups a ticket kind's requirements name.
fn required(kind: &str) -> &'static [&'static str] {
    match kind {
        "db.update" | "db.drop" | "db.vacuum" => &["dba"],
        "db.migrate" => &["dba", "finance"],
        "invoice.pay" => &["finance"],
        other => panic!("no such kind {other}"),
    }
}

fn eligible(p: &str, kind: &str) -> bool {
    groups_of(p).iter().any(|g| required(kind).contains(g))
}

/// The tickets of each batch: kind, edited by a reviewer before the attacks.
const PLAN: &[(&str, bool)] = &[
    ("db.update", false),
    ("db.update", false),
    ("db.update", true),
    ("db.drop", false),
    ("db.drop", false),
    ("db.drop", true),
    ("db.migrate", false),
    ("db.migrate", true),
    ("invoice.pay", false),
    ("invoice.pay", true),
    // Expiring: their review deadline passes before the attacks start.
    ("db.vacuum", false),
    ("db.vacuum", false),
    ("db.vacuum", false),
];

/// Review deadline of `db.vacuum`.
const SHORT_DEADLINE: Duration = Duration::from_secs(10 * 60);

/// How long a decision link lasts (support's `decision_links`).
const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

#[cfg(feature = "feishu")]
const VERIFICATION_TOKEN: &str = "v-token";
#[cfg(feature = "feishu")]
const ENCRYPT_KEY: &str = "adversarial-encrypt-key";
#[cfg(feature = "feishu")]
const TOLERANCE_SECS: i64 = 300;

/// What a Feishu reviewer is told (the entry point's typed refusal).
#[cfg(feature = "feishu")]
mod toast {
    pub const NO_TOKEN: &str = "This button does not carry a decision.";
    pub const UNKNOWN: &str = "You are not a reviewer known to this approval system.";
    pub const WRONG_REVIEWER: &str = "This card was sent to another reviewer.";
    pub const REPLAYED: &str = "You already used this button.";
    pub const EXPIRED: &str = "This decision button has expired.";
    pub const DIGEST: &str =
        "The action changed since this card was sent; review the current version.";
    pub const NOT_ELIGIBLE: &str = "You are not among the reviewers this request needs.";
    pub const SELF: &str = "You may not approve a request made on your behalf.";
    pub const INVALID: &str = "This decision button is not valid.";
}

#[cfg(feature = "feishu")]
struct FeishuSide {
    verifier: FeishuCallbackVerifier,
    key: EncryptKey,
    wrong_key: EncryptKey,
}

struct Env {
    handoff: Handoff,
    clock: ManualClock,
    store: Arc<dyn Store>,
    creds: BTreeMap<&'static str, Credential>,
    /// A second API token of the principal (one human, two credentials).
    pat_second: Credential,
    /// The deployment's token keys, to sign genuine tokens the way an aged or misbound link
    /// would be (expired, issued in the future, for another digest or an unknown ticket).
    ring: TokenKeyRing,
    digest_key: DigestKey,
    alias_agent: AgentHandle,
    direct_agent: AgentHandle,
    /// Genuine credentials of the signed chat channel for people the directory does not know
    /// on it: a stranger, and alice (known on Feishu only).
    chat_unmapped: [Credential; 2],
    #[cfg(feature = "feishu")]
    feishu: FeishuSide,
}

/// The key of the test's signed chat channel.
const CHAT_KEY: &[u8] = b"chat-channel-signing-key-0123456789";

/// `x-chat-signature` for `user`: HMAC-SHA256 of the user id under `key`, in hex.
fn chat_signature(key: &[u8], user: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(user.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A chat channel that signs the user id of every request (`x-chat-user`,
/// `x-chat-signature`): the integrator's verifier, registered as the trust step.
#[derive(Debug)]
struct SignedChat;

#[async_trait::async_trait]
impl agent_handoff::PlatformVerifier for SignedChat {
    fn platform(&self) -> &str {
        "chat"
    }

    async fn verify(
        &self,
        request: &agent_handoff::backend::PlatformRequest<'_>,
    ) -> Result<String, agent_handoff::IdentityError> {
        let user = request.header("x-chat-user");
        let signature = request.header("x-chat-signature");
        match (user, signature) {
            (Some(user), Some(signature)) if chat_signature(CHAT_KEY, user) == signature => {
                Ok(user.to_owned())
            }
            _ => Err(agent_handoff::IdentityError::Unknown),
        }
    }
}

fn chat_headers(user: &str, signature: &str) -> Vec<(String, String)> {
    vec![
        ("x-chat-user".into(), user.into()),
        ("x-chat-signature".into(), signature.into()),
    ]
}

impl Env {
    async fn new(flood_limit: u32) -> Self {
        let clock = ManualClock::new(Timestamp::from_unix_millis(START));
        let shared: Arc<dyn Clock> = Arc::new(clock.clone());
        let sqlite =
            SqliteStore::in_memory_with(SqliteOptions::new().with_clock(Arc::clone(&shared)))
                .await
                .unwrap();
        let store: Arc<dyn Store> = Arc::new(sqlite);
        let (mut dir, creds) = directory();
        let pat_second = Credential::token(dir.issue_token("pat").unwrap().expose());
        for p in ["alice", "bob", "carol", "dave", "erin"] {
            dir.add_platform_user("feishu", &format!("ou_{p}"), p)
                .unwrap();
        }
        let policy = standard_policy().with(
            "db.vacuum",
            review(&[req("dba", 1)], SHORT_DEADLINE, 30 * MIN),
        );
        let handoff = Handoff::builder()
            .shared_store(Arc::clone(&store))
            .policy(policy)
            .identity(dir)
            .shared_clock(shared)
            .limits(Limits {
                unauthenticated_audit_per_minute: flood_limit,
                proposals_per_minute: 0,
                ..Limits::default()
            })
            .checkpoint_key("test.example/audit", checkpoint_key())
            .decision_links(decision_links())
            .digest_key(digest_key())
            .platform_verifier(SignedChat)
            .build()
            .unwrap();
        assert_eq!(decision_links().token_ttl, TOKEN_TTL);
        let mut chat_unmapped = Vec::new();
        for user in ["ou_stranger", "ou_alice"] {
            let headers = chat_headers(user, &chat_signature(CHAT_KEY, user));
            chat_unmapped.push(
                handoff
                    .platform_credential("chat", &headers, b"{}")
                    .await
                    .unwrap(),
            );
        }
        let chat_unmapped: [Credential; 2] = chat_unmapped.try_into().unwrap();
        let alias_agent = handoff.agent(agent_id("agent-alias"), Some(person("pat@example.com")));
        let direct_agent = handoff.agent(agent_id("agent-direct"), Some(person("pat")));
        #[cfg(feature = "feishu")]
        let feishu = {
            let key = EncryptKey::new(ENCRYPT_KEY).unwrap();
            FeishuSide {
                verifier: FeishuCallbackVerifier::new(VERIFICATION_TOKEN, key.clone()).unwrap(),
                key,
                wrong_key: EncryptKey::new("not-the-encrypt-key").unwrap(),
            }
        };
        Self {
            handoff,
            clock,
            store,
            creds,
            pat_second,
            ring: token_ring(),
            digest_key: digest_key(),
            alias_agent,
            direct_agent,
            chat_unmapped,
            #[cfg(feature = "feishu")]
            feishu,
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn cred(&self, p: &str) -> Credential {
        self.creds[p].clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Attempts and what is expected of them.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Entry {
    Credential,
    Token,
    #[cfg(feature = "feishu")]
    Feishu,
}

impl Entry {
    /// The people who can present a decision through this entry (Feishu needs an `open_id`).
    fn people(self) -> &'static [&'static str] {
        match self {
            #[cfg(feature = "feishu")]
            Entry::Feishu => ON_FEISHU,
            _ => EVERYONE,
        }
    }
}

const ENTRIES: &[Entry] = &[
    Entry::Credential,
    Entry::Token,
    #[cfg(feature = "feishu")]
    Entry::Feishu,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Forged,
    Replayed,
    Expired,
    WrongReviewer,
    WrongGroup,
    SelfApproval,
    StaleVersion,
    WrongDigest,
    WrongTicket,
    /// A burst of attempts by one person who has no say: ineligible votes, a link bound to
    /// someone else pressed again and again, a stranger's clicks.
    Flood,
}

const KINDS: &[Kind] = &[
    Kind::Forged,
    Kind::Replayed,
    Kind::Expired,
    Kind::WrongReviewer,
    Kind::WrongGroup,
    Kind::SelfApproval,
    Kind::StaleVersion,
    Kind::WrongDigest,
    Kind::WrongTicket,
    Kind::Flood,
];

/// Whether a kind means something at an entry point (see the table in the module docs).
fn applies(entry: Entry, kind: Kind) -> bool {
    !matches!(
        (entry, kind),
        (Entry::Credential, Kind::Replayed | Kind::WrongDigest)
    )
}

/// A decision link as minted (or signed) for the tests.
#[derive(Debug, Clone)]
struct Link {
    token: String,
    ticket: TicketId,
    bound: Option<&'static str>,
    verdict: VerdictKind,
    expires_at: Timestamp,
}

enum Op {
    Decide {
        ticket: TicketId,
        cred: Credential,
        verdict: Verdict,
        expected_version: Option<u64>,
    },
    Token {
        token: String,
        cred: Credential,
    },
    #[cfg(feature = "feishu")]
    Feishu {
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Decide {
                ticket,
                verdict,
                expected_version,
                ..
            } => write!(
                f,
                "decide({ticket}, {verdict:?}, expected_version {expected_version:?})"
            ),
            Op::Token { token, .. } => write!(f, "decide_with_token({token:?})"),
            #[cfg(feature = "feishu")]
            Op::Feishu { headers, body } => write!(
                f,
                "feishu callback {:?} {}",
                headers,
                String::from_utf8_lossy(body)
            ),
        }
    }
}

/// The typed refusal an attempt must get.
#[derive(Debug, Clone)]
enum Want {
    DecideUnauthenticated,
    DecideNotFound(TicketId),
    DecideStale {
        expected: u64,
        current: u64,
    },
    DecideRefused(Refusal),
    Link(WantLink),
    #[cfg(feature = "feishu")]
    Feishu401,
    #[cfg(feature = "feishu")]
    FeishuToast(&'static str),
    /// A control: accepted, with this vote recorded.
    Accepted {
        person: &'static str,
        vote: VoteKind,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum WantLink {
    Malformed(MalformedToken),
    UnknownKey(String),
    BadSignature,
    Expired(Timestamp),
    NotYetValid(Timestamp),
    Unauthenticated,
    WrongReviewer {
        bound: PersonId,
        presented: PersonId,
    },
    DigestChanged,
    Replayed,
    NotFound(TicketId),
    Refused(Refusal),
}

/// Where the refusal must be audited.
#[derive(Debug, Clone)]
enum Aud {
    /// Before any credential was verified (or the credential itself was refused): coalesced
    /// under the flood budget.
    Unauth {
        code: &'static str,
        ticket: Option<TicketId>,
    },
    /// A refusal of an authenticated reviewer: one row, and a decision row when the ticket
    /// exists.
    Auth {
        code: &'static str,
        person: &'static str,
        ticket: TicketId,
        decision_row: bool,
        /// The ticket's review deadline had passed and is persisted with the refusal.
        lazy_expiry: bool,
        /// Whether a recorded attempt consumes nonces (a token used from step 4 on).
        spends: bool,
        /// For refusals coalesced per key (`not_eligible`, `wrong_reviewer`): the link, for
        /// a key per link.
        coalesced: Option<Option<String>>,
    },
    /// A control: no refusal.
    None,
}

struct Attempt {
    entry: Entry,
    /// `None` for a control.
    kind: Option<Kind>,
    how: &'static str,
    op: Op,
    want: Want,
    aud: Aud,
    /// Tickets that must not change (for a control: the ticket decided).
    targets: Vec<TicketId>,
    /// The link use this attempt spends (recorded for later replays), if it gets the expected
    /// outcome.
    spends: Option<(Link, &'static str)>,
    /// A link this attempt leaves unspent (a refused credential), for a later control.
    unspent: Option<Link>,
}

enum Got {
    Decide(Result<Ticket, DecideError>),
    Link(Result<Ticket, LinkError>),
    #[cfg(feature = "feishu")]
    Feishu(FeishuResponse),
}

impl fmt::Debug for Got {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Got::Decide(Ok(t)) | Got::Link(Ok(t)) => {
                write!(f, "Ok(ticket {} {:?})", t.id(), t.state().name())
            }
            Got::Decide(Err(e)) => write!(f, "Err({e:?})"),
            Got::Link(Err(e)) => write!(f, "Err({e:?})"),
            #[cfg(feature = "feishu")]
            Got::Feishu(r) => write!(f, "{} {}", r.status, r.body),
        }
    }
}

impl Got {
    /// Whether the entry point answered as for an accepted decision.
    fn accepted(&self) -> bool {
        match self {
            Got::Decide(r) => r.is_ok(),
            Got::Link(r) => r.is_ok(),
            #[cfg(feature = "feishu")]
            Got::Feishu(r) => {
                let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
                body["toast"]["type"] == "success"
            }
        }
    }
}

impl Want {
    fn matches(&self, got: &Got) -> bool {
        match (self, got) {
            (Want::DecideUnauthenticated, Got::Decide(Err(DecideError::Unauthenticated(_)))) => {
                true
            }
            (Want::DecideNotFound(a), Got::Decide(Err(DecideError::NotFound(b)))) => a == b,
            (
                Want::DecideStale { expected, current },
                Got::Decide(Err(DecideError::StaleVersion {
                    expected: e,
                    current: c,
                })),
            ) => expected == e && current == c,
            (Want::DecideRefused(want), Got::Decide(Err(DecideError::Refused(got)))) => want == got,
            (Want::Link(want), Got::Link(Err(got))) => want.matches(got),
            #[cfg(feature = "feishu")]
            (Want::Feishu401, Got::Feishu(r)) => r.status == 401 && r.body.is_empty(),
            #[cfg(feature = "feishu")]
            (Want::FeishuToast(text), Got::Feishu(r)) => {
                let body: Value = match serde_json::from_str(&r.body) {
                    Ok(v) => v,
                    Err(_) => return false,
                };
                r.status == 200
                    && body["toast"]["type"] == "error"
                    && body["toast"]["content"] == *text
            }
            (Want::Accepted { .. }, Got::Decide(Ok(_)) | Got::Link(Ok(_))) => true,
            #[cfg(feature = "feishu")]
            (Want::Accepted { .. }, Got::Feishu(r)) => {
                let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
                r.status == 200 && body["toast"]["type"] == "success"
            }
            _ => false,
        }
    }
}

impl WantLink {
    fn matches(&self, got: &LinkError) -> bool {
        match (self, got) {
            (WantLink::Malformed(a), LinkError::Malformed(b)) => a == b,
            (WantLink::UnknownKey(a), LinkError::UnknownKey { key_id }) => a == key_id,
            (WantLink::BadSignature, LinkError::BadSignature) => true,
            (WantLink::Expired(a), LinkError::Expired { expires_at }) => a == expires_at,
            (WantLink::NotYetValid(a), LinkError::NotYetValid { issued_at }) => a == issued_at,
            (WantLink::Unauthenticated, LinkError::Unauthenticated(_)) => true,
            (
                WantLink::WrongReviewer { bound, presented },
                LinkError::WrongReviewer {
                    bound: b,
                    presented: p,
                },
            ) => bound == b && presented == p,
            (WantLink::DigestChanged, LinkError::DigestChanged) => true,
            (WantLink::Replayed, LinkError::Replayed) => true,
            (WantLink::NotFound(a), LinkError::NotFound(b)) => a == b,
            (WantLink::Refused(a), LinkError::Refused(b)) => a == b,
            _ => false,
        }
    }
}

/// What the token oracle (the deployment's key ring, opened at the same instant) says about a
/// token refused before any credential: the expected refusal and its audit code.
fn refused_token(e: TokenError) -> (WantLink, &'static str) {
    match e {
        TokenError::Malformed(m) => (WantLink::Malformed(m), "token_malformed"),
        TokenError::UnknownKey { key_id } => (WantLink::UnknownKey(key_id), "token_unknown_key"),
        TokenError::BadSignature => (WantLink::BadSignature, "token_bad_signature"),
        TokenError::Expired { expires_at } => (WantLink::Expired(expires_at), "token_expired"),
        TokenError::NotYetValid { issued_at } => {
            (WantLink::NotYetValid(issued_at), "token_not_yet_valid")
        }
        other => panic!("not a refusal before the credential: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The audit rows expected.

/// An audit row, reduced to what is checked.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    kind: String,
    refusal: Option<String>,
    actor: Actor,
    ticket: Option<TicketId>,
    coalesced: Option<u64>,
}

impl Row {
    fn of(event: &AuditEvent) -> Self {
        let r = event.record();
        Self {
            kind: r.kind.clone(),
            refusal: r.data["refusal"].as_str().map(str::to_owned),
            actor: r.actor.clone(),
            ticket: r.ticket,
            coalesced: r.data["detail"]["coalesced"].as_u64(),
        }
    }

    fn refused(code: &str, actor: Actor, ticket: Option<TicketId>) -> Self {
        Self {
            kind: "refused".into(),
            refusal: Some(code.into()),
            actor,
            ticket,
            coalesced: None,
        }
    }
}

/// The coalescing of unauthenticated refusals, as `Limits::unauthenticated_audit_per_minute`
/// documents it: one row each up to the budget per one-minute window (the window opens at the
/// first refusal after the previous one is over); beyond it counted, and the count written as
/// one summary row just before the next row that is written, or by the expiry sweep once the
/// window is over.
struct FloodModel {
    limit: u32,
    window_start: Option<Timestamp>,
    written: u32,
    suppressed: u64,
}

impl FloodModel {
    /// The rows one more unauthenticated refusal at `now` writes.
    fn refuse(&mut self, now: Timestamp, row: Row) -> Vec<Row> {
        if self.limit == 0 {
            return vec![row];
        }
        if self
            .window_start
            .is_none_or(|s| now >= s.saturating_add(Duration::from_secs(60)))
        {
            self.window_start = Some(now);
            self.written = 0;
        }
        if self.written >= self.limit {
            self.suppressed += 1;
            return Vec::new();
        }
        self.written += 1;
        let mut rows = Vec::new();
        if self.suppressed > 0 {
            rows.push(Row {
                kind: "refused".into(),
                refusal: Some("unauthenticated".into()),
                actor: Actor::Unauthenticated,
                ticket: None,
                coalesced: Some(std::mem::take(&mut self.suppressed)),
            });
        }
        rows.push(row);
        rows
    }

    /// The summary row the expiry sweep writes at `now`: the count held, once its window is
    /// over.
    fn sweep(&mut self, now: Timestamp) -> Option<Row> {
        let over = self
            .window_start
            .is_none_or(|s| now >= s.saturating_add(Duration::from_secs(60)));
        if self.suppressed == 0 || !over {
            return None;
        }
        Some(Row {
            kind: "refused".into(),
            refusal: Some("unauthenticated".into()),
            actor: Actor::Unauthenticated,
            ticket: None,
            coalesced: Some(std::mem::take(&mut self.suppressed)),
        })
    }
}

/// The coalescing of refusals of people who have no say on a ticket (`Limits`' "Coalesced
/// refusals"): per key — (ticket, person, `not_eligible`), or (ticket, person,
/// `wrong_reviewer`, link) — one attempt per one-minute window is recorded (its audit row and
/// decision row, and its token spent), the others counted and written as one summary row of
/// that person with the next recorded attempt under the key after the window, or by the
/// expiry sweep once the window is over.
#[derive(Default)]
struct AuthFloodModel {
    /// Per key, the window's start and the attempts counted in it.
    windows: BTreeMap<AuthKey, (Timestamp, u64)>,
}

/// Ticket, person, refusal code and, for a key per link, the link.
type AuthKey = (TicketId, &'static str, &'static str, Option<String>);

impl AuthFloodModel {
    /// The rows one more attempt under the key at `now` writes: `None` if it is only counted,
    /// else the summary due before its own row (if any).
    fn admit(
        &mut self,
        now: Timestamp,
        ticket: TicketId,
        person: &'static str,
        code: &'static str,
        token: Option<String>,
    ) -> Option<Option<Row>> {
        let key = (ticket, person, code, token);
        match self.windows.get_mut(&key) {
            Some((start, counted)) if now < start.saturating_add(Duration::from_secs(60)) => {
                *counted += 1;
                None
            }
            Some((start, counted)) => {
                *start = now;
                let n = std::mem::take(counted);
                Some((n > 0).then(|| Self::summary(&key, n)))
            }
            None => {
                self.windows.insert(key, (now, 0));
                Some(None)
            }
        }
    }

    fn summary(key: &AuthKey, n: u64) -> Row {
        Row {
            kind: "refused".into(),
            refusal: Some(key.2.into()),
            actor: Actor::Reviewer(person(key.1)),
            ticket: Some(key.0),
            coalesced: Some(n),
        }
    }

    /// The summary rows the expiry sweep writes at `now`; windows over are forgotten.
    fn sweep(&mut self, now: Timestamp) -> Vec<Row> {
        let mut rows = Vec::new();
        self.windows.retain(|key, (start, counted)| {
            if now < start.saturating_add(Duration::from_secs(60)) {
                return true;
            }
            if *counted > 0 {
                rows.push(Self::summary(key, *counted));
            }
            false
        });
        rows
    }
}

/// Rows in a canonical order, to compare sets of rows whose order is not specified.
fn sorted(rows: &[Row]) -> Vec<String> {
    let mut out: Vec<String> = rows.iter().map(|r| format!("{r:?}")).collect();
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// One batch: its tickets, links and the model of what controls did.

struct Tk {
    id: TicketId,
    kind: &'static str,
    expiring: bool,
}

#[cfg(feature = "feishu")]
struct Delivered {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    ts: i64,
    /// Who spent the button's token with it, on which ticket (the callback's event id was
    /// consumed with it), if it spent one.
    spent_by: Option<(&'static str, TicketId, String)>,
}

#[derive(Default)]
struct Batch {
    tickets: Vec<Tk>,
    cache: BTreeMap<TicketId, Ticket>,
    /// Links minted before the clock moved past their expiry.
    early: Vec<Link>,
    /// Links minted before a reviewer edited the action, with who has spent them.
    pre_edit: Vec<(Link, BTreeSet<&'static str>)>,
    /// Tokens whose digest is not their ticket's action (minted before an edit, or signed
    /// for another digest).
    stale_digest: BTreeSet<String>,
    /// Links refused for a forged credential: unspent, for a control by their holder.
    unspent: Vec<Link>,
    /// Link uses spent: the link and who spent it.
    spent: Vec<(Link, &'static str)>,
    #[cfg(feature = "feishu")]
    delivered: Vec<Delivered>,
    /// The votes controls (and the setup's edits) recorded, per ticket.
    votes: BTreeMap<TicketId, Vec<(PersonId, VoteKind)>>,
    /// Accepted decision rows per ticket.
    accepted_rows: BTreeMap<TicketId, usize>,
    /// Audit head before the batch.
    head0: u64,
    unauth_attempts: u64,
    auth_refusals: BTreeMap<(String, String), u64>,
}

impl Batch {
    fn tk(&self, id: TicketId) -> &Tk {
        self.tickets.iter().find(|t| t.id == id).unwrap()
    }

    fn pending_at(&self, id: TicketId, now: Timestamp) -> bool {
        matches!(self.cache[&id].state_at(now), TicketState::Pending)
    }

    fn has_vote(&self, id: TicketId, p: &str) -> bool {
        self.cache[&id]
            .votes()
            .iter()
            .any(|v| v.person.as_str() == p)
    }

    /// Tickets pending now that satisfy `pred`.
    fn pending(&self, now: Timestamp, pred: impl Fn(&Tk) -> bool) -> Vec<TicketId> {
        self.tickets
            .iter()
            .filter(|t| !t.expiring && self.pending_at(t.id, now) && pred(t))
            .map(|t| t.id)
            .collect()
    }
}

#[derive(Default)]
struct Stats {
    attempts: u64,
    /// Adversarial attempts answered as accepted (must stay 0).
    accepted: u64,
    controls: u64,
    /// Refusals audited by a row of their own.
    audited_rows: u64,
    /// Refusals audited as a count in a summary row.
    audited_coalesced: u64,
    by_kind: BTreeMap<(Entry, Kind), u64>,
    by_how: BTreeMap<(Entry, &'static str), u64>,
}

struct Run {
    env: Env,
    rng: Rng,
    seed: u64,
    flood: FloodModel,
    auth_flood: AuthFloodModel,
    stats: Stats,
    /// Sequence for idempotency keys and Feishu event ids.
    serial: u64,
    /// The rest of a burst (`Kind::Flood`), run before anything else, last first.
    burst: Vec<Attempt>,
}

fn verdict_of(kind: VerdictKind) -> VoteKind {
    match kind {
        VerdictKind::Approve | VerdictKind::ApproveWithEdits => VoteKind::Approve,
        VerdictKind::Reject => VoteKind::Reject,
        VerdictKind::RequestChanges => VoteKind::RequestChanges,
        other => panic!("unexpected verdict kind {other:?}"),
    }
}

/// Replaces the payload of a token text (no key: the signature no longer matches).
fn edit_payload(token: &str, edit: impl FnOnce(&mut Vec<u8>)) -> String {
    let rest = token.strip_prefix("ah1.").expect("a token");
    let (payload, signature) = rest.split_once('.').expect("a signed token");
    let mut bytes = URL_SAFE_NO_PAD.decode(payload).unwrap();
    edit(&mut bytes);
    format!("ah1.{}.{}", URL_SAFE_NO_PAD.encode(&bytes), signature)
}

/// Where the ticket id starts in a token payload (after the key id).
fn ticket_offset(payload: &[u8]) -> usize {
    1 + payload[0] as usize
}

const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl Run {
    fn now(&self) -> Timestamp {
        self.env.now()
    }

    // -----------------------------------------------------------------------------------------
    // Building links and tokens.

    /// A fresh link for a pending ticket, minted now.
    fn mint(
        &self,
        b: &Batch,
        id: TicketId,
        bound: Option<&'static str>,
        verdict: VerdictKind,
    ) -> Link {
        let minted = self
            .env
            .handoff
            .mint_links(&b.cache[&id], bound.map(person), self.now())
            .unwrap()
            .into_iter()
            .find(|l| l.verdict == verdict)
            .unwrap();
        Link {
            token: minted.token,
            ticket: id,
            bound,
            verdict,
            expires_at: minted.expires_at,
        }
    }

    /// A token signed with `ring` for these claims (nonce drawn from the seeded generator).
    #[allow(clippy::too_many_arguments)]
    fn sign(
        &mut self,
        ring: &TokenKeyRing,
        ticket: TicketId,
        bound: Option<&'static str>,
        verdict: VerdictKind,
        digest: KeyedDigest,
        issued_at: Timestamp,
        expires_at: Timestamp,
    ) -> Link {
        let claims = TokenClaims {
            ticket,
            reviewer: bound.map(person),
            verdict,
            digest,
            issued_at,
            expires_at,
            nonce: TokenNonce::from_bytes(self.rng.bytes()),
        };
        Link {
            token: ring.sign(&claims).unwrap(),
            ticket,
            bound,
            verdict,
            expires_at,
        }
    }

    fn current_digest(&self, b: &Batch, id: TicketId) -> KeyedDigest {
        self.env.digest_key.keyed(&b.cache[&id].action_digest())
    }

    fn random_ticket_id(&mut self) -> TicketId {
        TicketId::from_uuid(uuid::Uuid::from_bytes(self.rng.bytes()))
    }

    /// Any ticket of the batch.
    fn any_ticket(&mut self, b: &Batch) -> TicketId {
        b.tickets[self.rng.index(b.tickets.len())].id
    }

    /// A credential of nobody.
    fn forged_credential(&mut self) -> (Credential, &'static str) {
        match self.rng.index(4) {
            0 => (
                Credential::token(format!(
                    "aht_{}",
                    URL_SAFE_NO_PAD.encode(self.rng.bytes::<32>())
                )),
                "random bearer token",
            ),
            1 => (
                Credential::token(format!("{:x}", self.rng.next())),
                "short junk token",
            ),
            2 => (self.env.chat_unmapped[0].clone(), "unknown platform user"),
            _ => (
                self.env.chat_unmapped[1].clone(),
                "known user id on another platform",
            ),
        }
    }

    /// A token an attacker made without the key, and what refuses it.
    fn forged_token(
        &mut self,
        b: &Batch,
    ) -> Option<(String, WantLink, &'static str, &'static str)> {
        let now = self.now();
        let base = {
            let ids = b.pending(now, |_| true);
            if ids.is_empty() {
                return None;
            }
            let id = self.rng.pick(&ids);
            let bound = if self.rng.one_in(2) {
                Some(self.rng.pick(DBAS))
            } else {
                None
            };
            self.mint(b, id, bound, VerdictKind::Approve)
        };
        let (token, how) = match self.rng.index(6) {
            0 => {
                let dot = base.token.rfind('.').unwrap();
                let i = dot + 1 + self.rng.index(42);
                let mut bytes = base.token.clone().into_bytes();
                let cur = bytes[i];
                bytes[i] = loop {
                    let c = self.rng.pick(B64URL);
                    if c != cur {
                        break c;
                    }
                };
                (
                    String::from_utf8(bytes).unwrap(),
                    "signature character changed",
                )
            }
            1 => {
                let bit = self.rng.index(8);
                let region = self.rng.index(3);
                let pick = self.rng.index(32);
                let token = edit_payload(&base.token, |p| {
                    let t = ticket_offset(p);
                    // ticket 16, verdict 1, issued 8, expires 8, nonce 16, digest 32.
                    let i = match region {
                        0 => t + pick % 16,
                        1 => t + 33 + pick % 16,
                        _ => t + 49 + pick,
                    };
                    p[i] ^= 1 << bit;
                });
                (token, "payload bit flipped")
            }
            2 => {
                // Never empty: a missing token is its own case (`feishu_no_decision_token`).
                let len = 1 + self.rng.index(base.token.len() - 1);
                (base.token[..len].to_owned(), "truncated")
            }
            3 => {
                let junk = match self.rng.index(4) {
                    0 => (0..1 + self.rng.index(119))
                        .map(|_| (b' ' + (self.rng.next() % 95) as u8) as char)
                        .collect(),
                    1 => format!(
                        "ah1.{}.{}",
                        URL_SAFE_NO_PAD.encode(self.rng.bytes::<90>()),
                        URL_SAFE_NO_PAD.encode(self.rng.bytes::<32>())
                    ),
                    2 => format!("ah1.{}", URL_SAFE_NO_PAD.encode(self.rng.bytes::<64>())),
                    _ => "A".repeat(1025 + self.rng.index(500)),
                };
                (junk, "junk")
            }
            4 => {
                let secret: [u8; 32] = self.rng.bytes();
                let ring = TokenKeyRing::new(TokenKey::new("k1", &secret).unwrap(), []).unwrap();
                let digest = self.current_digest(b, base.ticket);
                let link = self.sign(
                    &ring,
                    base.ticket,
                    base.bound,
                    VerdictKind::Approve,
                    digest,
                    now,
                    now.saturating_add(TOKEN_TTL),
                );
                (link.token, "re-signed with a wrong key")
            }
            _ => {
                let secret: [u8; 32] = self.rng.bytes();
                let ring = TokenKeyRing::new(TokenKey::new("k9", &secret).unwrap(), []).unwrap();
                let digest = self.current_digest(b, base.ticket);
                let link = self.sign(
                    &ring,
                    base.ticket,
                    base.bound,
                    VerdictKind::Approve,
                    digest,
                    now,
                    now.saturating_add(TOKEN_TTL),
                );
                (link.token, "signed with an unknown key id")
            }
        };
        let refusal = self
            .env
            .ring
            .open(&token, now)
            .expect_err("a forged token must not open");
        let (want, code) = refused_token(refusal);
        let expected_class = match how {
            "signature character changed"
            | "payload bit flipped"
            | "re-signed with a wrong key" => want == WantLink::BadSignature,
            "signed with an unknown key id" => want == WantLink::UnknownKey("k9".into()),
            "truncated" => matches!(want, WantLink::Malformed(_)),
            _ => matches!(
                want,
                WantLink::Malformed(_) | WantLink::UnknownKey(_) | WantLink::BadSignature
            ),
        };
        assert!(expected_class, "{how}: the oracle says {want:?}");
        Some((token, want, code, how))
    }

    // -----------------------------------------------------------------------------------------
    // Feishu requests.

    #[cfg(feature = "feishu")]
    fn feishu_body(&mut self, open_id: &str, token: Option<&str>) -> Vec<u8> {
        self.serial += 1;
        let value = match token {
            Some(t) => json!({ DECISION_TOKEN_KEY: t, "verdict": "approve" }),
            None => json!({ "verdict": "approve" }),
        };
        json!({
            "schema": "2.0",
            "header": {
                "event_id": format!("ev-{:x}-{}", self.seed, self.serial),
                "token": VERIFICATION_TOKEN,
                "create_time": "1700000000000000",
                "event_type": "card.action.trigger",
                "tenant_key": "tenant",
                "app_id": "cli_test",
            },
            "event": {
                "operator": { "open_id": open_id, "tenant_key": "tenant" },
                "token": "c-update-token",
                "action": { "tag": "button", "value": value },
                "context": { "open_message_id": "om_1", "open_chat_id": "oc_1" },
            },
        })
        .to_string()
        .into_bytes()
    }

    #[cfg(feature = "feishu")]
    fn feishu_headers(&mut self, key: &EncryptKey, ts: i64, body: &[u8]) -> Vec<(String, String)> {
        let ts = ts.to_string();
        let nonce = format!("n-{:x}", self.rng.next());
        vec![
            (HEADER_TIMESTAMP.to_owned(), ts.clone()),
            (HEADER_NONCE.to_owned(), nonce.clone()),
            (
                HEADER_SIGNATURE.to_owned(),
                key.callback_signature(&ts, &nonce, body),
            ),
        ]
    }

    /// A callback signed now with the app's key: `who` presses the button carrying `token`.
    #[cfg(feature = "feishu")]
    fn press(&mut self, who: &str, token: Option<&str>) -> Op {
        let body = self.feishu_body(&format!("ou_{who}"), token);
        let key = self.env.feishu.key.clone();
        let headers = self.feishu_headers(&key, self.now().as_unix_seconds(), &body);
        Op::Feishu { headers, body }
    }

    // -----------------------------------------------------------------------------------------
    // The generator.

    /// An adversarial attempt of `kind` at `entry`, or `None` if the batch has nothing to
    /// aim it at right now.
    fn adversarial(&mut self, b: &Batch, entry: Entry, kind: Kind) -> Option<Attempt> {
        let now = self.now();
        let attempt = |how, op, want, aud, targets: Vec<TicketId>| Attempt {
            entry,
            kind: Some(kind),
            how,
            op,
            want,
            aud,
            targets,
            spends: None,
            unspent: None,
        };
        let auth = |code: &'static str, person, ticket| Aud::Auth {
            code,
            person,
            ticket,
            decision_row: true,
            lazy_expiry: false,
            // A token is spent from step 4 on: not by a use refused as someone else's, nor by
            // a replay (already spent).
            spends: entry != Entry::Credential && !matches!(code, "replayed" | "wrong_reviewer"),
            coalesced: (code == "not_eligible").then_some(None),
        };
        match (entry, kind) {
            // ---------------------------------------------------------------- credentials
            (Entry::Credential, Kind::Forged) => {
                let ticket = self.any_ticket(b);
                let (cred, how) = self.forged_credential();
                Some(attempt(
                    how,
                    Op::Decide {
                        ticket,
                        cred,
                        verdict: Verdict::Approve,
                        expected_version: None,
                    },
                    Want::DecideUnauthenticated,
                    Aud::Unauth {
                        code: "unauthenticated",
                        ticket: Some(ticket),
                    },
                    vec![ticket],
                ))
            }
            (Entry::Credential, Kind::Expired) => {
                let ids: Vec<TicketId> = b
                    .tickets
                    .iter()
                    .filter(|t| t.expiring)
                    .map(|t| t.id)
                    .collect();
                let id = self.rng.pick(&ids);
                let ticket = &b.cache[&id];
                let who = self.rng.pick(EVERYONE);
                let verdict = if self.rng.one_in(2) {
                    Verdict::Approve
                } else {
                    Verdict::Reject {
                        feedback: "too late".into(),
                    }
                };
                let (refusal, lazy) = match ticket.state() {
                    TicketState::Pending => (
                        Refusal::DeadlinePassed {
                            deadline: ticket.deadline().unwrap(),
                        },
                        true,
                    ),
                    other => (
                        Refusal::NotPending {
                            state: other.name(),
                        },
                        false,
                    ),
                };
                assert!(now >= ticket.deadline().unwrap());
                Some(attempt(
                    if lazy {
                        "deadline passed, expiry not yet persisted"
                    } else {
                        "deadline passed, expiry persisted"
                    },
                    Op::Decide {
                        ticket: id,
                        cred: self.env.cred(who),
                        verdict,
                        expected_version: None,
                    },
                    Want::DecideRefused(refusal.clone()),
                    Aud::Auth {
                        code: refusal.code().as_str(),
                        person: who,
                        ticket: id,
                        decision_row: true,
                        lazy_expiry: lazy,
                        spends: false,
                        coalesced: None,
                    },
                    vec![id],
                ))
            }
            (Entry::Credential, Kind::WrongReviewer | Kind::WrongGroup) => {
                let outsiders: Vec<&'static str> = if kind == Kind::WrongReviewer {
                    OUTSIDERS.to_vec()
                } else {
                    vec!["alice", "bob", "carol", "dave", "pat"]
                };
                let ids = b.pending(now, |t| outsiders.iter().any(|p| !eligible(p, t.kind)));
                if ids.is_empty() {
                    return None;
                }
                let id = self.rng.pick(&ids);
                let tk = b.tk(id);
                let who: Vec<&'static str> = outsiders
                    .iter()
                    .copied()
                    .filter(|p| !eligible(p, tk.kind))
                    .collect();
                let who = self.rng.pick(&who);
                let verdict = match self.rng.index(4) {
                    0 => Verdict::Approve,
                    1 => Verdict::Reject {
                        feedback: "no".into(),
                    },
                    2 => Verdict::RequestChanges {
                        feedback: "change it".into(),
                    },
                    _ => Verdict::ApproveWithEdits {
                        parameters: json!({ "table": "orders", "limit": 1 }),
                    },
                };
                let refusal = Refusal::NotEligible {
                    person: person(who),
                };
                Some(attempt(
                    if kind == Kind::WrongReviewer {
                        "person in no reviewing group"
                    } else {
                        "reviewer of another group"
                    },
                    Op::Decide {
                        ticket: id,
                        cred: self.env.cred(who),
                        verdict,
                        expected_version: None,
                    },
                    Want::DecideRefused(refusal.clone()),
                    auth(refusal.code().as_str(), who, id),
                    vec![id],
                ))
            }
            (Entry::Credential, Kind::SelfApproval) => {
                let ids = b.pending(now, |t| eligible("pat", t.kind));
                if ids.is_empty() {
                    return None;
                }
                let id = self.rng.pick(&ids);
                let (cred, how_cred) = if self.rng.one_in(2) {
                    (self.env.cred("pat"), 0)
                } else {
                    (self.env.pat_second.clone(), 1)
                };
                let edits = self.rng.one_in(3);
                let verdict = if edits {
                    Verdict::ApproveWithEdits {
                        parameters: json!({ "table": "orders", "limit": 2 }),
                    }
                } else {
                    Verdict::Approve
                };
                let how = match (how_cred, edits) {
                    (0, false) => "principal approves",
                    (0, true) => "principal approves with edits",
                    (_, false) => "principal approves with a second credential",
                    (_, true) => "principal edits with a second credential",
                };
                let refusal = Refusal::SelfApproval {
                    person: person("pat"),
                };
                Some(attempt(
                    how,
                    Op::Decide {
                        ticket: id,
                        cred,
                        verdict,
                        expected_version: None,
                    },
                    Want::DecideRefused(refusal.clone()),
                    auth(refusal.code().as_str(), "pat", id),
                    vec![id],
                ))
            }
            (Entry::Credential, Kind::StaleVersion) => {
                let id = self.any_ticket(b);
                let t = &b.cache[&id];
                let (expected, how) = if t.material_version() > 1 && !self.rng.one_in(4) {
                    (
                        1 + self.rng.index(t.material_version() as usize - 1) as u64,
                        "version before the last material change",
                    )
                } else {
                    (
                        t.version() + 1 + self.rng.index(5) as u64,
                        "version from the future",
                    )
                };
                let who = self.rng.pick(EVERYONE);
                Some(attempt(
                    how,
                    Op::Decide {
                        ticket: id,
                        cred: self.env.cred(who),
                        verdict: Verdict::Approve,
                        expected_version: Some(expected),
                    },
                    Want::DecideStale {
                        expected,
                        current: t.version(),
                    },
                    auth("stale_version", who, id),
                    vec![id],
                ))
            }
            (Entry::Credential, Kind::WrongTicket) => {
                let id = self.random_ticket_id();
                let who = self.rng.pick(EVERYONE);
                Some(attempt(
                    "unknown ticket",
                    Op::Decide {
                        ticket: id,
                        cred: self.env.cred(who),
                        verdict: Verdict::Approve,
                        expected_version: None,
                    },
                    Want::DecideNotFound(id),
                    Aud::Auth {
                        code: "not_found",
                        person: who,
                        ticket: id,
                        decision_row: false,
                        lazy_expiry: false,
                        spends: false,
                        coalesced: None,
                    },
                    vec![id],
                ))
            }
            (Entry::Credential, Kind::Replayed | Kind::WrongDigest) => None,

            // ---------------------------------------------------------------- tokens & Feishu
            (_, Kind::Forged) => {
                #[cfg(feature = "feishu")]
                if entry == Entry::Feishu {
                    return self.feishu_forged(b);
                }
                if self.rng.one_in(5) {
                    // A genuine link with a credential of nobody: refused, not spent.
                    let ids = b.pending(now, |_| true);
                    if ids.is_empty() {
                        return None;
                    }
                    let id = self.rng.pick(&ids);
                    let holders: Vec<&'static str> = DBAS
                        .iter()
                        .chain(["dave"].iter())
                        .copied()
                        .filter(|p| eligible(p, b.tk(id).kind) && !b.has_vote(id, p))
                        .collect();
                    let bound = if holders.is_empty() || self.rng.one_in(2) {
                        None
                    } else {
                        Some(self.rng.pick(&holders))
                    };
                    let link = self.mint(b, id, bound, VerdictKind::Approve);
                    let (cred, _) = self.forged_credential();
                    let mut a = attempt(
                        "genuine link, forged credential",
                        Op::Token {
                            token: link.token.clone(),
                            cred,
                        },
                        Want::Link(WantLink::Unauthenticated),
                        Aud::Unauth {
                            code: "unauthenticated",
                            ticket: Some(id),
                        },
                        vec![id],
                    );
                    a.unspent = Some(link);
                    return Some(a);
                }
                let (token, want, code, how) = self.forged_token(b)?;
                let who = self.rng.pick(DBAS);
                Some(attempt(
                    how,
                    Op::Token {
                        token,
                        cred: self.env.cred(who),
                    },
                    Want::Link(want),
                    Aud::Unauth { code, ticket: None },
                    Vec::new(),
                ))
            }
            (_, Kind::Replayed) => {
                #[cfg(feature = "feishu")]
                if entry == Entry::Feishu && self.rng.one_in(2) {
                    // The same callback delivered twice.
                    let now_s = now.as_unix_seconds();
                    // One that spent its button's token (and, with it, its event id): it
                    // decides nothing more. (One that spent nothing would be judged afresh.)
                    let fresh: Vec<usize> = (0..b.delivered.len())
                        .filter(|&i| {
                            now_s - b.delivered[i].ts <= TOLERANCE_SECS - 10
                                && b.delivered[i].spent_by.is_some()
                        })
                        .collect();
                    if !fresh.is_empty() {
                        let d = &b.delivered[self.rng.pick(&fresh)];
                        let (who, ticket, token) = d.spent_by.clone().unwrap();
                        let op = Op::Feishu {
                            headers: d.headers.clone(),
                            body: d.body.clone(),
                        };
                        let (want, aud) = self.replay_of(b, entry, ticket, &token, who);
                        return Some(attempt(
                            "the same callback delivered again",
                            op,
                            want,
                            aud,
                            vec![ticket],
                        ));
                    }
                }
                let usable: Vec<usize> = (0..b.spent.len())
                    .filter(|&i| {
                        let (link, who) = &b.spent[i];
                        now < link.expires_at && {
                            #[cfg(feature = "feishu")]
                            {
                                entry != Entry::Feishu || ON_FEISHU.contains(who)
                            }
                            #[cfg(not(feature = "feishu"))]
                            {
                                let _ = who;
                                true
                            }
                        }
                    })
                    .collect();
                if usable.is_empty() {
                    return None;
                }
                let (link, spender) = b.spent[self.rng.pick(&usable)].clone();
                // A link bound to one reviewer is spent for everyone; a group link for its
                // spender only.
                let presenter = match link.bound {
                    Some(_) if self.rng.one_in(3) => {
                        let pool = entry.people();
                        self.rng.pick(pool)
                    }
                    _ => spender,
                };
                let op = self.present(entry, &link, presenter);
                if presenter == spender {
                    let (want, aud) = self.replay_of(b, entry, link.ticket, &link.token, presenter);
                    return Some(attempt(
                        "spent link used again by its spender",
                        op,
                        want,
                        aud,
                        vec![link.ticket],
                    ));
                }
                // Someone else than the reviewer it is bound to (its only possible spender):
                // refused as such before the nonce is looked at, spending nothing.
                let bound = link.bound.unwrap();
                let mut aud = auth("wrong_reviewer", presenter, link.ticket);
                if let Aud::Auth { coalesced, .. } = &mut aud {
                    *coalesced = Some(Some(link.token.clone()));
                }
                Some(attempt(
                    "spent link (bound to another) used again",
                    op,
                    self.want_link(
                        entry,
                        WantLink::WrongReviewer {
                            bound: person(bound),
                            presented: person(presenter),
                        },
                    ),
                    aud,
                    vec![link.ticket],
                ))
            }
            (_, Kind::Expired) => {
                #[cfg(feature = "feishu")]
                if entry == Entry::Feishu {
                    match self.rng.index(3) {
                        0 => {
                            // Correctly signed, outside the timestamp window.
                            let body = self.feishu_body("ou_alice", None);
                            let off = TOLERANCE_SECS + 2 + self.rng.index(3600) as i64;
                            let ts = if self.rng.one_in(2) {
                                now.as_unix_seconds() - off
                            } else {
                                now.as_unix_seconds() + off
                            };
                            let key = self.env.feishu.key.clone();
                            let headers = self.feishu_headers(&key, ts, &body);
                            return Some(attempt(
                                "timestamp outside the window",
                                Op::Feishu { headers, body },
                                Want::Feishu401,
                                Aud::Unauth {
                                    code: "feishu_callback_refused",
                                    ticket: None,
                                },
                                Vec::new(),
                            ));
                        }
                        1 => {
                            let now_s = now.as_unix_seconds();
                            let stale: Vec<usize> = (0..b.delivered.len())
                                .filter(|&i| now_s - b.delivered[i].ts > TOLERANCE_SECS + 1)
                                .collect();
                            if !stale.is_empty() {
                                let d = &b.delivered[self.rng.pick(&stale)];
                                return Some(attempt(
                                    "a callback replayed after the window",
                                    Op::Feishu {
                                        headers: d.headers.clone(),
                                        body: d.body.clone(),
                                    },
                                    Want::Feishu401,
                                    Aud::Unauth {
                                        code: "feishu_callback_refused",
                                        ticket: None,
                                    },
                                    Vec::new(),
                                ));
                            }
                        }
                        _ => {}
                    }
                }
                let (link, how) = match self.rng.index(3) {
                    0 if !b.early.is_empty() => (
                        b.early[self.rng.index(b.early.len())].clone(),
                        "link past its expiry",
                    ),
                    1 => {
                        let id = self.any_ticket(b);
                        let digest = self.current_digest(b, id);
                        let expires = now.saturating_sub(Duration::from_millis(
                            1 + self.rng.index(600_000) as u64,
                        ));
                        let ring = self.env.ring.clone();
                        let link = self.sign(
                            &ring,
                            id,
                            None,
                            VerdictKind::Approve,
                            digest,
                            expires.saturating_sub(TOKEN_TTL),
                            expires,
                        );
                        (link, "genuine token, aged past its expiry")
                    }
                    _ => {
                        let id = self.any_ticket(b);
                        let digest = self.current_digest(b, id);
                        let issued = now.saturating_add(Duration::from_millis(
                            61_000 + self.rng.index(3_600_000) as u64,
                        ));
                        let ring = self.env.ring.clone();
                        let link = self.sign(
                            &ring,
                            id,
                            None,
                            VerdictKind::Approve,
                            digest,
                            issued,
                            issued.saturating_add(TOKEN_TTL),
                        );
                        (link, "genuine token issued in the future")
                    }
                };
                let (want, code) = refused_token(self.env.ring.open(&link.token, now).unwrap_err());
                assert!(
                    matches!(want, WantLink::Expired(_) | WantLink::NotYetValid(_)),
                    "{how}: {want:?}"
                );
                let who = link.bound.unwrap_or("alice");
                let op = self.present(entry, &link, who);
                Some(attempt(
                    how,
                    op,
                    self.want_link(entry, want),
                    // Authentic although refused: filed under the ticket it names.
                    Aud::Unauth {
                        code,
                        ticket: Some(link.ticket),
                    },
                    vec![link.ticket],
                ))
            }
            (_, Kind::WrongReviewer) => {
                #[cfg(feature = "feishu")]
                if entry == Entry::Feishu && self.rng.one_in(3) {
                    // An operator the directory does not know.
                    let ids = b.pending(now, |_| true);
                    if ids.is_empty() {
                        return None;
                    }
                    let id = self.rng.pick(&ids);
                    let link = self.mint(b, id, None, VerdictKind::Approve);
                    let stranger = format!("ou_{:x}", self.rng.next());
                    let body = self.feishu_body(&stranger, Some(&link.token));
                    let key = self.env.feishu.key.clone();
                    let headers = self.feishu_headers(&key, now.as_unix_seconds(), &body);
                    let mut a = attempt(
                        "unknown open_id",
                        Op::Feishu { headers, body },
                        Want::FeishuToast(toast::UNKNOWN),
                        Aud::Unauth {
                            code: "unauthenticated",
                            ticket: Some(id),
                        },
                        vec![id],
                    );
                    a.unspent = Some(link);
                    return Some(a);
                }
                // A link minted for one reviewer, used by another.
                let ids = b.pending(now, |_| true);
                let choices: Vec<(TicketId, &'static str)> = ids
                    .iter()
                    .flat_map(|&id| {
                        ["alice", "bob", "carol", "dave"]
                            .into_iter()
                            .filter(move |p| eligible(p, b.tk(id).kind))
                            .map(move |p| (id, p))
                    })
                    .collect();
                if choices.is_empty() {
                    return None;
                }
                let (id, bound) = self.rng.pick(&choices);
                let pool = entry.people();
                let others: Vec<&'static str> =
                    pool.iter().copied().filter(|p| *p != bound).collect();
                let presenter = self.rng.pick(&others);
                let verdict = self.rng.pick(&[
                    VerdictKind::Approve,
                    VerdictKind::Reject,
                    VerdictKind::RequestChanges,
                ]);
                let link = self.mint(b, id, Some(bound), verdict);
                let op = self.present(entry, &link, presenter);
                let mut aud = auth("wrong_reviewer", presenter, id);
                if let Aud::Auth { coalesced, .. } = &mut aud {
                    *coalesced = Some(Some(link.token.clone()));
                }
                let mut a = attempt(
                    "link bound to another reviewer",
                    op,
                    self.want_link(
                        entry,
                        WantLink::WrongReviewer {
                            bound: person(bound),
                            presented: person(presenter),
                        },
                    ),
                    aud,
                    vec![id],
                );
                // Not spent: its reviewer can still use it (a later control does).
                a.unspent = Some(link);
                Some(a)
            }
            (_, Kind::WrongGroup) => {
                let pool = entry.people();
                let ids = b.pending(now, |t| pool.iter().any(|p| !eligible(p, t.kind)));
                if ids.is_empty() {
                    return None;
                }
                let id = self.rng.pick(&ids);
                let outside: Vec<&'static str> = pool
                    .iter()
                    .copied()
                    .filter(|p| !eligible(p, b.tk(id).kind))
                    .collect();
                let who = self.rng.pick(&outside);
                let verdict = self.rng.pick(&[
                    VerdictKind::Approve,
                    VerdictKind::Reject,
                    VerdictKind::RequestChanges,
                ]);
                let link = self.mint(b, id, None, verdict);
                let op = self.present(entry, &link, who);
                let refusal = Refusal::NotEligible {
                    person: person(who),
                };
                let mut a = attempt(
                    "group link used outside the required groups",
                    op,
                    self.want_link(entry, WantLink::Refused(refusal.clone())),
                    auth(refusal.code().as_str(), who, id),
                    vec![id],
                );
                a.spends = Some((link, who));
                Some(a)
            }
            (_, Kind::SelfApproval) => {
                let ids = b.pending(now, |t| eligible("pat", t.kind));
                if ids.is_empty() {
                    return None;
                }
                let id = self.rng.pick(&ids);
                let bound = if self.rng.one_in(2) {
                    Some("pat")
                } else {
                    None
                };
                let link = self.mint(b, id, bound, VerdictKind::Approve);
                let op = match (entry, self.rng.one_in(2)) {
                    (Entry::Token, true) => Op::Token {
                        token: link.token.clone(),
                        cred: self.env.pat_second.clone(),
                    },
                    _ => self.present(entry, &link, "pat"),
                };
                let refusal = Refusal::SelfApproval {
                    person: person("pat"),
                };
                let mut a = attempt(
                    if bound.is_some() {
                        "link bound to the principal"
                    } else {
                        "group link used by the principal"
                    },
                    op,
                    self.want_link(entry, WantLink::Refused(refusal.clone())),
                    auth(refusal.code().as_str(), "pat", id),
                    vec![id],
                );
                a.spends = Some((link, "pat"));
                Some(a)
            }
            (_, Kind::StaleVersion) => {
                // A link minted before a reviewer edited the action.
                let pool = entry.people();
                let choices: Vec<(usize, &'static str)> = b
                    .pre_edit
                    .iter()
                    .enumerate()
                    .filter(|(_, (link, _))| now < link.expires_at)
                    .flat_map(|(i, (link, spent_by))| {
                        let presenters: Vec<&'static str> = match link.bound {
                            Some(p) if spent_by.is_empty() && pool.contains(&p) => vec![p],
                            Some(_) => Vec::new(),
                            None => pool
                                .iter()
                                .copied()
                                .filter(|p| !spent_by.contains(p))
                                .collect(),
                        };
                        presenters.into_iter().map(move |p| (i, p))
                    })
                    .collect();
                if choices.is_empty() {
                    return None;
                }
                let (i, who) = self.rng.pick(&choices);
                let link = b.pre_edit[i].0.clone();
                let op = self.present(entry, &link, who);
                let mut a = attempt(
                    "link minted before an edit",
                    op,
                    self.want_link(entry, WantLink::DigestChanged),
                    auth("digest_changed", who, link.ticket),
                    vec![link.ticket],
                );
                a.spends = Some((link, who));
                Some(a)
            }
            (_, Kind::WrongDigest) => {
                let id = self.any_ticket(b);
                let current = self.current_digest(b, id);
                let (digest, how) = match self.rng.index(3) {
                    0 => {
                        let others: Vec<TicketId> = b
                            .tickets
                            .iter()
                            .map(|t| t.id)
                            .filter(|o| self.current_digest(b, *o) != current)
                            .collect();
                        let other = self.rng.pick(&others);
                        (
                            self.current_digest(b, other),
                            "genuine token for ticket A's action presented for ticket B",
                        )
                    }
                    1 => (
                        DigestKey::from_bytes(self.rng.bytes())
                            .keyed(&b.cache[&id].action_digest()),
                        "digest keyed with another key",
                    ),
                    _ => (
                        KeyedDigest::from_bytes(self.rng.bytes()),
                        "random digest, genuinely signed",
                    ),
                };
                let pool = entry.people();
                let who = self.rng.pick(pool);
                let bound = if self.rng.one_in(2) { Some(who) } else { None };
                let ring = self.env.ring.clone();
                let link = self.sign(
                    &ring,
                    id,
                    bound,
                    VerdictKind::Approve,
                    digest,
                    now,
                    now.saturating_add(TOKEN_TTL),
                );
                let op = self.present(entry, &link, who);
                let mut a = attempt(
                    how,
                    op,
                    self.want_link(entry, WantLink::DigestChanged),
                    auth("digest_changed", who, id),
                    vec![id],
                );
                a.spends = Some((link, who));
                Some(a)
            }
            (_, Kind::Flood) => self.flood(b, entry),
            (_, Kind::WrongTicket) => {
                let pool = entry.people();
                let who = self.rng.pick(pool);
                if self.rng.one_in(2) {
                    // A token for a ticket the store does not hold, genuinely signed.
                    let id = self.random_ticket_id();
                    let ring = self.env.ring.clone();
                    let digest = KeyedDigest::from_bytes(self.rng.bytes());
                    let link = self.sign(
                        &ring,
                        id,
                        None,
                        VerdictKind::Approve,
                        digest,
                        now,
                        now.saturating_add(TOKEN_TTL),
                    );
                    let op = self.present(entry, &link, who);
                    Some(attempt(
                        "token for an unknown ticket",
                        op,
                        self.want_link(entry, WantLink::NotFound(id)),
                        Aud::Auth {
                            code: "not_found",
                            person: who,
                            ticket: id,
                            decision_row: false,
                            lazy_expiry: false,
                            spends: true,
                            coalesced: None,
                        },
                        vec![id],
                    ))
                } else {
                    // A genuine link for ticket A with its ticket replaced by B's.
                    let ids = b.pending(now, |_| true);
                    if ids.len() < 2 {
                        return None;
                    }
                    let a_id = self.rng.pick(&ids);
                    let b_id = loop {
                        let o = self.any_ticket(b);
                        if o != a_id {
                            break o;
                        }
                    };
                    let link = self.mint(b, a_id, None, VerdictKind::Approve);
                    let token = edit_payload(&link.token, |p| {
                        let t = ticket_offset(p);
                        p[t..t + 16].copy_from_slice(b_id.as_uuid().as_bytes());
                    });
                    let (want, code) = refused_token(self.env.ring.open(&token, now).unwrap_err());
                    assert_eq!(want, WantLink::BadSignature);
                    let forged = Link {
                        token,
                        ticket: b_id,
                        ..link
                    };
                    let op = self.present(entry, &forged, who);
                    Some(attempt(
                        "link for ticket A edited to name ticket B",
                        op,
                        self.want_link(entry, want),
                        Aud::Unauth { code, ticket: None },
                        vec![a_id, b_id],
                    ))
                }
            }
        }
    }

    /// What a spent token used again by `who` on `ticket` is answered: a replay — except that
    /// a person in none of the ticket's groups whose `not_eligible` refusals are being
    /// coalesced right now is refused as such, writing nothing (the replay is not even looked
    /// for: nothing is committed).
    fn replay_of(
        &self,
        b: &Batch,
        entry: Entry,
        ticket: TicketId,
        token: &str,
        who: &'static str,
    ) -> (Want, Aud) {
        let now = self.now();
        // A token for another digest is refused before the machine, whoever presents it.
        let digest_current = !b.stale_digest.contains(token);
        // Only a pending ticket refuses an outsider as not eligible.
        let coalescing = digest_current
            && b.pending_at(ticket, now)
            && !eligible(who, b.tk(ticket).kind)
            && self
                .auth_flood
                .windows
                .get(&(ticket, who, "not_eligible", None))
                .is_some_and(|(start, _)| now < start.saturating_add(Duration::from_secs(60)));
        let (want, code) = if coalescing {
            (
                WantLink::Refused(Refusal::NotEligible {
                    person: person(who),
                }),
                "not_eligible",
            )
        } else {
            (WantLink::Replayed, "replayed")
        };
        let aud = Aud::Auth {
            code,
            person: who,
            ticket,
            decision_row: true,
            lazy_expiry: false,
            spends: false,
            coalesced: coalescing.then_some(None),
        };
        (self.want_link(entry, want), aud)
    }

    /// A burst of 5 to 30 attempts by one person who has no say on a pending ticket: the first
    /// is returned, the others queued in `burst`. Each is refused as on its own; the
    /// coalescing models say which write rows.
    fn flood(&mut self, b: &Batch, entry: Entry) -> Option<Attempt> {
        let now = self.now();
        let n = 5 + self.rng.index(26);
        let pool = entry.people();
        let mk = |how, op, want, aud, id| Attempt {
            entry,
            kind: Some(Kind::Flood),
            how,
            op,
            want,
            aud,
            targets: vec![id],
            spends: None,
            unspent: None,
        };
        let not_eligible = |who, id| Aud::Auth {
            code: "not_eligible",
            person: who,
            ticket: id,
            decision_row: true,
            lazy_expiry: false,
            spends: entry != Entry::Credential,
            coalesced: Some(None),
        };
        let variant = self.rng.index(3);
        let mut attempts = Vec::with_capacity(n);
        if entry == Entry::Credential || variant == 0 {
            // Ineligible votes (by credential, or with group links as in a busy group chat).
            let ids = b.pending(now, |t| pool.iter().any(|p| !eligible(p, t.kind)));
            if ids.is_empty() {
                return None;
            }
            let id = self.rng.pick(&ids);
            let outside: Vec<&'static str> = pool
                .iter()
                .copied()
                .filter(|p| !eligible(p, b.tk(id).kind))
                .collect();
            let who = self.rng.pick(&outside);
            let refusal = Refusal::NotEligible {
                person: person(who),
            };
            for _ in 0..n {
                let reject = self.rng.one_in(2);
                let mut a = match entry {
                    Entry::Credential => mk(
                        "burst of ineligible votes",
                        Op::Decide {
                            ticket: id,
                            cred: self.env.cred(who),
                            verdict: if reject {
                                Verdict::Reject {
                                    feedback: "no".into(),
                                }
                            } else {
                                Verdict::Approve
                            },
                            expected_version: None,
                        },
                        Want::DecideRefused(refusal.clone()),
                        not_eligible(who, id),
                        id,
                    ),
                    _ => {
                        let verdict = if reject {
                            VerdictKind::Reject
                        } else {
                            VerdictKind::Approve
                        };
                        let link = self.mint(b, id, None, verdict);
                        let op = self.present(entry, &link, who);
                        let mut a = mk(
                            "burst of group links used by an outsider",
                            op,
                            self.want_link(entry, WantLink::Refused(refusal.clone())),
                            not_eligible(who, id),
                            id,
                        );
                        a.spends = Some((link, who));
                        a
                    }
                };
                a.kind = Some(Kind::Flood);
                attempts.push(a);
            }
        } else if variant == 1 || entry == Entry::Token {
            // One link bound to a reviewer, pressed again and again by someone else.
            let ids = b.pending(now, |_| true);
            let choices: Vec<(TicketId, &'static str)> = ids
                .iter()
                .flat_map(|&id| {
                    ["alice", "bob", "carol", "dave"]
                        .into_iter()
                        .filter(move |p| eligible(p, b.tk(id).kind))
                        .map(move |p| (id, p))
                })
                .collect();
            if choices.is_empty() {
                return None;
            }
            let (id, bound) = self.rng.pick(&choices);
            let others: Vec<&'static str> = pool.iter().copied().filter(|p| *p != bound).collect();
            let presenter = self.rng.pick(&others);
            let link = self.mint(b, id, Some(bound), VerdictKind::Approve);
            for _ in 0..n {
                let op = self.present(entry, &link, presenter);
                attempts.push(mk(
                    "burst: a link bound to another pressed again and again",
                    op,
                    self.want_link(
                        entry,
                        WantLink::WrongReviewer {
                            bound: person(bound),
                            presented: person(presenter),
                        },
                    ),
                    Aud::Auth {
                        code: "wrong_reviewer",
                        person: presenter,
                        ticket: id,
                        decision_row: true,
                        lazy_expiry: false,
                        spends: false,
                        coalesced: Some(Some(link.token.clone())),
                    },
                    id,
                ));
            }
            // Still its reviewer's to use.
            attempts.last_mut().unwrap().unspent = Some(link);
        } else {
            #[cfg(feature = "feishu")]
            {
                // A stranger's clicks on a genuine group button: nothing is written but
                // their audit rows, coalesced under the flood budget.
                let ids = b.pending(now, |_| true);
                if ids.is_empty() {
                    return None;
                }
                let id = self.rng.pick(&ids);
                let link = self.mint(b, id, None, VerdictKind::Approve);
                let stranger = format!("ou_{:x}", self.rng.next());
                for _ in 0..n {
                    let body = self.feishu_body(&stranger, Some(&link.token));
                    let key = self.env.feishu.key.clone();
                    let headers = self.feishu_headers(&key, now.as_unix_seconds(), &body);
                    attempts.push(mk(
                        "burst: a stranger's clicks",
                        Op::Feishu { headers, body },
                        Want::FeishuToast(toast::UNKNOWN),
                        Aud::Unauth {
                            code: "unauthenticated",
                            ticket: Some(id),
                        },
                        id,
                    ));
                }
            }
        }
        attempts.reverse();
        let first = attempts.pop();
        self.burst = attempts;
        first
    }

    /// The entry point's way of presenting `link` as `who`.
    fn present(&mut self, entry: Entry, link: &Link, who: &'static str) -> Op {
        match entry {
            Entry::Credential | Entry::Token => Op::Token {
                token: link.token.clone(),
                cred: self.env.cred(who),
            },
            #[cfg(feature = "feishu")]
            Entry::Feishu => self.press(who, Some(&link.token)),
        }
    }

    /// The refusal the entry point answers for a link refusal.
    fn want_link(&self, entry: Entry, want: WantLink) -> Want {
        match entry {
            Entry::Credential | Entry::Token => Want::Link(want),
            #[cfg(feature = "feishu")]
            Entry::Feishu => Want::FeishuToast(match want {
                WantLink::Malformed(_)
                | WantLink::UnknownKey(_)
                | WantLink::BadSignature
                | WantLink::NotYetValid(_)
                | WantLink::NotFound(_) => toast::INVALID,
                WantLink::Expired(_) => toast::EXPIRED,
                WantLink::Unauthenticated => toast::UNKNOWN,
                WantLink::WrongReviewer { .. } => toast::WRONG_REVIEWER,
                WantLink::DigestChanged => toast::DIGEST,
                WantLink::Replayed => toast::REPLAYED,
                WantLink::Refused(Refusal::NotEligible { .. }) => toast::NOT_ELIGIBLE,
                WantLink::Refused(Refusal::SelfApproval { .. }) => toast::SELF,
                WantLink::Refused(other) => panic!("no toast expectation for {other:?}"),
            }),
        }
    }

    #[cfg(feature = "feishu")]
    fn feishu_forged(&mut self, b: &Batch) -> Option<Attempt> {
        let now = self.now();
        let refused = Aud::Unauth {
            code: "feishu_callback_refused",
            ticket: None,
        };
        let mk = |how, op, want, aud| Attempt {
            entry: Entry::Feishu,
            kind: Some(Kind::Forged),
            how,
            op,
            want,
            aud,
            targets: Vec::new(),
            spends: None,
            unspent: None,
        };
        let ids = b.pending(now, |_| true);
        // The button an attacker wants pressed: a genuine group approve link.
        let target = if ids.is_empty() {
            None
        } else {
            let id = self.rng.pick(&ids);
            Some(self.mint(b, id, None, VerdictKind::Approve))
        };
        let token = target.as_ref().map(|l| l.token.clone());
        let ts = now.as_unix_seconds();
        match self.rng.index(7) {
            0 => {
                let body = self.feishu_body("ou_alice", token.as_deref());
                let mut headers = self.feishu_headers(&self.env.feishu.key.clone(), ts, &body);
                headers[2].1 = (0..32)
                    .map(|_| format!("{:02x}", self.rng.next() as u8))
                    .collect();
                Some(mk(
                    "random signature",
                    Op::Feishu { headers, body },
                    Want::Feishu401,
                    refused,
                ))
            }
            1 => {
                let body = self.feishu_body("ou_alice", token.as_deref());
                let headers = self.feishu_headers(&self.env.feishu.wrong_key.clone(), ts, &body);
                Some(mk(
                    "signed with another encrypt key",
                    Op::Feishu { headers, body },
                    Want::Feishu401,
                    refused,
                ))
            }
            2 => {
                let body = self.feishu_body("ou_alice", token.as_deref());
                let headers = self.feishu_headers(&self.env.feishu.key.clone(), ts, &body);
                let edited = String::from_utf8(body)
                    .unwrap()
                    .replace("ou_alice", "ou_bob")
                    .into_bytes();
                Some(mk(
                    "body edited after signing",
                    Op::Feishu {
                        headers,
                        body: edited,
                    },
                    Want::Feishu401,
                    refused,
                ))
            }
            3 => {
                let body = self.feishu_body("ou_alice", token.as_deref());
                let mut headers = self.feishu_headers(&self.env.feishu.key.clone(), ts, &body);
                headers.remove(self.rng.index(3));
                Some(mk(
                    "a signature header missing",
                    Op::Feishu { headers, body },
                    Want::Feishu401,
                    refused,
                ))
            }
            4 => {
                let body = self.feishu_body("ou_alice", token.as_deref());
                Some(mk(
                    "unsigned card action",
                    Op::Feishu {
                        headers: Vec::new(),
                        body,
                    },
                    Want::Feishu401,
                    refused,
                ))
            }
            5 => {
                let (token, want, code, how) = self.forged_token(b)?;
                let who = self.rng.pick(&["alice", "bob", "carol"]);
                let op = self.press(who, Some(&token));
                let _ = how;
                Some(mk(
                    "signed callback carrying a forged token",
                    op,
                    self.want_link(Entry::Feishu, want),
                    Aud::Unauth { code, ticket: None },
                ))
            }
            _ => {
                let op = self.press("alice", None);
                Some(mk(
                    "signed callback without a decision token",
                    op,
                    Want::FeishuToast(toast::NO_TOKEN),
                    Aud::Unauth {
                        code: "feishu_no_decision_token",
                        ticket: None,
                    },
                ))
            }
        }
    }

    /// A legitimate decision: an eligible reviewer other than the principal, with no vote in
    /// the round, on a pending ticket.
    fn control(&mut self, b: &Batch) -> Option<Attempt> {
        let now = self.now();
        let entry = self.rng.pick(ENTRIES);
        // A link left unspent (refused for a forged credential, or to someone it was not
        // issued to), used by its rightful holder.
        if entry == Entry::Token && !b.unspent.is_empty() && self.rng.one_in(2) {
            let link = b.unspent[self.rng.index(b.unspent.len())].clone();
            let holders: Vec<&'static str> = match link.bound {
                Some(p) => vec![p],
                None => ["alice", "bob", "carol", "dave"].to_vec(),
            };
            let ok: Vec<&'static str> = holders
                .into_iter()
                .filter(|p| {
                    now < link.expires_at
                        && b.pending_at(link.ticket, now)
                        && eligible(p, b.tk(link.ticket).kind)
                        && !b.has_vote(link.ticket, p)
                        && !b.spent.iter().any(|(l, s)| l.token == link.token && s == p)
                })
                .collect();
            if !ok.is_empty() {
                let who = self.rng.pick(&ok);
                return Some(Attempt {
                    entry,
                    kind: None,
                    how: "link left unspent by a refusal, used by its holder",
                    op: Op::Token {
                        token: link.token.clone(),
                        cred: self.env.cred(who),
                    },
                    want: Want::Accepted {
                        person: who,
                        vote: verdict_of(link.verdict),
                    },
                    aud: Aud::None,
                    targets: vec![link.ticket],
                    spends: Some((link, who)),
                    unspent: None,
                });
            }
        }
        let choices: Vec<(TicketId, &'static str)> = b
            .pending(now, |_| true)
            .into_iter()
            .flat_map(|id| {
                ["alice", "bob", "carol", "dave"]
                    .into_iter()
                    .filter(move |p| eligible(p, b.tk(id).kind) && !b.has_vote(id, p))
                    .map(move |p| (id, p))
            })
            .collect();
        if choices.is_empty() {
            return None;
        }
        let (id, who) = self.rng.pick(&choices);
        let reject = self.rng.one_in(8);
        let verdict_kind = if reject {
            VerdictKind::Reject
        } else {
            VerdictKind::Approve
        };
        let (op, how, spends) = match entry {
            Entry::Credential => {
                let verdict = if reject {
                    Verdict::Reject {
                        feedback: "not now".into(),
                    }
                } else {
                    Verdict::Approve
                };
                let expected_version = if self.rng.one_in(2) {
                    Some(b.cache[&id].version())
                } else {
                    None
                };
                (
                    Op::Decide {
                        ticket: id,
                        cred: self.env.cred(who),
                        verdict,
                        expected_version,
                    },
                    "eligible reviewer decides",
                    None,
                )
            }
            Entry::Token => {
                let bound = if self.rng.one_in(2) { Some(who) } else { None };
                let link = self.mint(b, id, bound, verdict_kind);
                (
                    Op::Token {
                        token: link.token.clone(),
                        cred: self.env.cred(who),
                    },
                    "eligible reviewer uses their link",
                    Some((link, who)),
                )
            }
            #[cfg(feature = "feishu")]
            Entry::Feishu => {
                let link = self.mint(b, id, None, verdict_kind);
                let op = self.press(who, Some(&link.token));
                (
                    op,
                    "eligible reviewer presses the button",
                    Some((link, who)),
                )
            }
        };
        Some(Attempt {
            entry,
            kind: None,
            how,
            op,
            want: Want::Accepted {
                person: who,
                vote: verdict_of(verdict_kind),
            },
            aud: Aud::None,
            targets: vec![id],
            spends,
            unspent: None,
        })
    }

    // -----------------------------------------------------------------------------------------
    // Running one attempt and checking everything it did.

    async fn execute(&self, op: &Op) -> Got {
        match op {
            Op::Decide {
                ticket,
                cred,
                verdict,
                expected_version,
            } => Got::Decide(
                self.env
                    .handoff
                    .decide(*ticket, cred, verdict.clone(), *expected_version)
                    .await
                    .map(Decided::into_ticket),
            ),
            Op::Token { token, cred } => {
                let submission = TokenSubmission::new();
                Got::Link(
                    self.env
                        .handoff
                        .decide_with_token(token, cred, submission)
                        .await
                        .map(Decided::into_ticket),
                )
            }
            #[cfg(feature = "feishu")]
            Op::Feishu { headers, body } => Got::Feishu(
                self.env
                    .handoff
                    .handle_feishu_callback(&self.env.feishu.verifier, headers, body)
                    .await,
            ),
        }
    }

    async fn rows_since(&self, head: u64) -> Vec<Row> {
        let mut rows = Vec::new();
        let mut from = head + 1;
        loop {
            let page = self.env.store.audit_events(from, 512).await.unwrap();
            if page.is_empty() {
                return rows;
            }
            from = page.last().unwrap().seq + 1;
            rows.extend(
                page.into_iter()
                    .map(|raw| Row::of(&AuditEvent::decode(raw).unwrap())),
            );
        }
    }

    async fn run(&mut self, b: &mut Batch, a: Attempt) {
        let now = self.now();
        let head = self.env.store.audit_head().await.unwrap().seq;
        let mut before: Vec<(TicketId, Option<Ticket>, Vec<DecisionRow>)> = Vec::new();
        for &id in &a.targets {
            let t = self.env.store.ticket(id).await.unwrap();
            if let Some(t) = &t {
                assert_eq!(Some(t), b.cache.get(&id), "the model's copy is current");
            }
            before.push((id, t, self.env.store.decisions(id).await.unwrap()));
        }
        let nonces_before = self.env.store.health().await.unwrap().nonces;

        let got = self.execute(&a.op).await;

        let ctx = format!(
            "seed {:#x}, attempt {} ({:?} {:?}: {}), op {:?}",
            self.seed,
            self.stats.attempts + self.stats.controls,
            a.entry,
            a.kind,
            a.how,
            a.op
        );
        let context = || ctx.as_str();
        if a.kind.is_some() && got.accepted() {
            self.stats.accepted += 1;
        }
        assert!(
            a.want.matches(&got),
            "expected {:?}, got {got:?}\n{}",
            a.want,
            context()
        );

        // The audit rows this attempt wrote. `recorded`: whether a refusal of an
        // authenticated reviewer was recorded (audit and decision rows, a token spent) rather
        // than only counted.
        let rows = self.rows_since(head).await;
        let mut recorded = true;
        let expected: Option<Vec<Row>> = match &a.aud {
            Aud::Unauth { code, ticket } => {
                b.unauth_attempts += 1;
                Some(
                    self.flood
                        .refuse(now, Row::refused(code, Actor::Unauthenticated, *ticket)),
                )
            }
            Aud::Auth {
                code,
                person: who,
                ticket,
                lazy_expiry,
                coalesced,
                ..
            } => {
                *b.auth_refusals
                    .entry(((*code).to_owned(), (*who).to_owned()))
                    .or_default() += 1;
                let mut rows = Vec::new();
                if let Some(token) = coalesced {
                    match self
                        .auth_flood
                        .admit(now, *ticket, who, code, token.clone())
                    {
                        None => recorded = false,
                        Some(summary) => rows.extend(summary),
                    }
                }
                if recorded {
                    if *lazy_expiry {
                        rows.push(Row {
                            kind: "expired".into(),
                            refusal: None,
                            actor: Actor::System,
                            ticket: Some(*ticket),
                            coalesced: None,
                        });
                    }
                    rows.push(Row::refused(
                        code,
                        Actor::Reviewer(person(who)),
                        Some(*ticket),
                    ));
                }
                Some(rows)
            }
            Aud::None => None,
        };
        // The nonces the attempt consumed: a token use recorded from step 4 on (and, through
        // Feishu, the callback's event id with it); nothing before anyone is authenticated,
        // nothing for a use refused as someone else's, a replay or a coalesced refusal.
        let per_use = match a.entry {
            Entry::Credential => 0,
            Entry::Token => 1,
            #[cfg(feature = "feishu")]
            Entry::Feishu => 2,
        };
        let spent = match &a.aud {
            Aud::Unauth { .. } => false,
            Aud::None => true,
            Aud::Auth { spends, .. } => *spends && recorded,
        };
        let nonces_after = self.env.store.health().await.unwrap().nonces;
        assert_eq!(
            nonces_after - nonces_before,
            if spent { per_use } else { 0 },
            "nonces written\n{}",
            context()
        );
        // Counted from the rows written (equal to the expected ones, checked next).
        for r in rows.iter().filter(|r| r.kind == "refused") {
            match r.coalesced {
                Some(n) => self.stats.audited_coalesced += n,
                None => self.stats.audited_rows += 1,
            }
        }
        match expected {
            Some(expected) => assert_eq!(rows, expected, "audit rows\n{}", context()),
            None => assert!(
                rows.iter().all(|r| r.kind != "refused"),
                "a control was refused: {rows:?}\n{}",
                context()
            ),
        }

        // The tickets.
        for (id, t0, d0) in before {
            let t1 = self.env.store.ticket(id).await.unwrap();
            let d1 = self.env.store.decisions(id).await.unwrap();
            assert_eq!(d1[..d0.len()], d0[..], "decision rows are append-only");
            let added = &d1[d0.len()..];
            match (&a.want, t0, t1) {
                (Want::Accepted { person: who, vote }, Some(t0), Some(t1)) => {
                    assert_eq!(added.len(), 1, "{}", context());
                    assert_eq!(added[0].person, Some(person(who)));
                    assert_eq!(added[0].refusal, None);
                    assert!(
                        t1.votes()
                            .iter()
                            .any(|v| v.person.as_str() == *who && v.kind == *vote),
                        "the control's vote is recorded\n{}",
                        context()
                    );
                    assert_eq!(t1.version(), t0.version() + 1);
                    b.votes.entry(id).or_default().push((person(who), *vote));
                    *b.accepted_rows.entry(id).or_default() += 1;
                    b.cache.insert(id, t1);
                }
                (Want::Accepted { .. }, _, _) => panic!("control on a missing ticket"),
                (_, None, t1) => {
                    assert!(t1.is_none(), "an unknown ticket was created\n{}", context());
                    assert!(added.is_empty());
                }
                (_, Some(t0), t1) => {
                    let t1 = t1.expect("the ticket is still there");
                    // Nothing a reviewer could see changed: state, votes, action.
                    assert_eq!(t1.state_at(now), t0.state_at(now), "state\n{}", context());
                    assert_eq!(t1.votes(), t0.votes(), "votes\n{}", context());
                    assert_eq!(t1.action_digest(), t0.action_digest());
                    match &a.aud {
                        Aud::Auth {
                            lazy_expiry: true, ..
                        } => {
                            // The expiry the deadline already implied, now persisted.
                            assert_eq!(t1.version(), t0.version() + 1);
                            assert_eq!(t1.state(), &t0.state_at(now));
                            assert_eq!(t1.state().name(), StateName::Expired);
                        }
                        _ => assert_eq!(t1, t0, "the ticket was not written\n{}", context()),
                    }
                    // No vote was added; a refused decision is recorded as one.
                    assert!(added.iter().all(|d| d.refusal.is_some()), "{}", context());
                    match &a.aud {
                        Aud::Auth {
                            code,
                            person: who,
                            ticket,
                            decision_row: true,
                            ..
                        } if *ticket == id && recorded => {
                            assert_eq!(added.len(), 1, "one decision row\n{}", context());
                            assert_eq!(added[0].person, Some(person(who)));
                            assert_eq!(added[0].refusal.as_deref(), Some(*code));
                        }
                        _ => assert!(added.is_empty(), "no decision row\n{}", context()),
                    }
                    b.cache.insert(id, t1);
                }
            }
        }

        // Bookkeeping for later attempts.
        let spends = a.spends.filter(|_| spent);
        #[cfg(feature = "feishu")]
        let spent_by = spends
            .as_ref()
            .map(|(link, who)| (*who, link.ticket, link.token.clone()));
        if let Some((link, who)) = spends {
            if a.kind == Some(Kind::WrongDigest) {
                b.stale_digest.insert(link.token.clone());
            }
            if let Some((_, spent_by)) = b.pre_edit.iter_mut().find(|(l, _)| l.token == link.token)
            {
                spent_by.insert(who);
            }
            b.unspent
                .retain(|l| !(l.token == link.token && l.bound.is_some()));
            b.spent.push((link, who));
        }
        if let Some(link) = a.unspent {
            b.unspent.push(link);
        }
        #[cfg(feature = "feishu")]
        if let (Op::Feishu { headers, body }, Got::Feishu(r)) = (&a.op, &got) {
            // Authentic requests (200), with whether their event id was consumed (with the
            // token they spent).
            if r.status == 200 {
                let ts = headers
                    .iter()
                    .find(|(k, _)| k == HEADER_TIMESTAMP)
                    .map(|(_, v)| v.parse().unwrap())
                    .unwrap();
                b.delivered.push(Delivered {
                    headers: headers.clone(),
                    body: body.clone(),
                    ts,
                    spent_by,
                });
            }
        }
        match a.kind {
            Some(kind) => {
                self.stats.attempts += 1;
                *self.stats.by_kind.entry((a.entry, kind)).or_default() += 1;
                *self.stats.by_how.entry((a.entry, a.how)).or_default() += 1;
            }
            None => self.stats.controls += 1,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Batches.

    fn request(&mut self, kind: &str, variant: u64) -> ActionRequest {
        self.serial += 1;
        ActionRequest::builder(
            kind,
            format!("idempotency-adv-{:x}-{}", self.seed, self.serial),
        )
        .target("postgres://prod/orders")
        .parameters(json!({ "table": "orders", "limit": 1000, "n": self.serial, "v": variant }))
        .reason("the adversarial suite says so")
        .build()
        .unwrap()
    }

    async fn setup(&mut self) -> Batch {
        let mut b = Batch {
            head0: self.env.store.audit_head().await.unwrap().seq,
            ..Batch::default()
        };
        // Proposals, by an agent acting for `pat` (named by a host alias or directly).
        for (i, (kind, _)) in PLAN.iter().enumerate() {
            let request = self.request(kind, 0);
            let agent = if i % 2 == 0 {
                &self.env.alias_agent
            } else {
                &self.env.direct_agent
            };
            let id = match agent.propose(request).await.unwrap() {
                Proposal::Pending(p) => p.id,
                other => panic!("expected a pending ticket, got {other:?}"),
            };
            let t = self.env.store.ticket(id).await.unwrap().unwrap();
            b.cache.insert(id, t);
            b.tickets.push(Tk {
                id,
                kind,
                expiring: kind == &"db.vacuum",
            });
        }
        // Links that will have expired when the attacks start.
        for i in 0..b.tickets.len() {
            let id = b.tickets[i].id;
            let bound = if i % 3 == 0 { None } else { Some(DBAS[i % 3]) };
            let link = self.mint(&b, id, bound, VerdictKind::Approve);
            b.early.push(link);
        }
        self.env.clock.advance(TOKEN_TTL + Duration::from_secs(60));
        // Links minted before an edit, then the edit.
        for (i, (kind, edited)) in PLAN.iter().enumerate() {
            if !edited {
                continue;
            }
            let id = b.tickets[i].id;
            let editor = if eligible("carol", kind) {
                "carol"
            } else {
                "dave"
            };
            for p in ["alice", "bob", "carol", "dave", "erin", "pat"] {
                let link = self.mint(&b, id, Some(p), VerdictKind::Approve);
                b.stale_digest.insert(link.token.clone());
                b.pre_edit.push((link, BTreeSet::new()));
            }
            for verdict in [VerdictKind::Approve, VerdictKind::Reject] {
                let link = self.mint(&b, id, None, verdict);
                b.stale_digest.insert(link.token.clone());
                b.pre_edit.push((link, BTreeSet::new()));
            }
            let parameters = json!({ "table": "orders", "limit": 10, "edited": i });
            let t = self
                .env
                .handoff
                .decide(
                    id,
                    &self.env.cred(editor),
                    Verdict::ApproveWithEdits { parameters },
                    None,
                )
                .await
                .unwrap()
                .into_ticket();
            assert!(matches!(t.state(), TicketState::Pending));
            assert!(t.material_version() > 1);
            b.votes
                .entry(id)
                .or_default()
                .push((person(editor), VoteKind::Approve));
            *b.accepted_rows.entry(id).or_default() += 1;
            b.cache.insert(id, t);
        }
        b
    }

    /// Runs the expiry sweep and checks the summary rows it writes: the unauthenticated count
    /// held, if its window is over, and the counts of every closed window of people without a
    /// say.
    async fn sweep(&mut self) {
        let head = self.env.store.audit_head().await.unwrap().seq;
        self.env.handoff.expire_due().await.unwrap();
        let written: Vec<Row> = self
            .rows_since(head)
            .await
            .into_iter()
            .filter(|r| r.kind == "refused")
            .collect();
        let now = self.now();
        let mut want: Vec<Row> = self.flood.sweep(now).into_iter().collect();
        want.extend(self.auth_flood.sweep(now));
        self.stats.audited_coalesced += written.iter().filter_map(|r| r.coalesced).sum::<u64>();
        assert_eq!(sorted(&written), sorted(&want), "the sweep's summaries");
    }

    /// Ends a batch: writes the coalesced count still held (one more unauthenticated refusal
    /// after the window), then reconciles the audit trail and the tickets with the attempts.
    async fn finish(&mut self, mut b: Batch) {
        self.env.clock.advance(Duration::from_secs(61));
        if self.rng.one_in(2) {
            // By the expiry sweep.
            self.sweep().await;
        } else {
            // By the next unauthenticated refusal.
            let flush = loop {
                if let Some(a) = self.adversarial(&b, Entry::Token, Kind::Forged) {
                    if matches!(a.aud, Aud::Unauth { .. }) {
                        break a;
                    }
                }
            };
            self.run(&mut b, flush).await;
            // The counts of people without a say are written by the sweep only.
            self.sweep().await;
        }
        assert_eq!(self.flood.suppressed, 0, "the summary was written");
        assert!(
            self.auth_flood.windows.is_empty(),
            "every coalescing window was closed"
        );

        // Reconcile, from the rows alone.
        let rows = self.rows_since(b.head0).await;
        let mut unauth_rows = 0u64;
        let mut unauth_coalesced = 0u64;
        let mut auth: BTreeMap<(String, String), u64> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.kind == "refused") {
            match &r.actor {
                Actor::Unauthenticated => match r.coalesced {
                    Some(n) => unauth_coalesced += n,
                    None => unauth_rows += 1,
                },
                Actor::Reviewer(p) => {
                    *auth
                        .entry((r.refusal.clone().unwrap(), p.to_string()))
                        .or_default() += r.coalesced.unwrap_or(1);
                }
                other => panic!("unexpected refusal by {other:?}: {r:?}"),
            }
        }
        assert_eq!(
            unauth_rows + unauth_coalesced,
            b.unauth_attempts,
            "unauthenticated refusals: {unauth_rows} rows + {unauth_coalesced} coalesced"
        );
        assert_eq!(auth, b.auth_refusals, "refusals of authenticated reviewers");

        // Every ticket holds exactly the controls' votes and accepted decision rows.
        for tk in &b.tickets {
            let t = self.env.store.ticket(tk.id).await.unwrap().unwrap();
            let mut got: Vec<(PersonId, VoteKind)> = t
                .votes()
                .iter()
                .map(|v| (v.person.clone(), v.kind))
                .collect();
            let mut want = b.votes.get(&tk.id).cloned().unwrap_or_default();
            got.sort_by(|x, y| x.0.cmp(&y.0));
            want.sort_by(|x, y| x.0.cmp(&y.0));
            assert_eq!(got, want, "votes on {}", tk.id);
            let accepted = self
                .env
                .store
                .decisions(tk.id)
                .await
                .unwrap()
                .iter()
                .filter(|d| d.refusal.is_none())
                .count();
            assert_eq!(
                accepted,
                b.accepted_rows.get(&tk.id).copied().unwrap_or(0),
                "accepted decision rows on {}",
                tk.id
            );
        }
    }
}

#[tokio::test]
async fn adversarial_decisions_are_refused_typed_and_audited() {
    let cases = env_u64("ADVERSARIAL_CASES", 2_000);
    let seed = env_u64("ADVERSARIAL_SEED", 0x00ad_5eed);
    let flood_limit = env_u64("ADVERSARIAL_FLOOD_LIMIT", 8) as u32;
    let started = Instant::now();
    let env = Env::new(flood_limit).await;
    let mut run = Run {
        env,
        rng: Rng::new(seed),
        seed,
        flood: FloodModel {
            limit: flood_limit,
            window_start: None,
            written: 0,
            suppressed: 0,
        },
        auth_flood: AuthFloodModel::default(),
        stats: Stats::default(),
        serial: 0,
        burst: Vec::new(),
    };
    // Every kind at every entry point where it applies, first; then drawn at random.
    let mut coverage: Vec<(Entry, Kind)> = ENTRIES
        .iter()
        .flat_map(|&e| KINDS.iter().map(move |&k| (e, k)))
        .filter(|&(e, k)| applies(e, k))
        .collect();
    coverage.reverse();
    let mut batches = 0u64;
    let mut controls_made = 0u64;
    while run.stats.attempts < cases {
        let mut b = run.setup().await;
        let target = (run.stats.attempts + BATCH).min(cases);
        let mut misses = 0u32;
        while run.stats.attempts < target || !run.burst.is_empty() {
            if run.burst.is_empty() && run.rng.one_in(100) {
                // A new coalescing window now and then.
                run.env.clock.advance(Duration::from_secs(61));
            }
            let next = if let Some(a) = run.burst.pop() {
                Some(a)
            } else if run.rng.one_in(CONTROL_EVERY) {
                run.control(&b)
            } else {
                let (entry, kind) = match coverage.pop() {
                    Some(ek) => ek,
                    None => loop {
                        let e = run.rng.pick(ENTRIES);
                        let k = run.rng.pick(KINDS);
                        if applies(e, k) {
                            break (e, k);
                        }
                    },
                };
                let a = run.adversarial(&b, entry, kind);
                if a.is_none() && run.stats.attempts < 64 {
                    // Not available yet in this batch: try again later.
                    coverage.insert(0, (entry, kind));
                }
                a
            };
            match next {
                Some(a) => {
                    if a.kind.is_none() {
                        controls_made += 1;
                    }
                    misses = 0;
                    run.run(&mut b, a).await;
                }
                None => {
                    misses += 1;
                    assert!(misses < 10_000, "the generator found nothing to do");
                }
            }
        }
        run.finish(b).await;
        batches += 1;
        // The next batch starts later.
        run.env.clock.advance(Duration::from_secs(120));
    }

    // The chain holds every row written.
    let report = run.env.handoff.verify_audit().await.unwrap();
    let s = &run.stats;
    for &entry in ENTRIES {
        for &kind in KINDS {
            if applies(entry, kind) {
                assert!(
                    s.by_kind.get(&(entry, kind)).copied().unwrap_or(0) > 0,
                    "{kind:?} was never thrown at {entry:?}"
                );
            }
        }
    }
    assert_eq!(s.accepted, 0, "adversarial attempts accepted");
    assert!(controls_made > 0 && s.controls == controls_made);
    assert_eq!(
        s.audited_rows + s.audited_coalesced,
        s.attempts,
        "every attempt audited, one by one or in a count"
    );
    println!(
        "adversarial decisions: seed {seed:#x}, {} attempts in {batches} batches, {} accepted, \
         {} audited one by one + {} in coalesced counts (budget {flood_limit}/min), {} controls \
         accepted, {} audit events verified, {:.1} s",
        s.attempts,
        s.accepted,
        s.audited_rows,
        s.audited_coalesced,
        s.controls,
        report.events,
        started.elapsed().as_secs_f64()
    );
    for ((entry, kind), n) in &s.by_kind {
        println!("  {entry:?} / {kind:?}: {n}");
    }
    for ((entry, how), n) in &s.by_how {
        println!("    {entry:?} / {how}: {n}");
    }
}

/// Forged platform credentials: a platform identity cannot be constructed from request data
/// (no public constructor; see the `compile_fail` example on `Credential`), so an attacker's
/// only way is a channel request. Requests the registered verifier refuses (a forged,
/// missing or wrong-key signature, a signature of another user, headers repeated), and
/// requests naming a platform nobody registered (the Feishu user ids the directory maps
/// included), yield no credential; each is audited as unauthenticated, and nothing else is
/// written.
#[tokio::test]
async fn forged_platform_requests_yield_no_credential_and_are_audited() {
    let cases = (env_u64("ADVERSARIAL_CASES", 2_000) / 10).max(200);
    let mut rng = Rng::new(env_u64("ADVERSARIAL_SEED", 0x00ad_5eed));
    let env = Env::new(0).await;
    let head_before = env.store.audit_head().await.unwrap();
    let mut by_how: BTreeMap<&str, u64> = BTreeMap::new();
    for _ in 0..cases {
        let user = ["ou_alice", "ou_bob", "ou_pat", "ou_stranger"][rng.index(4)];
        let (platform, headers, how) = match rng.index(6) {
            0 => (
                "chat",
                chat_headers(user, &format!("{:064x}", rng.next())),
                "random signature",
            ),
            1 => (
                "chat",
                chat_headers(
                    user,
                    &chat_signature(b"a-key-the-attacker-chose-himself", user),
                ),
                "signed with another key",
            ),
            2 => (
                "chat",
                chat_headers(user, &chat_signature(CHAT_KEY, "ou_someone_else")),
                "another user's signature",
            ),
            3 => (
                "chat",
                vec![("x-chat-user".to_owned(), user.to_owned())],
                "no signature",
            ),
            4 => {
                let mut headers =
                    chat_headers("ou_stranger", &chat_signature(CHAT_KEY, "ou_stranger"));
                headers.push(("x-chat-user".into(), user.into()));
                ("chat", headers, "user header repeated")
            }
            _ => (
                ["feishu", "slack", "proxy"][rng.index(3)],
                vec![("x-user".to_owned(), user.to_owned())],
                "platform nobody registered",
            ),
        };
        match env
            .handoff
            .platform_credential(platform, &headers, b"{}")
            .await
        {
            Err(DecideError::Unauthenticated(_)) => {}
            other => panic!("{how}: a forged platform request was answered {other:?}"),
        }
        *by_how.entry(how).or_default() += 1;
    }
    // Exactly one `refused` row per attempt (the budget is off), nothing else.
    let mut events = Vec::new();
    loop {
        let from = events
            .last()
            .map_or(head_before.seq, |e: &AuditEvent| e.seq())
            + 1;
        let page = env.store.audit_events(from, 512).await.unwrap();
        if page.is_empty() {
            break;
        }
        events.extend(page.into_iter().map(|raw| AuditEvent::decode(raw).unwrap()));
    }
    assert_eq!(
        events.len() as u64,
        cases,
        "one audit row per forged request"
    );
    for event in &events {
        let record = event.record();
        assert_eq!(record.kind, "refused");
        assert_eq!(record.actor, Actor::Unauthenticated);
        assert_eq!(record.data["refusal"], "unauthenticated");
        assert_eq!(record.ticket, None);
    }
    println!("forged platform requests: {cases}, 0 credentials, {cases} audited");
    for (how, n) in by_how {
        println!("  {how}: {n}");
    }
}

/// A flood that stops leaves a count nobody wrote: the next unauthenticated refusal would
/// carry it, but none may come. The expiry sweep (which hosts run every so often) writes it
/// once the window is over, so every refusal of a flood that stopped is audited.
#[tokio::test]
async fn the_count_of_a_flood_that_stopped_is_written_by_the_next_sweep() {
    let env = Env::new(3).await;
    let forged = || async {
        let r = env
            .handoff
            .decide_with_token("ah1.forged", &env.cred("alice"), TokenSubmission::new())
            .await;
        assert!(matches!(
            r,
            Err(LinkError::Malformed(MalformedToken::MissingSignature))
        ));
    };
    let rows_after = |head: u64| {
        let store = Arc::clone(&env.store);
        async move {
            let mut rows = Vec::new();
            for raw in store.audit_events(head + 1, 100).await.unwrap() {
                rows.push(Row::of(&AuditEvent::decode(raw).unwrap()));
            }
            rows
        }
    };
    let head = env.store.audit_head().await.unwrap().seq;
    for _ in 0..10 {
        forged().await;
    }
    let row = Row::refused("token_malformed", Actor::Unauthenticated, None);
    assert_eq!(
        rows_after(head).await,
        vec![row.clone(); 3],
        "3 rows, 7 counted"
    );

    // Within the window a sweep writes nothing: the budget holds.
    let head = env.store.audit_head().await.unwrap().seq;
    env.handoff.expire_due().await.unwrap();
    assert_eq!(rows_after(head).await, Vec::<Row>::new());

    // After it, the sweep writes the count.
    env.clock.advance(Duration::from_secs(61));
    env.handoff.expire_due().await.unwrap();
    let summary = Row {
        kind: "refused".into(),
        refusal: Some("unauthenticated".into()),
        actor: Actor::Unauthenticated,
        ticket: None,
        coalesced: Some(7),
    };
    assert_eq!(rows_after(head).await, vec![summary.clone()]);

    // Written once: the next refusal opens a new window with a row of its own.
    let head = env.store.audit_head().await.unwrap().seq;
    env.handoff.expire_due().await.unwrap();
    forged().await;
    assert_eq!(rows_after(head).await, vec![row]);
    env.handoff.verify_audit().await.unwrap();
}

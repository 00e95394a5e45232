//! `StaticDirectory`: random API tokens stored as hashes, platform users and principal aliases
//! in one person-id namespace, and no secrets in `Debug` output.

use std::collections::BTreeSet;

use agent_handoff::backend::{token_hash, DirectoryError, PlatformRequest};
use agent_handoff::{
    Credential, DecideError, GroupName, Handoff, IdentityError, IdentityVerifier, PersonId,
    PlatformVerifier, SqliteStore, StaticDirectory,
};
use base64::Engine as _;

fn person(name: &str) -> PersonId {
    PersonId::new(name).unwrap()
}

fn groups(names: &[&str]) -> BTreeSet<GroupName> {
    names.iter().map(|g| GroupName::new(*g).unwrap()).collect()
}

/// A channel the tests trust: the user it proves is the `x-test-user` header. Only a test may
/// trust a header like this; a real verifier checks a signature first.
#[derive(Debug)]
struct TrustedHeader(&'static str);

#[async_trait::async_trait]
impl PlatformVerifier for TrustedHeader {
    fn platform(&self) -> &str {
        self.0
    }

    async fn verify(&self, request: &PlatformRequest<'_>) -> Result<String, IdentityError> {
        request
            .header("x-test-user")
            .map(str::to_owned)
            .ok_or(IdentityError::Unknown)
    }
}

/// A handoff over `dir` that trusts the test channels `feishu` and `slack`.
async fn trusting(dir: &StaticDirectory) -> Handoff {
    Handoff::builder()
        .store(SqliteStore::in_memory().await.unwrap())
        .policy(DenyAll)
        .identity(dir.clone())
        .platform_verifier(TrustedHeader("feishu"))
        .platform_verifier(TrustedHeader("slack"))
        .build()
        .unwrap()
}

/// The credential a trusted test channel proves for `user`.
async fn platform(handoff: &Handoff, platform: &str, user: &str) -> Credential {
    handoff
        .platform_credential(platform, &[("x-test-user".into(), user.into())], b"")
        .await
        .unwrap()
}

#[test]
fn the_directory_is_shareable_across_threads() {
    fn is<T: Send + Sync + Clone + std::fmt::Debug>() {}
    is::<StaticDirectory>();
    is::<agent_handoff::ApiToken>();
    is::<Credential>();
}

#[test]
fn issued_tokens_are_256_random_bits_in_a_recognisable_text_form() {
    let mut dir = StaticDirectory::new();
    dir.add_person("alice", ["dba"]).unwrap();
    let tokens: Vec<String> = (0..64)
        .map(|_| dir.issue_token("alice").unwrap().expose().to_owned())
        .collect();
    let mut ones = 0u32;
    for token in &tokens {
        let body = token.strip_prefix("aht_").expect("tokens start with aht_");
        assert_eq!(body.len(), 43, "32 bytes in unpadded base64url: {token}");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .expect("base64url body");
        assert_eq!(raw.len(), 32, "256 bits (at least 128 are required)");
        ones += raw.iter().map(|b| b.count_ones()).sum::<u32>();
    }
    let distinct: BTreeSet<&String> = tokens.iter().collect();
    assert_eq!(distinct.len(), tokens.len(), "every token is fresh");
    // 16384 random bits: half of them set, give or take far less than 10 % (about 25
    // standard deviations); a constant or counter-based token would be far off.
    let total = 64 * 256;
    assert!(
        (total * 2 / 5..=total * 3 / 5).contains(&ones),
        "{ones} of {total} bits set"
    );
}

#[tokio::test]
async fn a_token_authenticates_its_owner_with_the_owners_current_groups() {
    let mut dir = StaticDirectory::new();
    dir.add_person("alice", ["dba"]).unwrap();
    dir.add_person("bob", ["finance"]).unwrap();
    let first = dir.issue_token("alice").unwrap();
    let second = dir.issue_token("alice").unwrap();
    let bobs = dir.issue_token("bob").unwrap();

    for token in [&first, &second] {
        let reviewer = dir
            .verify(&Credential::token(token.expose()))
            .await
            .unwrap();
        assert_eq!(reviewer.person, person("alice"));
        assert_eq!(reviewer.groups, groups(&["dba"]));
    }
    let reviewer = dir.verify(&Credential::token(bobs.expose())).await.unwrap();
    assert_eq!(reviewer.person, person("bob"));

    // Re-adding a person replaces their groups; their tokens keep working.
    dir.add_person("alice", ["dba", "operators"]).unwrap();
    let reviewer = dir
        .verify(&Credential::token(first.expose()))
        .await
        .unwrap();
    assert_eq!(reviewer.groups, groups(&["dba", "operators"]));
}

#[tokio::test]
async fn unknown_altered_and_foreign_tokens_are_refused() {
    let mut dir = StaticDirectory::new();
    dir.add_person("alice", ["dba"]).unwrap();
    let token = dir.issue_token("alice").unwrap().expose().to_owned();

    let mut other = StaticDirectory::new();
    other.add_person("alice", ["dba"]).unwrap();
    let foreign = other.issue_token("alice").unwrap().expose().to_owned();

    let mut flipped = token.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();

    for presented in [
        String::new(),
        "aht_guess".to_owned(),
        flipped,
        format!("{token} "),
        format!("Bearer {token}"),
        token[..token.len() - 1].to_owned(),
        token.to_uppercase(),
        foreign,
    ] {
        match dir.verify(&Credential::token(presented.clone())).await {
            Err(IdentityError::Unknown) => {}
            other => panic!("`{presented}` must be refused, got {other:?}"),
        }
    }
    // The genuine token still works.
    assert!(dir.verify(&Credential::token(token)).await.is_ok());
}

#[tokio::test]
async fn hashes_of_tokens_issued_elsewhere_authenticate_like_issued_tokens() {
    let mut dir = StaticDirectory::new();
    dir.add_person("alice", ["dba"]).unwrap();
    dir.add_token_hash("alice", token_hash("s3cret-from-the-vault"))
        .unwrap();
    let reviewer = dir
        .verify(&Credential::token("s3cret-from-the-vault"))
        .await
        .unwrap();
    assert_eq!(reviewer.person, person("alice"));
    assert!(dir
        .verify(&Credential::token("s3cret-from-the-vaulT"))
        .await
        .is_err());
    assert!(matches!(
        dir.add_token_hash("mallory", [0; 32]),
        Err(DirectoryError::UnknownPerson(p)) if p == "mallory"
    ));
    assert!(matches!(
        dir.issue_token("mallory"),
        Err(DirectoryError::UnknownPerson(_))
    ));
}

#[tokio::test]
async fn a_hash_differing_in_any_single_byte_does_not_match() {
    let presented = "a-token-whose-hash-is-nearly-registered";
    for i in 0..32 {
        let mut near = token_hash(presented);
        near[i] ^= 0x01;
        let mut dir = StaticDirectory::new();
        dir.add_person("alice", ["dba"]).unwrap();
        dir.add_token_hash("alice", near).unwrap();
        assert!(
            matches!(
                dir.verify(&Credential::token(presented)).await,
                Err(IdentityError::Unknown)
            ),
            "byte {i} was not compared"
        );
    }
}

#[tokio::test]
async fn platform_users_resolve_to_the_same_person_as_their_tokens() {
    let mut dir = StaticDirectory::new();
    dir.add_person("alice", ["dba"]).unwrap();
    dir.add_platform_user("feishu", "ou_alice", "alice")
        .unwrap();
    let handoff = trusting(&dir).await;
    let via_feishu = dir
        .verify(&platform(&handoff, "feishu", "ou_alice").await)
        .await
        .unwrap();
    assert_eq!(via_feishu.person, person("alice"));
    assert_eq!(via_feishu.groups, groups(&["dba"]));

    // The platform is part of the identity: the same user id elsewhere is somebody else.
    for (p, u) in [
        ("slack", "ou_alice"),
        ("feishu", "ou_bob"),
        ("feishu", "OU_ALICE"),
    ] {
        assert!(matches!(
            dir.verify(&platform(&handoff, p, u).await).await,
            Err(IdentityError::Unknown)
        ));
    }
    assert!(matches!(
        dir.add_platform_user("feishu", "ou_x", "nobody"),
        Err(DirectoryError::UnknownPerson(_))
    ));
}

/// A platform identity cannot be built from request data: the only ways are the crate's own
/// verified handlers and a verifier the host registered. A platform nobody registered, or a
/// request the registered verifier refuses, yields no credential, and each refusal is audited.
#[tokio::test]
async fn platform_credentials_come_only_from_registered_verifiers_and_refusals_are_audited() {
    let mut dir = StaticDirectory::new();
    dir.add_person("alice", ["dba"]).unwrap();
    dir.add_platform_user("teams", "ou_alice", "alice").unwrap();
    let handoff = trusting(&dir).await;
    let asserted = [("x-test-user".to_owned(), "ou_alice".to_owned())];
    // "teams" maps alice in the directory, but no verifier for it is registered.
    for (platform, headers) in [("teams", &asserted[..]), ("slack", &[][..])] {
        match handoff.platform_credential(platform, headers, b"{}").await {
            Err(DecideError::Unauthenticated(_)) => {}
            other => panic!("{platform}: {other:?}"),
        }
    }
    // Empty or control-character user ids are not identities.
    for user in ["", "ou\nalice"] {
        let headers = [("x-test-user".to_owned(), user.to_owned())];
        assert!(matches!(
            handoff.platform_credential("slack", &headers, b"").await,
            Err(DecideError::Unauthenticated(IdentityError::Unknown))
        ));
    }
    let refusals = handoff
        .store()
        .audit_events(1, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|raw| {
            let event = agent_handoff::audit::AuditEvent::decode(raw.clone()).unwrap();
            let record = event.record();
            record.kind == "refused" && record.data["refusal"] == "unauthenticated"
        })
        .count();
    assert_eq!(refusals, 4, "each refused platform request is audited");
    // A registered verifier's credential carries what it proved.
    let Credential::Platform(identity) = platform(&handoff, "slack", "ou_alice").await else {
        panic!("a platform credential")
    };
    assert_eq!(
        (identity.platform(), identity.user()),
        ("slack", "ou_alice")
    );
}

#[tokio::test]
async fn two_verifiers_for_one_platform_are_refused_at_build() {
    let built = Handoff::builder()
        .store(SqliteStore::in_memory().await.unwrap())
        .policy(DenyAll)
        .identity(StaticDirectory::new())
        .platform_verifier(TrustedHeader("slack"))
        .platform_verifier(TrustedHeader("slack"))
        .build();
    assert!(matches!(built, Err(agent_handoff::Error::Build(_))));
}

#[tokio::test]
async fn principals_resolve_by_person_id_or_alias_and_unknown_ones_do_not() {
    let mut dir = StaticDirectory::new();
    dir.add_person("alice", ["dba"]).unwrap();
    dir.add_alias("alice@example.com", "alice").unwrap();
    dir.add_alias("sso|1234", "alice").unwrap();

    for name in ["alice", "alice@example.com", "sso|1234"] {
        assert_eq!(
            dir.resolve_principal(&person(name)).await.unwrap(),
            Some(person("alice")),
            "{name}"
        );
    }
    for name in ["bob", "Alice@example.com", "sso|12345"] {
        assert_eq!(dir.resolve_principal(&person(name)).await.unwrap(), None);
    }
    assert!(matches!(
        dir.add_alias("bob@example.com", "bob"),
        Err(DirectoryError::UnknownPerson(_))
    ));
}

#[test]
fn invalid_ids_are_refused_when_building() {
    let mut dir = StaticDirectory::new();
    assert!(matches!(
        dir.add_person("", ["dba"]),
        Err(DirectoryError::InvalidId(_))
    ));
    assert!(matches!(
        dir.add_person("alice", ["bad\ngroup"]),
        Err(DirectoryError::InvalidId(_))
    ));
}

#[tokio::test]
async fn debug_output_never_contains_a_token_or_its_hash() {
    let mut dir = StaticDirectory::new();
    dir.add_person("alice", ["dba"]).unwrap();
    let token = dir.issue_token("alice").unwrap();
    let secret = token.expose().to_owned();
    let body = secret.strip_prefix("aht_").unwrap().to_owned();
    let hash_hex: String = token_hash(&secret)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let credential = Credential::token(secret.clone());
    let handoff = Handoff::builder()
        .store(SqliteStore::in_memory().await.unwrap())
        .policy(DenyAll)
        .identity(dir.clone())
        .build()
        .unwrap();

    for shown in [
        format!("{token:?}"),
        format!("{token:#?}"),
        format!("{credential:?}"),
        format!("{credential:#?}"),
        format!("{dir:?}"),
        format!("{dir:#?}"),
        format!("{handoff:?}"),
    ] {
        assert!(!shown.contains(&body), "token leaked: {shown}");
        assert!(!shown.contains(&hash_hex[..16]), "hash leaked: {shown}");
    }
    assert!(format!("{credential:?}").contains("redacted"));
}

/// A policy engine for building a `Handoff` that is only formatted.
struct DenyAll;

impl agent_handoff::policy::PolicyEngine for DenyAll {
    fn evaluate(
        &self,
        _request: &agent_handoff::action::ActionRequest,
    ) -> agent_handoff::policy::Ruling {
        agent_handoff::policy::Ruling {
            outcome: agent_handoff::policy::Outcome::Deny {
                reason: "test".into(),
            },
            matched: Vec::new(),
            policy: self.policy_ref(),
        }
    }

    fn policy_ref(&self) -> agent_handoff::policy::PolicyRef {
        agent_handoff::policy::PolicyRef {
            version: "deny-all".into(),
            hash: agent_handoff::policy::PolicyHash([0; 32]),
        }
    }
}

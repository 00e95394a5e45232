//! The `IdentityVerifier` port and [`StaticDirectory`], a small built-in directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use async_trait::async_trait;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::platform::PlatformIdentity;
use crate::codes::{self, Code};
use crate::id::{GroupName, PersonId};
use crate::ticket::Reviewer;

/// Something a reviewer or operator presents to prove who they are.
///
/// The facade's reviewer API takes credentials only, never a ready-made [`Reviewer`]: the
/// configured [`IdentityVerifier`] turns a credential into one, or refuses.
///
/// A bearer token can be presented by anyone who holds it. A platform identity cannot be made
/// from request data: it comes only from a verified channel request (see
/// [`PlatformIdentity`]), so this does not compile:
///
/// ```compile_fail
/// use agent_handoff::{Credential, PlatformIdentity};
///
/// let forged = Credential::Platform(PlatformIdentity {
///     platform: "feishu".into(),
///     user: "ou_alice".into(),
/// });
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credential {
    /// A bearer API token.
    Token(String),
    /// A chat platform's user, proven by a verified channel request (see
    /// [`PlatformIdentity`] for the only ways to get one).
    Platform(PlatformIdentity),
}

impl Credential {
    /// A bearer API token.
    pub fn token(token: impl Into<String>) -> Self {
        Credential::Token(token.into())
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Token(_) => f.write_str("Credential::Token(<redacted>)"),
            Credential::Platform(identity) => f
                .debug_struct("Credential::Platform")
                .field("platform", &identity.platform())
                .field("user", &identity.user())
                .finish(),
        }
    }
}

/// Why a credential was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The credential does not identify anyone.
    #[error("credential not recognised")]
    Unknown,
    /// This verifier does not accept this kind of credential.
    #[error("credential kind `{0}` is not accepted by this verifier")]
    Unsupported(&'static str),
    /// The directory could not be reached or failed.
    #[error("identity directory failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl IdentityError {
    /// The stable code (see [`codes`](crate::codes)).
    pub fn code(&self) -> Code {
        match self {
            IdentityError::Unknown => codes::UNAUTHENTICATED,
            IdentityError::Unsupported(_) => codes::CREDENTIAL_UNSUPPORTED,
            IdentityError::Backend(_) => codes::IDENTITY_UNAVAILABLE,
        }
    }
}

/// Turns credentials into authenticated reviewers, and requester principals into the same
/// person-id namespace (so self-approval is caught across channels).
#[async_trait]
pub trait IdentityVerifier: Send + Sync + fmt::Debug {
    /// Authenticates a credential: the directory's person id and groups, or a refusal.
    async fn verify(&self, credential: &Credential) -> Result<Reviewer, IdentityError>;

    /// Resolves a principal named by the host into a directory person id. `Ok(None)` means
    /// the directory does not know it: self-approval checks then fail closed.
    async fn resolve_principal(
        &self,
        principal: &PersonId,
    ) -> Result<Option<PersonId>, IdentityError>;
}

/// An API token for [`StaticDirectory`]: 256 random bits, shown once.
///
/// `Debug` never prints it; use [`ApiToken::expose`] to hand it to its owner.
#[derive(Clone)]
pub struct ApiToken(String);

impl ApiToken {
    /// The token text (`aht_` + 43 base64url characters).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// People, their groups and their API tokens, held in memory — for tests and small teams.
///
/// Tokens are stored only as SHA-256 hashes and compared in constant time; issue them with
/// [`issue_token`](Self::issue_token) (random, 256 bits) or register a hash made elsewhere with
/// [`add_token_hash`](Self::add_token_hash). Platform users (`Credential::Platform`) and
/// principal aliases map onto the same person ids.
///
/// ```
/// # tokio_test_block_on(async {
/// use agent_handoff::{Credential, IdentityVerifier, PersonId, StaticDirectory};
///
/// let mut dir = StaticDirectory::new();
/// dir.add_person("alice", ["dba"])?;
/// let token = dir.issue_token("alice")?;
/// let reviewer = dir.verify(&Credential::token(token.expose())).await?;
/// assert_eq!(reviewer.person.as_str(), "alice");
/// assert!(dir.verify(&Credential::token("aht_guess")).await.is_err());
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let waker = std::task::Waker::noop();
/// #     let mut cx = std::task::Context::from_waker(&waker);
/// #     let mut f = std::pin::pin!(f);
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
/// ```
#[derive(Default, Clone)]
pub struct StaticDirectory {
    people: BTreeMap<PersonId, BTreeSet<GroupName>>,
    tokens: Vec<([u8; 32], PersonId)>,
    platform_users: BTreeMap<(String, String), PersonId>,
    aliases: BTreeMap<String, PersonId>,
}

/// Error building a [`StaticDirectory`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// An id or group name was invalid.
    #[error(transparent)]
    InvalidId(#[from] crate::id::InvalidId),
    /// The person has not been added.
    #[error("person `{0}` is not in the directory")]
    UnknownPerson(String),
    /// The operating system's random source failed.
    #[error("random source failed: {0}")]
    Random(String),
}

impl DirectoryError {
    /// The stable code (see [`codes`](crate::codes)).
    pub fn code(&self) -> Code {
        match self {
            DirectoryError::InvalidId(e) => e.code(),
            DirectoryError::UnknownPerson(_) => codes::UNKNOWN_PERSON,
            DirectoryError::Random(_) => codes::RANDOM_FAILED,
        }
    }
}

impl StaticDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a person with their groups.
    pub fn add_person<G: AsRef<str>>(
        &mut self,
        person: &str,
        groups: impl IntoIterator<Item = G>,
    ) -> Result<&mut Self, DirectoryError> {
        let person = PersonId::new(person)?;
        let groups = groups
            .into_iter()
            .map(|g| GroupName::new(g.as_ref()))
            .collect::<Result<BTreeSet<_>, _>>()?;
        self.people.insert(person, groups);
        Ok(self)
    }

    fn known(&self, person: &str) -> Result<PersonId, DirectoryError> {
        let person = PersonId::new(person)?;
        if self.people.contains_key(&person) {
            Ok(person)
        } else {
            Err(DirectoryError::UnknownPerson(person.to_string()))
        }
    }

    /// Issues a new random API token for a person (256 bits from the OS), keeping only its
    /// hash. Show the returned token to its owner once.
    pub fn issue_token(&mut self, person: &str) -> Result<ApiToken, DirectoryError> {
        let person = self.known(person)?;
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| DirectoryError::Random(e.to_string()))?;
        let token = format!(
            "aht_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        self.tokens.push((token_hash(&token), person));
        Ok(ApiToken(token))
    }

    /// Registers the SHA-256 hash of a token issued elsewhere.
    pub fn add_token_hash(
        &mut self,
        person: &str,
        sha256: [u8; 32],
    ) -> Result<&mut Self, DirectoryError> {
        let person = self.known(person)?;
        self.tokens.push((sha256, person));
        Ok(self)
    }

    /// Maps a chat platform's user id (e.g. a Feishu `open_id`) to a person. A platform user
    /// is only ever presented as a [`Credential::Platform`] that a verified channel request
    /// produced (see [`PlatformIdentity`]).
    pub fn add_platform_user(
        &mut self,
        platform: &str,
        user: &str,
        person: &str,
    ) -> Result<&mut Self, DirectoryError> {
        let person = self.known(person)?;
        self.platform_users
            .insert((platform.to_owned(), user.to_owned()), person);
        Ok(self)
    }

    /// Maps a principal name used by a host (an email, an SSO subject) to a person.
    pub fn add_alias(&mut self, alias: &str, person: &str) -> Result<&mut Self, DirectoryError> {
        let person = self.known(person)?;
        self.aliases.insert(alias.to_owned(), person);
        Ok(self)
    }

    fn reviewer(&self, person: &PersonId) -> Option<Reviewer> {
        self.people.get(person).map(|groups| Reviewer {
            person: person.clone(),
            groups: groups.clone(),
        })
    }
}

/// SHA-256 of a token's text, as [`StaticDirectory`] stores it.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two hashes without an early exit.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl fmt::Debug for StaticDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticDirectory")
            .field("people", &self.people.len())
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl IdentityVerifier for StaticDirectory {
    async fn verify(&self, credential: &Credential) -> Result<Reviewer, IdentityError> {
        let person = match credential {
            Credential::Token(token) => {
                let presented = token_hash(token);
                // Visit every entry so timing does not depend on which one matched.
                let mut found = None;
                for (hash, person) in &self.tokens {
                    if ct_eq(hash, &presented) && found.is_none() {
                        found = Some(person);
                    }
                }
                found
            }
            Credential::Platform(identity) => self
                .platform_users
                .get(&(identity.platform().to_owned(), identity.user().to_owned())),
        };
        person
            .and_then(|p| self.reviewer(p))
            .ok_or(IdentityError::Unknown)
    }

    async fn resolve_principal(
        &self,
        principal: &PersonId,
    ) -> Result<Option<PersonId>, IdentityError> {
        if self.people.contains_key(principal) {
            return Ok(Some(principal.clone()));
        }
        Ok(self.aliases.get(principal.as_str()).cloned())
    }
}

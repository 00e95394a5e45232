//! Platform identities (a Feishu or Slack user) and the one trust step that produces them for
//! an integrator's channel: a [`PlatformVerifier`].

use std::fmt;

use async_trait::async_trait;

use super::identity::IdentityError;
use crate::timestamp::Timestamp;

/// A chat platform's user (a Feishu `open_id`, a Slack user id), proven by a verified channel
/// request — the content of a [`Credential::Platform`](super::Credential::Platform).
///
/// It has no public constructor, so it can never be made from request data. It is produced
/// only
///
/// - by this crate's own verified callback handlers
///   (`Handoff::handle_feishu_callback`: platform `feishu`, after the callback's signature,
///   time window and Verification Token were checked), or
/// - through the one explicit trust step for an integrator's channel: a [`PlatformVerifier`]
///   registered with [`HandoffBuilder::platform_verifier`](crate::HandoffBuilder::platform_verifier),
///   run on a request exactly as received by
///   [`Handoff::platform_credential`](crate::Handoff::platform_credential).
///
/// The [`IdentityVerifier`](super::IdentityVerifier) then maps it to a directory person, like
/// any credential ([`StaticDirectory::add_platform_user`](super::StaticDirectory::add_platform_user)).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlatformIdentity {
    platform: String,
    user: String,
}

impl PlatformIdentity {
    /// An identity a verified request proved. Only verified handlers call this.
    pub(crate) fn verified(platform: impl Into<String>, user: impl Into<String>) -> Self {
        Self {
            platform: platform.into(),
            user: user.into(),
        }
    }

    /// The platform (`feishu`).
    pub fn platform(&self) -> &str {
        &self.platform
    }

    /// The platform's user id.
    pub fn user(&self) -> &str {
        &self.user
    }
}

/// Longest platform user id a [`PlatformVerifier`] may name, in bytes.
pub const MAX_PLATFORM_USER_LEN: usize = 256;

/// Checks that a channel request — a chat platform's signed callback, or a header set by a
/// trusted proxy — comes from the platform user it names: the one explicit trust step through
/// which an integrator's channel produces a [`Credential::Platform`](super::Credential::Platform).
///
/// Register it with [`HandoffBuilder::platform_verifier`](crate::HandoffBuilder::platform_verifier)
/// (at most one per platform); [`Handoff::platform_credential`](crate::Handoff::platform_credential)
/// then runs it on a request exactly as received and turns the user it names into a
/// credential. Registering one is a trust decision: whatever user it names is taken as proven.
/// So a verifier must check a proof the sender cannot forge — the platform's request
/// signature and time window, or the network and authentication of a trusted proxy — and never
/// copy a user id out of an unauthenticated body or header. A trusted-proxy identity header
/// is such a verifier too, and is off unless one is registered.
///
/// ```
/// use agent_handoff::backend::{IdentityError, PlatformRequest, PlatformVerifier};
///
/// /// Accepts requests a reverse proxy signed in-cluster (the proof check is elided here).
/// #[derive(Debug)]
/// struct ProxyHeader;
///
/// #[async_trait::async_trait]
/// impl PlatformVerifier for ProxyHeader {
///     fn platform(&self) -> &str {
///         "sso"
///     }
///
///     async fn verify(&self, request: &PlatformRequest<'_>) -> Result<String, IdentityError> {
///         // … check the proxy's signature over the request first …
///         request.header("x-authenticated-user").map(str::to_owned).ok_or(IdentityError::Unknown)
///     }
/// }
/// ```
#[async_trait]
pub trait PlatformVerifier: Send + Sync + fmt::Debug {
    /// The platform's name, as the identity verifier knows it (for [`StaticDirectory`], the
    /// `platform` of [`add_platform_user`](super::StaticDirectory::add_platform_user)).
    ///
    /// [`StaticDirectory`]: super::StaticDirectory
    fn platform(&self) -> &str;

    /// Verifies one request: the platform user id it proves (1 to
    /// [`MAX_PLATFORM_USER_LEN`] bytes, no control characters), or why not
    /// ([`IdentityError::Unknown`] for a request that does not verify).
    async fn verify(&self, request: &PlatformRequest<'_>) -> Result<String, IdentityError>;
}

/// A channel request exactly as received, for a [`PlatformVerifier`].
///
/// `Debug` shows the header names and the body's length only: bodies and headers carry
/// signatures, decision tokens and cookies.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct PlatformRequest<'a> {
    /// The headers, `(name, value)`, in the order received.
    pub headers: &'a [(String, String)],
    /// The raw body.
    pub body: &'a [u8],
    /// The engine's clock reading, for time windows.
    pub now: Timestamp,
}

impl<'a> PlatformRequest<'a> {
    /// A request with these headers and body, received at `now`.
    pub fn new(headers: &'a [(String, String)], body: &'a [u8], now: Timestamp) -> Self {
        Self { headers, body, now }
    }

    /// The value of the only header called `name` (ASCII case-insensitive); `None` if it is
    /// absent or repeated.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        let mut found = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name));
        match (found.next(), found.next()) {
            (Some((_, v)), None) => Some(v.as_str()),
            _ => None,
        }
    }
}

impl fmt::Debug for PlatformRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlatformRequest")
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.len())
            .field("now", &self.now)
            .finish()
    }
}

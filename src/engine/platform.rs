//! Platform credentials from an integrator's channel: the registered [`PlatformVerifier`]s.

use std::sync::Arc;

use serde_json::json;

use super::error::{DecideError, Error};
use super::Handoff;
use crate::audit::Actor;
use crate::backend::{
    Credential, IdentityError, PlatformIdentity, PlatformRequest, PlatformVerifier,
    MAX_PLATFORM_USER_LEN,
};
use crate::codes;

/// Refuses verifier registrations that cannot work: a platform named twice, or not named.
pub(crate) fn check(platforms: &[Arc<dyn PlatformVerifier>]) -> Result<(), Error> {
    for (i, verifier) in platforms.iter().enumerate() {
        let name = verifier.platform();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(Error::Build(
                "a platform verifier's platform name must be 1 to 64 characters without control characters",
            ));
        }
        if platforms[..i].iter().any(|v| v.platform() == name) {
            return Err(Error::Build("two platform verifiers for one platform"));
        }
    }
    Ok(())
}

impl Handoff {
    /// The credential a channel request proves: runs the [`PlatformVerifier`] registered for
    /// `platform` (with [`HandoffBuilder::platform_verifier`](crate::HandoffBuilder::platform_verifier))
    /// on the request's `headers` and `raw_body` exactly as received, and wraps the platform
    /// user it names into a [`Credential::Platform`] to present to
    /// [`decide`](Self::decide) or [`decide_with_token`](Self::decide_with_token).
    ///
    /// This is the only way an integrator's channel gets a platform credential. A request that
    /// does not verify, names an unusable user id (empty, over
    /// [`MAX_PLATFORM_USER_LEN`] bytes, control characters), or names a platform without a
    /// registered verifier is refused with [`DecideError::Unauthenticated`] and audited as
    /// unauthenticated (coalesced under
    /// [`Limits::unauthenticated_audit_per_minute`](crate::Limits)).
    pub async fn platform_credential(
        &self,
        platform: &str,
        headers: &[(String, String)],
        raw_body: &[u8],
    ) -> Result<Credential, DecideError> {
        let inner = &self.inner;
        let request = PlatformRequest::new(headers, raw_body, inner.clock.now());
        let verified = match inner.platforms.iter().find(|v| v.platform() == platform) {
            None => Err(IdentityError::Unsupported("platform")),
            Some(verifier) => match verifier.verify(&request).await {
                Ok(user)
                    if !user.is_empty()
                        && user.len() <= MAX_PLATFORM_USER_LEN
                        && !user.chars().any(char::is_control) =>
                {
                    Ok(user)
                }
                Ok(_) => Err(IdentityError::Unknown),
                Err(e) => Err(e),
            },
        };
        match verified {
            Ok(user) => Ok(Credential::Platform(PlatformIdentity::verified(
                platform, user,
            ))),
            Err(e) => {
                let record = inner.refusal_record(
                    None,
                    Actor::Unauthenticated,
                    codes::UNAUTHENTICATED,
                    json!({
                        "platform": platform.chars().take(64).collect::<String>(),
                        "error": e.to_string(),
                    }),
                );
                let records = inner.flood_records(record);
                if !records.is_empty() {
                    inner
                        .audit_only(records)
                        .await
                        .map_err(DecideError::Store)?;
                }
                tracing::info!(refusal = %e.code().as_str(), "platform request refused");
                Err(DecideError::Unauthenticated(e))
            }
        }
    }
}

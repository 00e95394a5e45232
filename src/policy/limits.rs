//! The documented bounds of a policy document. A document outside them is refused at load
//! time with [`PolicyError::OutOfBounds`](super::PolicyError::OutOfBounds).

use std::time::Duration;

/// Most bytes in a policy document's source text.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;
/// Most rules in one document.
pub const MAX_RULES: usize = 10_000;
/// Fewest approvals a review requirement may ask for.
pub const MIN_APPROVALS: u32 = 1;
/// Most approvals a review requirement may ask for.
pub const MAX_APPROVALS: u32 = 16;
/// Most groups one review requirement may name.
pub const MAX_GROUPS: usize = 16;
/// Shortest review deadline.
pub const MIN_DEADLINE: Duration = Duration::from_secs(60);
/// Longest review deadline (30 days).
pub const MAX_DEADLINE: Duration = Duration::from_secs(30 * 86_400);
/// Shortest approval ttl.
pub const MIN_APPROVAL_TTL: Duration = Duration::from_secs(60);
/// Longest approval ttl (30 days).
pub const MAX_APPROVAL_TTL: Duration = Duration::from_secs(30 * 86_400);
/// Shortest grant ttl of an `allow` outcome.
pub const MIN_GRANT_TTL: Duration = Duration::from_secs(1);
/// Longest grant ttl of an `allow` outcome (24 hours).
pub const MAX_GRANT_TTL: Duration = Duration::from_secs(86_400);
/// Most entries in one condition list (`kind`, `environment`, `reversibility`, an attribute's
/// membership list, `impact_at_least` units, `attributes`).
pub const MAX_LIST_LEN: usize = 256;
/// Most bytes in the `version` field.
pub const MAX_VERSION_BYTES: usize = 128;
/// Most bytes in a rule description or a deny reason.
pub const MAX_TEXT_BYTES: usize = 1024;
/// Most bytes in an impact unit or a custom attribute name (or string value).
pub const MAX_NAME_BYTES: usize = 256;
/// Most problems a refused document reports ([`PolicyErrors`](super::PolicyErrors) counts
/// the rest).
pub const MAX_REPORTED_PROBLEMS: usize = 100;

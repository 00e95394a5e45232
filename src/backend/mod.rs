//! Ports: the traits the engine talks to, and the small adapters that need no feature.
//!
//! - [`Store`]: durable state (the bundled [`SqliteStore`](crate::SqliteStore) implements it).
//! - [`IdentityVerifier`]: credentials to reviewers ([`StaticDirectory`] implements it).
//! - [`PlatformVerifier`]: the one trust step through which an integrator's channel proves a
//!   platform user ([`PlatformIdentity`]).
//! - [`Clock`]: time ([`SystemClock`], [`ManualClock`]); [`CommitClock`] is the commit-time
//!   rule every store applies with it.
//! - The policy port is [`PolicyEngine`](crate::policy::PolicyEngine).

mod clock;
mod commit_clock;
mod freeze;
mod identity;
mod platform;
mod reader;
mod store;

pub(crate) use clock::lock;
pub use clock::{Clock, ClockId, ManualClock, SystemClock};
pub use commit_clock::{ClockAlarm, CommitClock, DEFAULT_CLOCK_TOLERANCE};
pub(crate) use freeze::covering;
pub use freeze::{Freeze, FreezeChange, FreezeScope};
pub use identity::{
    token_hash, ApiToken, Credential, DirectoryError, IdentityError, IdentityVerifier,
    StaticDirectory,
};
pub use platform::{PlatformIdentity, PlatformRequest, PlatformVerifier, MAX_PLATFORM_USER_LEN};
pub use reader::StoreReader;
pub use store::{
    CommitListener, Committed, DecisionRow, NonceUse, OutboxEntry, OutboxOutcome, OutboxRow,
    OutboxStatus, OutboxUpdate, Rebase, Store, StoreError, StoreHealth, TicketCursor, TicketFilter,
    TicketPage, TicketWrite, Write, STORE_CONTRACT_VERSION,
};

//! Ports: the traits the engine talks to, and the small adapters that need no feature.
//!
//! - [`Store`]: durable state (the bundled [`SqliteStore`](crate::SqliteStore) implements it).
//! - [`IdentityVerifier`]: credentials to reviewers ([`StaticDirectory`] implements it).
//! - [`Clock`]: time ([`SystemClock`], [`ManualClock`]); [`CommitClock`] is the commit-time
//!   rule every store applies with it.
//! - The policy port is [`PolicyEngine`](crate::policy::PolicyEngine).

mod clock;
mod commit_clock;
mod freeze;
mod identity;
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
pub use store::{
    CommitListener, Committed, DecisionRow, NonceUse, OutboxEntry, OutboxOutcome, OutboxRow,
    OutboxStatus, OutboxUpdate, Store, StoreError, StoreHealth, TicketCursor, TicketFilter,
    TicketPage, TicketWrite, Write,
};

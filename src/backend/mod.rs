//! Ports: the traits the engine talks to, and the small adapters that need no feature.
//!
//! - [`Store`]: durable state (the bundled [`SqliteStore`](crate::SqliteStore) implements it).
//! - [`IdentityVerifier`]: credentials to reviewers ([`StaticDirectory`] implements it).
//! - [`Clock`]: time ([`SystemClock`], [`ManualClock`]).
//! - The policy port is [`PolicyEngine`](crate::policy::PolicyEngine).

mod clock;
mod identity;
mod store;

pub(crate) use clock::lock;
pub use clock::{Clock, ManualClock, SystemClock};
pub use identity::{
    token_hash, ApiToken, Credential, DirectoryError, IdentityError, IdentityVerifier,
    StaticDirectory,
};
pub use store::{
    CommitListener, Committed, DecisionRow, NonceUse, OutboxEntry, OutboxOutcome, OutboxRow,
    OutboxStatus, OutboxUpdate, Rebase, Store, StoreError, StoreHealth, TicketCursor, TicketFilter,
    TicketPage, TicketWrite, Write,
};

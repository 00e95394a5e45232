#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The pure core: no I/O, no clock reads, no async runtime.
pub mod action;
pub mod audit;
pub mod codes;
mod id;
pub mod limits;
pub mod policy;
pub mod ticket;
mod timestamp;
pub mod token;

// Ports, adapters and the facade.
pub mod backend;
#[cfg(feature = "conformance")]
pub mod conformance;
mod engine;
mod failpoint;
pub mod notify;
#[cfg(feature = "sqlite")]
mod oneshot;
pub mod store;

pub use backend::{
    ApiToken, Clock, Credential, FreezeScope, IdentityError, IdentityVerifier, ManualClock,
    PlatformIdentity, PlatformVerifier, StaticDirectory, Store, StoreError, StoreReader,
    SystemClock, STORE_CONTRACT_VERSION,
};
pub use engine::{
    AgentHandle, ApprovedAction, AuditError, AuditFinding, AuditReport, AuditStream, ClockRebase,
    DecideError, Decided, Decision, DecisionLinks, DeliveryReport, Error, ExecuteError, Grant,
    Handoff, HandoffBuilder, Health, Limits, LinkError, MintedLink, PendingTicket, Permit,
    Proposal, ProposeError, RawAuditStream, RunError, TicketDetails, TicketHistory, TokenPreview,
    TokenSubmission, WaitError,
};
pub use id::{AgentId, GroupName, InvalidId, PersonId, RuleId, TicketId, MAX_ID_LEN};
#[cfg(feature = "sqlite")]
pub use store::sqlite::{SqliteOptions, SqliteStore, Synchronous};
pub use timestamp::Timestamp;

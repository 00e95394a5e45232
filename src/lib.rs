#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod action;
pub mod audit;
mod id;
pub mod policy;
pub mod ticket;
mod timestamp;
pub mod token;

pub use id::{AgentId, GroupName, InvalidId, PersonId, RuleId, TicketId, MAX_ID_LEN};
pub use timestamp::Timestamp;

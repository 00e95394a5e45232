//! Tamper-evident audit trail: a SHA-256 hash chain over canonical event bytes, streaming
//! verification, and signed checkpoints of the head.
// CONTRACT STUB — helper D owns this module; `AuditRecord` and `Actor` shapes are shared.

mod record;

pub use record::{kind, Actor, AuditRecord};

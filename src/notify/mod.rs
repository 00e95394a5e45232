//! Telling reviewers: review cards, the `Notifier` port and channel adapters.

#[cfg(feature = "webhook")]
pub mod webhook;

#[cfg(feature = "feishu")]
pub mod feishu;

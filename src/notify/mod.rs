//! Telling reviewers: review cards, the `Notifier` port and channel adapters.

pub mod markup;

pub use markup::Markup;

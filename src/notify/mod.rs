//! Telling reviewers: review cards, the `Notifier` port and channel adapters.

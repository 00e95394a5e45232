//! Bundled store adapters.

#[cfg(feature = "sqlite")]
pub mod sqlite;

//! Test helpers shared by agent-handoff's crates: a dev-dependency only, never published.
//!
//! - [`PgCluster`]: a throwaway PostgreSQL cluster (`initdb` + `pg_ctl` in a temporary
//!   directory, on 127.0.0.1, as the unprivileged `postgres` user), stopped when dropped, that a
//!   test can stop and restart.
//! - [`Component`]: where the test-only components that `scripts/test` installs live
//!   (PostgreSQL's binaries, Chromium, the pinned Python virtual environment), and the one rule
//!   for a missing one: **under `CI=true` it fails the test, elsewhere the test is skipped
//!   loudly** ([`skip`]: printed, and recorded in `HANDOFF_TEST_SKIP_LOG`, which `scripts/test`
//!   prints at the end of its run).
//!
//! ```no_run
//! use handoff_test_support::PgCluster;
//!
//! #[tokio::test]
//! async fn my_store_on_postgres() {
//!     // One cluster per test binary, a fresh database per test.
//!     let Some(pg) = PgCluster::shared() else { return }; // skipped (never under CI=true)
//!     let url = pg.fresh_database().unwrap();
//!     let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
//!     tokio::spawn(conn);
//!     client.batch_execute("CREATE TABLE t (id bigint PRIMARY KEY)").await.unwrap();
//! }
//!
//! #[test]
//! fn survives_a_server_restart() {
//!     // A cluster of its own, for a test that stops or restarts the server.
//!     let Some(mut pg) = PgCluster::start_or_skip() else { return };
//!     pg.restart().unwrap();
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod component;
mod pg;

pub use component::{Component, Missing, on_ci, skip};
pub use pg::{PgCluster, PgClusterBuilder, PgError, StopMode};

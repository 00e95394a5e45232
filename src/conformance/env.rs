//! [`Env`]: what one contract test gives the store it opens.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fixtures::{random16, ts, T0};
use crate::backend::{Clock, ManualClock};

/// What a contract test gives the opener: a name and a directory of its own (both removed or
/// forgotten at the end of the test), and the clock the store must stamp commits with.
///
/// Cloning shares all three: opening a durable store again with a clone (or with
/// [`with_clock`](Self::with_clock), after a "restart" under another clock) must see what was
/// committed before. A file-backed store puts its files under [`path`](Self::path); a store on
/// a database server keys its database (or schema) by [`id`](Self::id).
#[derive(Clone)]
pub struct Env {
    dir: Arc<TempDir>,
    clock: Arc<dyn Clock>,
}

impl Env {
    /// A fresh environment with a [`ManualClock`] stopped at [`T0`].
    pub fn new() -> Self {
        Self::with(Arc::new(ManualClock::new(ts(T0))))
    }

    /// A fresh environment with `clock`.
    pub fn with(clock: Arc<dyn Clock>) -> Self {
        Self {
            dir: Arc::new(TempDir::new()),
            clock,
        }
    }

    /// The same environment (same id, same directory) with another clock: to reopen a durable
    /// store after a restart.
    pub fn with_clock(&self, clock: Arc<dyn Clock>) -> Self {
        Self {
            dir: Arc::clone(&self.dir),
            clock,
        }
    }

    /// The clock the store must stamp commits with (the `Handoff`'s, in production).
    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock)
    }

    /// A name unique to this environment, usable as a database, schema or file name:
    /// `conformance_` and 32 lowercase hex digits.
    pub fn id(&self) -> &str {
        &self.dir.id
    }

    /// A path inside this environment's directory (created empty, removed when the last clone
    /// of the environment is dropped).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path.join(name)
    }

    /// This environment's directory.
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("id", &self.dir.id)
            .field("dir", &self.dir.path)
            .field("clock", &self.clock)
            .finish()
    }
}

/// A directory under the system's temporary directory, removed with everything in it on drop.
/// (The suite needs nothing more of a temporary-directory crate, so it takes none.)
struct TempDir {
    id: String,
    path: PathBuf,
}

impl TempDir {
    fn new() -> Self {
        let id: String = random16().iter().map(|b| format!("{b:02x}")).collect();
        let id = format!("conformance_{id}");
        let path = std::env::temp_dir().join(format!("agent-handoff-{id}"));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| {
            panic!("cannot create the test directory `{}`: {e}", path.display())
        });
        Self { id, path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

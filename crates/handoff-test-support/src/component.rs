//! The test-only components `scripts/test` installs, where a test finds them, and what a test
//! does when one is missing.

use std::env;
use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The environment variable that marks a CI run: `true` or `1` there.
const CI: &str = "CI";
/// The file where skipped tests are recorded (`scripts/test` sets it and prints it at the end).
const SKIP_LOG: &str = "HANDOFF_TEST_SKIP_LOG";

/// A test-only component: installed by `scripts/test`, found by the variable it exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Component {
    /// PostgreSQL's server binaries (`initdb`, `pg_ctl`, `postgres`, `psql`): the directory
    /// holding them. Variable `HANDOFF_TEST_PG_BIN`; otherwise the newest
    /// `/usr/lib/postgresql/<version>/bin` (the Debian packages), then `initdb` on `PATH`.
    Postgres,
    /// The Debian Chromium binary, for Playwright's `executable_path`. Variable
    /// `HANDOFF_TEST_CHROMIUM`; otherwise `/usr/bin/chromium`.
    Chromium,
    /// The Python interpreter of the pinned test environment (pytest, playwright, mcp, …).
    /// Variable `HANDOFF_TEST_PYTHON`; otherwise `target/py-venv/bin/python` in the workspace.
    Python,
}

impl Component {
    /// The environment variable `scripts/test` exports for this component.
    pub fn env_var(self) -> &'static str {
        match self {
            Component::Postgres => "HANDOFF_TEST_PG_BIN",
            Component::Chromium => "HANDOFF_TEST_CHROMIUM",
            Component::Python => "HANDOFF_TEST_PYTHON",
        }
    }

    /// Where the component is: its variable when set (which must then be right), else the
    /// place a default install puts it.
    pub fn locate(self) -> Result<PathBuf, Missing> {
        let var = self.env_var();
        if let Some(set) = env::var_os(var).filter(|v| !v.is_empty()) {
            let path = PathBuf::from(set);
            return if self.is_present_at(&path) {
                Ok(path)
            } else {
                Err(self.missing(format!("{var}=`{}` does not hold it", path.display())))
            };
        }
        self.default_places()
            .into_iter()
            .find(|p| self.is_present_at(p))
            .ok_or_else(|| {
                self.missing(format!(
                    "{var} is not set and no default install was found (run scripts/test, which installs it)"
                ))
            })
    }

    /// [`locate`](Self::locate), or `None` after [`skip`]ping the calling test (a panic under
    /// `CI=true`): `let Some(python) = Component::Python.require() else { return };`
    pub fn require(self) -> Option<PathBuf> {
        match self.locate() {
            Ok(path) => Some(path),
            Err(missing) => {
                skip(&missing);
                None
            }
        }
    }

    fn missing(self, why: String) -> Missing {
        Missing {
            component: self,
            why,
        }
    }

    fn is_present_at(self, path: &Path) -> bool {
        match self {
            Component::Postgres => ["initdb", "pg_ctl", "postgres", "psql"]
                .iter()
                .all(|b| path.join(b).is_file()),
            Component::Chromium | Component::Python => path.is_file(),
        }
    }

    fn default_places(self) -> Vec<PathBuf> {
        match self {
            Component::Postgres => {
                let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| {
                        let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                        Some((v, e.path().join("bin")))
                    })
                    .collect();
                versions.sort();
                let mut places: Vec<PathBuf> = versions.into_iter().rev().map(|(_, p)| p).collect();
                places.extend(
                    env::var_os("PATH")
                        .map(|p| env::split_paths(&p).collect::<Vec<_>>())
                        .unwrap_or_default()
                        .into_iter()
                        // `initdb` on PATH is often a symlink into the real bin directory.
                        .filter_map(|dir| dir.join("initdb").canonicalize().ok())
                        .filter_map(|initdb| initdb.parent().map(Path::to_path_buf)),
                );
                places
            }
            Component::Chromium => vec![PathBuf::from("/usr/bin/chromium")],
            Component::Python => vec![workspace_root().join("target/py-venv/bin/python")],
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Component::Postgres => "postgresql",
            Component::Chromium => "chromium",
            Component::Python => "the python test environment",
        })
    }
}

/// A component that is not installed (or not where its variable says).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{component} is missing: {why}")]
pub struct Missing {
    /// The component.
    pub component: Component,
    /// Where it was looked for.
    pub why: String,
}

/// Whether this is a CI run (`CI` is `true` or `1`), where a missing component fails a test
/// instead of skipping it.
pub fn on_ci() -> bool {
    env::var(CI).is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Skips the calling test because `missing` is missing: prints why and appends a line to the
/// file named by `HANDOFF_TEST_SKIP_LOG` (so `scripts/test` lists it at the end of its run,
/// where captured test output would hide it). The caller then returns.
///
/// # Panics
/// Under `CI=true` ([`on_ci`]): there a missing component is a failure, never a skip.
pub fn skip(missing: &Missing) {
    let test = current_test();
    if on_ci() {
        panic!("CI=true: `{test}` cannot run: {missing}");
    }
    let line = format!("{test}: skipped: {missing}");
    eprintln!("SKIPPED {line}");
    if let Some(log) = env::var_os(SKIP_LOG).filter(|v| !v.is_empty()) {
        // Best effort: the line above already reached stderr.
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(log) {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// `<test binary>::<test name>` for the running test (libtest names each test's thread).
fn current_test() -> String {
    let binary = env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_owned))
        // Cargo names test binaries `<target>-<hash>`.
        .map(|stem| match stem.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
            _ => stem,
        })
        .unwrap_or_else(|| "?".to_owned());
    let thread = std::thread::current();
    format!("{binary}::{}", thread.name().unwrap_or("?"))
}

/// The workspace root (this crate lives in `crates/handoff-test-support`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

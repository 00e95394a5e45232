//! Throwaway PostgreSQL clusters for tests.

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tempfile::TempDir;

use crate::component::{Component, Missing, skip};

/// The database user every cluster is made with (trust authentication on 127.0.0.1).
const USER: &str = "postgres";
/// The host every cluster listens on, and nowhere else.
const HOST: &str = "127.0.0.1";
/// Settings file in the data directory, rewritten before each start.
const SETTINGS_FILE: &str = "handoff_test.conf";
/// How often a start is retried on a fresh port when another process took the one chosen.
const PORT_ATTEMPTS: usize = 5;

/// A throwaway PostgreSQL cluster: `initdb` into a temporary directory, one server on
/// 127.0.0.1 at a free port, database user `postgres` with trust authentication.
///
/// - Runs as the unprivileged `postgres` OS user when the test runs as root (PostgreSQL refuses
///   root), as the current user otherwise.
/// - `initdb --no-sync` (the cluster is thrown away), but the server runs with `fsync=on` and
///   `synchronous_commit=on` — durable commits, what the store's promises and benches are
///   about — unless the test sets them otherwise ([`PgCluster::builder`]).
/// - Dropping it stops the server (`-m immediate`) and removes the directory. If the test
///   process dies without dropping it (SIGKILL, `process::exit`, a [`shared`](Self::shared)
///   cluster at the end of the run), a guardian process notices its end and does the same.
///
/// Starting one costs about 2 s on two loaded cores: a test binary usually shares one
/// ([`shared`](Self::shared)) and gives each test its own database
/// ([`fresh_database`](Self::fresh_database)); a test that stops or restarts the server starts
/// its own.
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    /// `(uid, gid)` of the `postgres` user when this process is root.
    owner: Option<(u32, u32)>,
    port: u16,
    running: bool,
    next_database: AtomicU64,
    /// The guardian's stdin: closed when this process ends, which makes it clean up.
    guardian: Option<(Child, ChildStdin)>,
    /// Last field: removed after `Drop::drop` stopped the server.
    dir: TempDir,
}

/// How [`PgCluster::stop`] shuts the server down (`pg_ctl stop -m <mode>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Wait for every client to disconnect.
    Smart,
    /// Roll back open transactions and disconnect clients (they see `57P01 admin_shutdown`),
    /// then shut down cleanly.
    Fast,
    /// Stop every server process at once, without a shutdown checkpoint: the next start runs
    /// crash recovery, as after a power cut of the server (committed data survives).
    Immediate,
}

impl StopMode {
    fn as_arg(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// Why a cluster could not be started or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The server binaries (or the `postgres` user) are not installed: the one error that
    /// [`PgCluster::start_or_skip`] turns into a skip.
    #[error(transparent)]
    Missing(#[from] Missing),
    /// A PostgreSQL program failed; its output and the end of the server log.
    #[error("`{command}` failed: {output}")]
    Failed {
        /// The program and its arguments.
        command: String,
        /// Exit status, output, and the server log's end where it explains.
        output: String,
    },
    /// A database name other than lowercase ASCII letters, digits and `_`.
    #[error("invalid database name `{0}`: use [a-z0-9_], starting with a letter")]
    InvalidName(String),
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> PgError {
    let context = context.into();
    move |source| PgError::Io { context, source }
}

/// Settings and placement of a cluster before it starts: [`PgCluster::builder`].
#[derive(Debug, Clone, Default)]
pub struct PgClusterBuilder {
    settings: Vec<(String, String)>,
    base_dir: Option<PathBuf>,
}

impl PgClusterBuilder {
    /// Sets a server setting (`postgresql.conf` syntax, e.g. `("synchronous_commit", "off")`,
    /// `("max_connections", "300")`). Later settings win over earlier ones and over the
    /// defaults (`fsync=on`, `synchronous_commit=on`).
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Makes the cluster's temporary directory inside `dir` instead of the system's temporary
    /// directory (e.g. to put it on the disk a benchmark measures). The `postgres` user must be
    /// able to reach it.
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// Creates and starts the cluster.
    pub fn start(self) -> Result<PgCluster, PgError> {
        let bin = Component::Postgres.locate()?;
        let owner = postgres_owner()?;
        let base = self.base_dir.unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("handoff-pg-")
            .tempdir_in(&base)
            .map_err(io_err(format!("make a directory in `{}`", base.display())))?;
        if let Some((uid, gid)) = owner {
            chown(dir.path(), Some(uid), Some(gid)).map_err(io_err(format!(
                "chown `{}` to postgres",
                dir.path().display()
            )))?;
        }
        let mut cluster = PgCluster {
            bin,
            owner,
            port: 0,
            running: false,
            next_database: AtomicU64::new(1),
            guardian: None,
            dir,
        };
        cluster.initdb()?;
        cluster.guardian = Some(cluster.spawn_guardian()?);
        cluster.start_on_free_port(&self.settings)?;
        Ok(cluster)
    }

    /// [`start`](Self::start), or `None` after [`skip`]ping the calling test when PostgreSQL
    /// is not installed. Use it as `let Some(pg) = builder.start_or_skip() else { return };`.
    ///
    /// # Panics
    /// When PostgreSQL is missing under `CI=true`, and when an installed PostgreSQL fails to
    /// start (that is a broken test machine, not a missing component).
    pub fn start_or_skip(self) -> Option<PgCluster> {
        match self.start() {
            Ok(cluster) => Some(cluster),
            Err(PgError::Missing(missing)) => {
                skip(&missing);
                None
            }
            Err(e) => panic!("cannot start a throwaway postgresql cluster: {e}"),
        }
    }
}

impl PgCluster {
    /// Starts a cluster with the default settings.
    pub fn start() -> Result<PgCluster, PgError> {
        PgClusterBuilder::default().start()
    }

    /// A builder for a cluster with other settings or in another directory.
    pub fn builder() -> PgClusterBuilder {
        PgClusterBuilder::default()
    }

    /// [`start`](Self::start), or `None` after skipping the calling test when PostgreSQL is not
    /// installed: `let Some(pg) = PgCluster::start_or_skip() else { return };`. See
    /// [`PgClusterBuilder::start_or_skip`] (it panics under `CI=true`).
    pub fn start_or_skip() -> Option<PgCluster> {
        PgClusterBuilder::default().start_or_skip()
    }

    /// One cluster for the whole test binary, started by the first test that asks; `None` after
    /// skipping the calling test when PostgreSQL is not installed (a panic under `CI=true`).
    /// Tests share it through their own databases ([`fresh_database`](Self::fresh_database));
    /// it cannot be stopped (a test that stops the server starts a cluster of its own). Its
    /// guardian stops it when the test binary exits.
    pub fn shared() -> Option<&'static PgCluster> {
        static SHARED: OnceLock<Result<PgCluster, Missing>> = OnceLock::new();
        let started = SHARED.get_or_init(|| match PgCluster::start() {
            Ok(cluster) => Ok(cluster),
            Err(PgError::Missing(missing)) => Err(missing),
            Err(e) => panic!("cannot start the shared postgresql cluster: {e}"),
        });
        match started {
            Ok(cluster) => Some(cluster),
            Err(missing) => {
                skip(missing);
                None
            }
        }
    }

    /// The connection URL of database `postgres`, e.g. `postgres://postgres@127.0.0.1:40123/postgres`
    /// (for `tokio_postgres::connect` or `str::parse::<tokio_postgres::Config>`).
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The connection URL of database `database` on this cluster.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://{USER}@{HOST}:{}/{database}", self.port)
    }

    /// The host the server listens on: `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        HOST
    }

    /// The server's port (the same across [`restart`](Self::restart)s).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database user: `postgres`, a superuser, trust authentication.
    pub fn user(&self) -> &'static str {
        USER
    }

    /// The data directory (for a test that inspects or damages files).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server log so far (every start of this cluster).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the server is running (it is, unless the test [`stop`](Self::stop)ped it).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, PgError> {
        let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(PgError::InvalidName(name.to_owned()));
        }
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url_for(name))
    }

    /// Creates a database no other test of this cluster uses (`t1`, `t2`, …) and returns its URL.
    pub fn fresh_database(&self) -> Result<String, PgError> {
        let n = self.next_database.fetch_add(1, Ordering::Relaxed);
        self.create_database(&format!("t{n}"))
    }

    /// Runs `sql` with `psql` on `database` as the superuser (stops at the first error) and
    /// returns what it printed, unaligned and without headers: for setup such as roles and
    /// grants, and for checks that should not go through the code under test.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, PgError> {
        let port = self.port.to_string();
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            HOST,
            "-p",
        ])
        .args([port.as_str(), "-U", USER, "-d", database, "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10");
        run(&mut cmd)
    }

    /// Stops the server. Clients see their connections end; the port stays reserved for this
    /// cluster's next [`start_again`](Self::start_again).
    pub fn stop(&mut self, mode: StopMode) -> Result<(), PgError> {
        let data = self.data_dir();
        let mut cmd = self.as_owner(&self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-m", mode.as_arg(), "-w", "-t", "120", "stop"]);
        run(&mut cmd)?;
        self.running = false;
        Ok(())
    }

    /// Starts the stopped server again, on the same port with the same settings (after
    /// [`StopMode::Immediate`] it runs crash recovery first).
    pub fn start_again(&mut self) -> Result<(), PgError> {
        let before = self.log_len();
        self.pg_ctl_start()
            .map_err(|e| self.with_log_since(e, before))?;
        self.running = true;
        Ok(())
    }

    /// Stops the server ([`StopMode::Fast`]) and starts it again on the same port.
    pub fn restart(&mut self) -> Result<(), PgError> {
        self.stop(StopMode::Fast)?;
        self.start_again()
    }

    fn initdb(&self) -> Result<(), PgError> {
        let data = self.data_dir();
        let mut cmd = self.as_owner(&self.bin.join("initdb"));
        cmd.arg("-D").arg(&data).args([
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "-U",
            USER,
        ]);
        run(&mut cmd)?;
        // The settings this crate controls live in a file of their own, rewritten per start.
        let conf = data.join("postgresql.conf");
        let mut f = OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(io_err(format!("open `{}`", conf.display())))?;
        writeln!(f, "\ninclude_if_exists = '{SETTINGS_FILE}'")
            .map_err(io_err(format!("write `{}`", conf.display())))
    }

    /// Writes the settings file: listen on 127.0.0.1 only at `self.port`, the socket in the
    /// cluster's directory, durable commits, then the test's own settings.
    fn write_settings(&self, extra: &[(String, String)]) -> Result<(), PgError> {
        let socket_dir = self.dir.path().display().to_string();
        let port = self.port.to_string();
        let defaults = [
            ("listen_addresses", HOST),
            ("port", port.as_str()),
            ("unix_socket_directories", socket_dir.as_str()),
            ("fsync", "on"),
            ("synchronous_commit", "on"),
        ];
        let mut text = String::new();
        for (name, value) in defaults
            .iter()
            .map(|&(n, v)| (n, v))
            .chain(extra.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        {
            let _ = writeln!(text, "{name} = '{}'", value.replace('\'', "''"));
        }
        let path = self.data_dir().join(SETTINGS_FILE);
        fs::write(&path, text).map_err(io_err(format!("write `{}`", path.display())))
    }

    /// Picks a free port and starts; if another process took the port in between, tries again.
    fn start_on_free_port(&mut self, extra: &[(String, String)]) -> Result<(), PgError> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port()?;
            self.write_settings(extra)?;
            let before = self.log_len();
            match self.pg_ctl_start() {
                Ok(()) => {
                    self.running = true;
                    return Ok(());
                }
                Err(e) => {
                    let since = self.log_since(before);
                    let e = self.with_log_since(e, before);
                    if !since.contains("could not bind") && !since.contains("already in use") {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn pg_ctl_start(&self) -> Result<(), PgError> {
        let mut cmd = self.as_owner(&self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "120", "start"]);
        run(&mut cmd).map(drop)
    }

    /// A shell, run as the cluster's owner, that waits for end of file on its stdin — which
    /// happens when this process ends, however it ends — then stops the server and removes the
    /// directory. It ignores SIGINT, SIGHUP and SIGTERM, which a terminal or a timeout sends to the whole
    /// process group: the server, detached by `pg_ctl`, outlives them, so the guardian must too.
    fn spawn_guardian(&self) -> Result<(Child, ChildStdin), PgError> {
        let script = r#"trap '' INT HUP TERM; read -r _ignored; "$0" -D "$1" -m immediate -w stop; rm -rf "$2""#;
        let mut cmd = self.as_owner(Path::new("/bin/sh"));
        cmd.arg("-c")
            .arg(script)
            .arg(self.bin.join("pg_ctl"))
            .arg(self.data_dir())
            .arg(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(io_err("spawn the cluster's guardian"))?;
        let stdin = child.stdin.take().expect("stdin is piped");
        Ok((child, stdin))
    }

    /// A command for a PostgreSQL program, run as the `postgres` user when this process is root,
    /// in the cluster's directory (which that user can read).
    fn as_owner(&self, program: &Path) -> Command {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = Command::new(program);
        cmd.current_dir(self.dir.path());
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn log_len(&self) -> usize {
        self.log().len()
    }

    fn log_since(&self, offset: usize) -> String {
        self.log().get(offset..).unwrap_or_default().to_owned()
    }

    /// Adds what the server logged since `offset` to a failed command's output.
    fn with_log_since(&self, e: PgError, offset: usize) -> PgError {
        match e {
            PgError::Failed { command, output } => PgError::Failed {
                command,
                output: format!(
                    "{output}\nserver log:\n{}",
                    self.log_since(offset).trim_end()
                ),
            },
            other => other,
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.guardian.take() {
            let _ = child.kill();
            let _ = child.wait();
            drop(stdin);
        }
        if self.running {
            let _ = self.stop(StopMode::Immediate);
        }
    }
}

/// `(uid, gid)` of the `postgres` user when this process is root (PostgreSQL refuses to run as
/// root); `None` when it is not root (the server then runs as the current user).
fn postgres_owner() -> Result<Option<(u32, u32)>, PgError> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    if id(&["-u"]).ok_or_else(|| io_err("run `id -u`")(io::Error::other("no answer")))? != 0 {
        return Ok(None);
    }
    match (id(&["-u", USER]), id(&["-g", USER])) {
        (Some(uid), Some(gid)) => Ok(Some((uid, gid))),
        _ => Err(Missing {
            component: Component::Postgres,
            why: "this test runs as root and there is no `postgres` user to run the server as \
                  (the Debian package creates it)"
                .to_owned(),
        }
        .into()),
    }
}

fn free_port() -> Result<u16, PgError> {
    let listener = TcpListener::bind((HOST, 0)).map_err(io_err("bind 127.0.0.1:0"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("read a bound port"))?
        .port();
    Ok(port)
}

/// Runs a command to completion; its stdout on success, everything it said on failure.
fn run(cmd: &mut Command) -> Result<String, PgError> {
    let command = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("run {command}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout.trim_end().to_owned());
    }
    Err(PgError::Failed {
        command,
        output: format!(
            "{}\n{}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        )
        .trim_end()
        .to_owned(),
    })
}

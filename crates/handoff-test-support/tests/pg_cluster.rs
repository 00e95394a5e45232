//! The throwaway PostgreSQL cluster through its public API: start, connect, restart and stop
//! under a client; settings; databases on the shared cluster; cleanup when the test process is
//! killed; and the missing-component rule (skip loudly, fail under `CI=true`).

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use handoff_test_support::{Component, PgCluster, StopMode};
use tokio_postgres::{Client, NoTls, error::SqlState};

/// Set in a child process started by one of these tests: which part it plays.
const CHILD_ROLE: &str = "HANDOFF_TEST_SUPPORT_CHILD";

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A client whose connection is driven on the current runtime.
async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn select_one(client: &Client) -> Result<i32, tokio_postgres::Error> {
    Ok(client.query_one("SELECT 1", &[]).await?.get(0))
}

#[test]
fn starts_connects_restarts_and_connects_again() {
    let Some(mut pg) = PgCluster::start_or_skip() else {
        return;
    };
    let url = pg.url();
    assert_eq!(
        url,
        format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port())
    );
    let port = pg.port();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let before = rt.block_on(async {
        let client = connect(&url).await.unwrap();
        assert_eq!(select_one(&client).await.unwrap(), 1);
        client
    });

    pg.restart().unwrap();
    assert!(pg.is_running());
    assert_eq!(
        pg.port(),
        port,
        "a restart keeps the port, so clients find the server again"
    );
    rt.block_on(async {
        // The client connected before the restart lost its connection: a typed error, no hang.
        let lost = select_one(&before).await.unwrap_err();
        assert!(
            lost.is_closed() || lost.code() == Some(&SqlState::ADMIN_SHUTDOWN),
            "{lost:?}"
        );
        let after = connect(&url).await.unwrap();
        assert_eq!(select_one(&after).await.unwrap(), 1);
    });
}

#[test]
fn committed_rows_survive_an_immediate_stop() {
    let Some(mut pg) = PgCluster::start_or_skip() else {
        return;
    };
    pg.psql(
        "postgres",
        "CREATE TABLE t (v int); INSERT INTO t VALUES (7)",
    )
    .unwrap();

    pg.stop(StopMode::Immediate).unwrap();
    assert!(!pg.is_running());
    let refused = block_on(connect(&pg.url())).unwrap_err();
    assert!(refused.code().is_none(), "no server answers: {refused:?}");

    pg.start_again().unwrap();
    assert_eq!(pg.psql("postgres", "SELECT v FROM t").unwrap(), "7");
    assert!(
        pg.log()
            .contains("database system was not properly shut down")
    );
}

#[test]
fn durable_commits_unless_the_test_says_otherwise() {
    let Some(shared) = PgCluster::shared() else {
        return;
    };
    let show = |pg: &PgCluster, name: &str| pg.psql("postgres", &format!("SHOW {name}")).unwrap();
    assert_eq!(show(shared, "fsync"), "on");
    assert_eq!(show(shared, "synchronous_commit"), "on");
    assert_eq!(show(shared, "listen_addresses"), "127.0.0.1");

    let relaxed = PgCluster::builder()
        .setting("synchronous_commit", "off")
        .setting("cluster_name", "it's quoted")
        .start()
        .unwrap();
    assert_eq!(show(&relaxed, "synchronous_commit"), "off");
    assert_eq!(show(&relaxed, "fsync"), "on");
    assert_eq!(show(&relaxed, "cluster_name"), "it's quoted");
}

#[test]
fn tests_share_one_cluster_through_databases_of_their_own() {
    let Some(pg) = PgCluster::shared() else {
        return;
    };
    let a = pg.fresh_database().unwrap();
    let b = pg.fresh_database().unwrap();
    assert_ne!(a, b);
    assert_eq!(
        PgCluster::shared().unwrap().port(),
        pg.port(),
        "one cluster per test binary"
    );
    block_on(async {
        let a = connect(&a).await.unwrap();
        let b = connect(&b).await.unwrap();
        a.batch_execute("CREATE TABLE only_in_a (v int)")
            .await
            .unwrap();
        let err = b.query("SELECT * FROM only_in_a", &[]).await.unwrap_err();
        assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE));
    });
    assert!(pg.create_database("Robert'); DROP").is_err());
}

/// The child's side of [`a_killed_test_process_leaves_no_server_behind`]: starts a cluster,
/// says where it is, and waits to be killed.
fn child_starts_a_cluster_and_waits() {
    let pg = PgCluster::start().unwrap();
    println!("cluster {} {}", pg.port(), pg.data_dir().display());
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn a_killed_test_process_leaves_no_server_behind() {
    if Component::Postgres.require().is_none() {
        return;
    }
    let mut child = child("guardian")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // libtest prints its own words first (`test child_entry ... `).
    let line = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .find_map(|l| l.split_once("cluster ").map(|(_, c)| c.to_owned()))
        .expect("the child's cluster");
    let (port, data_dir) = line.split_once(' ').unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    block_on(connect(&url)).expect("the child's server is up");

    child.kill().unwrap(); // SIGKILL: no destructor runs in the child
    child.wait().unwrap();

    // A bounded wait for the guardian, not a timing assertion.
    let deadline = Instant::now() + Duration::from_secs(120);
    while Path::new(data_dir).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !Path::new(data_dir).exists(),
        "the cluster's directory is removed"
    );
    let refused = block_on(connect(&url)).unwrap_err();
    assert!(
        refused.code().is_none(),
        "the server is stopped: {refused:?}"
    );
}

/// The child's side of [`missing_postgres_is_a_loud_skip_and_a_failure_under_ci`].
fn child_asks_for_a_cluster() {
    assert!(PgCluster::start_or_skip().is_none());
}

#[test]
fn missing_postgres_is_a_loud_skip_and_a_failure_under_ci() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skips.log");
    let run = |ci: Option<&str>| {
        let mut cmd = child("missing");
        cmd.env("HANDOFF_TEST_PG_BIN", dir.path())
            .env("HANDOFF_TEST_SKIP_LOG", &log)
            .env_remove("CI");
        if let Some(ci) = ci {
            cmd.env("CI", ci);
        }
        cmd.output().unwrap()
    };

    let skipped = run(None);
    assert!(skipped.status.success(), "{skipped:?}");
    let recorded = std::fs::read_to_string(&log).unwrap();
    assert!(
        recorded.starts_with(
            "pg_cluster::child_entry: skipped: postgresql is missing: HANDOFF_TEST_PG_BIN="
        ),
        "{recorded}"
    );
    assert!(String::from_utf8_lossy(&skipped.stderr).contains("SKIPPED pg_cluster::child_entry"));

    let failed = run(Some("true"));
    assert!(
        !failed.status.success(),
        "under CI=true a missing component fails"
    );
    assert!(
        String::from_utf8_lossy(&failed.stderr)
            .contains("CI=true: `pg_cluster::child_entry` cannot run")
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        recorded,
        "a failure is not a skip"
    );
}

/// This test binary, running only [`child_entry`] in role `role`.
fn child(role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_entry",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(CHILD_ROLE, role);
    cmd
}

/// Does nothing in an ordinary run; plays a part in a child process started by a test above.
#[test]
fn child_entry() {
    match std::env::var(CHILD_ROLE).as_deref() {
        Ok("guardian") => child_starts_a_cluster_and_waits(),
        Ok("missing") => child_asks_for_a_cluster(),
        _ => {}
    }
}

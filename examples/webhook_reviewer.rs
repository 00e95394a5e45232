//! Reviewers deciding through a signed link, end to end, against a local receiver.
//!
//! `cargo run --example webhook_reviewer --features webhook`
//!
//! 1. A tiny review app listens on 127.0.0.1 (a plain `std::net::TcpListener` and a minimal
//!    HTTP/1.1 parser, so the example needs no web framework). It receives signed webhooks on
//!    `POST /webhook`, serves the confirmation page behind decision links on `GET /decide`,
//!    and takes the reviewer's explicit confirmation on `POST /decide`.
//! 2. The engine runs on SQLite in a temporary directory with `examples/policy.toml`, a
//!    static reviewer directory, decision links under `http://127.0.0.1:<port>/decide`, and a
//!    `WebhookNotifier` posting to the app.
//! 3. An agent proposes dropping a production table (two DBAs must approve).
//!    `deliver_due` posts the signed review card; the app verifies the signature, shows the
//!    card and hands the approve link to the reviewers' inbox.
//! 4. Each reviewer follows the link (a preview: nothing is decided, a mail scanner could do
//!    the same), then confirms with their API token. Both use the same group link: a group
//!    link is single use per reviewer, not per link.
//! 5. The agent's `wait` returns Approved; it begins and finishes; the closing card is posted;
//!    the audit chain is verified.
//!
//! Runs non-interactively in a few seconds.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_handoff::action::{
    ActionRequest, DigestKey, Environment, Justification, Reversibility, Sensitivity,
};
use agent_handoff::audit::CheckpointKey;
use agent_handoff::notify::webhook::{
    WebhookNotifier, WebhookSecret, WebhookSigner, WebhookVerifier,
};
use agent_handoff::notify::ReviewCard;
use agent_handoff::policy::Policy;
use agent_handoff::ticket::ExecutionOutcome;
use agent_handoff::token::{TokenKey, TokenKeyRing, VerdictKind};
use agent_handoff::{
    AgentId, Clock, Credential, Decision, DecisionLinks, Handoff, PersonId, Proposal, SqliteStore,
    StaticDirectory, SystemClock, TokenSubmission,
};
use serde_json::{json, Value};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// 32 bytes from the OS.
fn random_key() -> Result<[u8; 32], BoxError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)?;
    Ok(key)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;

    // --- The review app's socket first: decision links need its address. ----------------
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("review app listening on {base}");

    // --- The host application sets things up once. --------------------------------------
    let mut directory = StaticDirectory::new();
    directory.add_person("alice", ["dba"])?;
    directory.add_person("bob", ["dba"])?;
    directory.add_person("priya", ["oncall"])?;
    let alice = directory.issue_token("alice")?;
    let bob = directory.issue_token("bob")?;

    // Shared with the receiver's operator out of band, in `whsec_` form.
    let webhook_secret = WebhookSecret::from_bytes(&random_key()?)?;
    let receiver_secret = WebhookSecret::parse(&webhook_secret.expose_whsec())?;

    let notifier = WebhookNotifier::new(
        &format!("{base}/webhook"),
        WebhookSigner::new([webhook_secret])?,
    )?;
    let handoff = Handoff::builder()
        .store(SqliteStore::open(dir.path().join("handoff.sqlite3")).await?)
        .policy(Policy::from_toml(include_str!("policy.toml"))?)
        .identity(directory)
        .digest_key(DigestKey::from_bytes(random_key()?))
        .decision_links(DecisionLinks {
            base_url: format!("{base}/decide"),
            ring: TokenKeyRing::new(TokenKey::new("links-1", &random_key()?)?, [])?,
            token_ttl: Duration::from_secs(15 * 60),
        })
        .notifier("review-app", notifier)
        .checkpoint_key(
            "webhook-reviewer.example/audit",
            CheckpointKey::new("audit-1", &random_key()?)?,
        )
        .build()?;

    // --- The review app runs on its own thread. -----------------------------------------
    let (inbox_tx, inbox) = mpsc::channel::<String>();
    let app = ReviewApp {
        handoff: handoff.clone(),
        runtime: tokio::runtime::Handle::current(),
        verifier: WebhookVerifier::new([receiver_secret])?,
        seen: Arc::new(Mutex::new(HashSet::new())),
        inbox: inbox_tx,
    };
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Err(e) = app.serve(stream) {
                println!("[app] connection error: {e}");
            }
        }
    });

    // --- The agent proposes a production table drop. ------------------------------------
    let agent = handoff.agent(AgentId::new("ops-agent")?, Some(PersonId::new("priya")?));
    let drop = ActionRequest::builder("db.table.drop", "webhook-reviewer-drop-archive")
        .target("postgres://prod/orders_archive_2019")
        .parameters(json!({ "table": "orders_archive_2019",
                             "connection": { "password": "hunter2" } }))
        .sensitive("/connection/password")
        .environment(Environment::Production)
        .sensitivity(Sensitivity::Confidential)
        .reversibility(Reversibility::Irreversible)
        .justification(Justification {
            reason: "the 2019 archive was migrated to cold storage last week".into(),
            expected_effect: "frees 310 GB on the primary".into(),
            risk_factors: vec!["a report may still read the table".into()],
            rollback_plan: Some("restore from the cold-storage snapshot (about 2 h)".into()),
        })
        .build()?;
    let pending = match agent.propose(drop).await? {
        Proposal::Pending(p) => p,
        other => return Err(format!("expected a review, got {other:?}").into()),
    };
    println!(
        "[agent] proposed the drop; ticket {} awaits review",
        pending.id
    );
    let waiter = {
        let agent = agent.clone();
        let pending = pending.clone();
        tokio::spawn(async move { agent.wait(&pending, Duration::from_secs(30)).await })
    };

    // --- The outbox worker posts the signed card. ---------------------------------------
    let report = handoff.deliver_due().await?;
    println!(
        "[outbox] delivered {} of {} due card(s)",
        report.delivered, report.claimed
    );
    let link = inbox.recv_timeout(Duration::from_secs(5))?;

    // --- Two DBAs follow the same group link and confirm. -------------------------------
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    for (name, api_token) in [("alice", alice.expose()), ("bob", bob.expose())] {
        // Following the link shows the confirmation page; it decides nothing.
        let page = browser.get(&link).send().await?.text().await?;
        println!("[{name}] follows the link:\n{}", indent(&page));
        // The explicit confirmation, authenticated with the reviewer's own credential.
        let token = link.split_once("?t=").map(|(_, t)| t).unwrap_or_default();
        let answer = browser
            .post(format!("{base}/decide"))
            .bearer_auth(api_token)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("t={token}"))
            .send()
            .await?;
        println!(
            "[{name}] confirms: {} {}",
            answer.status().as_u16(),
            answer.text().await?
        );
    }
    // A replay of the same link by a reviewer who already used it is refused.
    let replay = browser
        .post(format!("{base}/decide"))
        .bearer_auth(alice.expose())
        .body(format!(
            "t={}",
            link.split_once("?t=").map(|(_, t)| t).unwrap_or_default()
        ))
        .send()
        .await?;
    println!(
        "[alice] tries the link again: {} {}",
        replay.status().as_u16(),
        replay.text().await?
    );

    // --- The agent learns the outcome and runs the action once. -------------------------
    match waiter.await?? {
        Decision::Approved(grant) => {
            println!("[agent] approved by {:?}", grant.approved_by());
            let permit = agent.begin(grant, BTreeMap::new()).await?;
            println!(
                "[agent] executing DROP TABLE {}",
                permit.action().parameters()["table"]
            );
            agent
                .finish(
                    permit,
                    ExecutionOutcome::Succeeded {
                        output: json!({ "dropped": true }),
                    },
                )
                .await?;
        }
        other => return Err(format!("expected approval, got {other:?}").into()),
    }

    // The decision queued a closing card for the app.
    let report = handoff.deliver_due().await?;
    println!("[outbox] delivered {} closing card(s)", report.delivered);

    // --- Evidence. ----------------------------------------------------------------------
    let details = handoff.ticket(pending.id).await?.ok_or("ticket vanished")?;
    println!("\nticket {} history:", pending.id);
    for event in &details.audit {
        let record = event.record();
        println!(
            "  #{:<3} {:<18} {}",
            event.seq(),
            record.kind,
            serde_json::to_string(&record.actor)?
        );
    }
    handoff.checkpoint().await?;
    let audit = handoff.verify_audit().await?;
    println!(
        "\naudit chain verified: {} events, head {} at seq {} (signed checkpoint at {})",
        audit.events,
        audit.head.hash,
        audit.head.seq,
        audit.checkpoint_size.unwrap_or(0)
    );
    handoff.shutdown().await?;
    Ok(())
}

/// The review app: webhook receiver and confirmation pages.
struct ReviewApp {
    handoff: Handoff,
    runtime: tokio::runtime::Handle,
    verifier: WebhookVerifier,
    /// `webhook-id`s already processed: retries of a delivery are acknowledged, not shown
    /// twice.
    seen: Arc<Mutex<HashSet<String>>>,
    /// Approve links for the reviewers (standing in for a chat room or mail).
    inbox: mpsc::Sender<String>,
}

/// One parsed HTTP/1.1 request.
struct HttpRequest {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl ReviewApp {
    fn serve(&self, stream: TcpStream) -> std::io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let request = read_request(&stream)?;
        let (status, content_type, body) = match (request.method.as_str(), request.target.as_str())
        {
            ("POST", "/webhook") => self.webhook(&request),
            ("GET", target) if target.starts_with("/decide?t=") => {
                self.confirmation_page(&target["/decide?t=".len()..])
            }
            ("POST", "/decide") => self.confirm(&request),
            _ => (404, "text/plain", "not found".to_owned()),
        };
        write_response(stream, status, content_type, &body)
    }

    /// `POST /webhook`: verify, dedupe, show the card, pass the approve link on.
    fn webhook(&self, request: &HttpRequest) -> (u16, &'static str, String) {
        let verified =
            match self
                .verifier
                .verify(&request.headers, &request.body, SystemClock.now())
            {
                Ok(v) => v,
                Err(e) => {
                    println!("[app] refused a webhook: {e}");
                    return (401, "text/plain", "bad signature".to_owned());
                }
            };
        let first_time = self
            .seen
            .lock()
            .map(|mut seen| seen.insert(verified.id.clone()))
            .unwrap_or(false);
        let answer = json!({ "message_id": format!("app-{}", verified.id) }).to_string();
        if !first_time {
            return (200, "application/json", answer);
        }
        let Ok(value) = serde_json::from_slice::<Value>(&request.body) else {
            return (400, "text/plain", "not json".to_owned());
        };
        let Ok(card) = serde_json::from_value::<ReviewCard>(value["data"]["card"].clone()) else {
            return (400, "text/plain", "no card".to_owned());
        };
        println!(
            "[app] verified webhook {} ({}), signed at {}; card:\n{}",
            verified.id,
            value["type"].as_str().unwrap_or("?"),
            verified.timestamp,
            indent(&card.to_string())
        );
        if let Some(link) = card
            .links
            .iter()
            .find(|l| l.verdict == VerdictKind::Approve)
        {
            println!("[app] posts the approve link to the DBA room");
            let _ = self.inbox.send(link.url.clone());
        }
        (200, "application/json", answer)
    }

    /// `GET /decide?t=…`: what the token leads to, and a confirmation form. Writes nothing.
    fn confirmation_page(&self, token: &str) -> (u16, &'static str, String) {
        match self.runtime.block_on(self.handoff.preview_token(token)) {
            Ok(preview) => {
                // The preview is the redacted card: whoever holds the link sees what a
                // channel shows, nothing more.
                let facts = &preview.card.facts;
                let page = format!(
                    "Confirm: {} {} on {} (ticket {}, {})\n[Confirm] [Cancel]   (nothing is decided until you confirm)",
                    preview
                        .verdict
                        .map_or("(outdated link)".to_owned(), |v| format!("{v:?}")),
                    facts.kind.as_str(),
                    facts.targets.join(", "),
                    preview.card.ticket,
                    if preview.pending { "pending" } else { "closed" },
                );
                (200, "text/plain", page)
            }
            Err(e) => (400, "text/plain", format!("this link cannot be used: {e}")),
        }
    }

    /// `POST /decide` with `t=<token>` and `Authorization: Bearer <api token>`.
    fn confirm(&self, request: &HttpRequest) -> (u16, &'static str, String) {
        let body = String::from_utf8_lossy(&request.body);
        let Some(token) = body.trim().strip_prefix("t=") else {
            return (400, "text/plain", "missing token".to_owned());
        };
        let Some(api_token) = request
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return (401, "text/plain", "sign in first".to_owned());
        };
        let credential = Credential::token(api_token);
        match self.runtime.block_on(self.handoff.decide_with_token(
            token,
            &credential,
            TokenSubmission::new(),
        )) {
            Ok(decided) => (
                200,
                "text/plain",
                format!(
                    "{}; ticket is {}",
                    if decided.is_repeated() {
                        "already recorded"
                    } else {
                        "recorded"
                    },
                    decided.ticket().state().name()
                ),
            ),
            Err(e) => (403, "text/plain", format!("refused: {e}")),
        }
    }
}

/// Reads one request: request line, headers (up to 64), body by `content-length` (up to
/// 1 MiB).
fn read_request(stream: &TcpStream) -> std::io::Result<HttpRequest> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut reader = BufReader::new(stream.take(1 << 20 | 64 << 10));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(invalid("bad request line"));
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if headers.len() == 64 {
            return Err(invalid("too many headers"));
        }
        let (name, value) = line.split_once(':').ok_or_else(|| invalid("bad header"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(Ok(0), |(_, v)| v.parse())
        .map_err(|_| invalid("bad content-length"))?;
    if length > 1 << 20 {
        return Err(invalid("body too large"));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(HttpRequest {
        method,
        target,
        headers,
        body,
    })
}

fn write_response(
    mut stream: TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        _ => "Not Found",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

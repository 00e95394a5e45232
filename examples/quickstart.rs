//! The agent-handoff quickstart: a realistic agent loop on an embedded SQLite file.
//!
//! `cargo run --example quickstart`
//!
//! 1. A read in development is allowed by policy and runs at once.
//! 2. Dropping a production table needs two DBAs. If this runs in a terminal, **you** are one
//!    of them: the review card is printed and you approve, edit or reject at the prompt; a
//!    clearly labelled scripted colleague is the second. Without a terminal (CI) both are
//!    scripted.
//! 3. A payment over the limit is denied by policy.
//!
//! It ends with the ticket history and the verified audit chain head.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write as _};
use std::time::Duration;

use agent_handoff::action::{
    ActionRequest, Amount, Environment, Impact, Justification, Reversibility, Sensitivity,
};
use agent_handoff::audit::CheckpointKey;
use agent_handoff::policy::Policy;
use agent_handoff::ticket::{Ticket, Verdict};
use agent_handoff::{
    AgentId, Credential, Decided, Decision, Handoff, PersonId, Proposal, SqliteStore,
    StaticDirectory,
};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/quickstart");
    std::fs::create_dir_all(&dir)?;
    let db = dir.join(format!("handoff-{}.sqlite3", std::process::id()));
    let interactive = std::io::stdin().is_terminal();

    // --- The host application sets things up once. ---------------------------------------
    let mut directory = StaticDirectory::new();
    directory.add_person("you", ["dba"])?;
    directory.add_person("sam-scripted", ["dba"])?;
    directory.add_person("priya", ["dba", "oncall", "operators"])?;
    let you = directory.issue_token("you")?;
    let sam = directory.issue_token("sam-scripted")?;
    let priya = directory.issue_token("priya")?;

    let handoff = Handoff::builder()
        .store(SqliteStore::open(&db).await?)
        .policy(Policy::from_toml(include_str!("policy.toml"))?)
        .identity(directory)
        .checkpoint_key(
            "quickstart.example/audit",
            CheckpointKey::new("quickstart-1", &[7u8; 32])?,
        )
        .build()?;
    println!("agent-handoff quickstart — store: {}\n", db.display());

    // The agent acts for Priya; the host binds that, never the model.
    let agent = handoff.agent(AgentId::new("ops-agent")?, Some(PersonId::new("priya")?));

    // --- 1. A read in development: allowed by policy. -------------------------------------
    let read = ActionRequest::builder("db.table.read", "quickstart-read-orders")
        .target("postgres://dev/orders")
        .environment(Environment::Development)
        .sensitivity(Sensitivity::Internal)
        .reversibility(Reversibility::Reversible)
        .reason("count yesterday's orders for the daily report")
        .build()?;
    let rows = agent
        .run(read, Duration::from_secs(5), |approved| async move {
            println!(
                "[agent] running {} — allowed by policy",
                approved.request().kind().as_str()
            );
            Ok::<_, std::io::Error>(1_284)
        })
        .await?;
    println!("[agent] read {rows} rows\n");

    // --- 2. Dropping a production table: two DBAs must approve. ---------------------------
    let drop = ActionRequest::builder("db.table.drop", "quickstart-drop-orders-archive")
        .target("postgres://prod/orders_archive_2019")
        .parameters(json!({ "table": "orders_archive_2019", "cascade": false,
                             "connection": { "password": "hunter2" } }))
        .sensitive("/connection/password")
        .environment(Environment::Production)
        .sensitivity(Sensitivity::Confidential)
        .reversibility(Reversibility::Irreversible)
        .confidence(0.92)
        .justification(Justification {
            reason: "the 2019 archive was migrated to cold storage last week".into(),
            expected_effect: "frees 310 GB on the primary".into(),
            risk_factors: vec!["a report may still read the table".into()],
            rollback_plan: Some("restore from the cold-storage snapshot (about 2 h)".into()),
        })
        .precondition("row_count", json!(1_880_412))
        .build()?;

    let pending = match agent.propose(drop.clone()).await? {
        Proposal::Pending(p) => p,
        other => return Err(format!("expected a review, got {other:?}").into()),
    };
    println!(
        "[agent] proposed the drop; ticket {} waits for review until {}",
        pending.id, pending.deadline
    );

    // Reviewers: the card, then the decisions.
    let ticket = handoff
        .ticket(pending.id)
        .await?
        .expect("ticket exists")
        .ticket;
    print_card(&ticket);
    let your_verdict = if interactive {
        prompt_verdict(&ticket)?
    } else {
        println!("[you, scripted: no terminal] approve");
        Verdict::Approve
    };
    let after_you = handoff
        .decide(
            pending.id,
            &Credential::token(you.expose()),
            your_verdict,
            Some(ticket.version()),
        )
        .await
        .map(Decided::into_ticket);
    match &after_you {
        Ok(t) => println!(
            "[review] your decision recorded; ticket now {} (v{})",
            t.state().name(),
            t.version()
        ),
        Err(e) => println!("[review] your decision was refused: {e}"),
    }
    // The principal the agent acts for cannot approve their own request.
    let self_approval = handoff
        .decide(
            pending.id,
            &Credential::token(priya.expose()),
            Verdict::Approve,
            None,
        )
        .await;
    println!(
        "[review] priya (the requester's principal) tries to approve: {}",
        self_approval
            .err()
            .map_or("accepted?!".to_string(), |e| e.to_string())
    );
    if after_you
        .as_ref()
        .is_ok_and(|t| t.state().name().as_str() == "pending")
    {
        println!("[sam, scripted colleague] approve");
        handoff
            .decide(
                pending.id,
                &Credential::token(sam.expose()),
                Verdict::Approve,
                None,
            )
            .await?;
    }

    match agent.wait(&pending, Duration::from_secs(60)).await? {
        Decision::Approved(grant) => {
            // The final check: observe the preconditions right before executing.
            let observed = BTreeMap::from([("row_count".to_string(), json!(1_880_412))]);
            let permit = agent.begin(grant, observed).await?;
            println!(
                "[agent] executing DROP TABLE {} (edited by a reviewer: {})",
                permit.action().parameters()["table"],
                permit.action().was_edited()
            );
            agent
                .finish(
                    permit,
                    agent_handoff::ticket::ExecutionOutcome::Succeeded {
                        output: json!({"dropped": true}),
                    },
                )
                .await?;
        }
        other => println!("[agent] not executed: {other:?}"),
    }
    println!();

    // --- 3. A payment over the limit: denied by policy. -----------------------------------
    let pay = ActionRequest::builder("payment.send", "quickstart-pay-vendor-x")
        .target("vendor:acme")
        .parameters(json!({ "iban": "DE89370400440532013000", "amount": "42000.00" }))
        .sensitive("/iban")
        .environment(Environment::Production)
        .sensitivity(Sensitivity::Confidential)
        .impact(Impact::new(Amount::parse("42000.00")?, "USD"))
        .reversibility(Reversibility::Compensable)
        .reason("pay invoice INV-2291")
        .build()?;
    match agent.propose(pay).await? {
        Proposal::Denied { reason, ruling, .. } => {
            let rules: Vec<_> = ruling.matched.iter().map(|m| m.rule.to_string()).collect();
            println!(
                "[agent] payment denied: {reason} (rules: {})",
                rules.join(", ")
            );
        }
        other => println!("[agent] unexpected: {other:?}"),
    }

    // --- History and evidence. ----------------------------------------------------------
    println!("\nticket {} history:", pending.id);
    let details = handoff.ticket(pending.id).await?.expect("ticket exists");
    for event in &details.audit {
        let record = event.record();
        let actor = serde_json::to_string(&record.actor)?;
        println!(
            "  #{:<3} {}  {:<18} {actor}",
            event.seq(),
            record.at,
            record.kind
        );
    }
    handoff.checkpoint().await?;
    let report = handoff.verify_audit().await?;
    println!(
        "\naudit chain verified: {} events, head {} at seq {} (signed checkpoint at {})",
        report.events,
        report.head.hash,
        report.head.seq,
        report.checkpoint_size.unwrap_or(0)
    );
    handoff.shutdown().await?;
    Ok(())
}

fn print_card(ticket: &Ticket) {
    let r = ticket.request();
    let j = r.justification();
    println!(
        "┌─ review needed ─ ticket {} (v{})",
        ticket.id(),
        ticket.version()
    );
    println!(
        "│ action      {} on {}",
        r.kind().as_str(),
        r.targets().join(", ")
    );
    println!(
        "│ where       {} · data {} · {}",
        r.environment(),
        r.sensitivity().as_str(),
        r.reversibility().as_str()
    );
    println!("│ parameters  {}", r.redacted_parameters());
    println!("│ agent says  (the agent's claim, not verified)");
    println!("│   reason    {}", j.reason);
    println!("│   effect    {}", j.expected_effect);
    println!("│   risks     {}", j.risk_factors.join("; "));
    println!(
        "│   rollback  {}",
        j.rollback_plan.as_deref().unwrap_or("none")
    );
    let rules: Vec<_> = ticket
        .ruling()
        .matched
        .iter()
        .map(|m| m.rule.to_string())
        .collect();
    println!("│ rules       {}", rules.join(", "));
    if let Some(d) = ticket.deadline() {
        println!("│ deadline    {d} (unanswered means denied)");
    }
    println!("└─");
}

fn prompt_verdict(ticket: &Ticket) -> Result<Verdict, Box<dyn std::error::Error>> {
    let stdin = std::io::stdin();
    loop {
        print!("[you] [a]pprove, [e]dit (rename the table), or [r]eject? ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(Verdict::Approve);
        }
        match line.trim() {
            "a" | "approve" => return Ok(Verdict::Approve),
            "r" | "reject" => {
                return Ok(Verdict::Reject {
                    feedback: "keep the archive until the Q4 audit".into(),
                })
            }
            "e" | "edit" => {
                let mut p = ticket.request().parameters().clone();
                p["table"] = json!("orders_archive_2019_old");
                return Ok(Verdict::ApproveWithEdits { parameters: p });
            }
            _ => println!("please answer a, e or r"),
        }
    }
}

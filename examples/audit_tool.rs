//! Export an agent-handoff audit chain as JSON Lines, back up a store, and verify an export
//! offline.
//!
//! ```text
//! cargo run --example audit_tool -- export  handoff.sqlite3 audit.jsonl [checkpoint.txt]
//! cargo run --example audit_tool -- backup  handoff.sqlite3 backup.sqlite3
//! cargo run --example audit_tool -- verify  audit.jsonl [checkpoint.txt KEY_NAME KEY_HEX [ORIGIN]]
//! ```
//!
//! `verify` needs nothing but the export (and, to detect truncation or a wholesale rewrite, a
//! checkpoint kept elsewhere and its key); it reads the file in constant memory. With
//! `ORIGIN` the checkpoint must also be of that chain (`verify_jsonl_against`, the offline
//! twin of `Handoff::verify_audit_against`).

use std::fs::File;
use std::io::{BufReader, BufWriter, Write as _};
use std::process::ExitCode;

use agent_handoff::audit::{
    to_jsonl, verify_jsonl, verify_jsonl_against, Checkpoint, CheckpointKey,
};
use agent_handoff::{SqliteStore, Store};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["export", db, out] => export(db, out, None).await,
        ["export", db, out, cp] => export(db, out, Some(cp)).await,
        ["backup", db, out] => backup(db, out).await,
        ["verify", file] => verify(file, None, None),
        ["verify", file, cp, name, key] => verify(file, Some((cp, name, key)), None),
        ["verify", file, cp, name, key, origin] => {
            verify(file, Some((cp, name, key)), Some(origin))
        }
        _ => Err("usage: audit_tool export DB OUT.jsonl [CHECKPOINT] | backup DB OUT | verify FILE.jsonl [CHECKPOINT KEY_NAME KEY_HEX [ORIGIN]]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res = Result<(), Box<dyn std::error::Error>>;

async fn export(db: &str, out: &str, checkpoint: Option<&str>) -> Res {
    let store = SqliteStore::open(db).await?;
    let mut writer = BufWriter::new(File::create(out)?);
    let (mut from, mut count) = (1, 0u64);
    loop {
        let page = store.audit_events(from, 4096).await?;
        for event in &page {
            writeln!(writer, "{}", to_jsonl(event))?;
            from = event.seq + 1;
            count += 1;
        }
        if page.len() < 4096 {
            break;
        }
    }
    writer.flush()?;
    if let (Some(path), Some(cp)) = (checkpoint, store.latest_checkpoint().await?) {
        std::fs::write(path, cp.to_text())?;
        println!("wrote checkpoint at size {} to {path}", cp.size());
    }
    store.shutdown().await?;
    println!("exported {count} events to {out}");
    Ok(())
}

async fn backup(db: &str, out: &str) -> Res {
    let store = SqliteStore::open(db).await?;
    store.backup(out).await?;
    store.shutdown().await?;
    println!("backed up {db} to {out}");
    Ok(())
}

fn verify(file: &str, checkpoint: Option<(&str, &str, &str)>, origin: Option<&str>) -> Res {
    let input = BufReader::new(File::open(file)?);
    let summary = match checkpoint {
        None => verify_jsonl(input, None)?,
        Some((cp, name, key_hex)) => {
            let cp = Checkpoint::parse(&std::fs::read_to_string(cp)?)?;
            let key = CheckpointKey::new(name, &hex(key_hex)?)?;
            let keys = std::slice::from_ref(&key);
            match origin {
                Some(origin) => {
                    verify_jsonl_against(input, std::slice::from_ref(&cp), keys, origin)?
                }
                None => verify_jsonl(input, Some((&cp, keys)))?,
            }
        }
    };
    println!(
        "ok: {} events, head {} at seq {}",
        summary.count, summary.head.hash, summary.head.seq
    );
    Ok(())
}

fn hex(text: &str) -> Result<Vec<u8>, String> {
    if text.len() % 2 != 0 {
        return Err("key hex must have an even number of digits".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

//! Test-only fault injection: the single list of the named points where a crash test can kill
//! the process (feature `failpoints`, never in production builds; without the feature every
//! function here is an empty inline no-op).
//!
//! # Arming
//!
//! `AGENT_HANDOFF_FAILPOINT=<point>[@<operation>][:<n>]` makes the process kill itself with
//! SIGKILL the `n`-th time (from 1; default 1) it reaches `point` — counting only the hits made
//! while `operation` is the [operation](operation) in progress, when one is given — exactly as
//! a crash would: no destructors, no flush, no `COMMIT`/`ROLLBACK`, no answer to anyone. Hits
//! are counted per process. A spec naming a point or an operation that is not in the lists
//! below makes the first hit exit the process with status 97 (so a typo fails the test
//! instead of silently never firing).
//!
//! Examples: `before_commit:3` (the third batch commit, whatever wrote it),
//! `before_commit@decide_token:2` (the commit of the second token decision),
//! `deliver.notified:5` (the fifth card a notifier accepted).
//!
//! # Store points (`src/store/sqlite/writer.rs`), in commit order
//!
//! - `before_audit`: inside a write, after its ticket and decision rows, before its first
//!   audit row (once per write that has audit records). A crash here must leave nothing of
//!   the write: half a write would be a ticket without its audit trail.
//! - `before_commit`: every write of the batch applied, `COMMIT` not yet issued (once per
//!   batch). Nothing of the batch may survive.
//! - `after_commit`: `COMMIT` returned — the batch is durable — and no caller was answered.
//!   Everything in the batch must survive, though nobody was told.
//!
//! # Facade points (`src/engine/`)
//!
//! Each sits between two durable steps, or between a durable step and the moment the caller
//! learns of it, where a crash leaves work that a restarted host must be able to finish (or
//! must be prevented from repeating):
//!
//! - `propose.committed` (`agent.rs`, `propose`): the new ticket (with its audit events and
//!   outbox rows) is durable, the answer not returned. A restarted agent re-proposing with
//!   the same idempotency key must get that ticket back, not a second one.
//! - `decide.committed` (`review.rs`, `decide`): the reviewer's accepted vote is durable, the
//!   reviewer not answered. Deciding again must count it once.
//! - `decide_token.committed` (`links.rs`, `decide_with_token`): the vote and the spent token
//!   nonce are durable together, the reviewer not answered. Submitting the same link again
//!   must be refused as replayed, never counted twice.
//! - `begin.committed` (`agent.rs`, `begin`): the ticket is `Executing` under a fresh lease,
//!   the permit never reached the caller. Nobody can execute; the ticket must not be begun
//!   again, and must end `Unknown` when the lease lapses (then resolvable by an operator).
//! - `finish.entered` (`agent.rs`, `finish`): the caller executed the action and asked to
//!   record its outcome; nothing is written yet. Same end as above: `Unknown`, resolvable.
//! - `finish.committed` (`agent.rs`, `finish`): the outcome is durable, the caller not
//!   answered.
//! - `deliver.claimed` (`outbox.rs`, `deliver_due`): due outbox rows are leased (a durable
//!   claim), none delivered yet. They must be claimed again once the lease lapses.
//! - `deliver.notified` (`outbox.rs`, `deliver_due`): the notifier accepted a card, its
//!   delivered mark is not written. The row must be delivered again, under the same
//!   delivery id (the channel's deduplication key).
//! - `deliver.recorded` (`outbox.rs`, `deliver_due`): the delivered mark and its `notified`
//!   audit event are durable. The row must never be delivered again.
//!
//! # Operations
//!
//! The engine names the operation in progress with an [`Operation`] guard at the entry of each
//! public call that writes: `propose`, `decide`, `decide_token`, `begin`, `finish`, `deliver`
//! (outbox delivery), `expire` (a sweep or a waiter persisting an expiry or a lost lease),
//! `resolve`, `cancel`, `revoke`, `renew`. The label is process-wide — the operation most
//! recently entered and not yet left — so `@<operation>` is exact when one operation runs at
//! a time, as in the crash matrix (`tests/crash_matrix.rs`); with several in flight it names
//! whichever entered last. Writes outside any labelled operation match only specs without
//! `@`.

/// Every point, with the file it sits in (see the module docs for what each one means).
#[cfg_attr(not(any(test, feature = "failpoints")), allow(dead_code))]
pub(crate) const POINTS: &[(&str, &str)] = &[
    ("before_audit", "store/sqlite/writer.rs"),
    ("before_commit", "store/sqlite/writer.rs"),
    ("after_commit", "store/sqlite/writer.rs"),
    ("propose.committed", "engine/agent.rs"),
    ("decide.committed", "engine/review.rs"),
    ("decide_token.committed", "engine/links.rs"),
    ("begin.committed", "engine/agent.rs"),
    ("finish.entered", "engine/agent.rs"),
    ("finish.committed", "engine/agent.rs"),
    ("deliver.claimed", "engine/outbox.rs"),
    ("deliver.notified", "engine/outbox.rs"),
    ("deliver.recorded", "engine/outbox.rs"),
];

/// Every operation label, with the file that sets it.
#[cfg_attr(not(any(test, feature = "failpoints")), allow(dead_code))]
pub(crate) const OPERATIONS: &[(&str, &str)] = &[
    ("propose", "engine/agent.rs"),
    ("decide", "engine/review.rs"),
    ("decide_token", "engine/links.rs"),
    ("begin", "engine/agent.rs"),
    ("renew", "engine/agent.rs"),
    ("finish", "engine/agent.rs"),
    ("cancel", "engine/agent.rs"),
    ("expire", "engine/agent.rs"),
    ("deliver", "engine/outbox.rs"),
    ("resolve", "engine/operator.rs"),
    ("revoke", "engine/operator.rs"),
];

/// Marks the operation in progress until the guard is dropped (see the module docs).
#[must_use = "the operation lasts as long as the guard"]
pub(crate) struct Operation {
    #[cfg(feature = "failpoints")]
    previous: &'static str,
}

#[cfg(feature = "failpoints")]
mod armed {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock};

    use super::{Operation, OPERATIONS, POINTS};

    /// The operation in progress ("" for none).
    static CURRENT: Mutex<&'static str> = Mutex::new("");

    fn current() -> std::sync::MutexGuard<'static, &'static str> {
        CURRENT.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A parsed `AGENT_HANDOFF_FAILPOINT`.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) struct Spec {
        pub(super) point: String,
        pub(super) operation: Option<String>,
        pub(super) nth: u64,
    }

    /// Parses `<point>[@<operation>][:<n>]`; `Err` names what is wrong.
    pub(super) fn parse(spec: &str) -> Result<Spec, String> {
        let (rest, nth) = match spec.rsplit_once(':') {
            Some((rest, n)) => match n.trim().parse::<u64>() {
                Ok(n) if n >= 1 => (rest, n),
                _ => return Err(format!("bad hit count `{n}` (want an integer >= 1)")),
            },
            None => (spec, 1),
        };
        let (point, operation) = match rest.split_once('@') {
            Some((point, op)) => (point.trim(), Some(op.trim())),
            None => (rest.trim(), None),
        };
        if !POINTS.iter().any(|(p, _)| *p == point) {
            return Err(format!("unknown point `{point}`"));
        }
        if let Some(op) = operation {
            if !OPERATIONS.iter().any(|(o, _)| *o == op) {
                return Err(format!("unknown operation `{op}`"));
            }
        }
        Ok(Spec {
            point: point.to_owned(),
            operation: operation.map(str::to_owned),
            nth,
        })
    }

    pub(super) fn operation(label: &'static str) -> Operation {
        let previous = std::mem::replace(&mut *current(), label);
        Operation { previous }
    }

    impl Drop for Operation {
        fn drop(&mut self) {
            *current() = self.previous;
        }
    }

    pub(super) fn failpoint(name: &str) {
        static ARMED: OnceLock<Option<Result<Spec, String>>> = OnceLock::new();
        static HITS: AtomicU64 = AtomicU64::new(0);
        let armed = ARMED.get_or_init(|| {
            std::env::var("AGENT_HANDOFF_FAILPOINT")
                .ok()
                .map(|s| parse(&s))
        });
        let spec = match armed {
            None => return,
            Some(Ok(spec)) => spec,
            Some(Err(e)) => {
                eprintln!("AGENT_HANDOFF_FAILPOINT: {e}");
                std::process::exit(97);
            }
        };
        if spec.point != name {
            return;
        }
        if let Some(op) = &spec.operation {
            if *current() != op.as_str() {
                return;
            }
        }
        if HITS.fetch_add(1, Ordering::SeqCst) + 1 != spec.nth {
            return;
        }
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid])
            .status();
        // Without a `kill` program (or if the signal is somehow late), die without unwinding.
        std::process::abort();
    }
}

/// Names the operation in progress until the returned guard is dropped.
#[cfg(feature = "failpoints")]
pub(crate) fn operation(label: &'static str) -> Operation {
    armed::operation(label)
}

/// Names the operation in progress until the returned guard is dropped.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn operation(_label: &'static str) -> Operation {
    Operation {}
}

/// A named point: kills the process here if `AGENT_HANDOFF_FAILPOINT` says so.
#[cfg(feature = "failpoints")]
pub(crate) fn failpoint(name: &str) {
    armed::failpoint(name);
}

/// A named point (no-op without the `failpoints` feature).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn failpoint(_name: &str) {}

#[cfg(test)]
mod tests {
    use super::{OPERATIONS, POINTS};

    /// The sources that hold points and operation labels, by their path under `src/`.
    const SOURCES: &[(&str, &str)] = &[
        (
            "store/sqlite/writer.rs",
            include_str!("store/sqlite/writer.rs"),
        ),
        ("engine/agent.rs", include_str!("engine/agent.rs")),
        ("engine/review.rs", include_str!("engine/review.rs")),
        ("engine/links.rs", include_str!("engine/links.rs")),
        ("engine/outbox.rs", include_str!("engine/outbox.rs")),
        ("engine/operator.rs", include_str!("engine/operator.rs")),
        ("engine/mod.rs", include_str!("engine/mod.rs")),
        ("engine/feishu.rs", include_str!("engine/feishu.rs")),
    ];

    /// Every string literal passed to `call(` in `source`.
    fn calls<'a>(source: &'a str, call: &str) -> Vec<&'a str> {
        let pattern = format!("{call}(\"");
        source
            .match_indices(&pattern)
            .filter_map(|(at, _)| {
                let rest = &source[at + pattern.len()..];
                rest.find('"').map(|end| &rest[..end])
            })
            .collect()
    }

    /// The lists in this module are exactly what the code uses, each where it says.
    #[test]
    fn the_lists_are_the_call_sites() {
        for (list, call) in [(POINTS, "failpoint"), (OPERATIONS, "failpoint::operation")] {
            let mut used: Vec<(&str, &str)> = SOURCES
                .iter()
                .flat_map(|(file, source)| calls(source, call).into_iter().map(|n| (n, *file)))
                .collect();
            used.sort_unstable();
            used.dedup();
            let mut listed = list.to_vec();
            listed.sort_unstable();
            assert_eq!(used, listed, "`{call}` call sites vs the list");
        }
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn specs_parse() {
        use super::armed::{parse, Spec};
        let spec = |point: &str, operation: Option<&str>, nth| Spec {
            point: point.into(),
            operation: operation.map(Into::into),
            nth,
        };
        assert_eq!(parse("before_commit"), Ok(spec("before_commit", None, 1)));
        assert_eq!(parse("after_commit:7"), Ok(spec("after_commit", None, 7)));
        assert_eq!(
            parse("before_audit@decide_token:3"),
            Ok(spec("before_audit", Some("decide_token"), 3))
        );
        assert_eq!(
            parse("deliver.notified@deliver"),
            Ok(spec("deliver.notified", Some("deliver"), 1))
        );
        assert!(parse("before_comit").is_err());
        assert!(parse("before_commit@decides").is_err());
        assert!(parse("before_commit:0").is_err());
        assert!(parse("before_commit:x").is_err());
    }
}

//! The [`Store`] contract as a test suite, for every store (feature `conformance`).
//!
//! The engine's promises — at most one permit per ticket, one ticket per idempotency key,
//! decisions judged at their commit time, refused writes leaving nothing, an audit chain that
//! verifies — hold only as far as its store keeps the contract. This module is that contract,
//! written once as [rules]: the bundled [`SqliteStore`](crate::SqliteStore) runs it unchanged,
//! and so must any store of yours.
//!
//! # Running it
//!
//! Describe how to open your store with a [`Harness`], then either generate one `#[test]` per
//! rule with [`store_conformance!`](crate::store_conformance) — a failing store learns which
//! rule it broke from the test's name — or [`run`] every rule and inspect the [`Report`].
//!
//! ```no_run
//! // tests/conformance.rs of a crate with a store of its own (here: the bundled one).
//! use agent_handoff::conformance::{Env, Harness};
//! use agent_handoff::{SqliteOptions, SqliteStore};
//!
//! fn harness() -> Harness {
//!     Harness::new(|env: Env| async move {
//!         let options = SqliteOptions::new().with_clock(env.clock());
//!         SqliteStore::open_with(env.path("store.sqlite3"), options)
//!             .await
//!             .expect("the store opens")
//!     })
//!     // Opening again with the same `Env` sees the same data: adds the reopen rules.
//!     .durable()
//!     // The store calls its `on_commit` listeners: adds the listener rule.
//!     .with_commit_listeners()
//! }
//!
//! agent_handoff::store_conformance!(my_store, harness());
//! ```
//!
//! The generated tests are plain `#[test]`s that start a multi-threaded tokio runtime of
//! their own (the concurrency rules need real parallelism), so the integrating crate needs no
//! test macros; the store may use tokio inside. Each test gets fresh [`Env`]s (a temporary
//! directory, a unique id for a database or schema name, and the [`ManualClock`] the store
//! must stamp commits with), and every rule opens its own stores.
//!
//! What a store must do besides passing the rules is in [`Store`]'s documentation; the rules
//! are the contract of [`STORE_CONTRACT_VERSION`], which the store must state.
//!
//! [rules]: rules
//! [`ManualClock`]: crate::ManualClock
//! [`STORE_CONTRACT_VERSION`]: crate::STORE_CONTRACT_VERSION

mod env;
pub mod fixtures;
mod harness;
mod report;
pub mod rules;

pub use env::Env;
pub use harness::{Harness, Misfile};
pub use report::{Outcome, Report, RuleOutcome};

use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// What a rule answers when it ran: `Ok(())` (a broken rule panics instead), or why it did not
/// apply to this store.
pub type Checked = Result<(), Skipped>;

/// Why a rule did not run on a store: the [`Harness`] lacks what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Skipped {
    /// The rule reopens the store: the harness is not [`durable`](Harness::durable).
    NotDurable,
    /// The rule checks commit listeners: the harness does not say the store calls them
    /// ([`with_commit_listeners`](Harness::with_commit_listeners)).
    NoCommitListeners,
    /// The rule edits an event's index column behind the store's back: the harness has no way
    /// to ([`with_misfile`](Harness::with_misfile)).
    NoMisfile,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Skipped::NotDurable => "the store is not durable (`Harness::durable`)",
            Skipped::NoCommitListeners => {
                "the store calls no commit listeners (`Harness::with_commit_listeners`)"
            }
            Skipped::NoMisfile => "the harness cannot misfile an event (`Harness::with_misfile`)",
        })
    }
}

/// A boxed rule future.
type RuleFuture = Pin<Box<dyn Future<Output = Checked> + Send>>;

/// One rule of the contract: its name (the name of its function in [`rules`]) and how to run
/// it.
#[derive(Clone, Copy)]
pub struct Rule {
    name: &'static str,
    run: fn(Harness) -> RuleFuture,
}

impl Rule {
    /// The rule's name: its function in [`rules`], and the test [`store_conformance!`]
    /// generates for it.
    ///
    /// [`store_conformance!`]: crate::store_conformance
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Runs the rule on `harness`'s store; panics if the store breaks it. Needs a tokio
    /// runtime (multi-threaded, for the concurrency rules to race for real).
    pub async fn run(&self, harness: &Harness) -> Checked {
        (self.run)(harness.clone()).await
    }
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Rule").field(&self.name).finish()
    }
}

/// Builds the table of rules from the one list (see `__agent_handoff_conformance_rules!`).
#[doc(hidden)]
#[macro_export]
macro_rules! __agent_handoff_conformance_table {
    (; $($rule:ident,)*) => {
        &[$(
            $crate::conformance::Rule::__new(stringify!($rule), |h| {
                ::std::boxed::Box::pin($crate::conformance::rules::$rule(h))
            }),
        )*]
    };
}

impl Rule {
    #[doc(hidden)]
    pub const fn __new(name: &'static str, run: fn(Harness) -> RuleFuture) -> Self {
        Self { name, run }
    }
}

/// Every rule, in the order [`run`] runs them.
pub fn rules() -> &'static [Rule] {
    const RULES: &[Rule] =
        crate::__agent_handoff_conformance_rules!(__agent_handoff_conformance_table {});
    RULES
}

/// The rule named `name`, if there is one.
pub fn rule(name: &str) -> Option<Rule> {
    rules().iter().find(|r| r.name == name).copied()
}

/// Runs every rule on `harness`'s store, each in a task of its own (a panicking rule is
/// recorded as failed, with its message, and the next one runs). Call it on a multi-threaded
/// tokio runtime.
pub async fn run(harness: &Harness) -> Report {
    run_rules(harness, rules()).await
}

/// Runs `rules` (from [`rules`] or [`rule`]) on `harness`'s store, one after the other, as
/// [`run`] does.
pub async fn run_rules(harness: &Harness, rules: &[Rule]) -> Report {
    let mut outcomes = Vec::with_capacity(rules.len());
    for rule in rules {
        let (rule, harness) = (*rule, harness.clone());
        let outcome = match tokio::spawn(async move { rule.run(&harness).await }).await {
            Ok(Ok(())) => Outcome::Passed,
            Ok(Err(skipped)) => Outcome::Skipped(skipped),
            Err(e) => Outcome::Failed {
                message: report::panic_message(e),
            },
        };
        outcomes.push(RuleOutcome {
            rule: rule.name,
            outcome,
        });
    }
    Report::new(outcomes)
}

/// Runs the rule named `rule` on the store of the harness `make` builds, on a fresh
/// multi-threaded tokio runtime (two workers), and panics if the store breaks it: the body of
/// each test [`store_conformance!`](crate::store_conformance) generates. A rule that does not
/// apply to the harness passes, saying so on stderr.
pub fn check(rule: &str, make: impl FnOnce() -> Harness) {
    let Some(found) = self::rule(rule) else {
        panic!("no conformance rule `{rule}`");
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("a tokio runtime for the conformance rule");
    let checked = runtime.block_on(async move {
        let harness = make();
        found.run(&harness).await
    });
    if let Err(skipped) = checked {
        eprintln!("conformance rule `{rule}` skipped: {skipped}");
    }
}

/// The one list of rules. Calls `$then!` with its arguments, then `;` and every rule name
/// followed by a comma: [`rules`] and [`store_conformance!`](crate::store_conformance) are
/// both made from it, so neither can miss a rule.
#[doc(hidden)]
#[macro_export]
macro_rules! __agent_handoff_conformance_rules {
    ($then:ident { $($args:tt)* }) => {
        $crate::$then! { $($args)* ;
            states_the_store_contract_version_it_implements,
            insert_then_read_back,
            update_is_a_compare_and_swap_on_the_version,
            refused_write_writes_nothing,
            failed_write_rolls_back_its_audit_rows,
            group_commit_isolates_each_callers_failure,
            idempotency_key_is_unique_per_requester,
            concurrent_inserts_with_one_key_create_one_ticket,
            concurrent_inserts_with_one_key_and_a_principal_create_one_ticket,
            a_lost_compare_and_swap_is_rebased_on_the_ticket_as_committed,
            a_declined_rebase_is_a_version_conflict_and_writes_nothing,
            concurrent_rebased_writes_on_one_ticket_all_land,
            write_at_or_after_its_limit_is_too_late,
            commit_time_never_goes_backwards,
            nonce_is_single_use,
            a_write_at_or_after_a_nonces_expiry_is_too_late,
            expired_nonces_are_pruned_and_never_consumed_again,
            list_tickets_filters_and_pages_newest_first,
            list_by_group_follows_a_ruling_change,
            due_lists_tickets_whose_time_is_up,
            decisions_are_listed_oldest_first,
            ticket_audit_and_audit_pages_cover_the_chain,
            health_reports_pending_backlog_and_chain_length,
            checkpoints_keep_the_newest,
            checkpoints_are_listed_smallest_first,
            texts_are_kept_beside_their_events,
            texts_not_committed_by_the_chain_are_refused,
            erasure_drops_a_text_and_names_the_erasing_event,
            a_misfiled_event_is_named_not_served,
            shutdown_refuses_later_commits,
            commit_listeners_hear_each_durable_change_before_its_caller,
            outbox_claims_due_rows_oldest_first_and_leases_them,
            outbox_claims_a_tickets_rows_per_channel_in_order,
            concurrent_claims_never_hand_a_row_to_two_workers,
            outbox_outcomes_are_recorded_once_with_their_audit_rows,
            the_store_names_the_clock_it_was_opened_with,
            a_clock_jump_is_refused_and_moves_no_floor,
            a_rebase_accepts_a_jumped_clock,
            a_floor_ahead_of_the_clock_is_refused_until_rebased,
            a_freeze_refuses_guarded_writes_until_lifted,
            a_freeze_is_set_with_its_audit_row_or_not_at_all,
            guarded_writes_racing_a_freeze_commit_before_it_or_not_at_all,
            shutdown_keeps_every_acknowledged_commit,
            chain_continues_across_reopen,
            commit_time_never_goes_backwards_across_reopen,
            a_poisoned_floor_is_refused_after_reopen_until_rebased,
            freezes_hold_across_reopen,
        }
    };
}

/// Generates the conformance suite for a store: a module named `$name` with one `#[test]`
/// per [rule](crate::conformance::rules), each running that rule on the store of the
/// [`Harness`](crate::conformance::Harness) expression (evaluated afresh in every test, inside
/// the test's tokio runtime; the module sees the items of the one it is invoked in).
///
/// Needs the `conformance` feature. See the [`conformance`](crate::conformance) module for a
/// complete example.
///
/// ```no_run
/// # use agent_handoff::conformance::{Env, Harness};
/// # use agent_handoff::{SqliteOptions, SqliteStore};
/// agent_handoff::store_conformance!(
///     sqlite_memory,
///     Harness::new(|env: Env| async move {
///         SqliteStore::in_memory_with(SqliteOptions::new().with_clock(env.clock()))
///             .await
///             .unwrap()
///     })
/// );
/// ```
#[macro_export]
macro_rules! store_conformance {
    ($name:ident, $harness:expr $(,)?) => {
        $crate::__agent_handoff_conformance_rules!(__agent_handoff_conformance_tests {
            $name,
            $harness
        });
    };
}

/// Expands the rule list into the tests of [`store_conformance!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __agent_handoff_conformance_tests {
    ($name:ident, $harness:expr ; $($rule:ident,)*) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $rule() {
                    $crate::conformance::check(stringify!($rule), || $harness);
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rule in the list has its function, once (the list is the one [`rules`] and the
    /// test macro are made of).
    #[test]
    fn the_rules_are_listed_once() {
        let mut names: Vec<&str> = rules().iter().map(Rule::name).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a rule is listed twice");
        assert!(rule("nonce_is_single_use").is_some());
        assert!(rule("no_such_rule").is_none());
    }
}

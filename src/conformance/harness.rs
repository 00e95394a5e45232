//! [`Harness`]: how the suite opens the store under test, and what else the store offers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{Env, Skipped};
use crate::backend::Store;
use crate::id::TicketId;
use crate::timestamp::Timestamp;

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type OpenFn = dyn Fn(Env) -> Boxed<Arc<dyn Store>> + Send + Sync;
type MisfileFn = dyn Fn(Env, u64, Misfile) -> Boxed<()> + Send + Sync;

/// How the conformance suite opens the store under test, and which optional parts of the
/// contract the store offers. Cheap to clone.
///
/// The opener gets an [`Env`] and opens a store in it: with a fresh `Env`, an empty store;
/// with an `Env` opened before (a clone of it), the same store again if the harness is
/// [`durable`](Self::durable). It must stamp commits with [`Env::clock`]. It may panic if the
/// store cannot be opened (the rule then fails with that message).
#[derive(Clone)]
pub struct Harness {
    open: Arc<OpenFn>,
    durable: bool,
    listeners: bool,
    misfile: Option<Arc<MisfileFn>>,
}

impl Harness {
    /// A harness opening stores with `open`.
    pub fn new<F, Fut, S>(open: F) -> Self
    where
        F: Fn(Env) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = S> + Send + 'static,
        S: Store + 'static,
    {
        let open: Arc<OpenFn> = Arc::new(move |env| {
            let opening = open(env);
            Box::pin(async move { Arc::new(opening.await) as Arc<dyn Store> })
        });
        Self {
            open,
            durable: false,
            listeners: false,
            misfile: None,
        }
    }

    /// Opening again with the same [`Env`] (after [`Store::shutdown`] and drop of the first
    /// store) sees everything committed before: adds the rules that reopen a store (shutdown
    /// flush, the chain, the commit floor and freezes across a reopen).
    #[must_use]
    pub fn durable(mut self) -> Self {
        self.durable = true;
        self
    }

    /// The store calls the listeners registered with [`Store::on_commit`]: adds the rule
    /// that checks them (each durable change heard once, before its caller is answered).
    #[must_use]
    pub fn with_commit_listeners(mut self) -> Self {
        self.listeners = true;
        self
    }

    /// A way to edit the index columns a store files audit events under, behind its back (as
    /// someone with write access to the database would): `misfile(env, seq, edit)` applies
    /// `edit` to event `seq` of the store in `env`, while that store is shut down. Adds the
    /// rule that such an event is named ([`StoreError::MisfiledAuditEvent`]), never served.
    /// Needs a [`durable`](Self::durable) harness. A store that keeps no index columns beside
    /// the hashed bytes has nothing to misfile and leaves this out.
    ///
    /// [`StoreError::MisfiledAuditEvent`]: crate::StoreError::MisfiledAuditEvent
    #[must_use]
    pub fn with_misfile<F, Fut>(mut self, misfile: F) -> Self
    where
        F: Fn(Env, u64, Misfile) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.misfile = Some(Arc::new(move |env, seq, edit| {
            Box::pin(misfile(env, seq, edit))
        }));
        self
    }

    /// Opens the store in `env`.
    pub async fn open(&self, env: &Env) -> Arc<dyn Store> {
        (self.open)(env.clone()).await
    }

    /// Whether reopening sees the same data.
    pub fn is_durable(&self) -> bool {
        self.durable
    }

    /// `Ok` if the harness is durable (for rules that reopen), else [`Skipped::NotDurable`].
    pub fn require_durable(&self) -> Result<(), Skipped> {
        if self.durable {
            Ok(())
        } else {
            Err(Skipped::NotDurable)
        }
    }

    /// `Ok` if the store calls commit listeners, else [`Skipped::NoCommitListeners`].
    pub fn require_commit_listeners(&self) -> Result<(), Skipped> {
        if self.listeners {
            Ok(())
        } else {
            Err(Skipped::NoCommitListeners)
        }
    }

    /// Applies `edit` to event `seq` of the (shut down) store in `env`; [`Skipped::NoMisfile`]
    /// without a way to (or without a durable store to reopen afterwards).
    pub async fn misfile(&self, env: &Env, seq: u64, edit: Misfile) -> Result<(), Skipped> {
        self.require_durable()?;
        let misfile = self.misfile.as_ref().ok_or(Skipped::NoMisfile)?;
        misfile(env.clone(), seq, edit).await;
        Ok(())
    }

    /// Whether the harness can misfile events (see [`with_misfile`](Self::with_misfile)).
    pub fn can_misfile(&self) -> bool {
        self.durable && self.misfile.is_some()
    }
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("durable", &self.durable)
            .field("listeners", &self.listeners)
            .field("misfile", &self.misfile.is_some())
            .finish_non_exhaustive()
    }
}

/// An edit of the index columns of one stored audit event — copies of what its hashed bytes
/// say, kept for lookups — as [`Harness::with_misfile`] applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Misfile {
    /// File the event under another ticket (`None`: under no ticket).
    Ticket(Option<TicketId>),
    /// File it under another kind.
    Kind(String),
    /// File it under another time.
    At(Timestamp),
}

//! Freezes (the kill switch) as the store holds them: operator state that must hold across
//! restarts and across every process sharing the store.

use serde::{Deserialize, Serialize};

use crate::id::{AgentId, PersonId};
use crate::timestamp::Timestamp;

/// What a kill switch freezes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "scope", content = "agent", rename_all = "snake_case")]
pub enum FreezeScope {
    /// Every agent.
    All,
    /// One agent.
    Agent(AgentId),
}

impl FreezeScope {
    /// Whether this freeze covers `agent`.
    pub fn covers(&self, agent: &AgentId) -> bool {
        match self {
            FreezeScope::All => true,
            FreezeScope::Agent(frozen) => frozen == agent,
        }
    }
}

/// A freeze in force, as [`Store::freezes`](crate::Store::freezes) lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Freeze {
    /// What it freezes.
    pub scope: FreezeScope,
    /// The operator's reason.
    pub reason: String,
    /// The commit time of the write that set it.
    pub since: Timestamp,
    /// The operator who set it, if the write named one.
    pub by: Option<PersonId>,
}

impl Freeze {
    /// A freeze (for stores building their listing).
    pub fn new(
        scope: FreezeScope,
        reason: impl Into<String>,
        since: Timestamp,
        by: Option<PersonId>,
    ) -> Self {
        Self {
            scope,
            reason: reason.into(),
            since,
            by,
        }
    }
}

/// A freeze set or lifted by a [`Write`](crate::backend::Write), in the same transaction as
/// the write's audit rows: the change and its record are one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FreezeChange {
    /// Freeze `scope` (replacing the reason of a freeze already on it).
    Set {
        /// What to freeze.
        scope: FreezeScope,
        /// Why.
        reason: String,
        /// The operator.
        by: Option<PersonId>,
    },
    /// Lift the freeze on `scope` (nothing if there is none).
    Lift {
        /// What to unfreeze.
        scope: FreezeScope,
    },
}

impl FreezeChange {
    /// Freeze `scope`.
    pub fn set(scope: FreezeScope, reason: impl Into<String>, by: Option<PersonId>) -> Self {
        FreezeChange::Set {
            scope,
            reason: reason.into(),
            by,
        }
    }

    /// Lift the freeze on `scope`.
    pub fn lift(scope: FreezeScope) -> Self {
        FreezeChange::Lift { scope }
    }
}

/// The first freeze in `freezes` that covers `agent` (the global one first).
pub(crate) fn covering<'a>(freezes: &'a [Freeze], agent: &AgentId) -> Option<&'a Freeze> {
    freezes
        .iter()
        .find(|f| f.scope == FreezeScope::All)
        .or_else(|| freezes.iter().find(|f| f.scope.covers(agent)))
}

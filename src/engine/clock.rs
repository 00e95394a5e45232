//! The operator's control of time: rebasing the store's commit floor onto the clock.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::DecideError;
use super::Handoff;
use crate::audit::{Actor, AuditRecord};
use crate::backend::{ClockAlarm, Credential, Write};
use crate::timestamp::Timestamp;

/// What [`Handoff::rebase_clock`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockRebase {
    /// The commit floor before (the latest commit time stored), if the store had one.
    pub floor_before: Option<Timestamp>,
    /// The alarm that was raised, if one was.
    pub alarm: Option<ClockAlarm>,
    /// The new floor: the clock's reading at the rebase's commit. Later commits continue
    /// from it.
    pub floor: Timestamp,
}

impl Handoff {
    /// Vouches for the clock as it reads now: the store's commit floor is set to the clock's
    /// reading — stepping back when the floor was ahead of it — and a detected jump is
    /// accepted, so commits resume. Audited (`clock_rebased`, with the floor before, the
    /// alarm and `reason`), in the same write that rebases.
    ///
    /// For an alarm of [`Health`](super::Health) (`store.clock_alarm`):
    /// [`ClockAlarm::FloorAhead`] when the clock is right and the floor was written under a
    /// clock that was ahead (one commit a year ahead would otherwise make every new review
    /// expire at its first approval until real time caught up), or [`ClockAlarm::Jumped`]
    /// when the clock really moved (a suspend longer than the tolerance). When the clock is
    /// the one that is wrong, fix the clock instead: commits resume by themselves.
    ///
    /// Tickets written under the wrong clock keep their times (a review deadline a year
    /// ahead stays so): cancel them if needed. A jump is detected per process: rebase through
    /// the `Handoff` whose health shows it.
    #[tracing::instrument(level = "warn", skip_all)]
    pub async fn rebase_clock(
        &self,
        credential: &Credential,
        reason: &str,
    ) -> Result<ClockRebase, DecideError> {
        super::operator::check_reason(reason)?;
        let op = self.operator(None, credential).await?;
        let health = self.inner.store.health().await?;
        let record = AuditRecord::new(
            None,
            self.inner.clock.now(),
            crate::audit::kind::CLOCK_REBASED,
            Actor::Operator(op.person.clone()),
            json!({
                "floor_before": health.commit_floor.map(Timestamp::as_unix_millis),
                "clock": self.inner.clock.now().as_unix_millis(),
                "alarm": health.clock_alarm,
                "reason": serde_json::Value::Null,
            }),
        )
        .with_text("reason", reason);
        let write = Write::default().with_clock_rebase().with_audit(record);
        let committed = self.inner.commit(write).await?;
        Ok(ClockRebase {
            floor_before: health.commit_floor,
            alarm: health.clock_alarm,
            floor: committed.at,
        })
    }
}

//! The commit-time rule every store applies, written once: a floor that never goes backwards,
//! a jump of the clock refused instead of becoming the new floor, a floor far ahead of the
//! clock refused until an operator rebases it.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::clock::{lock, Clock};
use crate::timestamp::Timestamp;

/// How far the clock may run ahead of the monotonic time since the last commit, or behind the
/// commit floor, before a store refuses to commit: 10 minutes.
pub const DEFAULT_CLOCK_TOLERANCE: Duration = Duration::from_secs(600);

/// Why a store refuses to stamp commits with its clock, as [`StoreHealth`] reports it and
/// [`StoreError::ClockJump`] / [`StoreError::FloorAhead`] refuse a commit.
///
/// [`StoreHealth`]: crate::backend::StoreHealth
/// [`StoreError::ClockJump`]: crate::StoreError::ClockJump
/// [`StoreError::FloorAhead`]: crate::StoreError::FloorAhead
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "alarm", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClockAlarm {
    /// The clock read `clock`, more than the tolerance ahead of `expected` — the last commit's
    /// time plus the monotonic time passed since: its wall time jumped. Committing would make
    /// that reading the floor of every later commit (a poisoned floor), so nothing commits
    /// until the clock reads sensibly again, or an operator vouches for it
    /// ([`Handoff::rebase_clock`](crate::Handoff::rebase_clock), e.g. after a suspend).
    Jumped {
        /// What the clock read.
        clock: Timestamp,
        /// What monotonic time says it should read (about).
        expected: Timestamp,
    },
    /// The commit floor — the latest commit time stored — is more than the tolerance ahead of
    /// the clock: the store was written under a clock that was ahead (a poisoned floor), or
    /// this clock is behind. Committing at the floor would judge every deadline the engine
    /// computes from its clock as passed, so nothing commits until an operator rebases the
    /// floor onto the clock ([`Handoff::rebase_clock`](crate::Handoff::rebase_clock)) or the
    /// clock is fixed.
    FloorAhead {
        /// The latest commit time stored.
        floor: Timestamp,
        /// What the clock read.
        clock: Timestamp,
    },
}

impl fmt::Display for ClockAlarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClockAlarm::Jumped { clock, expected } => write!(
                f,
                "the clock jumped: it reads {clock}, monotonic time since the last commit says \
                 about {expected}"
            ),
            ClockAlarm::FloorAhead { floor, clock } => {
                write!(f, "the commit floor {floor} is ahead of the clock {clock}")
            }
        }
    }
}

/// The commit time of a store's commits, from its clock (the `Handoff`'s clock).
///
/// A store calls [`stamp`](Self::stamp) once per transaction, under its write lock, with the
/// floor: the latest commit time stored (by any process). The answer is the later of the
/// clock and the floor, so commit time never goes backwards — unless the reading is wrong:
///
/// - **A jump**: the clock reads more than the tolerance ahead of the previous commit's time
///   plus the monotonic time passed since ([`Clock::monotonic`]; clocks without it are not
///   checked for jumps). [`ClockAlarm::Jumped`].
/// - **A floor ahead**: the floor is more than the tolerance ahead of the clock (a database
///   written under a clock that was ahead, or a clock behind). [`ClockAlarm::FloorAhead`].
///
/// Either refuses the transaction instead of taking a new floor; a write that rebases
/// (`Write::rebase_clock`: an operator vouched for the clock) is stamped with the clock's
/// reading as it is ([`rebase`](Self::rebase)), which may step the floor back, and the jump
/// check restarts from it. The monotonic reference is this value's (this process's): a jump is
/// a fault of one process's clock, rebased through that process.
///
/// Bundled with the crate so every store applies the same rule (the SQLite store does; the
/// conformance suite checks it).
pub struct CommitClock {
    clock: Arc<dyn Clock>,
    tolerance: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The last accepted commit time and the monotonic time when it was taken.
    anchor: Option<(Timestamp, Duration)>,
    /// The alarm last raised, so it is logged when it starts and when it ends, not per commit.
    alarm: Option<ClockAlarm>,
}

impl fmt::Debug for CommitClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitClock")
            .field("clock", &self.clock)
            .field("tolerance", &self.tolerance)
            .finish_non_exhaustive()
    }
}

impl CommitClock {
    /// Stamps commits with `clock`, tolerating `tolerance` (see the type's docs). The jump
    /// check starts from the clock's reading now.
    pub fn new(clock: Arc<dyn Clock>, tolerance: Duration) -> Self {
        let anchor = clock.monotonic().map(|mono| (clock.now(), mono));
        Self {
            clock,
            tolerance,
            state: Mutex::new(State {
                anchor,
                alarm: None,
            }),
        }
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The tolerance.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// The commit time of a transaction given the stored `floor`, or the alarm that refuses
    /// it. Call it under the write lock, after reading the floor.
    pub fn stamp(&self, floor: Timestamp) -> Result<Timestamp, ClockAlarm> {
        let (wall, mono) = (self.clock.now(), self.clock.monotonic());
        let mut state = lock(&self.state);
        let alarm = self.check(state.anchor, wall, mono, floor);
        if alarm != state.alarm {
            match &alarm {
                Some(alarm) => tracing::error!(%alarm, "commits refused"),
                None => tracing::warn!("the clock reads sensibly again: commits resume"),
            }
            state.alarm = alarm;
        }
        if let Some(alarm) = alarm {
            return Err(alarm);
        }
        let at = wall.max(floor);
        state.anchor = mono.map(|mono| (at, mono));
        Ok(at)
    }

    /// The commit time of a transaction that rebases: the clock's reading as it is (earlier
    /// than the floor, when the floor was ahead). The jump check restarts from it.
    pub fn rebase(&self) -> Timestamp {
        let (wall, mono) = (self.clock.now(), self.clock.monotonic());
        let mut state = lock(&self.state);
        state.anchor = mono.map(|mono| (wall, mono));
        state.alarm = None;
        tracing::warn!(at = %wall, "commit floor rebased onto the clock");
        wall
    }

    /// What would refuse a commit now, given the stored `floor` (for health reports).
    pub fn alarm(&self, floor: Timestamp) -> Option<ClockAlarm> {
        let (wall, mono) = (self.clock.now(), self.clock.monotonic());
        let state = lock(&self.state);
        self.check(state.anchor, wall, mono, floor)
    }

    fn check(
        &self,
        anchor: Option<(Timestamp, Duration)>,
        wall: Timestamp,
        mono: Option<Duration>,
        floor: Timestamp,
    ) -> Option<ClockAlarm> {
        if let (Some((at, then)), Some(mono)) = (anchor, mono) {
            let expected = at.saturating_add(mono.saturating_sub(then));
            if wall > expected.saturating_add(self.tolerance) {
                return Some(ClockAlarm::Jumped {
                    clock: wall,
                    expected,
                });
            }
        }
        if floor > wall.saturating_add(self.tolerance) {
            return Some(ClockAlarm::FloorAhead { floor, clock: wall });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ManualClock;

    const MIN: Duration = Duration::from_secs(60);

    fn ts(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(ms)
    }

    #[test]
    fn time_passing_is_no_jump_however_long() {
        let clock = ManualClock::new(ts(1_000_000));
        let cc = CommitClock::new(Arc::new(clock.clone()), 10 * MIN);
        assert_eq!(cc.stamp(Timestamp::EPOCH), Ok(ts(1_000_000)));
        clock.advance(Duration::from_secs(365 * 24 * 3600));
        assert!(cc.stamp(ts(1_000_000)).is_ok());
        assert_eq!(cc.alarm(ts(1_000_000)), None);
    }

    #[test]
    fn a_step_of_the_wall_clock_alone_is_a_jump_until_it_is_stepped_back() {
        let clock = ManualClock::new(ts(1_000_000));
        let cc = CommitClock::new(Arc::new(clock.clone()), 10 * MIN);
        let first = cc.stamp(Timestamp::EPOCH).unwrap();
        clock.advance(MIN);
        // Within the tolerance: a small correction of the clock is accepted.
        clock.step_wall(clock.now().saturating_add(9 * MIN));
        let second = cc.stamp(first).unwrap();
        clock.step_wall(clock.now().saturating_add(11 * MIN));
        let alarm = cc.stamp(second).unwrap_err();
        assert!(matches!(alarm, ClockAlarm::Jumped { expected, .. } if expected == second));
        assert_eq!(cc.alarm(second), Some(alarm));
        clock.step_wall(second);
        assert_eq!(cc.stamp(second), Ok(second), "stepped back: commits resume");
    }

    #[test]
    fn a_floor_ahead_of_the_clock_is_refused_and_a_rebase_steps_back_onto_the_clock() {
        let clock = ManualClock::new(ts(1_000_000));
        let cc = CommitClock::new(Arc::new(clock.clone()), 10 * MIN);
        let poisoned = ts(1_000_000).saturating_add(11 * MIN);
        assert!(matches!(
            cc.stamp(poisoned),
            Err(ClockAlarm::FloorAhead { floor, .. }) if floor == poisoned
        ));
        let near = ts(1_000_000).saturating_add(9 * MIN);
        assert_eq!(cc.stamp(near), Ok(near), "ahead within the tolerance");
        assert_eq!(cc.rebase(), ts(1_000_000));
        assert_eq!(cc.stamp(ts(1_000_000)), Ok(ts(1_000_000)));
    }

    #[test]
    fn clocks_without_monotonic_time_are_checked_against_the_floor_only() {
        #[derive(Debug)]
        struct Wall(ManualClock);
        #[async_trait::async_trait]
        impl Clock for Wall {
            fn now(&self) -> Timestamp {
                self.0.now()
            }
            async fn sleep_until(&self, deadline: Timestamp) {
                self.0.sleep_until(deadline).await
            }
        }
        let clock = ManualClock::new(ts(1_000_000));
        let cc = CommitClock::new(Arc::new(Wall(clock.clone())), 10 * MIN);
        clock.step_wall(ts(1_000_000).saturating_add(24 * 60 * MIN));
        assert!(cc.stamp(Timestamp::EPOCH).is_ok());
        clock.step_wall(ts(1_000_000));
        assert!(matches!(
            cc.stamp(ts(1_000_000).saturating_add(24 * 60 * MIN)),
            Err(ClockAlarm::FloorAhead { .. })
        ));
    }
}

//! The `Clock` port: the only place the engine reads time, so tests can drive it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::timestamp::Timestamp;

/// Where the engine gets "now", and how it waits for a later instant.
///
/// A `Handoff` reads one clock, and its store stamps commits with that same clock (the
/// builder refuses two: see [`Clock::id`]). Besides wall time, a clock may keep monotonic
/// time ([`Clock::monotonic`]), which lets the store tell a step of the wall clock from time
/// passing (see [`CommitClock`](crate::backend::CommitClock)).
///
/// Sleeping is runtime-agnostic: [`SystemClock`] wakes futures from one shared timer thread,
/// [`ManualClock`] when a test advances it.
#[async_trait]
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current (wall) time.
    fn now(&self) -> Timestamp;

    /// Completes at or after `deadline` by this clock.
    async fn sleep_until(&self, deadline: Timestamp);

    /// Monotonic time: how long this clock has run since an origin fixed for its life. It
    /// never goes backwards and does not follow steps of the wall clock (an operator or NTP
    /// setting it, a virtual machine restored from a snapshot).
    ///
    /// Default `None`: the clock has no such notion, and stores cannot detect a jump of its
    /// wall time (the commit floor and its check against the clock still apply).
    fn monotonic(&self) -> Option<Duration> {
        None
    }

    /// Which clock this is. Two handles with the same id read one clock: the store and the
    /// engine of one `Handoff` must have the same (the builder refuses otherwise).
    ///
    /// Default: the address of this value, so one `Arc<dyn Clock>` shared by the store and
    /// the builder is one clock, and two separately allocated values are two. Clocks whose
    /// clones share their state (as [`ManualClock`]'s do) override it with
    /// [`ClockId::of`] that state; every [`SystemClock`] is [`ClockId::SYSTEM`].
    fn id(&self) -> ClockId {
        ClockId::of(self)
    }
}

/// Identifies a clock (see [`Clock::id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClockId(usize);

impl ClockId {
    /// The operating system's clock: every [`SystemClock`].
    pub const SYSTEM: ClockId = ClockId(0);

    /// The id of the clock whose state lives at `state`'s address (valid while it lives:
    /// compare ids of clocks that are both alive).
    pub fn of<T: ?Sized>(state: &T) -> ClockId {
        ClockId(state as *const T as *const () as usize)
    }
}

/// Wall-clock time (`SystemTime`), with a shared timer thread for sleeping. Its monotonic
/// time is [`Instant`]'s (on Linux it does not advance while the machine is suspended: a
/// suspend longer than the store's clock tolerance is then seen as a jump, see
/// [`CommitClock`](crate::backend::CommitClock)).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    fn read() -> Timestamp {
        let ms = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        };
        Timestamp::from_unix_millis(ms)
    }
}

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Self::read()
    }

    fn monotonic(&self) -> Option<Duration> {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        Some(ORIGIN.get_or_init(Instant::now).elapsed())
    }

    fn id(&self) -> ClockId {
        ClockId::SYSTEM
    }

    async fn sleep_until(&self, deadline: Timestamp) {
        Sleep {
            deadline,
            timers: timer_thread(),
            id: None,
        }
        .await
    }
}

/// Pending sleeps, by deadline, and the wakers to call.
#[derive(Default)]
struct Timers {
    state: Mutex<TimerState>,
    changed: Condvar,
}

#[derive(Default)]
struct TimerState {
    queue: BinaryHeap<Reverse<(Timestamp, u64)>>,
    wakers: HashMap<u64, Waker>,
    next_id: u64,
}

impl Timers {
    fn register(&self, deadline: Timestamp, id: Option<u64>, waker: &Waker) -> u64 {
        let mut state = lock(&self.state);
        let id = match id {
            Some(id) if state.wakers.contains_key(&id) => id,
            _ => {
                state.next_id += 1;
                let id = state.next_id;
                state.queue.push(Reverse((deadline, id)));
                self.changed.notify_one();
                id
            }
        };
        state.wakers.insert(id, waker.clone());
        id
    }

    fn cancel(&self, id: u64) {
        lock(&self.state).wakers.remove(&id);
    }

    /// The timer thread: wakes every sleeper whose deadline has come.
    fn run(&self) {
        let mut state = lock(&self.state);
        loop {
            let now = SystemClock::read();
            while let Some(Reverse((deadline, id))) = state.queue.peek().copied() {
                if deadline > now {
                    break;
                }
                state.queue.pop();
                if let Some(w) = state.wakers.remove(&id) {
                    w.wake();
                }
            }
            state = match state.queue.peek() {
                None => self.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(Reverse((deadline, _))) => {
                    let wait = deadline.saturating_duration_since(now);
                    let wait = wait.clamp(Duration::from_millis(1), Duration::from_secs(60));
                    self.changed
                        .wait_timeout(state, wait)
                        .map(|(s, _)| s)
                        .unwrap_or_else(|e| e.into_inner().0)
                }
            };
        }
    }
}

fn timer_thread() -> Arc<Timers> {
    static TIMERS: OnceLock<Arc<Timers>> = OnceLock::new();
    TIMERS
        .get_or_init(|| {
            let timers = Arc::new(Timers::default());
            let t = Arc::clone(&timers);
            std::thread::Builder::new()
                .name("agent-handoff-timer".into())
                .spawn(move || t.run())
                .expect("spawn the timer thread");
            timers
        })
        .clone()
}

struct Sleep {
    deadline: Timestamp,
    timers: Arc<Timers>,
    id: Option<u64>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if SystemClock::read() >= self.deadline {
            if let Some(id) = self.id.take() {
                self.timers.cancel(id);
            }
            return Poll::Ready(());
        }
        let id = self.timers.register(self.deadline, self.id, cx.waker());
        self.id = Some(id);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.timers.cancel(id);
        }
    }
}

/// A clock that moves only when told to; sleepers wake when it is advanced past their
/// deadline. For deterministic tests of deadlines, ttls and `wait` without real time.
///
/// Clones share the clock: they are one clock ([`Clock::id`]). [`advance`](Self::advance)
/// and [`set`](Self::set) move wall and monotonic time together, as time passing does;
/// [`step_wall`](Self::step_wall) moves wall time alone, as a wall clock that is set does
/// (to test clock jumps).
///
/// ```
/// use agent_handoff::{Clock, ManualClock, Timestamp};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(Timestamp::from_unix_millis(1_000));
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now(), Timestamp::from_unix_millis(3_000));
/// assert_eq!(clock.monotonic(), Some(Duration::from_secs(2)));
/// clock.step_wall(Timestamp::from_unix_millis(500));
/// assert_eq!(clock.now(), Timestamp::from_unix_millis(500));
/// assert_eq!(clock.monotonic(), Some(Duration::from_secs(2)));
/// ```
#[derive(Clone, Default)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualState>>,
}

#[derive(Default)]
struct ManualState {
    now: Timestamp,
    /// Time passed since the clock was made (moved by `advance` and `set`, not `step_wall`).
    monotonic: Duration,
    /// Parked sleeps by id: their deadline and the waker to call.
    sleepers: HashMap<u64, (Timestamp, Waker)>,
    next_id: u64,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        let clock = Self::default();
        lock(&clock.inner).now = start;
        clock
    }

    /// Moves the clock forward (wall and monotonic time) and wakes sleepers whose deadline
    /// has come.
    pub fn advance(&self, by: Duration) {
        self.update(|state| {
            state.now = state.now.saturating_add(by);
            state.monotonic = state.monotonic.saturating_add(by);
        });
    }

    /// Sets the time (never backwards: an earlier time is ignored), moving monotonic time
    /// forward by as much, and wakes due sleepers.
    pub fn set(&self, to: Timestamp) {
        self.update(|state| {
            if to > state.now {
                let passed = to.saturating_duration_since(state.now);
                state.monotonic = state.monotonic.saturating_add(passed);
                state.now = to;
            }
        });
    }

    /// Steps the wall time alone to `to`, in either direction, leaving monotonic time where
    /// it is: what a wall clock set by an operator or NTP, or restored with a virtual machine,
    /// does. For tests of clock jumps; wakes sleepers that are due by the new time.
    pub fn step_wall(&self, to: Timestamp) {
        self.update(|state| state.now = to);
    }

    fn update(&self, change: impl FnOnce(&mut ManualState)) {
        let due: Vec<Waker> = {
            let mut state = lock(&self.inner);
            change(&mut state);
            let now = state.now;
            let mut due = Vec::new();
            state.sleepers.retain(|_, (deadline, waker)| {
                let keep = *deadline > now;
                if !keep {
                    due.push(waker.clone());
                }
                keep
            });
            due
        };
        due.into_iter().for_each(Waker::wake);
    }

    /// How many sleeps are parked on this clock, waiting for it to reach their deadline (useful
    /// to wait until a task is parked). A sleep that completed or was dropped no longer counts.
    pub fn sleepers(&self) -> usize {
        lock(&self.inner).sleepers.len()
    }
}

/// One sleep on a [`ManualClock`]: registered while pending, unregistered when it completes
/// or is dropped.
struct ManualSleep {
    clock: Arc<Mutex<ManualState>>,
    deadline: Timestamp,
    id: Option<u64>,
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut state = lock(&this.clock);
        if state.now >= this.deadline {
            if let Some(id) = this.id.take() {
                state.sleepers.remove(&id);
            }
            return Poll::Ready(());
        }
        let id = *this.id.get_or_insert_with(|| {
            state.next_id += 1;
            state.next_id
        });
        state
            .sleepers
            .insert(id, (this.deadline, cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            lock(&self.clock).sleepers.remove(&id);
        }
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        lock(&self.inner).now
    }

    async fn sleep_until(&self, deadline: Timestamp) {
        ManualSleep {
            clock: Arc::clone(&self.inner),
            deadline,
            id: None,
        }
        .await
    }

    fn monotonic(&self) -> Option<Duration> {
        Some(lock(&self.inner).monotonic)
    }

    fn id(&self) -> ClockId {
        ClockId::of(&*self.inner)
    }
}

/// Locks a mutex, recovering from poisoning (the protected data stays consistent: every
/// critical section here is a few assignments).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::Wake;

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn manual_clock_wakes_sleepers_when_advanced() {
        let clock = ManualClock::new(Timestamp::from_unix_millis(0));
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut sleep = clock.sleep_until(Timestamp::from_unix_millis(500));
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        assert_eq!(clock.sleepers(), 1);
        clock.advance(Duration::from_millis(499));
        assert!(!flag.0.load(Ordering::SeqCst));
        clock.advance(Duration::from_millis(1));
        assert!(flag.0.load(Ordering::SeqCst));
        assert!(sleep.as_mut().poll(&mut cx).is_ready());
        assert_eq!(clock.sleepers(), 0, "a completed sleep unregisters");
        clock.set(Timestamp::from_unix_millis(10));
        assert_eq!(
            clock.now(),
            Timestamp::from_unix_millis(500),
            "never backwards"
        );
    }

    #[test]
    fn manual_clock_forgets_dropped_sleeps_and_keeps_two_sleeps_of_one_task_apart() {
        let clock = ManualClock::new(Timestamp::from_unix_millis(0));
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut near = clock.sleep_until(Timestamp::from_unix_millis(10));
        let mut far = clock.sleep_until(Timestamp::from_unix_millis(1_000));
        assert!(near.as_mut().poll(&mut cx).is_pending());
        assert!(far.as_mut().poll(&mut cx).is_pending());
        assert_eq!(clock.sleepers(), 2, "same waker, two sleeps");
        clock.advance(Duration::from_millis(10));
        assert!(flag.0.load(Ordering::SeqCst), "the near sleep fired");
        assert!(near.as_mut().poll(&mut cx).is_ready());
        assert!(far.as_mut().poll(&mut cx).is_pending());
        drop(far);
        assert_eq!(clock.sleepers(), 0, "a dropped sleep unregisters");
    }

    #[test]
    fn system_clock_sleep_completes() {
        let clock = SystemClock;
        let start = std::time::Instant::now();
        let deadline = clock.now().saturating_add(Duration::from_millis(30));
        block_on(clock.sleep_until(deadline));
        assert!(clock.now() >= deadline);
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }
}

//! The `Clock` port: the only place the engine reads time, so tests can drive it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::timestamp::Timestamp;

/// Where the engine gets "now", and how it waits for a later instant.
///
/// Sleeping is runtime-agnostic: [`SystemClock`] wakes futures from one shared timer thread,
/// [`ManualClock`] when a test advances it.
#[async_trait]
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// Completes at or after `deadline` by this clock.
    async fn sleep_until(&self, deadline: Timestamp);
}

/// Wall-clock time (`SystemTime`), with a shared timer thread for sleeping.
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
/// ```
/// use agent_handoff::{Clock, ManualClock, Timestamp};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(Timestamp::from_unix_millis(1_000));
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now(), Timestamp::from_unix_millis(3_000));
/// ```
#[derive(Clone, Default)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualState>>,
}

#[derive(Default)]
struct ManualState {
    now: Timestamp,
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

    /// Moves the clock forward and wakes sleepers whose deadline has come.
    pub fn advance(&self, by: Duration) {
        let now = self.now().saturating_add(by);
        self.set(now);
    }

    /// Sets the time (never backwards: an earlier time is ignored) and wakes due sleepers.
    pub fn set(&self, to: Timestamp) {
        let due: Vec<Waker> = {
            let mut state = lock(&self.inner);
            if to > state.now {
                state.now = to;
            }
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

//! Same-process wake-ups: the store tells us which tickets a commit changed, and every task
//! waiting on one of them is woken at once (no polling).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use crate::backend::lock;
use crate::id::TicketId;

#[derive(Default)]
struct Entry {
    epoch: u64,
    wakers: Vec<Waker>,
    watchers: usize,
}

/// Per-ticket change counters with the wakers waiting on them.
#[derive(Default)]
pub(crate) struct Waiters {
    map: Mutex<HashMap<TicketId, Entry>>,
}

impl Waiters {
    /// Starts watching a ticket; read the ticket *after* this, so no change is missed.
    pub(crate) fn watch(&self, id: TicketId) -> Watch<'_> {
        let mut map = lock(&self.map);
        let entry = map.entry(id).or_default();
        entry.watchers += 1;
        Watch {
            waiters: self,
            id,
            seen: entry.epoch,
        }
    }

    /// Called after a durable commit changed these tickets.
    pub(crate) fn changed(&self, ids: &[TicketId]) {
        let mut woken = Vec::new();
        {
            let mut map = lock(&self.map);
            for id in ids {
                if let Some(entry) = map.get_mut(id) {
                    entry.epoch += 1;
                    woken.append(&mut entry.wakers);
                }
            }
        }
        woken.into_iter().for_each(Waker::wake);
    }
}

/// A registration on one ticket; dropping it unregisters.
pub(crate) struct Watch<'a> {
    waiters: &'a Waiters,
    id: TicketId,
    seen: u64,
}

impl<'a> Watch<'a> {
    /// Completes when the ticket changed since the last completion (or since `watch`).
    pub(crate) fn changed(&mut self) -> Changed<'_, 'a> {
        Changed { watch: self }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut map = lock(&self.waiters.map);
        if let Some(entry) = map.get_mut(&self.id) {
            entry.watchers -= 1;
            if entry.watchers == 0 {
                map.remove(&self.id);
            }
        }
    }
}

pub(crate) struct Changed<'w, 'a> {
    watch: &'w mut Watch<'a>,
}

impl Future for Changed<'_, '_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let id = self.watch.id;
        let mut map = lock(&self.watch.waiters.map);
        let entry = map.entry(id).or_default();
        if entry.epoch != self.watch.seen {
            let epoch = entry.epoch;
            drop(map);
            self.watch.seen = epoch;
            return Poll::Ready(());
        }
        if !entry.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            entry.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Polls two futures; completes with whichever finishes first (`true` if it was the first).
pub(crate) async fn first_of<A: Future, B: Future>(a: A, b: B) -> bool {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    std::future::poll_fn(|cx| {
        if a.as_mut().poll(cx).is_ready() {
            return Poll::Ready(true);
        }
        if b.as_mut().poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        Poll::Pending
    })
    .await
}

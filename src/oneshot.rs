//! A runtime-agnostic one-shot channel: how store threads answer async callers.
//!
//! The sender lives on a plain thread (the SQLite writer, a reader); the receiver is awaited on
//! any executor. Dropping the receiver does not cancel the work: the sender's value is simply
//! discarded, which is what makes a dropped `propose` future leave a queued commit intact.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::backend::lock;

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    sender_gone: bool,
}

/// The sending half.
pub(crate) struct Sender<T>(Arc<Mutex<Slot<T>>>);

/// The receiving half: a future of `Some(value)`, or `None` if the sender was dropped.
pub(crate) struct Receiver<T>(Arc<Mutex<Slot<T>>>);

pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Mutex::new(Slot {
        value: None,
        waker: None,
        sender_gone: false,
    }));
    (Sender(slot.clone()), Receiver(slot))
}

impl<T> Sender<T> {
    pub(crate) fn send(self, value: T) {
        let waker = {
            let mut slot = lock(&self.0);
            slot.value = Some(value);
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        // `Drop` runs next and finds the value delivered.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = lock(&self.0);
            slot.sender_gone = true;
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut slot = lock(&self.0);
        if let Some(v) = slot.value.take() {
            return Poll::Ready(Some(v));
        }
        if slot.sender_gone {
            return Poll::Ready(None);
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_across_threads_and_reports_a_dropped_sender() {
        let (tx, rx) = channel();
        std::thread::spawn(move || tx.send(7));
        assert_eq!(rx.await, Some(7));
        let (tx, rx) = channel::<u8>();
        std::thread::spawn(move || drop(tx));
        assert_eq!(rx.await, None);
    }
}

//! Coalescing of audit rows for refusals that can come in floods: one row each up to a budget
//! per one-minute window and key, then only a count, written as one summary row with the next
//! row of the key or by the sweep once the window is over.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use crate::timestamp::Timestamp;

/// The one-minute windows of refusals, per key: how many were written, how many only counted.
#[derive(Debug)]
pub(crate) struct Coalescer<K> {
    windows: HashMap<K, Window>,
}

impl<K> Default for Coalescer<K> {
    fn default() -> Self {
        Self {
            windows: HashMap::new(),
        }
    }
}

#[derive(Debug)]
struct Window {
    start: Timestamp,
    written: u32,
    /// Counted but not written, since `since`.
    suppressed: u64,
    since: Option<Timestamp>,
}

/// What to do with one refusal.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Write its row, preceded by a summary of the refusals counted before (count, since).
    Write {
        suppressed: Option<(u64, Timestamp)>,
    },
    /// The window's budget is spent: count it for the next summary.
    Count,
}

const WINDOW: Duration = Duration::from_secs(60);

/// Most keys tracked at once. Beyond it (after the windows that are over are dropped), a new
/// key's refusals are written one by one, untracked: memory stays bounded whatever the keys,
/// and what is written stays bounded by the number of keys a caller can make.
pub(crate) const MAX_KEYS: usize = 16_384;

impl<K: Hash + Eq + Clone> Coalescer<K> {
    /// One refusal for `key` at `now`, with `limit` rows per window (0: every one written).
    pub(crate) fn admit(&mut self, key: &K, now: Timestamp, limit: u32) -> Admit {
        if limit == 0 {
            return Admit::Write { suppressed: None };
        }
        if !self.windows.contains_key(key) && self.windows.len() >= MAX_KEYS {
            self.windows
                .retain(|_, w| now < w.start.saturating_add(WINDOW) || w.suppressed > 0);
            if self.windows.len() >= MAX_KEYS {
                return Admit::Write { suppressed: None };
            }
        }
        let window = self.windows.entry(key.clone()).or_insert(Window {
            start: now,
            written: 0,
            suppressed: 0,
            since: None,
        });
        if now >= window.start.saturating_add(WINDOW) {
            window.start = now;
            window.written = 0;
        }
        if window.written >= limit {
            window.suppressed += 1;
            window.since.get_or_insert(now);
            return Admit::Count;
        }
        window.written += 1;
        let suppressed = (window.suppressed > 0).then(|| {
            let count = std::mem::take(&mut window.suppressed);
            (count, window.since.take().unwrap_or(now))
        });
        Admit::Write { suppressed }
    }

    /// Forgets `key`'s window, as if it had never been opened (its next refusal is written).
    pub(crate) fn forget(&mut self, key: &K) {
        self.windows.remove(key);
    }

    /// Gives back a count that could not be written (`count` refusals since `since`), in a
    /// window already over at `now`: it is written with the key's next row, or by the next
    /// [`due`](Self::due).
    pub(crate) fn restore(&mut self, key: K, count: u64, since: Timestamp, now: Timestamp) {
        let window = self.windows.entry(key).or_insert(Window {
            start: now.saturating_sub(WINDOW),
            written: 0,
            suppressed: 0,
            since: None,
        });
        window.suppressed += count;
        window.since = Some(window.since.map_or(since, |s| s.min(since)));
    }

    /// The counts of windows over at `now` that hold refusals not written (key, count,
    /// since); windows over with nothing counted are forgotten.
    pub(crate) fn due(&mut self, now: Timestamp) -> Vec<(K, u64, Timestamp)> {
        let mut out = Vec::new();
        self.windows.retain(|key, window| {
            if now < window.start.saturating_add(WINDOW) {
                return true;
            }
            if window.suppressed > 0 {
                let count = std::mem::take(&mut window.suppressed);
                out.push((key.clone(), count, window.since.take().unwrap_or(now)));
            }
            false
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(ms)
    }

    #[test]
    fn a_window_writes_its_budget_then_counts_and_the_next_write_carries_the_count() {
        let mut c = Coalescer::default();
        for _ in 0..3 {
            assert_eq!(c.admit(&"a", ts(0), 3), Admit::Write { suppressed: None });
        }
        assert_eq!(c.admit(&"a", ts(10), 3), Admit::Count);
        assert_eq!(c.admit(&"a", ts(20), 3), Admit::Count);
        assert_eq!(
            c.admit(&"b", ts(20), 3),
            Admit::Write { suppressed: None },
            "another key has its own budget"
        );
        assert!(c.due(ts(59_999)).is_empty(), "the window is not over");
        assert_eq!(
            c.admit(&"a", ts(60_000), 3),
            Admit::Write {
                suppressed: Some((2, ts(10)))
            }
        );
    }

    #[test]
    fn a_window_that_is_over_yields_its_count_once_and_is_forgotten() {
        let mut c = Coalescer::default();
        assert_eq!(c.admit(&"a", ts(0), 1), Admit::Write { suppressed: None });
        assert_eq!(c.admit(&"a", ts(5), 1), Admit::Count);
        assert_eq!(c.due(ts(60_000)), vec![("a", 1, ts(5))]);
        assert!(c.due(ts(120_000)).is_empty());
        assert!(c.windows.is_empty());
        assert_eq!(c.admit(&"a", ts(0), 0), Admit::Write { suppressed: None });
    }

    #[test]
    fn a_restored_count_is_written_by_the_next_row_or_sweep() {
        let mut c = Coalescer::default();
        c.restore("a", 4, ts(3), ts(100));
        assert_eq!(c.due(ts(100)), vec![("a", 4, ts(3))]);
        c.restore("a", 4, ts(3), ts(100));
        assert_eq!(
            c.admit(&"a", ts(101), 1),
            Admit::Write {
                suppressed: Some((4, ts(3)))
            }
        );
        c.forget(&"a");
        assert_eq!(c.admit(&"a", ts(102), 1), Admit::Write { suppressed: None });
    }
}

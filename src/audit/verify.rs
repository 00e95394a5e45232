//! Streaming verification of a chain, in constant memory.

use std::collections::VecDeque;
use std::error::Error as StdError;

use super::chain::{ChainHash, ChainHead, RawEvent};

/// What a successful verification saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifySummary {
    /// Number of events checked in this run (after the starting head).
    pub count: u64,
    /// The head after the last event checked.
    pub head: ChainHead,
}

/// Why a chain failed verification. Each variant about an event names the first bad one by its
/// stored sequence number ([`VerifyError::seq`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The event's bytes (or its stored `seq`) do not hash to its stored hash: the event or its
    /// hash was edited.
    #[error("audit event {seq}: stored hash does not match its contents")]
    HashMismatch {
        /// The stored sequence number of the bad event.
        seq: u64,
    },
    /// The event's `prev_hash` is not the previous event's hash: an event before it was
    /// deleted, inserted or replaced, or its `prev_hash` was edited.
    #[error("audit event {seq}: prev_hash does not match the previous event's hash")]
    PrevMismatch {
        /// The stored sequence number of the bad event.
        seq: u64,
    },
    /// The event's sequence number skips ahead: events are missing or out of order.
    #[error("audit event {seq}: expected seq {expected} (events missing or out of order)")]
    SeqGap {
        /// The stored sequence number of the bad event.
        seq: u64,
        /// The sequence number that should have come next.
        expected: u64,
    },
    /// The event's sequence number repeats or goes back: an event was duplicated, inserted or
    /// moved.
    #[error("audit event {seq}: expected seq {expected} (sequence number repeated)")]
    SeqRepeat {
        /// The stored sequence number of the bad event.
        seq: u64,
        /// The sequence number that should have come next.
        expected: u64,
    },
    /// The chain ends before the expected head (e.g. a signed checkpoint): its tail was cut off.
    #[error("audit chain truncated: it ends at seq {chain_size}, the checkpoint covers {checkpoint_size}")]
    Truncated {
        /// Size of the checkpoint.
        checkpoint_size: u64,
        /// Size of the chain (its last sequence number).
        chain_size: u64,
    },
    /// At the expected head's sequence number the chain has another hash: it was rewritten (or
    /// belongs to another store).
    #[error("audit chain rewritten: its hash at seq {seq} differs from the checkpoint")]
    Rewritten {
        /// The checkpoint's size, where the hashes differ.
        seq: u64,
    },
    /// The expected head lies before where verification started, so it cannot be checked.
    #[error("the checkpoint at seq {checkpoint_size} lies before the verified range, which starts after seq {start}")]
    CheckpointNotCovered {
        /// Size of the checkpoint.
        checkpoint_size: u64,
        /// Sequence number of the head verification resumed from.
        start: u64,
    },
    /// The event is filed in the store under another ticket, kind or time than its hashed bytes
    /// name (the store's index columns were edited): it would appear in the wrong ticket's
    /// history, or be missing from its own.
    #[error("audit event {seq}: stored under another ticket, kind or time than its contents name")]
    Misfiled {
        /// The stored sequence number of the bad event.
        seq: u64,
    },
    /// Reading the events failed.
    #[error("reading audit events after seq {after} failed")]
    Read {
        /// The last event verified before the failure.
        after: u64,
        /// What the store reported.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

impl VerifyError {
    /// The stored sequence number of the first bad event, for errors about one event; the
    /// checkpoint size for [`Rewritten`](Self::Rewritten).
    pub fn seq(&self) -> Option<u64> {
        match self {
            Self::HashMismatch { seq }
            | Self::PrevMismatch { seq }
            | Self::SeqGap { seq, .. }
            | Self::SeqRepeat { seq, .. }
            | Self::Misfiled { seq }
            | Self::Rewritten { seq } => Some(*seq),
            Self::Truncated { .. } | Self::CheckpointNotCovered { .. } | Self::Read { .. } => None,
        }
    }
}

/// Checks events one at a time, keeping only the running head: constant memory, any length.
///
/// For each event, in order: its `seq` must be the previous one plus 1 (else
/// [`SeqGap`](VerifyError::SeqGap) / [`SeqRepeat`](VerifyError::SeqRepeat)); its `prev_hash`
/// must equal the previous hash (else [`PrevMismatch`](VerifyError::PrevMismatch)); its hash
/// must equal [`ChainHash::link`]`(prev_hash, seq, bytes)` (else
/// [`HashMismatch`](VerifyError::HashMismatch)).
///
/// What is detected: an edited event, hash or `prev_hash`; a deleted, inserted, duplicated or
/// moved event (reported at the first event whose position is wrong; a forged event inserted
/// with a correct link is reported at the genuine event after it). What needs a signed
/// checkpoint ([`expect_head`](Self::expect_head)): a cut-off tail, or a chain rewritten from
/// some point on with recomputed hashes.
///
/// Use [`verify`](Self::verify) / [`try_verify`](Self::try_verify) over an iterator, or
/// [`push`](Self::push) then [`finish`](Self::finish) when events arrive in pages (an async
/// store). After an error, drop the verifier.
#[derive(Debug, Clone)]
pub struct Verifier {
    start: ChainHead,
    head: ChainHead,
    count: u64,
    /// Expected heads not reached yet, by sequence number.
    expected: VecDeque<ChainHead>,
    /// The first expected head that could not be checked (it lies before the current head).
    behind: Option<ChainHead>,
    /// The first expected head at the current head whose hash differed when it was added.
    mismatch: Option<u64>,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    /// Verifies a chain from its first event.
    pub fn new() -> Self {
        Self::resume(ChainHead::GENESIS)
    }

    /// Verifies the events that follow `head`, trusted as given (e.g. from an earlier full
    /// verification or a checked checkpoint).
    pub fn resume(head: ChainHead) -> Self {
        Self {
            start: head,
            head,
            count: 0,
            expected: VecDeque::new(),
            behind: None,
            mismatch: None,
        }
    }

    /// Also requires the chain to pass through `head`, typically the head of a kept checkpoint
    /// whose signature was verified ([`Checkpoint::verify`](super::Checkpoint::verify)): a chain
    /// that ends earlier is [`Truncated`](VerifyError::Truncated), one with another hash there
    /// is [`Rewritten`](VerifyError::Rewritten). May be given several times (every checkpoint
    /// of a chain): the chain must pass through each.
    pub fn expect_head(mut self, head: ChainHead) -> Self {
        self.add_expected_head(head);
        self
    }

    /// [`expect_head`](Self::expect_head) on a verifier under way, e.g. the checkpoints of a
    /// store read page by page while the events are. A head must be added before the events
    /// reach it: one at the current head is compared at once, one before it cannot be checked
    /// any more and is reported by [`finish`](Self::finish) as
    /// [`CheckpointNotCovered`](VerifyError::CheckpointNotCovered).
    pub fn add_expected_head(&mut self, head: ChainHead) {
        if head.seq < self.head.seq {
            self.behind.get_or_insert(head);
        } else if head.seq == self.head.seq {
            if head.hash != self.head.hash {
                self.mismatch.get_or_insert(head.seq);
            }
        } else {
            let at = self.expected.partition_point(|h| h.seq <= head.seq);
            self.expected.insert(at, head);
        }
    }

    /// The head after the events checked so far.
    pub fn head(&self) -> ChainHead {
        self.head
    }

    /// Checks the next event.
    pub fn push(&mut self, event: &RawEvent) -> Result<(), VerifyError> {
        if let Some(seq) = self.mismatch {
            return Err(VerifyError::Rewritten { seq });
        }
        // `head.seq < u64::MAX` always holds here: a head at u64::MAX can only be a resumed one,
        // and then every event is a repeat.
        let expected = self.head.seq.wrapping_add(1);
        if self.head.seq == u64::MAX || event.seq < expected {
            return Err(VerifyError::SeqRepeat {
                seq: event.seq,
                expected,
            });
        }
        if event.seq > expected {
            return Err(VerifyError::SeqGap {
                seq: event.seq,
                expected,
            });
        }
        if event.prev_hash != self.head.hash {
            return Err(VerifyError::PrevMismatch { seq: event.seq });
        }
        let hash = ChainHash::link(&event.prev_hash, event.seq, &event.bytes);
        if hash != event.hash {
            return Err(VerifyError::HashMismatch { seq: event.seq });
        }
        self.head = ChainHead {
            seq: event.seq,
            hash,
        };
        self.count += 1;
        while self
            .expected
            .front()
            .is_some_and(|want| want.seq == event.seq)
        {
            if self
                .expected
                .pop_front()
                .is_some_and(|want| want.hash != hash)
            {
                return Err(VerifyError::Rewritten { seq: event.seq });
            }
        }
        Ok(())
    }

    /// Ends verification: checks the expected head was reached and returns the summary.
    ///
    /// With several expected heads beyond the end of the chain, [`Truncated`](VerifyError::Truncated)
    /// names the largest.
    pub fn finish(self) -> Result<VerifySummary, VerifyError> {
        if let Some(seq) = self.mismatch {
            return Err(VerifyError::Rewritten { seq });
        }
        if let Some(want) = self.expected.back() {
            return Err(VerifyError::Truncated {
                checkpoint_size: want.seq,
                chain_size: self.head.seq,
            });
        }
        if let Some(want) = self.behind {
            return Err(VerifyError::CheckpointNotCovered {
                checkpoint_size: want.seq,
                start: self.start.seq,
            });
        }
        Ok(VerifySummary {
            count: self.count,
            head: self.head,
        })
    }

    /// Checks every event, in order, then [`finish`](Self::finish)es. Accepts owned or borrowed
    /// [`RawEvent`]s or [`AuditEvent`](super::AuditEvent)s.
    pub fn verify<I>(mut self, events: I) -> Result<VerifySummary, VerifyError>
    where
        I: IntoIterator,
        I::Item: AsRef<RawEvent>,
    {
        for event in events {
            self.push(event.as_ref())?;
        }
        self.finish()
    }

    /// Like [`verify`](Self::verify), over a fallible source (a store cursor): the first read
    /// error stops verification as [`VerifyError::Read`].
    pub fn try_verify<I, T, E>(mut self, events: I) -> Result<VerifySummary, VerifyError>
    where
        I: IntoIterator<Item = Result<T, E>>,
        T: AsRef<RawEvent>,
        E: Into<Box<dyn StdError + Send + Sync>>,
    {
        for event in events {
            let event = event.map_err(|e| VerifyError::Read {
                after: self.head.seq,
                source: e.into(),
            })?;
            self.push(event.as_ref())?;
        }
        self.finish()
    }
}

/// Verifies a whole chain from its first event: `Verifier::new().verify(events)`.
pub fn verify<I>(events: I) -> Result<VerifySummary, VerifyError>
where
    I: IntoIterator,
    I::Item: AsRef<RawEvent>,
{
    Verifier::new().verify(events)
}

/// Verifies a whole chain read from a fallible source: `Verifier::new().try_verify(events)`.
pub fn try_verify<I, T, E>(events: I) -> Result<VerifySummary, VerifyError>
where
    I: IntoIterator<Item = Result<T, E>>,
    T: AsRef<RawEvent>,
    E: Into<Box<dyn StdError + Send + Sync>>,
{
    Verifier::new().try_verify(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<RawEvent> {
        let mut prev = ChainHash::GENESIS;
        (1..=n)
            .map(|seq| {
                let bytes = format!("{{\"seq\":{seq}}}").into_bytes();
                let hash = ChainHash::link(&prev, seq, &bytes);
                let event = RawEvent {
                    seq,
                    bytes,
                    prev_hash: prev,
                    hash,
                };
                prev = hash;
                event
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_with_its_head() {
        let events = chain(5);
        let summary = verify(&events).unwrap();
        assert_eq!(summary.count, 5);
        assert_eq!(summary.head.hash, events[4].hash);
        assert_eq!(
            verify(Vec::<RawEvent>::new()).unwrap().head,
            ChainHead::GENESIS
        );
    }

    #[test]
    fn resuming_verifies_only_the_rest() {
        let events = chain(5);
        let start = ChainHead {
            seq: 2,
            hash: events[1].hash,
        };
        let summary = Verifier::resume(start).verify(&events[2..]).unwrap();
        assert_eq!(summary.count, 3);
        let wrong = ChainHead {
            seq: 2,
            hash: events[0].hash,
        };
        assert!(matches!(
            Verifier::resume(wrong).verify(&events[2..]),
            Err(VerifyError::PrevMismatch { seq: 3 })
        ));
    }

    #[test]
    fn an_expected_head_before_the_start_is_reported() {
        let events = chain(3);
        let start = ChainHead {
            seq: 2,
            hash: events[1].hash,
        };
        let early = ChainHead {
            seq: 1,
            hash: events[0].hash,
        };
        assert!(matches!(
            Verifier::resume(start)
                .expect_head(early)
                .verify(&events[2..]),
            Err(VerifyError::CheckpointNotCovered {
                checkpoint_size: 1,
                start: 2
            })
        ));
        // An expected head equal to the start is checked against it.
        assert!(Verifier::resume(start)
            .expect_head(start)
            .verify(&events[2..])
            .is_ok());
        let forged = ChainHead {
            seq: 2,
            hash: events[0].hash,
        };
        assert!(matches!(
            Verifier::resume(start)
                .expect_head(forged)
                .verify(&events[2..]),
            Err(VerifyError::Rewritten { seq: 2 })
        ));
    }

    #[test]
    fn the_chain_must_pass_through_every_expected_head() {
        let events = chain(5);
        let at = |i: usize| ChainHead {
            seq: i as u64 + 1,
            hash: events[i].hash,
        };
        let summary = Verifier::new()
            .expect_head(at(3))
            .expect_head(at(1))
            .expect_head(at(1))
            .expect_head(ChainHead::GENESIS)
            .verify(&events)
            .unwrap();
        assert_eq!(summary.count, 5);
        let forged = ChainHead {
            seq: 2,
            hash: events[3].hash,
        };
        assert!(matches!(
            Verifier::new()
                .expect_head(at(3))
                .expect_head(forged)
                .verify(&events),
            Err(VerifyError::Rewritten { seq: 2 })
        ));
        // Beyond the end: the largest is named.
        let beyond = ChainHead {
            seq: 9,
            hash: events[0].hash,
        };
        assert!(matches!(
            Verifier::new()
                .expect_head(ChainHead { seq: 7, ..beyond })
                .expect_head(beyond)
                .verify(&events),
            Err(VerifyError::Truncated {
                checkpoint_size: 9,
                chain_size: 5
            })
        ));
        // Added while under way, before the events reach it.
        let mut verifier = Verifier::new();
        verifier.push(&events[0]).unwrap();
        verifier.add_expected_head(at(2));
        verifier.add_expected_head(at(0));
        for e in &events[1..] {
            verifier.push(e).unwrap();
        }
        verifier.finish().unwrap();
        let mut verifier = Verifier::new();
        verifier.push(&events[0]).unwrap();
        verifier.push(&events[1]).unwrap();
        verifier.add_expected_head(at(0));
        assert!(matches!(
            verifier.finish(),
            Err(VerifyError::CheckpointNotCovered { .. })
        ));
    }

    #[test]
    fn a_head_at_the_largest_seq_accepts_nothing_more() {
        let mut verifier = Verifier::resume(ChainHead {
            seq: u64::MAX,
            hash: ChainHash::GENESIS,
        });
        let event = RawEvent {
            seq: u64::MAX,
            bytes: vec![],
            prev_hash: ChainHash::GENESIS,
            hash: ChainHash::GENESIS,
        };
        assert!(matches!(
            verifier.push(&event),
            Err(VerifyError::SeqRepeat { .. })
        ));
    }

    #[test]
    fn read_errors_keep_their_source() {
        let events = chain(2);
        let source = vec![
            Ok(events[0].clone()),
            Err(std::io::Error::other("disk gone")),
        ];
        let err = try_verify(source).unwrap_err();
        assert!(matches!(err, VerifyError::Read { after: 1, .. }));
        assert_eq!(
            std::error::Error::source(&err).unwrap().to_string(),
            "disk gone"
        );
    }
}

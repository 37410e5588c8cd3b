//! Under `durability = "sync"` in cluster mode: how far the sessions bucket holds each
//! shard's flushes (`docs/scale-out.md`, "QoS 2 once across a node's death").
//!
//! A shard numbers its flushes (marks, `shard/persist.rs`) and holds what it sends the client
//! of a persistent session it wrote until the flush that wrote it is on disk
//! (`shard/durable_sends.rs`). In cluster mode the session also lives on in the bucket, and
//! the node a client moves to after this one died resumes it from there: a PUBREL sent before
//! the bucket holds the PUBREC that allowed it, or a PUBLISH sent with a packet identifier
//! the bucket does not hold, comes again as a second delivery. So the shard's images go to
//! the bucket with their flush's mark, and what waits for a mark waits for the bucket too.
//!
//! A flush is held by the bucket once no write of it or of an earlier flush of its shard is
//! still awaiting JetStream's answer: the images of one flush leave in order, and their
//! answers come in any order. A write that fails (NATS gone, the bucket full) counts as
//! answered: the session is written again at its next change, and sends do not wait for
//! NATS to come back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::sessions::BucketMark;
use crate::locks::lock;
use crate::shard::mailbox::Mailboxes;

/// Per shard: the bucket writes under way, by mark.
pub struct BucketMarks {
    shards: Vec<Mutex<Writes>>,
    /// Per shard: the highest mark every write of which and of the marks before it is
    /// answered; read by the shard each turn.
    held: Vec<AtomicU64>,
    mailboxes: Arc<Mailboxes>,
}

#[derive(Default)]
struct Writes {
    /// Mark → writes awaiting their answer.
    waiting: BTreeMap<u64, usize>,
    /// The highest mark a write was begun for.
    highest: u64,
}

impl Writes {
    fn held(&self) -> u64 {
        match self.waiting.first_key_value() {
            Some((&lowest, _)) => lowest - 1,
            None => self.highest,
        }
    }
}

impl BucketMarks {
    pub(super) fn new(mailboxes: Arc<Mailboxes>) -> BucketMarks {
        let shards = mailboxes.shard_count();
        BucketMarks {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            held: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            mailboxes,
        }
    }

    /// The highest mark of `shard` whose images the bucket holds.
    pub fn held(&self, shard: usize) -> u64 {
        self.held
            .get(shard)
            .map_or(0, |held| held.load(Ordering::Acquire))
    }

    /// A write of an image of flush `mark` begins; it ends when the [`Writing`] is dropped.
    pub(super) fn writing(self: &Arc<Self>, mark: BucketMark) -> Writing {
        if let Some(writes) = self.shards.get(mark.shard) {
            let mut writes = lock(writes);
            *writes.waiting.entry(mark.mark).or_default() += 1;
            writes.highest = writes.highest.max(mark.mark);
        }
        Writing {
            marks: Arc::clone(self),
            mark,
        }
    }

    fn answered(&self, mark: BucketMark) {
        let Some(writes) = self.shards.get(mark.shard) else {
            return;
        };
        let held = {
            let mut writes = lock(writes);
            if let Some(waiting) = writes.waiting.get_mut(&mark.mark) {
                *waiting -= 1;
                if *waiting == 0 {
                    writes.waiting.remove(&mark.mark);
                }
            }
            writes.held()
        };
        let before = self.held[mark.shard].fetch_max(held, Ordering::AcqRel);
        if held > before {
            self.mailboxes.wake(mark.shard);
        }
    }
}

/// A bucket write of a flush's image under way.
pub(super) struct Writing {
    marks: Arc<BucketMarks>,
    mark: BucketMark,
}

impl Drop for Writing {
    fn drop(&mut self) {
        self.marks.answered(self.mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks() -> Arc<BucketMarks> {
        let mailboxes = Arc::new(Mailboxes::new(2, 4).expect("eventfds"));
        Arc::new(BucketMarks::new(mailboxes))
    }

    fn mark(shard: usize, mark: u64) -> BucketMark {
        BucketMark { shard, mark }
    }

    #[test]
    fn a_flush_is_held_once_its_writes_and_those_before_are_answered() {
        let marks = marks();
        let first = marks.writing(mark(0, 1));
        let second = marks.writing(mark(0, 1));
        let later = marks.writing(mark(0, 2));
        let other_shard = marks.writing(mark(1, 5));
        drop(later);
        assert_eq!(marks.held(0), 0, "flush 1 still waits");
        drop(first);
        assert_eq!(marks.held(0), 0);
        drop(second);
        assert_eq!(marks.held(0), 2, "both flushes answered");
        assert_eq!(marks.held(1), 0, "shards apart");
        drop(other_shard);
        assert_eq!(marks.held(1), 5);
    }

    #[test]
    fn the_held_mark_never_goes_back() {
        let marks = marks();
        drop(marks.writing(mark(0, 3)));
        assert_eq!(marks.held(0), 3);
        // A flush the store refused is written again with the same mark.
        let again = marks.writing(mark(0, 3));
        assert_eq!(marks.held(0), 3);
        drop(again);
        assert_eq!(marks.held(0), 3);
    }
}

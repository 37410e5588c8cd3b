//! The password verifiers: a few threads, off the shard cores' event loops, that run the slow
//! hash of a CONNECT's password (argon2 costs tens of milliseconds by design) and post the
//! verdict back to the shard that asked, through its mailbox.
//!
//! Bounded twice: at most `verify_queue_max` jobs wait (a shard that finds the queue full
//! refuses that CONNECT as "server busy"), and each shard's verdict queue has room for every
//! job that can be in flight, so a verdict never waits for room.

use std::sync::Arc;

use crossbeam::channel::{Receiver, Sender, bounded};
use crossbeam::queue::ArrayQueue;
use zeroize::Zeroizing;

use super::mailbox::Mailboxes;
use crate::auth::password::PasswordHash;
use crate::conn::ConnId;

/// One password to check, for connection `conn` of shard `shard`.
pub struct VerifyJob {
    pub shard: usize,
    pub conn: ConnId,
    pub user: Box<str>,
    pub hash: PasswordHash,
    /// Wiped when dropped.
    pub password: Zeroizing<Vec<u8>>,
    /// Where the shard remembers a success (a keyed hash of user name and password).
    pub cache_key: u64,
}

/// What came of a [`VerifyJob`].
pub struct Verdict {
    pub conn: ConnId,
    pub user: Box<str>,
    pub matched: bool,
    pub cache_key: u64,
}

/// The shards' side of the pool: where jobs go, and each shard's verdicts.
pub struct Verifiers {
    jobs: Sender<VerifyJob>,
    verdicts: Arc<[ArrayQueue<Verdict>]>,
}

impl Verifiers {
    /// Starts `threads` verifier threads for `shard_count` shards.
    pub fn start(
        threads: usize,
        queue_max: usize,
        shard_count: usize,
        mailboxes: Arc<Mailboxes>,
    ) -> std::io::Result<Arc<Verifiers>> {
        let (jobs, waiting) = bounded(queue_max);
        // Every job queued or being verified may end in one shard's queue.
        let verdicts: Arc<[ArrayQueue<Verdict>]> = (0..shard_count)
            .map(|_| ArrayQueue::new(queue_max + threads))
            .collect();
        for index in 0..threads {
            let waiting: Receiver<VerifyJob> = waiting.clone();
            let verdicts = Arc::clone(&verdicts);
            let mailboxes = Arc::clone(&mailboxes);
            std::thread::Builder::new()
                .name(format!("verifier-{index}"))
                .spawn(move || {
                    // Ends when the shards are gone, with the pool's one sender.
                    while let Ok(job) = waiting.recv() {
                        let matched = job.hash.verify(&job.password);
                        let verdict = Verdict {
                            conn: job.conn,
                            user: job.user,
                            matched,
                            cache_key: job.cache_key,
                        };
                        // Cannot be full (see the module comment); were it, the connection
                        // would meet its CONNECT deadline.
                        let _ = verdicts[job.shard].push(verdict);
                        mailboxes.wake(job.shard);
                    }
                })?;
        }
        Ok(Arc::new(Verifiers { jobs, verdicts }))
    }

    /// Queues a job; false when `verify_queue_max` jobs already wait (the job is dropped,
    /// and its password wiped).
    pub fn submit(&self, job: VerifyJob) -> bool {
        self.jobs.try_send(job).is_ok()
    }

    pub fn take_verdict(&self, shard: usize) -> Option<Verdict> {
        self.verdicts[shard].pop()
    }
}

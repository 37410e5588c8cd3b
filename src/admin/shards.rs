//! How the admin thread asks the shards: the shards own every session, so a question goes to
//! a shard's bounded queue, the shard is woken, and it answers in its next loop turn on a
//! channel the asker waits on, for at most `admin_timeout_ms`.
//!
//! **Bounds.** Each admin connection has at most one question out per shard at a time, so a
//! queue of `admin_connections_max` entries holds every question in flight; only questions left
//! behind by an asker that gave up can fill it, and then the next asker is answered 503 at once
//! instead of waiting. A shard takes at most [`QUESTIONS_PER_TURN_MAX`] per turn
//! (`shard/admin_requests.rs`), so admin traffic never takes a whole turn from the fan-out.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender};
use crossbeam::queue::ArrayQueue;

use crate::broker::RoutedMessage;
use crate::broker::admin::{ClientDetail, ClientFilter, ClientRow, Kick, Subscriber};
use crate::shard::mailbox::Mailboxes;

/// Questions one shard answers per loop turn.
pub const QUESTIONS_PER_TURN_MAX: usize = 4;

/// Which connections a listing wants, by their client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressFilter {
    /// Any port of this address.
    Ip(IpAddr),
    Exact(SocketAddr),
}

impl AddressFilter {
    /// From `?address=`: an address with or without its port.
    pub fn parse(text: &str) -> Option<AddressFilter> {
        if let Ok(addr) = text.parse() {
            return Some(AddressFilter::Exact(addr));
        }
        text.parse().ok().map(AddressFilter::Ip)
    }

    pub fn accepts(&self, addr: SocketAddr) -> bool {
        match self {
            AddressFilter::Ip(ip) => addr.ip() == *ip,
            AddressFilter::Exact(exact) => addr == *exact,
        }
    }
}

/// What the admin thread asks a shard.
#[derive(Debug)]
pub enum Question {
    /// Whether the shard's loop turns (`/readyz`).
    Ping,
    /// Up to `limit` of its sessions, as `filter` and `address` want.
    Clients {
        filter: ClientFilter,
        address: Option<AddressFilter>,
        limit: usize,
    },
    Client(Box<str>),
    Kick(Box<str>),
    /// Who receives `topic`, at most `limit` of them.
    Subscribers {
        topic: Box<str>,
        limit: usize,
    },
    /// Publish these, in order, as the broker's own messages.
    Publish(Vec<Arc<RoutedMessage>>),
}

/// A session with its client's address, while connected.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub item: T,
    pub address: Option<SocketAddr>,
}

/// What a shard answers.
#[derive(Debug)]
pub enum Answer {
    Pong,
    Clients(Vec<Located<ClientRow>>),
    Client(Option<Located<ClientDetail>>),
    Kick(Kick),
    Subscribers {
        subscribers: Vec<Located<Subscriber>>,
        truncated: bool,
        /// Shared subscription groups (`$share/name/filter`) this shard owns whose filter
        /// matches, with their member counts.
        groups: Vec<(Box<str>, usize)>,
    },
    Published,
}

/// A question and where its answer goes, tagged with the shard that answers.
pub struct Request {
    pub question: Question,
    pub reply: Sender<(usize, Answer)>,
}

/// Why no answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// A shard's queue is full.
    Busy,
    /// A shard did not answer within `admin_timeout_ms`.
    Timeout,
}

/// The queues of questions, one per shard.
pub struct ShardRequests {
    queues: Vec<ArrayQueue<Request>>,
    mailboxes: Arc<Mailboxes>,
}

impl ShardRequests {
    pub fn new(mailboxes: Arc<Mailboxes>, queue_len_max: usize) -> ShardRequests {
        assert!(queue_len_max > 0, "a queue holds at least one question");
        ShardRequests {
            queues: (0..mailboxes.shard_count())
                .map(|_| ArrayQueue::new(queue_len_max))
                .collect(),
            mailboxes,
        }
    }

    pub fn shard_count(&self) -> usize {
        self.queues.len()
    }

    /// The next question for `shard`, if any (called by the shard).
    pub fn take(&self, shard: usize) -> Option<Request> {
        self.queues.get(shard)?.pop()
    }

    /// Asks each shard `question(shard)` and waits until every one answered or `timeout`
    /// passed; the answers in shard order.
    pub fn ask_all(
        &self,
        question: impl Fn(usize) -> Question,
        timeout: Duration,
    ) -> Result<Vec<Answer>, Unanswered> {
        let questions = (0..self.shard_count()).map(|shard| (shard, question(shard)));
        let mut answers = self.ask(questions.collect(), timeout)?;
        answers.sort_by_key(|(shard, _)| *shard);
        Ok(answers.into_iter().map(|(_, answer)| answer).collect())
    }

    /// Asks shard `shard` alone.
    pub fn ask_one(
        &self,
        shard: usize,
        question: Question,
        timeout: Duration,
    ) -> Result<Answer, Unanswered> {
        let mut answers = self.ask(vec![(shard, question)], timeout)?;
        answers
            .pop()
            .map(|(_, answer)| answer)
            .ok_or(Unanswered::Timeout)
    }

    fn ask(
        &self,
        questions: Vec<(usize, Question)>,
        timeout: Duration,
    ) -> Result<Vec<(usize, Answer)>, Unanswered> {
        let deadline = Instant::now() + timeout;
        let asked = questions.len();
        let (reply, answers): (_, Receiver<(usize, Answer)>) = channel::bounded(asked);
        for (shard, question) in questions {
            let request = Request {
                question,
                reply: reply.clone(),
            };
            let queue = self.queues.get(shard).ok_or(Unanswered::Busy)?;
            queue.push(request).map_err(|_| Unanswered::Busy)?;
            self.mailboxes.wake(shard);
        }
        let mut got = Vec::with_capacity(asked);
        while got.len() < asked {
            match answers.recv_deadline(deadline) {
                Ok(answer) => got.push(answer),
                Err(_) => return Err(Unanswered::Timeout),
            }
        }
        Ok(got)
    }
}

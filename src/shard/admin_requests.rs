//! The shard's side of the operations listener (`crate::admin`): each loop turn it answers at
//! most [`QUESTIONS_PER_TURN_MAX`] questions from its queue, reading its broker and its
//! connections' addresses, and publishes what the publish API handed it as the broker's own
//! messages, as the `$SYS` topics are (`sys_topics.rs`).
//!
//! An answer goes to a bounded channel with room for every shard's answer, so sending never
//! blocks; an asker that gave up has dropped its receiver, and the answer is dropped with it.

use std::time::Instant;

use super::Shard;
use crate::admin::shards::{
    AddressFilter, Answer, Located, QUESTIONS_PER_TURN_MAX, Question, Request,
};
use crate::conn::ConnId;

impl Shard {
    /// Answers the questions waiting for this shard, a bounded number per turn.
    pub(super) fn answer_admin(&mut self, now: Instant) {
        let Some(requests) = self.admin.clone() else {
            return;
        };
        for answered in 0..QUESTIONS_PER_TURN_MAX {
            let Some(Request { question, reply }) = requests.take(self.id) else {
                return;
            };
            let answer = self.answer(question, now);
            // The asker may have given up (timeout): nothing waits for this answer then.
            let _ = reply.try_send((self.id, answer));
            if answered + 1 == QUESTIONS_PER_TURN_MAX {
                self.busy = true;
            }
        }
    }

    fn answer(&mut self, question: Question, now: Instant) -> Answer {
        match question {
            Question::Ping => Answer::Pong,
            Question::Clients {
                filter,
                address,
                limit,
            } => {
                let keep = |conn: Option<ConnId>| self.address_accepted(conn, address);
                let rows = self.broker.client_rows(&filter, limit, keep);
                Answer::Clients(
                    rows.into_iter()
                        .map(|row| self.locate(row.conn, row))
                        .collect(),
                )
            }
            Question::Client(client_id) => {
                let detail = self.broker.client_detail(&client_id);
                Answer::Client(detail.map(|detail| self.locate(detail.row.conn, detail)))
            }
            Question::Kick(client_id) => {
                Answer::Kick(self.broker.kick(&client_id, now, &mut self.outbox))
            }
            Question::Subscribers { topic, limit } => {
                let (found, truncated) = self.broker.subscribers(&topic, limit);
                let groups = self.broker.shared_groups_matching(&topic);
                let subscribers = found
                    .into_iter()
                    .map(|subscriber| self.locate(subscriber.conn, subscriber))
                    .collect();
                Answer::Subscribers {
                    subscribers,
                    truncated,
                    groups,
                }
            }
            Question::Publish(messages) => {
                if self.stop_deadline.is_none() {
                    for message in messages {
                        self.broker.publish_own(message, now, &mut self.outbox);
                    }
                }
                Answer::Published
            }
        }
    }

    fn address_accepted(&self, conn: Option<ConnId>, filter: Option<AddressFilter>) -> bool {
        let Some(filter) = filter else {
            return true;
        };
        conn.and_then(|conn| self.io.state(conn))
            .is_some_and(|peer| filter.accepts(peer.addr))
    }

    fn locate<T>(&self, conn: Option<ConnId>, item: T) -> Located<T> {
        Located {
            address: conn
                .and_then(|conn| self.io.state(conn))
                .map(|peer| peer.addr),
            item,
        }
    }
}

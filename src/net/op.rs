//! io_uring `user_data`: which operation completed, and for which connection or listener.
//!
//! The top byte names the operation; the low 56 bits carry a `ConnId` (slot and generation)
//! or a listener index.

use crate::conn::ConnId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Accept(usize),
    Recv(ConnId),
    Send(ConnId),
    /// A read of this shard's eventfd: another shard or the signal thread woke it.
    Wake,
    /// A cancellation's own completion; its target completes separately.
    Cancel,
}

const ACCEPT: u64 = 1;
const RECV: u64 = 2;
const SEND: u64 = 3;
const WAKE: u64 = 4;
const CANCEL: u64 = 5;
const PAYLOAD_MASK: u64 = (1 << 56) - 1;

impl Op {
    pub fn user_data(self) -> u64 {
        let (kind, payload) = match self {
            Op::Accept(index) => (ACCEPT, index as u64),
            Op::Recv(id) => (RECV, id.0),
            Op::Send(id) => (SEND, id.0),
            Op::Wake => (WAKE, 0),
            Op::Cancel => (CANCEL, 0),
        };
        debug_assert!(payload <= PAYLOAD_MASK, "connection ids fit in 56 bits");
        kind << 56 | payload
    }

    pub fn from_user_data(user_data: u64) -> Option<Op> {
        let payload = user_data & PAYLOAD_MASK;
        match user_data >> 56 {
            ACCEPT => Some(Op::Accept(payload as usize)),
            RECV => Some(Op::Recv(ConnId(payload))),
            SEND => Some(Op::Send(ConnId(payload))),
            WAKE => Some(Op::Wake),
            CANCEL => Some(Op::Cancel),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        let id = ConnId((0xAB_CDEF << 32) | 12345);
        for op in [
            Op::Accept(3),
            Op::Recv(id),
            Op::Send(id),
            Op::Wake,
            Op::Cancel,
        ] {
            assert_eq!(Op::from_user_data(op.user_data()), Some(op));
        }
    }
}

//! The steps of a broker session and how they are read from the fuzzer's bytes.

use arbitrary::{Arbitrary, Unstructured};

/// One thing that happens to the shards. Fields are raw bytes, interpreted where used:
/// `conn` picks a slot of any shard (`conn % (shards × SLOTS)`, see [`SLOTS`](super::SLOTS)), `shard` a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A CONNECT built from its fields, on a free slot of the shard owning the client id.
    /// `flags`: bits 0-1 version (3.1, 3.1.1, 5.0, 3.1.1), 2 clean, 3 WebSocket, 4 will, 5-6
    /// will QoS, 7 will retain. `client`: bits 0-3 id ([`CLIENT_IDS`]), 4-7 will topic.
    /// `keep_alive`: bits 0-1 from 0, 1, 5, 60 s. `v5` (5.0 only): bits 0-1 Session Expiry
    /// (none, 0, 10 s, never), 2-3 Receive Maximum (none, 1, 2, 5), 4-5 Maximum Packet Size
    /// (none, 30, 100, 1000), 6-7 Will Delay (none, 0, 5 s, 100 s).
    Connect {
        shard: u8,
        client: u8,
        flags: u8,
        keep_alive: u8,
        v5: u8,
    },
    /// Raw bytes decoded before CONNECT; a CONNECT opens a TCP connection, what follows it is
    /// that connection's first bytes.
    RawConnect {
        shard: u8,
        bytes: Vec<u8>,
    },
    /// `flags`: bits 0-1 QoS (3 is 2), 2 retain, 3 dup (QoS 1/2), 4-5 Topic Alias (none; 1 with
    /// the topic; 1 without it; 5), 6 Message Expiry 2 s, 7 Payload Format UTF-8 (5.0 only).
    Publish {
        conn: u8,
        topic: u8,
        flags: u8,
        id: u8,
        payload: u8,
    },
    /// `options`: bits 0-1 QoS, 2 No Local, 3 Retain As Published, 4-5 Retain Handling (5.0
    /// only), 6 a Subscription Identifier (5.0), 7 a second filter.
    Subscribe {
        conn: u8,
        filter: u8,
        options: u8,
        id: u8,
    },
    Unsubscribe {
        conn: u8,
        filter: u8,
        id: u8,
    },
    /// `kind`: bits 0-1 PUBACK, PUBREC, PUBREL, PUBCOMP; bit 2 a failure reason (5.0).
    Ack {
        conn: u8,
        kind: u8,
        id: u8,
    },
    PingReq {
        conn: u8,
    },
    /// `flags` (5.0): bit 0 with will (0x04), bits 1-2 Session Expiry (none, 0, 10 s, 60 s).
    Disconnect {
        conn: u8,
        flags: u8,
    },
    /// Bytes received on a connection, after what it received before.
    Raw {
        conn: u8,
        bytes: Vec<u8>,
    },
    /// Time passes: `amount × 100 ms` below 128, else `(amount - 127) × 30 s`.
    Advance {
        amount: u8,
    },
    /// Keep-alive and expiry: `Broker::tick` on one shard, or every shard from 128 on.
    Tick {
        shard: u8,
    },
    /// The socket is gone: `connection_lost`, and the slot is free for a new connection.
    Lost {
        conn: u8,
    },
    /// `continue_fanout`, as once per loop turn.
    Fanout {
        shard: u8,
    },
    /// A shard takes its mail from another: `route % shards` from, the next one(s) to; bit 7:
    /// all of it, else one message.
    Mail {
        route: u8,
    },
}

impl Step {
    /// Reads a step: an operation byte (`% 14`, in declaration order), then one byte per field;
    /// bytes are a length byte and that many bytes (fewer when the input ends).
    pub fn read(u: &mut Unstructured<'_>) -> arbitrary::Result<Step> {
        let byte = |u: &mut Unstructured<'_>| u8::arbitrary(u);
        let bytes = |u: &mut Unstructured<'_>| -> arbitrary::Result<Vec<u8>> {
            let len = usize::from(u8::arbitrary(u)?).min(u.len());
            Ok(u.bytes(len)?.to_vec())
        };
        Ok(match byte(u)? % 14 {
            0 => Step::Connect {
                shard: byte(u)?,
                client: byte(u)?,
                flags: byte(u)?,
                keep_alive: byte(u)?,
                v5: byte(u)?,
            },
            1 => Step::RawConnect {
                shard: byte(u)?,
                bytes: bytes(u)?,
            },
            2 => Step::Publish {
                conn: byte(u)?,
                topic: byte(u)?,
                flags: byte(u)?,
                id: byte(u)?,
                payload: byte(u)?,
            },
            3 => Step::Subscribe {
                conn: byte(u)?,
                filter: byte(u)?,
                options: byte(u)?,
                id: byte(u)?,
            },
            4 => Step::Unsubscribe {
                conn: byte(u)?,
                filter: byte(u)?,
                id: byte(u)?,
            },
            5 => Step::Ack {
                conn: byte(u)?,
                kind: byte(u)?,
                id: byte(u)?,
            },
            6 => Step::PingReq { conn: byte(u)? },
            7 => Step::Disconnect {
                conn: byte(u)?,
                flags: byte(u)?,
            },
            8 => Step::Raw {
                conn: byte(u)?,
                bytes: bytes(u)?,
            },
            9 => Step::Advance { amount: byte(u)? },
            10 => Step::Tick { shard: byte(u)? },
            11 => Step::Lost { conn: byte(u)? },
            12 => Step::Fanout { shard: byte(u)? },
            _ => Step::Mail { route: byte(u)? },
        })
    }

    /// Appends the bytes that [`Step::read`] reads back as this step (for seeds).
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut put_bytes = |op: u8, fields: &[u8], bytes: &[u8]| {
            out.push(op);
            out.extend_from_slice(fields);
            let len = u8::try_from(bytes.len()).expect("at most 255 bytes in a step");
            out.push(len);
            out.extend_from_slice(bytes);
        };
        let fields: (u8, Vec<u8>) = match self {
            Step::RawConnect { shard, bytes } => return put_bytes(1, &[*shard], bytes),
            Step::Raw { conn, bytes } => return put_bytes(8, &[*conn], bytes),
            Step::Connect {
                shard,
                client,
                flags,
                keep_alive,
                v5,
            } => (0, vec![*shard, *client, *flags, *keep_alive, *v5]),
            Step::Publish {
                conn,
                topic,
                flags,
                id,
                payload,
            } => (2, vec![*conn, *topic, *flags, *id, *payload]),
            Step::Subscribe {
                conn,
                filter,
                options,
                id,
            } => (3, vec![*conn, *filter, *options, *id]),
            Step::Unsubscribe { conn, filter, id } => (4, vec![*conn, *filter, *id]),
            Step::Ack { conn, kind, id } => (5, vec![*conn, *kind, *id]),
            Step::PingReq { conn } => (6, vec![*conn]),
            Step::Disconnect { conn, flags } => (7, vec![*conn, *flags]),
            Step::Advance { amount } => (9, vec![*amount]),
            Step::Tick { shard } => (10, vec![*shard]),
            Step::Lost { conn } => (11, vec![*conn]),
            Step::Fanout { shard } => (12, vec![*shard]),
            Step::Mail { route } => (13, vec![*route]),
        };
        out.push(fields.0);
        out.extend_from_slice(&fields.1);
    }
}

impl<'a> Arbitrary<'a> for Step {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Step> {
        Step::read(u)
    }
}

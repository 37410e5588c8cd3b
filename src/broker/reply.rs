//! What the broker answers one connection: a control packet framed for its transport (acks,
//! CONNACK, DISCONNECT), and the goodbye before a close. Publishes, shared by many subscribers,
//! are encoded in `publish_cache.rs`.

use super::clients::Client;
use super::outbox::{CloseReason, Outbox};
use crate::conn::{Chunk, ConnId, Droppable, Transport};
use crate::protocol::mqtt::{
    Disconnect, Packet, PropertiesBuf, Property, ProtocolVersion, encode, encoded_len,
};
use crate::protocol::ws::frame::{Opcode, header_len, write_frame_header};

/// The bytes of `packet` for a connection speaking `version` over `transport`.
pub fn frame(packet: &Packet<'_>, version: ProtocolVersion, transport: Transport) -> Vec<u8> {
    let len = encoded_len(packet, version);
    let mut out = Vec::with_capacity(len + header_len(len));
    if transport == Transport::Ws {
        // One packet per binary frame; server frames are not masked (RFC 6455 §5.1).
        write_frame_header(Opcode::Binary, true, len, &mut out);
    }
    encode(packet, version, &mut out);
    out
}

/// Appends a control packet (not a fanned-out publish) for `conn`.
pub(crate) fn send_packet(
    out: &mut Outbox,
    conn: ConnId,
    transport: Transport,
    version: ProtocolVersion,
    packet: &Packet<'_>,
) {
    let bytes = frame(packet, version, transport);
    out.send(conn, Chunk::Owned(bytes), Droppable::No);
}

/// Asks for the close of `conn`; an MQTT 5 client first gets a DISCONNECT saying why
/// (§4.13.2), queued before the close so the network layer sends it before any WebSocket
/// close frame.
pub(crate) fn say_goodbye(
    out: &mut Outbox,
    conn: ConnId,
    connection: &Client,
    reason: CloseReason,
) {
    if connection.version == ProtocolVersion::V5
        && let Some(code) = reason.disconnect_reason()
    {
        let mut properties = PropertiesBuf::new();
        let text = reason.reason_text();
        if !text.is_empty() {
            properties.push(Property::ReasonString(text));
        }
        let disconnect = Packet::Disconnect(Disconnect {
            reason: code,
            properties: properties.as_properties(),
        });
        send_packet(
            out,
            conn,
            connection.transport,
            connection.version,
            &disconnect,
        );
    }
    out.close(conn, reason);
}

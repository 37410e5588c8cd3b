//! Bytes on the wire: shared QoS 0 encodings and WebSocket framing.

use super::*;
use crate::protocol::mqtt::{ConnectReturnCode, Delivery, QoS};

#[test]
fn qos0_subscribers_share_one_encoding_per_wire_variant() {
    let mut h = Harness::new();
    h.subscriber(1, "s1", "t", QoS::AtMostOnce);
    h.subscriber(2, "s2", "t", QoS::AtMostOnce);
    let mut ws = Client::new("s3");
    ws.transport = Transport::Ws;
    h.connect(3, &ws);
    h.packet(3, &subscribe(1, &[("t", QoS::AtMostOnce)]));
    h.connect(4, &Client::new("pub"));
    let step = h.packet(4, &publish("t", b"x", Delivery::AtMostOnce, false));
    let shared: Vec<&Rc<[u8]>> = step
        .chunks
        .iter()
        .map(|(_, chunk)| match chunk {
            Chunk::Shared(bytes) => bytes,
            Chunk::Owned(_) => panic!("QoS 0 fan-out is shared"),
        })
        .collect();
    assert_eq!(shared.len(), 3);
    assert!(Rc::ptr_eq(shared[0], shared[1]));
    assert!(
        !Rc::ptr_eq(shared[0], shared[2]),
        "WebSocket framing is another variant"
    );
    assert!(step.sends.iter().all(|(_, _, d)| *d == Droppable::Yes));
    // The WebSocket subscriber's chunk decoded as one frame holding the same publish.
    assert_eq!(step.publishes(3), step.publishes(1));
}

#[test]
fn ws_transport_frames_every_packet() {
    let mut h = Harness::new();
    let mut client = Client::new("ws");
    client.transport = Transport::Ws;
    // Every chunk is checked to be one binary frame by the harness decoder.
    let step = h.connect(1, &client);
    assert_eq!(
        step.to(1),
        vec![Got::ConnAck(false, ConnectReturnCode::Accepted)]
    );
    h.packet(1, &subscribe(1, &[("t", QoS::AtLeastOnce)]));
    let payload = vec![1u8; 70_000];
    let step = h.packet(
        1,
        &publish("t", &payload, Delivery::AtLeastOnce(id(4)), false),
    );
    assert_eq!(
        step.to(1),
        vec![
            Got::Publish(pub_got(
                "t",
                &payload,
                QoS::AtLeastOnce,
                Some(1),
                false,
                false
            )),
            Got::PubAck(4)
        ]
    );
}

//! MQTT 3.1.1 codec: decode (borrowed views) and encode, per packet type.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fanfare::config::Limits;
use fanfare::protocol::mqtt::{
    Ack, Connect, Delivery, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, Subscribe,
    SubscriptionOptions, decode, encode,
};

const V311: ProtocolVersion = ProtocolVersion::V311;

fn packets() -> Vec<(&'static str, Packet<'static>)> {
    static PAYLOAD_64: [u8; 64] = [0x42; 64];
    static PAYLOAD_1K: [u8; 1024] = [0x42; 1024];
    let id = PacketId::new(7).expect("non-zero");
    vec![
        (
            "connect",
            Packet::Connect(Connect {
                version: V311,
                clean_session: true,
                keep_alive_s: 60,
                client_id: "browser-7f3a9c21",
                will: None,
                username: Some("fan"),
                password: Some(b"secret"),
                properties: Properties::EMPTY,
                bridge: false,
            }),
        ),
        (
            "publish_qos0_64B",
            Packet::Publish(Publish {
                dup: false,
                retain: false,
                delivery: Delivery::AtMostOnce,
                topic: "scores/tennis/court-1",
                payload: &PAYLOAD_64,
                properties: Properties::EMPTY,
            }),
        ),
        (
            "publish_qos1_1KiB",
            Packet::Publish(Publish {
                dup: false,
                retain: false,
                delivery: Delivery::AtLeastOnce(id),
                topic: "scores/tennis/court-1",
                payload: &PAYLOAD_1K,
                properties: Properties::EMPTY,
            }),
        ),
        (
            "subscribe",
            Packet::Subscribe(Subscribe {
                packet_id: id,
                filters: vec![
                    ("scores/tennis/#", SubscriptionOptions::new(QoS::AtMostOnce)),
                    ("news/+", SubscriptionOptions::new(QoS::AtLeastOnce)),
                ],
                properties: Properties::EMPTY,
            }),
        ),
        ("puback", Packet::PubAck(Ack::new(id))),
        ("pingreq", Packet::PingReq),
    ]
}

fn codec(c: &mut Criterion) {
    let limits = Limits::default().decode_limits();
    let mut group = c.benchmark_group("mqtt");
    for (name, packet) in packets() {
        let mut bytes = Vec::new();
        encode(&packet, V311, &mut bytes);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        // CONNECT is what a connection decodes before it has a version.
        let version = (name != "connect").then_some(V311);
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| {
                let decoded = decode(std::hint::black_box(&bytes), version, &limits);
                assert!(matches!(decoded, Ok(Some(_))));
                decoded.map(|found| found.map(|(_, used)| used))
            })
        });
        let mut out = Vec::with_capacity(bytes.len());
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| {
                out.clear();
                encode(std::hint::black_box(&packet), V311, &mut out);
                out.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);

//! In-process fan-out 1 → N: one publish matched, encoded once per wire variant, queued on N
//! connections and taken by one send each (completed at once; no sockets). Half the
//! subscribers are WebSocket, half TCP; all at QoS 0, 64-byte payload.
//!
//! `v5_alias_on` / `v5_alias_off`: MQTT 5 subscribers of a long score topic, asking for outbound
//! Topic Aliases or not; once warm, every delivery of `v5_alias_on` is "alias only". Each prints the bytes one
//! delivery puts on the wire.

#[path = "../tests/rig/mod.rs"]
mod rig;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fanfare::protocol::mqtt::{Delivery, ProtocolVersion};

const LONG_TOPIC: &str = "sport/tennis/wimbledon/2026/final/court-1/score";

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    for n in [1_000usize, 10_000] {
        let mut rig = rig::Rig::new(n, "scores/court-1", 0);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("qos0_64B", n), |b| {
            b.iter(|| rig.publish("scores/court-1", &[0x55; 64], Delivery::AtMostOnce))
        });
    }
    for (name, topic_alias_max) in [("v5_alias_off_16B", 0), ("v5_alias_on_16B", 64)] {
        let n = 10_000usize;
        let mut rig =
            rig::Rig::with_clients(n, LONG_TOPIC, 0, ProtocolVersion::V5, topic_alias_max);
        // The first publish names the topic on every connection; the bytes of the next are
        // what each later delivery costs on the wire.
        rig.publish(LONG_TOPIC, &[0x55; 16], Delivery::AtMostOnce);
        let before = rig.delivered_bytes;
        rig.publish(LONG_TOPIC, &[0x55; 16], Delivery::AtMostOnce);
        let per_delivery = (rig.delivered_bytes - before) as f64 / n as f64;
        eprintln!("fanout/{name}/{n}: {per_delivery} bytes per delivery on the wire");
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new(name, n), |b| {
            b.iter(|| rig.publish(LONG_TOPIC, &[0x55; 16], Delivery::AtMostOnce))
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);

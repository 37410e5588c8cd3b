//! In-process fan-out 1 → N: one publish matched, encoded once per wire variant, queued on N
//! connections and taken by one send each (completed at once; no sockets). Half the
//! subscribers are WebSocket, half TCP; all at QoS 0, 64-byte payload.

#[path = "../tests/rig/mod.rs"]
mod rig;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fanfare::protocol::mqtt::Delivery;

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    for n in [1_000usize, 10_000] {
        let mut rig = rig::Rig::new(n, "scores/court-1", 0);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("qos0_64B", n), |b| {
            b.iter(|| rig.publish("scores/court-1", &[0x55; 64], Delivery::AtMostOnce))
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);

//! WebSocket: unmasking client frame payloads (RFC 6455 §5.3), the fast path against the
//! bytewise reference.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fanfare::protocol::ws::mask::{apply_mask, apply_mask_bytewise};

fn unmask(c: &mut Criterion) {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    for size in [64usize, 1024, 16 * 1024] {
        let mut buf = vec![0x5a; size];
        let mut group = c.benchmark_group("ws");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("unmask", size), |b| {
            b.iter(|| apply_mask(std::hint::black_box(&mut buf), mask, 1))
        });
        group.bench_function(BenchmarkId::new("unmask_bytewise", size), |b| {
            b.iter(|| apply_mask_bytewise(std::hint::black_box(&mut buf), mask, 1))
        });
        group.finish();
    }
}

criterion_group!(benches, unmask);
criterion_main!(benches);

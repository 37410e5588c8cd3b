//! The store's write pattern (`docs/persistence.md`): batches of conflated retained updates
//! of 10 000 topics, one in ten a delete, handed to the writer thread, appended, synced per
//! group of batches (`batch`) or not (`none`), with the compactions they cause; timed from
//! the first batch to the writer having written the last.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fanfare::broker::{RetainedWrite, RoutedMessage};
use fanfare::config::{Durability, StoreLimits};
use fanfare::protocol::mqtt::QoS;
use fanfare::store::{Flush, Store};

const TOPICS: usize = 10_000;
const BATCHES: usize = 100;
const WRITES_PER_BATCH: usize = 1_000;

fn batches() -> Vec<Vec<RetainedWrite>> {
    (0..BATCHES)
        .map(|b| {
            (0..WRITES_PER_BATCH)
                .map(|w| {
                    let n = (b * WRITES_PER_BATCH + w * 7) % TOPICS;
                    let topic: Box<str> = format!("sport/1/match/{n}/score").into();
                    let message = (w % 10 != 0).then(|| {
                        let payload = format!("{{\"home\":{b},\"away\":{w}}}");
                        Arc::new(RoutedMessage::new(
                            &topic,
                            payload.as_bytes(),
                            QoS::AtLeastOnce,
                            true,
                        ))
                    });
                    RetainedWrite { topic, message }
                })
                .collect()
        })
        .collect()
}

fn writes(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    group.sample_size(10);
    group.throughput(Throughput::Elements((BATCHES * WRITES_PER_BATCH) as u64));
    let base = std::env::temp_dir().join(format!("fanfare-bench-store-{}", std::process::id()));
    for durability in [Durability::None, Durability::Batch] {
        group.bench_function(BenchmarkId::new("write", durability.name()), |b| {
            b.iter_batched(
                || {
                    let _ = std::fs::remove_dir_all(&base);
                    batches()
                },
                |batches| {
                    let mut store = Store::open(
                        &base,
                        durability,
                        StoreLimits::default(),
                        1,
                        false,
                        Box::new(|_| {}),
                    )
                    .expect("opens");
                    let handles = store.take_handles();
                    for batch in batches {
                        handles[0].send(Flush {
                            retained: batch,
                            ..Flush::default()
                        });
                    }
                    drop(handles);
                    store.finish();
                },
                criterion::BatchSize::PerIteration,
            )
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&base);
}

criterion_group!(benches, writes);
criterion_main!(benches);

//! The store's write pattern (`docs/persistence.md`): batches of conflated retained updates
//! of 10 000 topics, one in ten a delete, handed to the writer thread, appended, synced per
//! group of batches (`batch`) or not (`none`), with the compactions they cause; timed from
//! the first batch to the writer having written the last.
//!
//! `store/redb/*` writes the same batches to redb (a copy-on-write B-tree), the candidate the
//! log was chosen over: one transaction per batch, as one flush would be, committed with
//! `Durability::Immediate` (an fsync per commit, as `batch` syncs each flush) or
//! `Durability::None`. Each sample creates its database, as the log's opens its store.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fanfare::broker::{RetainedWrite, RoutedMessage};
use fanfare::config::{Durability, StoreLimits};
use fanfare::protocol::mqtt::QoS;
use fanfare::store::{Flush, Store};
use redb::{Database, TableDefinition};

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
                    store.serving();
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
    let table: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
    let file = base.with_extension("redb");
    for (name, durability) in [
        ("none", redb::Durability::None),
        ("immediate", redb::Durability::Immediate),
    ] {
        group.bench_function(BenchmarkId::new("redb", name), |b| {
            b.iter_batched(
                || {
                    let _ = std::fs::remove_file(&file);
                    batches()
                },
                |batches| {
                    let db = Database::create(&file).expect("creates");
                    for batch in batches {
                        let mut tx = db.begin_write().expect("begins");
                        tx.set_durability(durability).expect("no savepoint is held");
                        {
                            let mut retained = tx.open_table(table).expect("opens");
                            let mut value = Vec::new();
                            for write in &batch {
                                match &write.message {
                                    Some(message) => {
                                        // The fields of a SET record but the topic, its key.
                                        value.clear();
                                        value.push(message.qos as u8);
                                        value.extend_from_slice(&0u64.to_le_bytes());
                                        value.extend_from_slice(&message.properties);
                                        value.extend_from_slice(&message.payload);
                                        retained.insert(&*write.topic, &*value).expect("inserts");
                                    }
                                    None => {
                                        retained.remove(&*write.topic).expect("removes");
                                    }
                                }
                            }
                        }
                        tx.commit().expect("commits");
                    }
                    // Closing is in the sample, as the log's `finish` is.
                    drop(db);
                },
                criterion::BatchSize::PerIteration,
            )
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&base);
    let _ = std::fs::remove_file(&file);
}

criterion_group!(benches, writes);
criterion_main!(benches);

//! Topic matching: one publish against a trie of 10 k and 1 M filters, as a live-score
//! service holds them (per match and per court, with a few wildcards per sport).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fanfare::broker::bench_support::TrieBench;

/// `n` filters: mostly exact (`sport/S/match/M/score`), one in ten with `+`, one in a hundred
/// with `#`.
fn trie(n: usize) -> TrieBench {
    let mut trie = TrieBench::default();
    for i in 0..n {
        let sport = i % 16;
        let filter = match i % 100 {
            0 => format!("sport/{sport}/#"),
            1..=10 => format!("sport/{sport}/match/+/score{}", i % 7),
            _ => format!("sport/{sport}/match/{i}/score"),
        };
        trie.subscribe(&filter);
    }
    trie
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("trie");
    group.throughput(Throughput::Elements(1));
    for (label, n) in [("10k", 10_000usize), ("1m", 1_000_000)] {
        let mut trie = trie(n);
        let topic = format!("sport/3/match/{}/score", n / 2 + 3);
        assert!(trie.count_matches(&topic) > 0);
        group.bench_function(BenchmarkId::new("match", label), |b| {
            b.iter(|| trie.count_matches(std::hint::black_box(&topic)))
        });
    }
    group.finish();
}

criterion_group!(benches, matching);
criterion_main!(benches);

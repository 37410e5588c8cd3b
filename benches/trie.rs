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
            0 => format!("sport/{}/#", (i / 100) % 16),
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
        // An exact subscription of the middle (i % 100 = 11), plus the `#` of its sport.
        let i = n / 2 + 11;
        let topic = format!("sport/{}/match/{i}/score", i % 16);
        assert!(trie.count_matches(&topic) >= 2);
        group.bench_function(BenchmarkId::new("match", label), |b| {
            b.iter(|| trie.count_matches(std::hint::black_box(&topic)))
        });
    }
    group.finish();
}

criterion_group!(benches, matching);
criterion_main!(benches);

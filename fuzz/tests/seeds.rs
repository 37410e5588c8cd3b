//! The seeds pass every target's checks, on stable, without libFuzzer: `cargo test` in `fuzz/`.

use std::fs;
use std::path::Path;

use arbitrary::Unstructured;
use fanfare_fuzz::session::Step;
use fanfare_fuzz::{http, mqtt, proxy, seeds, session, ws};

fn target(name: &str) -> fn(&[u8]) {
    match name {
        "mqtt_v311" => mqtt::v311,
        "mqtt_v5" => mqtt::v5,
        "ws_frame" => ws::frames,
        "http_request" => http::request,
        "proxy_header" => proxy::header,
        "broker_session" => session::run,
        other => panic!("no target {other}"),
    }
}

/// Every file under `seeds/`, written or added by hand (crash regressions), goes through its
/// target.
#[test]
fn seed_files_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let mut count = 0;
    for dir in fs::read_dir(&root).expect("seeds/") {
        let dir = dir.expect("an entry").path();
        let run = target(dir.file_name().and_then(|n| n.to_str()).expect("a name"));
        for file in fs::read_dir(&dir).expect("a target's seeds") {
            let file = file.expect("an entry").path();
            run(&fs::read(&file).expect("a seed"));
            count += 1;
        }
    }
    assert!(count > 0, "seeds/ holds seeds");
}

/// The written seeds are what `seeds.rs` makes (run `cargo run --example write_seeds` after
/// changing it).
#[test]
fn seed_files_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (target, seeds) in seeds::all() {
        for (name, bytes) in seeds {
            let path = root.join(target).join(name);
            let written = fs::read(&path).unwrap_or_default();
            assert!(written == bytes, "{} is stale", path.display());
        }
    }
}

/// `Step::write` is what `Step::read` reads back, so session seeds say what they mean.
#[test]
fn session_steps_read_back() {
    for (name, bytes) in seeds::all()
        .into_iter()
        .filter(|(target, _)| *target == "broker_session")
        .flat_map(|(_, seeds)| seeds)
    {
        let mut u = Unstructured::new(&bytes[1..]);
        let mut again = vec![bytes[0]];
        while !u.is_empty() {
            Step::read(&mut u).expect("a step").write(&mut again);
        }
        assert_eq!(again, bytes, "{name}");
    }
}

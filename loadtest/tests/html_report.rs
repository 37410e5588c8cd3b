//! `--report FILE.html`: one self-contained page of charts. Where Chromium, Node and the web
//! tests' playwright-core are installed (`tests/web`, `npm ci`), the page is also opened
//! headless: no console errors, no requests, and a screenshot kept in `test-artifacts/`.
//! `compare` then puts the run's JSON summary beside itself.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Misbehave, start_broker};

fn run_with_report(report: &Path) -> std::process::Output {
    let port = start_broker(Misbehave::None);
    Command::new(env!("CARGO_BIN_EXE_fanfare-loadtest"))
        .args(
            format!(
                "fanout --url tcp://127.0.0.1:{port} --subscribers 4 --publishers 1 --rate 500 \
                 --workers 1 --no-pin --warmup 0.5 --duration 2 --drain 2 --broker-pid {}",
                std::process::id()
            )
            .split_whitespace(),
        )
        .arg("--report")
        .arg(report)
        .output()
        .expect("running fanfare-loadtest")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is in the repository")
        .to_path_buf()
}

#[test]
fn report_is_one_self_contained_page() {
    let dir = std::env::temp_dir().join(format!("lt-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let report = dir.join("run.html");
    let out = run_with_report(&report);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let page = std::fs::read_to_string(&report).expect("the report was written");
    assert!(page.starts_with("<!DOCTYPE html>"));
    // Percentiles, deliveries, latency per second, set-up, broker CPU and memory.
    assert_eq!(page.matches("<svg").count(), 6, "{page}");
    assert!(page.matches("<polyline").count() >= 6, "{page}");
    for expected in [
        "latency by percentile",
        "99.9%",
        "broker CPU",
        "Machine",
        "subscribers",
    ] {
        assert!(page.contains(expected), "{expected} missing");
    }
    // Nothing is loaded from anywhere: no scripts, no links, no remote references.
    for absent in ["http://", "https://", "<script", "<link", "<img", "url("] {
        assert!(!page.contains(absent), "{absent} in the page");
    }
    open_in_chromium(&report);

    // `compare` puts runs side by side: here the same run twice, from its JSON summary.
    let summary = dir.join("run.json");
    std::fs::write(&summary, &out.stdout).expect("summary written");
    let compared = dir.join("compare.html");
    let picture = dir.join("compare.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_fanfare-loadtest"))
        .arg("compare")
        .args([&summary, &summary])
        .arg("--out")
        .arg(&compared)
        .arg("--svg")
        .arg(&picture)
        .output()
        .expect("running compare");
    let table = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{table}");
    assert!(table.contains("deliveries/s"), "{table}");
    let page = std::fs::read_to_string(&compared).expect("the comparison was written");
    // One chart, its two curves drawn among the axes' lines.
    assert_eq!(page.matches("<svg").count(), 1, "{page}");
    assert!(page.matches("<polyline").count() >= 2, "{page}");
    assert!(!page.contains("http://") && !page.contains("https://"));
    // `--svg`: the same plot as a file an image tag or a Markdown page can show.
    let svg = std::fs::read_to_string(&picture).expect("the picture was written");
    assert!(svg.starts_with("<svg") && svg.contains(r#"xmlns="http://www.w3.org/2000/svg""#));
    assert!(svg.contains("latency by percentile"), "{svg}");
}

/// Opens the page headless where the browser tests' tools are installed; otherwise says so.
fn open_in_chromium(report: &Path) {
    let root = repo_root();
    let playwright = root.join("tests/web/node_modules/playwright-core");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !playwright.exists() || !Path::new(&chromium).exists() {
        // scripts/test.sh installs both and sets this: there, skipping would hide a failure.
        assert!(
            std::env::var_os("FANFARE_REQUIRE_BROWSER").is_none(),
            "FANFARE_REQUIRE_BROWSER is set but {} or {chromium} is missing",
            playwright.display()
        );
        eprintln!(
            "skipped opening the report: no {} or {chromium}",
            playwright.display()
        );
        return;
    }
    let artifacts = root.join("test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("test-artifacts");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/html/open.mjs");
    let out = Command::new("node")
        .arg(script)
        .arg(report)
        .arg(artifacts.join("loadtest-report.png"))
        .env("PLAYWRIGHT", &playwright)
        .env("CHROMIUM", &chromium)
        .output();
    let Ok(out) = out else {
        eprintln!("skipped opening the report: node did not start");
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("opened: 6 charts"), "{stdout}\n{stderr}");
}

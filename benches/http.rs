//! The HTTP request head on the WebSocket listener: what the listener does with one browser
//! request, from the bytes received to the decision (upgrade, or a static file to serve).
//!
//! `http/parse/upgrade`: a browser's WebSocket upgrade, accept key included.
//! `http/parse/get`: a browser's GET for a static file, which the upgrade refuses first.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fanfare::http::parse_request;
use fanfare::protocol::ws::handshake::{HandshakeConfig, HandshakeError, parse_upgrade};

/// What a desktop browser sends to open `ws://host:8080/mqtt` with subprotocol "mqtt".
const UPGRADE: &[u8] = b"GET /mqtt HTTP/1.1\r\n\
Host: broker.example.com:8080\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: http://broker.example.com:8080\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-GB,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
Sec-WebSocket-Protocol: mqtt\r\n\
\r\n";

/// What the same browser sends for the client library, revalidating its cached copy.
const GET: &[u8] = b"GET /fanfare.js HTTP/1.1\r\n\
Host: broker.example.com:8080\r\n\
Connection: keep-alive\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n\
Accept: */*\r\n\
Referer: http://broker.example.com:8080/\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-GB,en;q=0.9\r\n\
If-None-Match: \"9f86d081884c7d65-gz\"\r\n\
\r\n";

const CFG: HandshakeConfig<'static> = HandshakeConfig {
    path: "/mqtt",
    allow_no_subprotocol: true,
    request_bytes_max: 8192,
};

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("http/parse");
    group.throughput(Throughput::Bytes(UPGRADE.len() as u64));
    group.bench_function("upgrade", |b| {
        b.iter(|| {
            let (upgrade, consumed) = parse_upgrade(std::hint::black_box(UPGRADE), &CFG)
                .expect("valid")
                .expect("complete");
            assert_eq!(consumed, UPGRADE.len());
            upgrade
        })
    });
    group.throughput(Throughput::Bytes(GET.len() as u64));
    group.bench_function("get", |b| {
        b.iter(|| {
            let request = std::hint::black_box(GET);
            // As the listener does it: the upgrade refuses, then the file parser reads it again.
            assert_eq!(parse_upgrade(request, &CFG), Err(HandshakeError::NotFound));
            let (request, consumed) = parse_request(request, CFG.request_bytes_max)
                .expect("valid")
                .expect("complete");
            assert_eq!(consumed, GET.len());
            assert!(request.accepts_gzip);
            request.target.len()
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);

//! The HTTP request head on the WebSocket listener: what the listener does with one browser
//! request, from the bytes received to the decision (upgrade, or a static file to serve).
//!
//! `http/parse/upgrade`: a browser's WebSocket upgrade, accept key included.
//! `http/parse/get`: a browser's GET for a static file: the upgrade refuses it, and the file's
//! answer reads what it depends on (gzip, the validator) from the same parsed head.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fanfare::protocol::http::{Fields, parse_head};
use fanfare::protocol::ws::handshake::{HandshakeConfig, HandshakeError, accept_upgrade};

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
    allowed_origins: &[],
};

/// The default `ws_handshake_bytes_max`.
const BYTES_MAX: usize = 8192;

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("http/parse");
    group.throughput(Throughput::Bytes(UPGRADE.len() as u64));
    group.bench_function("upgrade", |b| {
        b.iter(|| {
            let mut fields = Fields::new();
            let (head, consumed) =
                parse_head(std::hint::black_box(UPGRADE), BYTES_MAX, &mut fields)
                    .expect("valid")
                    .expect("complete");
            assert_eq!(consumed, UPGRADE.len());
            accept_upgrade(&head, &CFG).expect("upgrade")
        })
    });
    group.throughput(Throughput::Bytes(GET.len() as u64));
    group.bench_function("get", |b| {
        b.iter(|| {
            let mut fields = Fields::new();
            let (head, consumed) = parse_head(std::hint::black_box(GET), BYTES_MAX, &mut fields)
                .expect("valid")
                .expect("complete");
            assert_eq!(consumed, GET.len());
            assert_eq!(accept_upgrade(&head, &CFG), Err(HandshakeError::NotFound));
            assert!(head.accepts_gzip());
            head.last("if-none-match").map(<[u8]>::len)
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);

//! End to end over TLS: the load generator's binary runs scenarios against a small broker in
//! this process that terminates TLS with rustls, using certificates made at test time.
//!
//! The broker knows just enough MQTT 3.1.1 for QoS 0 fan-out: CONNACK, SUBACK, PINGRESP, and
//! every PUBLISH forwarded to the connections subscribed to exactly its topic. With `ws` it
//! first answers the WebSocket upgrade and then speaks frames.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};
use serde_json::Value;
use sha1::Digest as _;

struct Pki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// A CA and a server certificate it signed, for `localhost` and 127.0.0.1.
fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).expect("CA params");
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "loadtest e2e CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("server key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("server params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    Pki {
        ca_pem: ca.pem(),
        chain: vec![cert.der().clone(), ca.der().clone()],
        key: PrivateKeyDer::try_from(key.serialize_der()).expect("key DER"),
    }
}

fn write_ca(pki: &Pki, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lt-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, &pki.ca_pem).expect("CA file");
    path
}

/// What the broker saw of each TLS session: the SNI name and the ALPN protocol it selected.
#[derive(Default)]
struct Seen {
    sessions: Vec<(Option<String>, Option<String>)>,
}

type Subscriptions = Arc<Mutex<HashMap<String, Vec<Sender<Vec<u8>>>>>>;

/// Starts the broker on a loopback port; it runs until the test process ends.
fn start_broker(pki: &Pki, ws: bool) -> (u16, Arc<Mutex<Seen>>) {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(pki.chain.clone(), pki.key.clone_key())
            .expect("server config");
    config.alpn_protocols = vec![b"mqtt".to_vec(), b"http/1.1".to_vec()];
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("bound").port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let subs: Subscriptions = Arc::default();
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (config, seen, subs) = (config.clone(), seen2.clone(), subs.clone());
            std::thread::spawn(move || {
                let _ = serve(stream, config, ws, &seen, &subs);
            });
        }
    });
    (port, seen)
}

/// One client: a poll loop over its socket (1 ms read timeout) and its forwarding queue.
fn serve(
    mut stream: TcpStream,
    config: Arc<ServerConfig>,
    ws: bool,
    seen: &Mutex<Seen>,
    subs: &Subscriptions,
) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_millis(1)))?;
    stream.set_nodelay(true)?;
    let mut tls = ServerConnection::new(config).map_err(io::Error::other)?;
    tls.set_buffer_limit(None);
    let (tx, rx): (Sender<Vec<u8>>, Receiver<Vec<u8>>) = channel();
    let mut recorded = false;
    let mut upgraded = !ws;
    let mut input = Vec::new(); // plaintext: HTTP, then frames or MQTT
    let mut mqtt = Vec::new(); // MQTT bytes unwrapped from frames
    let mut out = Vec::new(); // plaintext to send
    let mut closing = false;
    loop {
        while let Ok(publish) = rx.try_recv() {
            frame_out(ws, &publish, &mut out);
        }
        if !out.is_empty() {
            tls.writer().write_all(&out)?;
            out.clear();
        }
        while tls.wants_write() {
            tls.write_tls(&mut stream)?;
        }
        if closing {
            return Ok(());
        }
        match tls.read_tls(&mut stream) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        }
        if let Err(e) = tls.process_new_packets() {
            let _ = tls.write_tls(&mut stream);
            return Err(io::Error::other(e));
        }
        if !recorded && !tls.is_handshaking() {
            recorded = true;
            let alpn = tls
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned());
            let sni = tls.server_name().map(str::to_string);
            seen.lock().unwrap().sessions.push((sni, alpn));
        }
        let mut buf = [0u8; 16384];
        loop {
            match tls.reader().read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => input.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        if !upgraded {
            let Some(end) = input.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&input[..end]).into_owned();
            input.drain(..end + 4);
            let key = head
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .expect("a WebSocket key");
            assert!(head.contains("Sec-WebSocket-Protocol: mqtt"), "{head}");
            let mut sha = sha1::Sha1::new();
            sha.update(key.as_bytes());
            sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
            let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\
                     Sec-WebSocket-Protocol: mqtt\r\n\r\n"
                )
                .as_bytes(),
            );
            upgraded = true;
        }
        if ws {
            closing |= unwrap_client_frames(&mut input, &mut mqtt);
        } else {
            mqtt.append(&mut input);
        }
        while let Some((header, body, len)) = next_packet(&mqtt) {
            let packet = mqtt[..len].to_vec();
            mqtt.drain(..len);
            match header >> 4 {
                1 => frame_out(ws, &[0x20, 2, 0, 0], &mut out),
                8 => {
                    let (id, filter) = (&packet[body..body + 2], string_at(&packet, body + 2));
                    subs.lock()
                        .unwrap()
                        .entry(filter)
                        .or_default()
                        .push(tx.clone());
                    frame_out(ws, &[0x90, 3, id[0], id[1], 0], &mut out);
                }
                3 => {
                    let topic = string_at(&packet, body);
                    if let Some(targets) = subs.lock().unwrap().get(&topic) {
                        for t in targets {
                            let _ = t.send(packet.clone());
                        }
                    }
                }
                12 => frame_out(ws, &[0xd0, 0], &mut out),
                14 => {
                    tls.send_close_notify();
                    closing = true;
                }
                _ => {}
            }
        }
    }
}

/// The next whole MQTT packet: (first byte, offset of the variable header, total length).
fn next_packet(b: &[u8]) -> Option<(u8, usize, usize)> {
    let mut len = 0usize;
    for i in 0..4 {
        let byte = *b.get(1 + i)?;
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let body = 2 + i;
            return (b.len() >= body + len).then_some((b[0], body, body + len));
        }
    }
    None
}

fn string_at(b: &[u8], at: usize) -> String {
    let len = usize::from(u16::from_be_bytes([b[at], b[at + 1]]));
    String::from_utf8_lossy(&b[at + 2..at + 2 + len]).into_owned()
}

fn frame_out(ws: bool, mqtt: &[u8], out: &mut Vec<u8>) {
    if ws {
        out.push(0x82);
        if mqtt.len() < 126 {
            out.push(mqtt.len() as u8);
        } else {
            out.push(126);
            out.extend_from_slice(&(mqtt.len() as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(mqtt);
}

/// Unmasks whole client frames from the front of `input` into `mqtt`; true on a close frame.
fn unwrap_client_frames(input: &mut Vec<u8>, mqtt: &mut Vec<u8>) -> bool {
    loop {
        if input.len() < 2 {
            return false;
        }
        let (len, at) = match input[1] & 0x7f {
            126 if input.len() >= 4 => (usize::from(u16::from_be_bytes([input[2], input[3]])), 4),
            127 if input.len() >= 10 => {
                let len = u64::from_be_bytes(input[2..10].try_into().unwrap());
                (len as usize, 10)
            }
            126 | 127 => return false,
            len => (usize::from(len), 2),
        };
        assert!(input[1] & 0x80 != 0, "client frames are masked");
        if input.len() < at + 4 + len {
            return false;
        }
        let mask = [input[at], input[at + 1], input[at + 2], input[at + 3]];
        let opcode = input[0] & 0x0f;
        let payload: Vec<u8> = input[at + 4..at + 4 + len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        input.drain(..at + 4 + len);
        match opcode {
            0 | 2 => mqtt.extend_from_slice(&payload),
            8 => return true,
            _ => {}
        }
    }
}

/// Runs the generator and returns its JSON summary; the run must pass.
fn loadtest(args: &str) -> Value {
    loadtest_exiting(args, 0)
}

/// Runs the generator, which must exit with `status`, and returns its JSON summary.
fn loadtest_exiting(args: &str, status: i32) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_fanfare-loadtest"))
        .args(args.split_whitespace())
        .output()
        .expect("running fanfare-loadtest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(status), "{args}: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args}: summary is not JSON ({e}); stderr: {stderr}"))
}

const FANOUT: &str = "fanout --subscribers 3 --rate 300 --warmup 0.3 --duration 1 --drain 3 \
                      --workers 1 --no-pin --timeout 5";

fn assert_all_delivered(summary: &Value) {
    let expected = summary["expected"].as_u64().unwrap();
    assert!(expected > 0, "{summary:#}");
    assert_eq!(summary["delivered"].as_u64(), Some(expected), "{summary:#}");
    assert_eq!(summary["lost"].as_u64(), Some(0), "{summary:#}");
    assert_eq!(summary["gaps"].as_u64(), Some(0), "{summary:#}");
    assert_eq!(
        summary["connections"]["ok"].as_u64(),
        Some(4),
        "{summary:#}"
    );
    let tls = &summary["connections"]["tls"];
    assert_eq!(tls["protocol"], "TLSv1_3", "{summary:#}");
    assert_eq!(
        tls["handshake_us"]["samples"].as_u64(),
        Some(4),
        "{summary:#}"
    );
}

#[test]
fn mqtts_fanout_with_a_ca_file() {
    let pki = pki();
    let ca = write_ca(&pki, "mqtts-ca.pem");
    let (port, seen) = start_broker(&pki, false);
    let summary = loadtest(&format!(
        "{FANOUT} --url mqtts://localhost:{port} --ca {}",
        ca.display()
    ));
    assert_all_delivered(&summary);
    assert_eq!(summary["params"]["transport"], "mqtts");
    assert_eq!(summary["params"]["tls"]["server_name"], "localhost");
    assert!(
        summary["params"]["tls"]["verify"]
            .as_str()
            .unwrap()
            .starts_with("ca ")
    );
    assert_eq!(summary["connections"]["tls"]["alpn"], "mqtt");
    // Kernel receive stamps work over TLS too: they stamp the ciphertext's arrival.
    assert!(summary["socket_latency_us"]["samples"].as_u64().unwrap() > 0);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.sessions.len(), 4);
    for session in &seen.sessions {
        assert_eq!(
            session,
            &(Some("localhost".to_string()), Some("mqtt".to_string()))
        );
    }
}

#[test]
fn wss_fanout_insecure_without_stamps() {
    let pki = pki();
    let (port, seen) = start_broker(&pki, true);
    let summary = loadtest(&format!(
        "{FANOUT} --url wss://127.0.0.1:{port}/mqtt --insecure --no-socket-stamps"
    ));
    assert_all_delivered(&summary);
    assert_eq!(summary["params"]["transport"], "wss");
    assert_eq!(summary["params"]["tls"]["verify"], "insecure");
    assert_eq!(summary["connections"]["tls"]["alpn"], "http/1.1");
    assert!(summary.get("socket_latency_us").is_none());
    // An IP address host sends no SNI.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.sessions.len(), 4);
    for session in &seen.sessions {
        assert_eq!(session, &(None, Some("http/1.1".to_string())));
    }
}

#[test]
fn a_certificate_from_another_ca_fails_every_connection_as_tls() {
    let pki = pki();
    let other = write_ca(&self::pki(), "other-ca.pem");
    let (port, _) = start_broker(&pki, false);
    // The run ends normally, its connections failed: exit status 1.
    let summary = loadtest_exiting(
        &format!(
            "conn --url mqtts://127.0.0.1:{port} --ca {} --subscribers 2 --duration 0.2 \
             --workers 1 --no-pin",
            other.display()
        ),
        1,
    );
    assert_eq!(
        summary["connections"]["ok"].as_u64(),
        Some(0),
        "{summary:#}"
    );
    assert_eq!(
        summary["connections"]["failed"]["tls"].as_u64(),
        Some(2),
        "{summary:#}"
    );
    let errors = summary["errors"].to_string();
    assert!(errors.contains("certificate"), "{errors}");
}

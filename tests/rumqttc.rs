//! End-to-end tests with `rumqttc`, an independent MQTT client, against the real binary.
//!
//! Each test starts `fanfare` on loopback with port 0, reads the ports it prints
//! (`listening tcp ADDR`, `listening ws ADDR/PATH`, `listening mqtts ADDR`,
//! `listening wss ADDR/PATH`, `ready`), and kills it on drop. Every await is bounded by a
//! timeout, so a broken broker fails a test instead of hanging the suite.
//!
//! The TLS tests (mqtts, wss) make a test CA and the broker's certificate for `localhost` and
//! `127.0.0.1` with rcgen when they start, and connect with rustls (ring) trusting that CA.
//!
//! To check the tests themselves against another broker, point them at it:
//! `FANFARE_TEST_TCP_ADDR=127.0.0.1:1883 FANFARE_TEST_WS_URL=ws://127.0.0.1:8080/mqtt`
//! (loopback only). Then no process is started, and the TLS tests, which need the broker to
//! serve their certificate, are skipped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rumqttc::{
    AsyncClient, ConnAck, Event, EventLoop, MqttOptions, Packet, Publish, QoS, TlsConfiguration,
    Transport,
};
use rustls_pki_types::CertificateDer;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(5);
const START: Duration = Duration::from_secs(10);

/// Whether the tests target a broker someone else started (see the top of this file).
fn external_broker() -> bool {
    std::env::var_os("FANFARE_TEST_TCP_ADDR").is_some()
        && std::env::var_os("FANFARE_TEST_WS_URL").is_some()
}

/// A CA and a certificate it signed for the broker, made at test time (ECDSA P-256), the
/// broker's PEM files in a temporary directory removed on drop.
struct TestPki {
    dir: PathBuf,
    ca: CertificateDer<'static>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl TestPki {
    fn new() -> TestPki {
        let (ca, ca_issuer) = certificate_authority("fanfare test CA");
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("server key");
        let mut params = CertificateParams::new(["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server names");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &ca_issuer)
            .expect("sign the server certificate");

        let dir = std::env::temp_dir().join(unique("fanfare-pki"));
        std::fs::create_dir(&dir).expect("create the certificate directory");
        let cert_file = dir.join("server.pem");
        let key_file = dir.join("server.key");
        std::fs::write(&cert_file, cert.pem()).expect("write the certificate");
        std::fs::write(&key_file, key.serialize_pem()).expect("write the key");
        TestPki {
            dir,
            ca,
            cert_file,
            key_file,
        }
    }

    /// A rustls client configuration (ring) that trusts `ca` alone and offers `alpn`.
    fn client_config(ca: &CertificateDer<'static>, alpn: &[u8]) -> TlsConfiguration {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.clone())
            .expect("the CA is a usable trust anchor");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        TlsConfiguration::Rustls(Arc::new(config))
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A self-signed CA certificate and the issuer that signs with its key.
fn certificate_authority(name: &str) -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("self-sign the CA");
    (cert.der().clone(), Issuer::new(params, key))
}

/// A running broker: its TCP address and WebSocket URL, and with TLS its mqtts address, wss
/// URL and the certificates it serves.
struct Broker {
    child: Option<Child>,
    tcp: SocketAddr,
    ws_url: String,
    mqtts: Option<SocketAddr>,
    wss_url: Option<String>,
    pki: Option<TestPki>,
}

impl Broker {
    fn start() -> Broker {
        if let (Ok(tcp), Ok(ws_url)) = (
            std::env::var("FANFARE_TEST_TCP_ADDR"),
            std::env::var("FANFARE_TEST_WS_URL"),
        ) {
            let tcp: SocketAddr = tcp.parse().expect("FANFARE_TEST_TCP_ADDR is host:port");
            assert!(tcp.ip().is_loopback(), "tests only target loopback");
            assert!(
                ws_url.starts_with("ws://127."),
                "tests only target loopback"
            );
            return Broker {
                child: None,
                tcp,
                ws_url,
                mqtts: None,
                wss_url: None,
                pki: None,
            };
        }
        Broker::spawn(None)
    }

    /// A broker of ours with mqtts and wss listeners too, serving a fresh test certificate;
    /// `None` when the tests target an external broker.
    fn start_tls() -> Option<Broker> {
        if external_broker() {
            eprintln!(
                "external broker: TLS tests skipped (it does not serve the test certificate)"
            );
            return None;
        }
        let broker = Broker::spawn(Some(TestPki::new()));
        assert!(broker.mqtts.is_some(), "mqtts listener reported");
        assert!(broker.wss_url.is_some(), "wss listener reported");
        Some(broker)
    }

    fn spawn(pki: Option<TestPki>) -> Broker {
        let mut args: Vec<std::ffi::OsString> = [
            "--tcp",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--ws-path",
            "/mqtt",
            "--admin",
            "off",
        ]
        .map(Into::into)
        .to_vec();
        if let Some(pki) = &pki {
            args.extend(["--mqtts", "127.0.0.1:0", "--wss", "127.0.0.1:0"].map(Into::into));
            args.extend(["--tls-cert".into(), pki.cert_file.clone().into()]);
            args.extend(["--tls-key".into(), pki.key_file.clone().into()]);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_fanfare"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn fanfare");
        let stdout = child.stdout.take().expect("stdout was piped");
        // Read on a thread so the wait for `ready` has a deadline.
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    // Nobody listens any more; keep draining so the child never blocks.
                    continue;
                }
            }
        });
        let mut broker = Broker {
            child: Some(child),
            tcp: ([127, 0, 0, 1], 0).into(),
            ws_url: String::new(),
            mqtts: None,
            wss_url: None,
            pki,
        };
        loop {
            let line = lines_rx
                .recv_timeout(START)
                .expect("fanfare printed `ready` in time");
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["ready"] => break,
                ["listening", "tcp", addr] => {
                    broker.tcp = addr.parse().expect("tcp listener address");
                }
                ["listening", "ws", addr_path] => {
                    let (addr, path) = addr_path.split_once('/').unwrap_or((addr_path, ""));
                    let addr: SocketAddr = addr.parse().expect("ws listener address");
                    assert!(addr.ip().is_loopback());
                    broker.ws_url = format!("ws://{addr}/{path}");
                }
                ["listening", "mqtts", addr] => {
                    let addr: SocketAddr = addr.parse().expect("mqtts listener address");
                    assert!(addr.ip().is_loopback());
                    broker.mqtts = Some(addr);
                }
                ["listening", "wss", addr_path] => {
                    let (addr, path) = addr_path.split_once('/').unwrap_or((addr_path, ""));
                    let addr: SocketAddr = addr.parse().expect("wss listener address");
                    assert!(addr.ip().is_loopback());
                    broker.wss_url = Some(format!("wss://{addr}/{path}"));
                }
                _ => {}
            }
        }
        assert!(broker.tcp.ip().is_loopback());
        assert_ne!(broker.tcp.port(), 0, "tcp listener reported");
        assert!(!broker.ws_url.is_empty(), "ws listener reported");
        broker
    }

    /// Options for a client of `transport` ("tcp", "ws", "mqtts" or "wss"); the TLS ones trust
    /// the test CA. mqtts connects to `localhost` (SNI and the certificate's DNS name), wss to
    /// `127.0.0.1` (its IP address).
    fn options(&self, transport: &str, client_id: &str) -> MqttOptions {
        self.options_trusting(transport, client_id, self.pki.as_ref().map(|pki| &pki.ca))
    }

    /// As `options`, the TLS clients trusting `ca` alone.
    fn options_trusting(
        &self,
        transport: &str,
        client_id: &str,
        ca: Option<&CertificateDer<'static>>,
    ) -> MqttOptions {
        let ca = || ca.expect("a broker with TLS");
        let mut options = match transport {
            "ws" => {
                let mut o =
                    MqttOptions::new(client_id, self.ws_url.clone(), url_port(&self.ws_url));
                o.set_transport(Transport::Ws);
                o
            }
            "wss" => {
                let url = self.wss_url.clone().expect("a wss listener");
                let mut o = MqttOptions::new(client_id, url.clone(), url_port(&url));
                o.set_transport(Transport::wss_with_config(TestPki::client_config(
                    ca(),
                    b"http/1.1",
                )));
                o
            }
            "mqtts" => {
                let port = self.mqtts.expect("an mqtts listener").port();
                let mut o = MqttOptions::new(client_id, "localhost", port);
                o.set_transport(Transport::tls_with_config(TestPki::client_config(
                    ca(),
                    b"mqtt",
                )));
                o
            }
            _ => MqttOptions::new(client_id, self.tcp.ip().to_string(), self.tcp.port()),
        };
        options.set_keep_alive(Duration::from_secs(30));
        options
    }
}

/// The port of a `ws://` or `wss://` URL with an explicit one.
fn url_port(url: &str) -> u16 {
    let port = url.rsplit(':').next().and_then(|p| p.split('/').next());
    port.and_then(|p| p.parse().ok()).expect("port in the URL")
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "rs-{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A connected client whose event loop runs on its own task, events forwarded to a channel.
struct Client {
    client: AsyncClient,
    events: UnboundedReceiver<Result<Event, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    async fn connect(options: MqttOptions) -> (Client, ConnAck) {
        let (client, eventloop) = AsyncClient::new(options, 64);
        let (tx, events) = unbounded_channel();
        let task = tokio::spawn(drive(eventloop, tx));
        let mut c = Client {
            client,
            events,
            task,
        };
        let connack = timeout(STEP, async {
            loop {
                if let Event::Incoming(Packet::ConnAck(ack)) = c.next_event().await {
                    return ack;
                }
            }
        })
        .await
        .expect("CONNACK in time");
        (c, connack)
    }

    async fn next_event(&mut self) -> Event {
        match timeout(STEP, self.events.recv()).await {
            Ok(Some(Ok(event))) => event,
            Ok(Some(Err(e))) => panic!("connection failed: {e}"),
            Ok(None) => panic!("event loop ended"),
            Err(_) => panic!("no event within {STEP:?}"),
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        timeout(STEP, self.client.subscribe(filter, qos))
            .await
            .expect("queue subscribe")
            .expect("subscribe");
        loop {
            if let Event::Incoming(Packet::SubAck(ack)) = self.next_event().await {
                assert_eq!(ack.return_codes.len(), 1);
                return;
            }
        }
    }

    /// Publish and wait for the flow to finish (PUBACK / PUBCOMP) when QoS > 0.
    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        timeout(
            STEP,
            self.client.publish(topic, qos, retain, payload.to_vec()),
        )
        .await
        .expect("queue publish")
        .expect("publish");
        loop {
            match (qos, self.next_event().await) {
                (QoS::AtMostOnce, Event::Outgoing(rumqttc::Outgoing::Publish(_))) => return,
                (QoS::AtLeastOnce, Event::Incoming(Packet::PubAck(_))) => return,
                (QoS::ExactlyOnce, Event::Incoming(Packet::PubComp(_))) => return,
                _ => {}
            }
        }
    }

    async fn message(&mut self) -> Publish {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = self.next_event().await {
                return p;
            }
        }
    }

    async fn no_message(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(event) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if let Some(Ok(Event::Incoming(Packet::Publish(p)))) = event {
                panic!("unexpected message on {}: {:?}", p.topic, p.payload);
            }
        }
    }

    async fn disconnect(mut self) {
        timeout(STEP, self.client.disconnect())
            .await
            .expect("queue disconnect")
            .expect("disconnect");
        // The loop ends once DISCONNECT is written and the connection closes.
        let _ = timeout(STEP, async { while self.events.recv().await.is_some() {} }).await;
        self.task.abort();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The error that ends a connection attempt expected to fail before CONNACK.
async fn connect_error(options: MqttOptions) -> String {
    let (_client, mut eventloop) = AsyncClient::new(options, 8);
    let outcome = timeout(STEP, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return None,
                Ok(_) => {}
                Err(e) => return Some(format!("{e} ({e:?})")),
            }
        }
    })
    .await
    .expect("the connection attempt ended in time");
    outcome.expect("no CONNACK for a client that does not trust the certificate")
}

/// Poll until the first error; never reconnect (a test wants to see the failure).
async fn drive(
    mut eventloop: EventLoop,
    tx: tokio::sync::mpsc::UnboundedSender<Result<Event, String>>,
) {
    loop {
        match eventloop.poll().await {
            Ok(event) => {
                if tx.send(Ok(event)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        }
    }
}

const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

async fn pub_sub(sub_transport: &str, pub_transport: &str) {
    pub_sub_on(&Broker::start(), sub_transport, pub_transport).await;
}

async fn pub_sub_on(broker: &Broker, sub_transport: &str, pub_transport: &str) {
    for qos in QOS {
        let topic = unique(&format!("ps/{sub_transport}/{pub_transport}/{}", qos as u8));
        let (mut sub, ack) = Client::connect(broker.options(sub_transport, &unique("sub"))).await;
        assert!(!ack.session_present);
        sub.subscribe(&topic, qos).await;
        let (mut publisher, _) =
            Client::connect(broker.options(pub_transport, &unique("pub"))).await;

        publisher.publish(&topic, qos, false, b"hello").await;

        let msg = sub.message().await;
        assert_eq!(msg.topic, topic);
        assert_eq!(&msg.payload[..], b"hello");
        assert_eq!(msg.qos, qos);
        assert!(!msg.retain);
        sub.no_message(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn tcp_publish_subscribe_all_qos() {
    pub_sub("tcp", "tcp").await;
}

#[tokio::test]
async fn ws_publish_subscribe_all_qos() {
    pub_sub("ws", "ws").await;
}

#[tokio::test]
async fn tcp_to_ws_and_back() {
    pub_sub("ws", "tcp").await;
    pub_sub("tcp", "ws").await;
}

#[tokio::test]
async fn retained_message_delivered_to_late_subscriber() {
    let broker = Broker::start();
    for transport in ["tcp", "ws"] {
        let topic = unique(&format!("retained/{transport}"));
        let (mut publisher, _) = Client::connect(broker.options(transport, &unique("rpub"))).await;
        publisher
            .publish(&topic, QoS::AtLeastOnce, true, b"last value")
            .await;

        let (mut late, _) = Client::connect(broker.options(transport, &unique("rsub"))).await;
        late.subscribe(&topic, QoS::AtLeastOnce).await;
        let msg = late.message().await;
        assert_eq!(&msg.payload[..], b"last value");
        assert!(msg.retain, "retained delivery has the retain flag");

        publisher.publish(&topic, QoS::AtLeastOnce, true, b"").await;
        let (mut later, _) = Client::connect(broker.options(transport, &unique("rsub2"))).await;
        later.subscribe(&topic, QoS::AtLeastOnce).await;
        later.no_message(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn persistent_session_resumes_with_queued_messages() {
    let broker = Broker::start();
    for transport in ["tcp", "ws"] {
        let topic = unique(&format!("session/{transport}"));
        let id = unique("persistent");
        let mut options = broker.options(transport, &id);
        options.set_clean_session(false);

        let (mut sub, ack) = Client::connect(options.clone()).await;
        assert!(!ack.session_present);
        sub.subscribe(&topic, QoS::AtLeastOnce).await;
        sub.disconnect().await;

        let (mut publisher, _) = Client::connect(broker.options(transport, &unique("spub"))).await;
        for i in 0..3u8 {
            publisher
                .publish(&topic, QoS::AtLeastOnce, false, &[b'0' + i])
                .await;
        }

        let (mut back, ack) = Client::connect(options).await;
        assert!(ack.session_present, "session present on resume");
        for i in 0..3u8 {
            let msg = back.message().await;
            assert_eq!(&msg.payload[..], &[b'0' + i]);
            assert_eq!(msg.qos, QoS::AtLeastOnce);
        }
    }
}

#[tokio::test]
async fn mqtts_publish_subscribe_all_qos() {
    let Some(broker) = Broker::start_tls() else {
        return;
    };
    pub_sub_on(&broker, "mqtts", "mqtts").await;
}

#[tokio::test]
async fn wss_publish_subscribe_all_qos() {
    let Some(broker) = Broker::start_tls() else {
        return;
    };
    pub_sub_on(&broker, "wss", "wss").await;
}

#[tokio::test]
async fn tls_and_plain_listeners_share_topics() {
    let Some(broker) = Broker::start_tls() else {
        return;
    };
    pub_sub_on(&broker, "mqtts", "tcp").await;
    pub_sub_on(&broker, "tcp", "wss").await;
    pub_sub_on(&broker, "wss", "mqtts").await;
    pub_sub_on(&broker, "ws", "wss").await;
}

#[tokio::test]
async fn persistent_session_resumes_over_mqtts() {
    let Some(broker) = Broker::start_tls() else {
        return;
    };
    let topic = unique("session/mqtts");
    let mut options = broker.options("mqtts", &unique("persistent-tls"));
    options.set_clean_session(false);
    let (mut sub, _) = Client::connect(options.clone()).await;
    sub.subscribe(&topic, QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let (mut publisher, _) = Client::connect(broker.options("wss", &unique("spub-tls"))).await;
    publisher
        .publish(&topic, QoS::AtLeastOnce, false, b"kept")
        .await;

    let (mut back, ack) = Client::connect(options).await;
    assert!(ack.session_present, "session present on resume");
    assert_eq!(&back.message().await.payload[..], b"kept");
}

#[tokio::test]
async fn a_client_trusting_another_ca_is_refused() {
    let Some(broker) = Broker::start_tls() else {
        return;
    };
    let (stranger, _) = certificate_authority("fanfare untrusted CA");
    for transport in ["mqtts", "wss"] {
        let options = broker.options_trusting(transport, &unique("untrusting"), Some(&stranger));
        let error = connect_error(options).await;
        assert!(
            error.contains("UnknownIssuer") || error.contains("invalid peer certificate"),
            "{transport}: {error}"
        );
    }
    // The broker goes on serving clients that trust it.
    let (client, _) = Client::connect(broker.options("mqtts", &unique("after"))).await;
    client.disconnect().await;
}

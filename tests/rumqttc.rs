//! End-to-end tests with `rumqttc`, an independent MQTT client, against the real binary.
//!
//! Each test starts `fanfare` on loopback with port 0, reads the ports it prints
//! (`listening tcp ADDR`, `listening ws ADDR/PATH`, `ready`), and kills it on drop.
//! Every await is bounded by a timeout, so a broken broker fails a test instead of
//! hanging the suite.
//!
//! To check the tests themselves against another broker, point them at it:
//! `FANFARE_TEST_TCP_ADDR=127.0.0.1:1883 FANFARE_TEST_WS_URL=ws://127.0.0.1:8080/mqtt`
//! (loopback only). Then no process is started.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnAck, Event, EventLoop, MqttOptions, Packet, Publish, QoS, Transport,
};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(5);
const START: Duration = Duration::from_secs(10);

/// A running broker: its TCP address and WebSocket URL.
struct Broker {
    child: Option<Child>,
    tcp: SocketAddr,
    ws_url: String,
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
            };
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_fanfare"))
            .args([
                "--tcp",
                "127.0.0.1:0",
                "--ws",
                "127.0.0.1:0",
                "--ws-path",
                "/mqtt",
            ])
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
                _ => {}
            }
        }
        assert!(broker.tcp.ip().is_loopback());
        assert_ne!(broker.tcp.port(), 0, "tcp listener reported");
        assert!(!broker.ws_url.is_empty(), "ws listener reported");
        broker
    }

    fn options(&self, transport: &str, client_id: &str) -> MqttOptions {
        let mut options = if transport == "ws" {
            let port = self
                .ws_url
                .rsplit(':')
                .next()
                .and_then(|p| p.split('/').next());
            let port = port.and_then(|p| p.parse().ok()).expect("port in ws url");
            let mut o = MqttOptions::new(client_id, self.ws_url.clone(), port);
            o.set_transport(Transport::Ws);
            o
        } else {
            MqttOptions::new(client_id, self.tcp.ip().to_string(), self.tcp.port())
        };
        options.set_keep_alive(Duration::from_secs(30));
        options
    }
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
    let broker = Broker::start();
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

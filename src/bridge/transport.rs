//! The byte stream to a bridge's remote, opened as its URL says: TCP (`mqtt://`), TLS
//! (`mqtts://`), WebSocket (`ws://`) or WebSocket over TLS (`wss://`). The client
//! (`client.rs`) reads and writes MQTT bytes through [`Transport`] the same way over each.
//!
//! **TLS** is tokio-rustls over the bridge's rustls configuration (`tls.rs`): the bridge
//! already runs on tokio, off the shard loops, where the listeners' sans-IO state machine
//! would only be wrapped again in the same adapter.
//!
//! **WebSocket** is this crate's own RFC 6455 code, the pieces the listeners use: the frame
//! decoder reading the server's (unmasked) frames, and [`write_masked_frame`] for the
//! client's, each masked with a fresh random key (RFC 6455 §5.3); the upgrade request and the
//! check of its answer are `protocol::ws::upgrade_request`. A WebSocket crate would bring a
//! second frame codec and its own buffering for one connection per bridge. Frames carry
//! MQTT bytes with no alignment to packets (MQTT 3.1.1 §6), so what the client writes goes in
//! frames of at most [`WS_FRAME_BYTES_MAX`], under the frame bounds servers set.

use std::io;

use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::tls::TlsClient;
use crate::config::bridge::RemoteUrl;
use crate::protocol::ws::frame::{
    FeedError, FrameDecoder, FrameLimits, Opcode, WsError, WsEvent, write_masked_frame,
};
use crate::protocol::ws::upgrade_request::{UpgradeRefused, check_response, write_request};

/// Largest frame the client sends: what one write holds is cut into frames of this size.
/// fanfare's listeners accept frames up to the packet limit, others less; 16 KiB passes
/// every server's default.
pub const WS_FRAME_BYTES_MAX: usize = 16 * 1024;

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// The server's frames are not buffered whole (the decoder hands data on as it arrives), so
/// their length costs no memory: the MQTT decoder bounds what is held, by
/// `packet_bytes_max`. The bound is the largest length RFC 6455 §5.2 allows.
const SERVER_FRAME_LIMITS: FrameLimits = FrameLimits {
    frame_bytes_max: i64::MAX as u64,
    message_bytes_max: i64::MAX as u64,
};

/// Why the stream failed.
#[derive(Debug)]
pub enum TransportError {
    Io(io::Error),
    /// The TLS handshake or a record failed: a certificate not valid for the name, say.
    Tls(rustls::Error),
    /// The server did not upgrade to WebSocket: a wrong path answers 404, say.
    Upgrade(UpgradeRefused),
    /// The server broke RFC 6455.
    Ws(WsError),
    /// The server closed the WebSocket, with its close code if it gave one.
    WsClosed(Option<u16>),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Io(e) => write!(f, "{e}"),
            TransportError::Tls(e) => write!(f, "TLS: {e}"),
            TransportError::Upgrade(e) => write!(f, "{e}"),
            TransportError::Ws(e) => write!(f, "WebSocket: {e}"),
            TransportError::WsClosed(Some(code)) => {
                write!(f, "WebSocket closed by the remote with code {code}")
            }
            TransportError::WsClosed(None) => write!(f, "WebSocket closed by the remote"),
        }
    }
}

impl From<io::Error> for TransportError {
    /// rustls's errors reach here inside `io::Error`s from tokio-rustls: taken out, so the
    /// log names the TLS failure itself.
    fn from(e: io::Error) -> TransportError {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => TransportError::Tls(tls.clone()),
            None => TransportError::Io(e),
        }
    }
}

/// What one [`Transport::read`] brought.
pub enum Received {
    /// MQTT bytes, appended to the caller's buffer.
    Bytes,
    /// Nothing for MQTT: a WebSocket control frame (its answer, if any, waits for the next
    /// [`Transport::write`]).
    Nothing,
    /// The remote closed the stream.
    Closed,
}

enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    async fn read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.read_buf(buf).await,
            Stream::Tls(stream) => stream.read_buf(buf).await,
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => stream.write_all(bytes).await,
            Stream::Tls(stream) => {
                stream.write_all(bytes).await?;
                // tokio-rustls may hold the last records until flushed.
                stream.flush().await
            }
        }
    }
}

/// The WebSocket layer over a stream.
struct WebSocket {
    decoder: FrameDecoder,
    /// Bytes as read from the stream, decoded in place.
    raw: Vec<u8>,
    /// Control frames to send before the next data: pongs.
    control: Vec<u8>,
    /// Frames being written.
    framed: Vec<u8>,
    random: SystemRandom,
}

impl WebSocket {
    /// Decodes `raw`: data to `buf`, pongs to send queued.
    fn take(&mut self, buf: &mut Vec<u8>) -> Result<(), TransportError> {
        let (control, random) = (&mut self.control, &self.random);
        let mut closed = None;
        let fed = self
            .decoder
            .feed(&mut self.raw, &SERVER_FRAME_LIMITS, |event| {
                match event {
                    WsEvent::Data(data) => buf.extend_from_slice(data),
                    WsEvent::Ping(payload) => {
                        write_masked_frame(Opcode::Pong, payload, mask(random)?, control);
                    }
                    WsEvent::Pong => {}
                    WsEvent::Close { code, .. } => closed = Some(code),
                }
                Ok::<(), io::Error>(())
            });
        match fed {
            Ok(()) => {}
            Err(FeedError::Ws(e)) => return Err(TransportError::Ws(e)),
            Err(FeedError::Callback(e)) => return Err(TransportError::Io(e)),
        }
        match closed {
            Some(code) => Err(TransportError::WsClosed(code)),
            None => Ok(()),
        }
    }
}

/// A fresh masking key (RFC 6455 §5.3: unpredictable, from a strong source).
fn mask(random: &SystemRandom) -> io::Result<[u8; 4]> {
    let mut key = [0; 4];
    random
        .fill(&mut key)
        .map_err(|_| io::Error::other("no random bytes for a WebSocket key"))?;
    Ok(key)
}

/// The open byte stream to the remote, ready for CONNECT.
pub struct Transport {
    stream: Stream,
    ws: Option<WebSocket>,
    /// MQTT bytes that came with the upgrade's answer, handed out by the first read.
    early: Vec<u8>,
}

impl Transport {
    /// Connects, then runs the TLS handshake and the WebSocket upgrade as the URL asks. The
    /// caller bounds the whole in time (`connect_timeout_ms`).
    pub async fn open(
        remote: &RemoteUrl,
        tls: Option<&TlsClient>,
    ) -> Result<Transport, TransportError> {
        let tcp = TcpStream::connect((remote.host.as_str(), remote.port)).await?;
        tcp.set_nodelay(true)?;
        let stream = match tls {
            Some(tls) => {
                let connector = TlsConnector::from(tls.config.clone());
                let stream = connector.connect(tls.server_name.clone(), tcp).await?;
                Stream::Tls(Box::new(stream))
            }
            None => Stream::Tcp(tcp),
        };
        let mut transport = Transport {
            stream,
            ws: None,
            early: Vec::new(),
        };
        if remote.scheme.websocket() {
            transport.upgrade(remote).await?;
        }
        Ok(transport)
    }

    /// The WebSocket upgrade (RFC 6455 §4.1).
    async fn upgrade(&mut self, remote: &RemoteUrl) -> Result<(), TransportError> {
        let random = SystemRandom::new();
        let mut nonce = [0u8; 16];
        random
            .fill(&mut nonce)
            .map_err(|_| io::Error::other("no random bytes for a WebSocket key"))?;
        let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, nonce);
        let mut request = Vec::new();
        write_request(&remote.authority(), &remote.path, &key, &mut request);
        self.stream.write_all(&request).await?;
        let mut head = Vec::with_capacity(1024);
        let used = loop {
            if let Some(used) = check_response(&head, &key).map_err(TransportError::Upgrade)? {
                break used;
            }
            if self.stream.read_buf(&mut head).await? == 0 {
                return Err(TransportError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        };
        head.drain(..used);
        let mut ws = WebSocket {
            decoder: FrameDecoder::for_server_frames(),
            raw: head,
            control: Vec::new(),
            framed: Vec::new(),
            random,
        };
        ws.take(&mut self.early)?;
        self.ws = Some(ws);
        Ok(())
    }

    /// Reads what the remote sent next, appending MQTT bytes to `buf`. Cancel-safe, as the
    /// client's `select!` needs: nothing read is held across its one await.
    pub async fn read(&mut self, buf: &mut Vec<u8>) -> Result<Received, TransportError> {
        if !self.early.is_empty() {
            buf.append(&mut self.early);
            return Ok(Received::Bytes);
        }
        let Some(ws) = &mut self.ws else {
            buf.reserve(READ_CHUNK_BYTES);
            return match self.stream.read_buf(buf).await? {
                0 => Ok(Received::Closed),
                _ => Ok(Received::Bytes),
            };
        };
        ws.raw.clear();
        ws.raw.reserve(READ_CHUNK_BYTES);
        if self.stream.read_buf(&mut ws.raw).await? == 0 {
            return Ok(Received::Closed);
        }
        let before = buf.len();
        ws.take(buf)?;
        Ok(if buf.len() > before {
            Received::Bytes
        } else {
            Received::Nothing
        })
    }

    /// Whether control frames wait to be sent, so the client writes even with nothing of
    /// its own.
    pub fn has_pending(&self) -> bool {
        self.ws.as_ref().is_some_and(|ws| !ws.control.is_empty())
    }

    /// Sends MQTT bytes, and any control frames waiting before them.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        let Some(ws) = &mut self.ws else {
            return Ok(self.stream.write_all(bytes).await?);
        };
        ws.framed.clear();
        ws.framed.append(&mut ws.control);
        for chunk in bytes.chunks(WS_FRAME_BYTES_MAX) {
            write_masked_frame(Opcode::Binary, chunk, mask(&ws.random)?, &mut ws.framed);
        }
        self.stream.write_all(&ws.framed).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ws::handshake::accept_key;
    use tokio::net::TcpListener;

    /// The server side of one upgrade, by hand: the answer to the request, then a ping and a
    /// frame of MQTT bytes (a CONNACK), unmasked as a server sends them.
    async fn serve_one(listener: TcpListener) -> (TcpStream, Vec<u8>) {
        let (mut socket, _) = listener.accept().await.expect("a connection");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            assert!(socket.read_buf(&mut head).await.expect("the request") > 0);
        }
        let text = String::from_utf8(head).expect("an ASCII head");
        assert!(text.starts_with("GET /mqtt HTTP/1.1\r\n"), "{text}");
        let key = text
            .lines()
            .find_map(|line| line.strip_prefix("Sec-WebSocket-Key: "))
            .expect("a key");
        let accept = accept_key(key.as_bytes());
        let mut answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Protocol: mqtt\r\nSec-WebSocket-Accept: "
            .to_vec();
        answer.extend_from_slice(&accept);
        answer.extend_from_slice(b"\r\n\r\n");
        answer.extend_from_slice(&[0x89, 0x02, b'h', b'i', 0x82, 0x04, 0x20, 0x02, 0x00, 0x00]);
        socket.write_all(&answer).await.expect("the answer");
        (socket, Vec::new())
    }

    #[tokio::test]
    async fn websocket_answers_pings_and_masks_what_it_sends() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let port = listener.local_addr().expect("its address").port();
        let server = tokio::spawn(serve_one(listener));
        let remote = RemoteUrl::parse(&format!("ws://127.0.0.1:{port}")).expect("a URL");
        let mut transport = Transport::open(&remote, None).await.expect("the upgrade");
        let mut buf = Vec::new();
        while buf.len() < 4 {
            match transport.read(&mut buf).await.expect("a read") {
                Received::Bytes | Received::Nothing => {}
                Received::Closed => panic!("closed before the CONNACK"),
            }
        }
        assert_eq!(buf, [0x20, 0x02, 0x00, 0x00]);
        assert!(transport.has_pending(), "the pong waits for the next write");
        transport.write(&[0xC0, 0x00]).await.expect("a PINGREQ");
        assert!(!transport.has_pending());

        // What the server receives, through a decoder that refuses unmasked frames: the pong,
        // then the PINGREQ.
        let (mut socket, mut got) = server.await.expect("the server");
        let mut decoder = FrameDecoder::new();
        let limits = FrameLimits {
            frame_bytes_max: 1024,
            message_bytes_max: 1024,
        };
        let mut events = Vec::new();
        while !events.iter().any(|e: &(bool, Vec<u8>)| e.0) {
            got.clear();
            assert!(socket.read_buf(&mut got).await.expect("frames") > 0);
            decoder
                .feed(&mut got, &limits, |event| {
                    match event {
                        WsEvent::Pong => events.push((false, Vec::new())),
                        WsEvent::Data(data) => events.push((true, data.to_vec())),
                        other => panic!("unexpected {other:?}"),
                    }
                    Ok::<(), ()>(())
                })
                .expect("masked client frames");
        }
        assert_eq!(events, [(false, Vec::new()), (true, vec![0xC0, 0x00])]);
    }
}

//! One client connection: bind a source address, connect, optionally a TLS handshake (`tls`),
//! optionally upgrade to WebSocket, CONNECT and SUBSCRIBE; then a read side that hands out MQTT
//! bytes in place and a write side that coalesces everything queued while a send is in flight
//! into the next send.
//!
//! Over TLS the session lives with the write side: what is queued is encrypted there and then,
//! so `pending` always holds bytes ready for the wire. The read side reads ciphertext into a
//! buffer of its own and moves the session's plaintext into `raw`, where everything after
//! that (WebSocket frames, MQTT packets) is as over plain TCP.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use rustls::ClientConnection;
use socket2::{Domain, Socket, Type};

use crate::codec::{self, Packet, Version};
use crate::target::{Endpoint, Target};
use crate::tls;
use crate::{direct, stamp, ws};

/// Why a connection attempt failed, counted per kind in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailKind {
    Connect,
    Timeout,
    Upgrade,
    Refused,
    Closed,
    /// The TLS handshake failed: certificate, name, protocol or ALPN refused by either side.
    Tls,
}

pub struct ConnectError {
    pub kind: FailKind,
    pub error: anyhow::Error,
}

fn fail(kind: FailKind, error: anyhow::Error) -> ConnectError {
    ConnectError { kind, error }
}

/// A small xorshift generator: WebSocket masks and keys need unpredictability towards
/// intermediaries, not cryptographic strength (RFC 6455 §10.3).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The write side. `half` is `None` while a send is in flight; bytes queued meanwhile go out in
/// the next send of the same flush, so one task's flush carries every other task's bytes.
pub struct Writer {
    half: Option<OwnedWriteHalf<TcpStream>>,
    /// The socket under `half`, for [`send_now`].
    fd: RawFd,
    pending: Vec<u8>,
    spare: Vec<u8>,
    ws: bool,
    rng: Rng,
    pub failed: bool,
    /// The TLS session of the connection; `pending` then holds ciphertext.
    tls: Option<Box<ClientConnection>>,
    /// TLS only: a WebSocket frame being built, before it is encrypted.
    plain: Vec<u8>,
}

pub type SharedWriter = Rc<RefCell<Writer>>;

impl Writer {
    /// Queues MQTT bytes; over WebSocket they become one masked binary frame.
    pub fn queue(&mut self, mqtt: &[u8]) {
        if self.ws {
            let mask = (self.rng.next() as u32).to_ne_bytes();
            ws::encode_binary(self.frame_buffer(), mqtt, mask);
            self.seal_frame();
        } else {
            self.queue_bytes(mqtt);
        }
    }

    /// Queues bytes as they are, encrypted over TLS.
    fn queue_bytes(&mut self, bytes: &[u8]) {
        match &mut self.tls {
            None => self.pending.extend_from_slice(bytes),
            Some(session) => {
                if tls::seal(session, bytes, &mut self.pending).is_err() {
                    self.failed = true;
                }
            }
        }
    }

    /// Where a WebSocket frame is built: `pending` itself, or over TLS a plaintext buffer
    /// that [`Writer::seal_frame`] encrypts into `pending`.
    fn frame_buffer(&mut self) -> &mut Vec<u8> {
        if self.tls.is_some() {
            &mut self.plain
        } else {
            &mut self.pending
        }
    }

    fn seal_frame(&mut self) {
        if self.tls.is_some() {
            let plain = std::mem::take(&mut self.plain);
            self.queue_bytes(&plain);
            self.plain = plain;
            self.plain.clear();
        }
    }

    /// Moves what the TLS session has to send (handshake, alerts) into `pending`.
    fn pull_tls(&mut self) -> io::Result<()> {
        match &mut self.tls {
            Some(session) => tls::pull(session, &mut self.pending),
            None => Ok(()),
        }
    }

    fn queue_pong(&mut self, payload: &[u8]) {
        let mask = (self.rng.next() as u32).to_ne_bytes();
        ws::encode_pong(self.frame_buffer(), payload, mask);
        self.seal_frame();
    }

    /// Queues DISCONNECT, then the WebSocket close and the TLS close_notify where they apply.
    pub fn queue_disconnect(&mut self) {
        let mut out = Vec::with_capacity(4);
        codec::encode_disconnect(&mut out);
        self.queue(&out);
        if self.ws {
            let mask = (self.rng.next() as u32).to_ne_bytes();
            ws::encode_close(self.frame_buffer(), mask);
            self.seal_frame();
        }
        if let Some(session) = &mut self.tls {
            session.send_close_notify();
            let _ = self.pull_tls();
        }
    }

    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }
}

/// Sends what is queued at once with a non-blocking send, when no other send is in flight, so
/// bytes stamped with their send time leave now (see `direct.rs`). What the socket does not
/// take stays queued for [`flush`].
pub fn send_now(writer: &SharedWriter) -> io::Result<()> {
    let mut w = writer.borrow_mut();
    if w.half.is_none() || w.failed {
        return Ok(());
    }
    let mut sent = 0;
    while sent < w.pending.len() {
        match direct::send(w.fd, &w.pending[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                w.failed = true;
                return Err(e);
            }
        }
    }
    w.pending.drain(..sent);
    Ok(())
}

/// Sends everything queued. Returns at once if another task's flush is in flight: that flush
/// picks up these bytes before it returns the socket.
pub async fn flush(writer: &SharedWriter) -> io::Result<()> {
    loop {
        let (half, buf) = {
            let mut w = writer.borrow_mut();
            if w.failed {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "earlier send failed",
                ));
            }
            if w.pending.is_empty() || w.half.is_none() {
                return Ok(());
            }
            let spare = std::mem::take(&mut w.spare);
            let buf = std::mem::replace(&mut w.pending, spare);
            (w.half.take().expect("checked above"), buf)
        };
        let mut half = half;
        let (result, mut buf) = half.write_all(buf).await;
        let mut w = writer.borrow_mut();
        w.half = Some(half);
        buf.clear();
        w.spare = buf;
        if let Err(e) = result {
            w.failed = true;
            return Err(e);
        }
    }
}

/// The read side: raw bytes from the socket, and for WebSocket the unwrapped MQTT stream.
pub struct Reader {
    half: OwnedReadHalf<TcpStream>,
    /// The socket under `half`, for reads that also take the kernel's receive stamp.
    fd: RawFd,
    raw: Vec<u8>,
    raw_start: usize,
    /// WebSocket only: MQTT bytes unwrapped from frames.
    mqtt: Vec<u8>,
    mqtt_start: usize,
    ws: bool,
    control: ws::Control,
    packet_bytes_max: usize,
    pub closed_by_peer: bool,
    /// TLS: `raw` holds plaintext, and ciphertext is read into `cipher` first.
    tls: bool,
    /// TLS only: ciphertext read and not yet given to the session (some stays only while
    /// `raw` is full).
    cipher: Vec<u8>,
    cipher_start: usize,
    /// TLS only: the receive stamp of the read that brought the ciphertext in `cipher`.
    cipher_stamp: Option<u64>,
}

impl Reader {
    /// MQTT bytes received and not yet consumed.
    pub fn data(&self) -> &[u8] {
        if self.ws {
            &self.mqtt[self.mqtt_start..]
        } else {
            &self.raw[self.raw_start..]
        }
    }

    pub fn consume(&mut self, n: usize) {
        let start = if self.ws {
            &mut self.mqtt_start
        } else {
            &mut self.raw_start
        };
        *start += n;
    }

    /// Reads once (one batch, as much as the buffer takes). Returns the bytes read; 0 is EOF.
    /// Over TLS: the plaintext bytes, after as many reads as it takes to complete a record.
    pub async fn fill(&mut self, writer: &SharedWriter) -> anyhow::Result<usize> {
        Ok(self.fill_any(writer, false).await?.0)
    }

    /// [`Reader::fill`] that also returns when the kernel received the last of the bytes read
    /// (see `stamp.rs`); the socket must have had [`Reader::enable_stamps`]. Over TLS the
    /// stamp is of the last ciphertext read, the one that completed the records returned.
    pub async fn fill_stamped(
        &mut self,
        writer: &SharedWriter,
    ) -> anyhow::Result<(usize, Option<u64>)> {
        self.fill_any(writer, true).await
    }

    async fn fill_any(
        &mut self,
        writer: &SharedWriter,
        stamped: bool,
    ) -> anyhow::Result<(usize, Option<u64>)> {
        self.make_room()?;
        if !self.tls {
            let (n, at) = read_socket(&mut self.half, self.fd, &mut self.raw, stamped).await?;
            return Ok((self.unwrap_read(n, writer).await?, at));
        }
        loop {
            let n = self.open_tls(writer).await?;
            if n > 0 {
                return Ok((self.unwrap_read(n, writer).await?, self.cipher_stamp));
            }
            let (read, at) = self.read_cipher(stamped).await?;
            if read == 0 {
                self.closed_by_peer = true;
                return Ok((0, None));
            }
            self.cipher_stamp = at;
        }
    }

    /// TLS: reads ciphertext once, appending to `cipher`.
    async fn read_cipher(&mut self, stamped: bool) -> io::Result<(usize, Option<u64>)> {
        compact(&mut self.cipher, &mut self.cipher_start);
        if self.cipher.len() == self.cipher.capacity() {
            self.cipher.reserve(self.cipher.capacity().max(4096));
        }
        read_socket(&mut self.half, self.fd, &mut self.cipher, stamped).await
    }

    /// TLS: gives the session the ciphertext read, moves its plaintext into `raw` (as much as
    /// fits) and sends what it has to say (alerts, key updates). Returns the plaintext bytes.
    async fn open_tls(&mut self, writer: &SharedWriter) -> anyhow::Result<usize> {
        let (opened, to_send) = self.open_now(writer);
        if to_send {
            let flushed = flush(writer).await;
            if opened.is_ok() {
                flushed?;
            }
        }
        opened
    }

    /// [`Reader::open_tls`] without the send; also says whether there is something to send.
    fn open_now(&mut self, writer: &SharedWriter) -> (anyhow::Result<usize>, bool) {
        let mut w = writer.borrow_mut();
        let queued = w.pending.len();
        let Some(session) = w.tls.as_mut() else {
            return (Err(anyhow!("TLS reader without a TLS session")), false);
        };
        let opened = tls::open(session, &self.cipher[self.cipher_start..], &mut self.raw);
        let pulled = w.pull_tls();
        let to_send = w.pending.len() > queued;
        let result = match (opened, pulled) {
            (Err(e), _) => Err(anyhow!("TLS: {e}")),
            (Ok(_), Err(e)) => Err(e.into()),
            (Ok((used, n)), Ok(())) => {
                self.cipher_start += used;
                Ok(n)
            }
        };
        (result, to_send)
    }

    /// Asks the kernel to stamp what this connection receives.
    pub fn enable_stamps(&self) -> io::Result<()> {
        stamp::enable(self.fd)
    }

    fn make_room(&mut self) -> anyhow::Result<()> {
        compact(&mut self.raw, &mut self.raw_start);
        if self.raw.len() == self.raw.capacity() {
            // A packet larger than the buffer: grow, bounded by the packet limit.
            ensure!(
                self.raw.capacity() < self.packet_bytes_max + 16,
                "packet larger than {} bytes",
                self.packet_bytes_max
            );
            self.raw.reserve(self.raw.capacity());
        }
        Ok(())
    }

    /// After `n` bytes were appended to `raw`: unwraps WebSocket frames and answers pings.
    async fn unwrap_read(&mut self, n: usize, writer: &SharedWriter) -> anyhow::Result<usize> {
        if n == 0 {
            self.closed_by_peer = true;
            return Ok(0);
        }
        if self.ws {
            compact(&mut self.mqtt, &mut self.mqtt_start);
            let used = ws::unwrap_frames(
                &self.raw[self.raw_start..],
                &mut self.mqtt,
                &mut self.control,
                self.packet_bytes_max,
            )?;
            self.raw_start += used;
            if !self.control.pings.is_empty() {
                {
                    let mut w = writer.borrow_mut();
                    for ping in self.control.pings.drain(..) {
                        w.queue_pong(&ping);
                    }
                }
                flush(writer).await?;
            }
            if let Some(code) = self.control.closed {
                self.closed_by_peer = true;
                bail!("WebSocket closed by the broker, code {code}");
            }
        }
        Ok(n)
    }
}

/// Reads once into the spare capacity of `buf`: one io_uring read, or with `stamped` a
/// readiness poll and a `recvmsg` that also returns the kernel's receive stamp.
async fn read_socket(
    half: &mut OwnedReadHalf<TcpStream>,
    fd: RawFd,
    buf: &mut Vec<u8>,
    stamped: bool,
) -> io::Result<(usize, Option<u64>)> {
    if !stamped {
        let len = buf.len();
        let mut owned = std::mem::take(buf);
        let cap = owned.bytes_total();
        let (result, slice) = half.read(owned.slice_mut(len..cap)).await;
        *buf = slice.into_inner();
        return Ok((result?, None));
    }
    loop {
        // SAFETY: the stream lives as long as `half`; this task is the only reader, and
        // monoio's own split halves reach the stream the same way (`peer_addr`).
        let stream = unsafe { &*half.0.get() };
        stream.readable(false).await?;
        match stamp::recv(fd, buf) {
            Ok(read) => return Ok(read),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Moves unconsumed bytes to the front; cheap because it runs once per read batch.
fn compact(buf: &mut Vec<u8>, start: &mut usize) {
    if *start == 0 {
        return;
    }
    buf.copy_within(*start.., 0);
    buf.truncate(buf.len() - *start);
    *start = 0;
}

pub struct Conn {
    pub reader: Reader,
    pub writer: SharedWriter,
    pub version: Version,
    packet_bytes_max: usize,
    /// TLS: what the handshake agreed on, how long it took (ns), and whether it resumed.
    pub tls: Option<(tls::Negotiated, u64, bool)>,
}

/// Leaves the choice of the source port from `bind` to `connect` (IP_BIND_ADDRESS_NO_PORT),
/// where the kernel takes one that is free towards this destination. Without it a bound source
/// address has ~28 k ports for all brokers together, and `bind` searches a range that fills up
/// (with TIME_WAIT too): past ~14 k connections per address the connect rate collapsed to a few
/// hundred per second. Best effort: where the option is unknown, `bind` picks as before.
fn defer_source_port(socket: &Socket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: the option value is a live c_int of the size passed; the fd is the socket's own.
    let _ = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

async fn tcp_connect(
    target: &Target,
    addr: SocketAddr,
    index: usize,
) -> Result<TcpStream, ConnectError> {
    let domain = Domain::for_address(addr);
    let socket =
        Socket::new(domain, Type::STREAM, None).map_err(|e| fail(FailKind::Connect, e.into()))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| fail(FailKind::Connect, e.into()))?;
    if !target.sources.is_empty() {
        let source = target.sources[index % target.sources.len()];
        defer_source_port(&socket);
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .map_err(|e| fail(FailKind::Connect, anyhow!("bind {source}: {e}")))?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(115) => {} // EINPROGRESS: wait for writability
        Err(e) => return Err(fail(FailKind::Connect, e.into())),
    }
    // Keep a duplicate to read SO_ERROR once the handshake ends; dropping it closes only the dup.
    let probe = socket
        .try_clone()
        .map_err(|e| fail(FailKind::Connect, e.into()))?;
    let stream =
        TcpStream::from_std(socket.into()).map_err(|e| fail(FailKind::Connect, e.into()))?;
    match monoio::time::timeout(target.timeout, stream.writable(false)).await {
        Err(_) => return Err(fail(FailKind::Timeout, anyhow!("TCP connect timed out"))),
        Ok(Err(e)) => return Err(fail(FailKind::Connect, e.into())),
        Ok(Ok(())) => {}
    }
    if let Some(e) = probe
        .take_error()
        .map_err(|e| fail(FailKind::Connect, e.into()))?
    {
        return Err(fail(FailKind::Connect, e.into()));
    }
    drop(probe);
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

impl Conn {
    /// Connects, upgrades if WebSocket, sends CONNECT and waits for a successful CONNACK.
    pub async fn open(
        target: &Target,
        endpoint: &Endpoint,
        index: usize,
        client_id: &str,
    ) -> Result<Conn, ConnectError> {
        let stream = tcp_connect(target, endpoint.addr, index).await?;
        let session = match &endpoint.tls {
            Some(t) => Some(Box::new(t.session().map_err(|e| fail(FailKind::Tls, e))?)),
            None => None,
        };
        let fd = stream.as_raw_fd();
        let (read_half, write_half) = stream.into_split();
        let writer = Rc::new(RefCell::new(Writer {
            half: Some(write_half),
            fd,
            pending: Vec::with_capacity(256),
            spare: Vec::new(),
            ws: false,
            rng: Rng::new(index as u64 ^ crate::stats::now_ns()),
            failed: false,
            tls: session,
            plain: Vec::new(),
        }));
        let tls = endpoint.tls.is_some();
        let mut conn = Conn {
            reader: Reader {
                half: read_half,
                fd,
                raw: Vec::with_capacity(target.read_buffer_bytes),
                raw_start: 0,
                mqtt: Vec::new(),
                mqtt_start: 0,
                ws: false,
                control: ws::Control::default(),
                packet_bytes_max: target.packet_bytes_max,
                closed_by_peer: false,
                tls,
                cipher: Vec::with_capacity(if tls { target.read_buffer_bytes } else { 0 }),
                cipher_start: 0,
                cipher_stamp: None,
            },
            writer,
            version: target.version,
            packet_bytes_max: target.packet_bytes_max,
            tls: None,
        };
        if tls {
            conn.handshake(target.timeout).await?;
        }
        if let Some((host, path)) = &endpoint.ws {
            conn.upgrade(target, host, path).await?;
        }
        let mut out = Vec::with_capacity(64);
        codec::encode_connect(
            &mut out,
            target.version,
            client_id,
            target.keep_alive_s,
            target.credentials.as_ref(),
            target.topic_alias_max,
        );
        conn.send(&out)
            .await
            .map_err(|e| fail(FailKind::Closed, e.into()))?;
        let code = conn
            .await_packet(target.timeout, |p| match p {
                Packet::Connack { code, .. } => Some(code),
                _ => None,
            })
            .await?;
        if code != 0 {
            return Err(fail(FailKind::Refused, anyhow!("CONNACK code {code:#x}")));
        }
        Ok(conn)
    }

    /// Runs the TLS handshake to its end, so that a refused certificate counts as a TLS
    /// failure and the CONNECT timeout does not include it.
    async fn handshake(&mut self, timeout: Duration) -> Result<(), ConnectError> {
        let started = crate::stats::now_ns();
        let deadline = monoio::time::Instant::now() + timeout;
        loop {
            let handshaking = {
                let mut w = self.writer.borrow_mut();
                w.pull_tls().map_err(|e| fail(FailKind::Tls, e.into()))?;
                w.tls.as_ref().is_some_and(|s| s.is_handshaking())
            };
            flush(&self.writer)
                .await
                .map_err(|e| fail(FailKind::Closed, e.into()))?;
            if !handshaking {
                let w = self.writer.borrow();
                let session = w.tls.as_ref().expect("a TLS connection has a session");
                let took = crate::stats::now_ns().saturating_sub(started);
                self.tls = Some((tls::negotiated(session), took, tls::resumed(session)));
                return Ok(());
            }
            let read = monoio::time::timeout_at(deadline, self.reader.read_cipher(false)).await;
            match read {
                Err(_) => return Err(fail(FailKind::Timeout, anyhow!("TLS handshake timed out"))),
                Ok(Err(e)) => return Err(fail(FailKind::Closed, e.into())),
                Ok(Ok((0, _))) => {
                    return Err(fail(
                        FailKind::Closed,
                        anyhow!("closed during the TLS handshake"),
                    ));
                }
                Ok(Ok(_)) => {}
            }
            let (opened, to_send) = self.reader.open_now(&self.writer);
            if let Err(e) = opened {
                if to_send {
                    // The alert, so that the server logs why.
                    let _ = flush(&self.writer).await;
                }
                return Err(fail(FailKind::Tls, e));
            }
        }
    }

    async fn upgrade(
        &mut self,
        target: &Target,
        host: &str,
        path: &str,
    ) -> Result<(), ConnectError> {
        let mut key = [0u8; 16];
        {
            let mut w = self.writer.borrow_mut();
            key[..8].copy_from_slice(&w.rng.next().to_ne_bytes());
            key[8..].copy_from_slice(&w.rng.next().to_ne_bytes());
            let (request, _) = ws::upgrade_request(host, path, key);
            w.queue_bytes(request.as_bytes());
        }
        let (_, key) = ws::upgrade_request(host, path, key);
        flush(&self.writer)
            .await
            .map_err(|e| fail(FailKind::Closed, e.into()))?;
        loop {
            let read = monoio::time::timeout(target.timeout, self.reader.fill(&self.writer)).await;
            match read {
                Err(_) => {
                    return Err(fail(
                        FailKind::Timeout,
                        anyhow!("WebSocket upgrade timed out"),
                    ));
                }
                Ok(Err(e)) => return Err(fail(FailKind::Closed, e)),
                Ok(Ok(0)) => return Err(fail(FailKind::Closed, anyhow!("closed during upgrade"))),
                Ok(Ok(_)) => {}
            }
            let r = &mut self.reader;
            match ws::check_upgrade_response(&r.raw[r.raw_start..], &key) {
                Err(e) => return Err(fail(FailKind::Upgrade, e)),
                Ok(None) => continue,
                Ok(Some(n)) => {
                    r.raw_start += n;
                    r.ws = true;
                    r.mqtt = Vec::with_capacity(r.raw.capacity());
                    self.writer.borrow_mut().ws = true;
                    // Frames that arrived with the HTTP answer.
                    let used = ws::unwrap_frames(
                        &r.raw[r.raw_start..],
                        &mut r.mqtt,
                        &mut r.control,
                        r.packet_bytes_max,
                    )
                    .map_err(|e| fail(FailKind::Upgrade, e))?;
                    r.raw_start += used;
                    return Ok(());
                }
            }
        }
    }

    /// Queues and sends MQTT bytes.
    pub async fn send(&self, mqtt: &[u8]) -> io::Result<()> {
        self.writer.borrow_mut().queue(mqtt);
        flush(&self.writer).await
    }

    /// Reads until `pick` accepts a packet; packets before it are skipped (PINGRESP, a
    /// PUBLISH that races a SUBACK is not expected during set-up). Later bytes stay buffered.
    pub async fn await_packet<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(Packet<'_>) -> Option<T>,
    ) -> Result<T, ConnectError> {
        let deadline = monoio::time::Instant::now() + timeout;
        loop {
            loop {
                let decoded =
                    codec::decode(self.reader.data(), self.version, self.packet_bytes_max)
                        .map_err(|e| fail(FailKind::Closed, e.into()))?;
                let Some((packet, used)) = decoded else { break };
                if let Packet::Disconnect { reason } = packet {
                    return Err(fail(
                        FailKind::Refused,
                        anyhow!("DISCONNECT reason {reason:#x}"),
                    ));
                }
                let picked = pick(packet);
                self.reader.consume(used);
                if let Some(v) = picked {
                    return Ok(v);
                }
            }
            let read = monoio::time::timeout_at(deadline, self.reader.fill(&self.writer)).await;
            match read {
                Err(_) => return Err(fail(FailKind::Timeout, anyhow!("no answer in time"))),
                Ok(Err(e)) => return Err(fail(FailKind::Closed, e)),
                Ok(Ok(0)) => return Err(fail(FailKind::Closed, anyhow!("closed by the broker"))),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// SUBSCRIBE one filter and wait for a SUBACK that grants it.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: u8,
        timeout: Duration,
    ) -> Result<(), ConnectError> {
        let mut out = Vec::with_capacity(64);
        codec::encode_subscribe(&mut out, self.version, 1, filter, qos);
        self.send(&out)
            .await
            .map_err(|e| fail(FailKind::Closed, e.into()))?;
        let code = self
            .await_packet(timeout, |p| match p {
                Packet::Suback {
                    packet_id: 1,
                    codes,
                } => Some(codes.first().copied().unwrap_or(0x80)),
                _ => None,
            })
            .await?;
        if code >= 0x80 {
            return Err(fail(
                FailKind::Refused,
                anyhow!("SUBACK refused {filter}: {code:#x}"),
            ));
        }
        Ok(())
    }

    /// Sends DISCONNECT (and a WebSocket close, a TLS close_notify), ignoring errors: the run
    /// is over.
    pub async fn disconnect(&self) {
        self.writer.borrow_mut().queue_disconnect();
        let _ = flush(&self.writer).await;
    }
}

/// Sends PINGREQ every `keep_alive_s / 2` until `stop()`; a broker may close a connection
/// that is silent for 1.5 x keep-alive [MQTT-3.1.2-24].
pub async fn keep_alive(writer: SharedWriter, keep_alive_s: u16, stop: impl Fn() -> bool) {
    if keep_alive_s == 0 {
        return;
    }
    let period = Duration::from_millis(u64::from(keep_alive_s) * 500);
    let mut ping = Vec::with_capacity(2);
    codec::encode_pingreq(&mut ping);
    loop {
        // Tasks still sleeping when the run ends are dropped with their thread's runtime.
        monoio::time::sleep(period).await;
        if stop() {
            return;
        }
        writer.borrow_mut().queue(&ping);
        if flush(&writer).await.is_err() {
            return;
        }
    }
}

pub fn parse_ip(s: &str) -> anyhow::Result<IpAddr> {
    s.trim()
        .parse()
        .with_context(|| format!("not an IP address: {s:?}"))
}

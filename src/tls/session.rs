//! One connection's TLS state: rustls's unbuffered server connection, fed ciphertext as it is
//! received and asked for records to send. It does no I/O: `net/` owns the sockets and the
//! buffers the kernel reads.
//!
//! Memory: the unbuffered API leaves the buffers to us, so an idle connection holds none. Its
//! ciphertext is kept only while a record is split across receives, its outgoing records only
//! until the next send takes them. (rustls's buffered connection keeps a 4 KiB receive buffer
//! for the connection's whole life, most of what an idle TLS subscriber would cost.)
//!
//! Sealing: what is queued on a connection is gathered into one plaintext of up to
//! [`SEAL_BYTES_MAX`] bytes, which rustls cuts into records of up to 16 KiB; so the AES-GCM cost
//! of a record is paid per send, not per MQTT packet.

use std::io::IoSlice;
use std::sync::Arc;

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedStatus, WriteTraffic,
};
use rustls::{
    AlertDescription, ExtractedSecrets, ProtocolVersion, ServerConfig, SupportedCipherSuite,
};

/// Plaintext sealed for one send: four full records. A connection that keeps up sends less;
/// one that fell behind catches up 64 KiB per send, like its plain send queue would.
pub const SEAL_BYTES_MAX: usize = 64 * 1024;

/// A TLS record's header: content type, legacy version, length (RFC 8446 §5.1).
const RECORD_HEADER_BYTES: usize = 5;

/// Ciphertext one connection may hold unprocessed: a handshake message spread over records
/// (rustls accepts up to 64 KiB) and one record more. Past it the peer is not speaking TLS.
const INCOMING_BYTES_MAX: usize = 64 * 1024 + RECORD_BYTES_MAX;

/// The largest record on the wire: 16 KiB of plaintext, expansion and header (RFC 8446 §5.2).
const RECORD_BYTES_MAX: usize = RECORD_HEADER_BYTES + (1 << 14) + 256;

/// Room to leave per record when sealing: header, content type, nonce and tag (TLS 1.2's
/// explicit nonce is the largest case). rustls says so when it needs more.
const SEAL_OVERHEAD_PER_RECORD: usize = 64;

/// State transitions one call may take: a handshake flight is a few records, an alert one. A
/// peer cannot make rustls loop, but a bound costs nothing and rules it out.
const STEPS_MAX: usize = 256;

/// Why a TLS connection failed, for its one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The first record's header was not TLS: plain MQTT or HTTP sent to a TLS port.
    NotTls,
    /// The peer ended the connection with this alert (RFC 8446 §6).
    PeerAlert(u8),
    /// The client's certificate does not chain to `client_ca_file`, or has expired.
    BadClientCertificate,
    /// `client_auth = "required"` and the client sent none.
    NoClientCertificate,
    /// No protocol version, cipher suite or key exchange both sides support.
    NothingInCommon,
    /// The client offered application protocols (ALPN), none of them this listener's.
    NoApplicationProtocol,
    /// A record did not decrypt or authenticate.
    Decrypt,
    /// The peer broke the TLS protocol.
    Protocol,
    /// More ciphertext than [`INCOMING_BYTES_MAX`] without a complete message in it.
    TooLarge,
    /// A handshake message after the keys went to the kernel (kernel TLS): a TLS 1.3
    /// `KeyUpdate`, which needs keys rustls no longer derives once it has handed them over.
    AfterHandover,
    /// rustls refused for another reason; its words are in the debug log.
    Other,
}

impl TlsFailure {
    pub const fn description(self) -> &'static str {
        match self {
            TlsFailure::NotTls => "not TLS: plain bytes on a TLS listener",
            TlsFailure::PeerAlert(_) => "the peer sent a TLS alert",
            TlsFailure::BadClientCertificate => {
                "the client certificate is not valid (unknown CA, expired or not for clients)"
            }
            TlsFailure::NoClientCertificate => "no client certificate, and one is required",
            TlsFailure::NothingInCommon => "no TLS version or cipher suite in common",
            TlsFailure::NoApplicationProtocol => "no ALPN protocol in common",
            TlsFailure::Decrypt => "a TLS record failed to decrypt",
            TlsFailure::Protocol => "TLS protocol violation",
            TlsFailure::TooLarge => "a TLS message larger than 80 KiB",
            TlsFailure::AfterHandover => {
                "a TLS handshake message (a KeyUpdate) after the keys went to the kernel"
            }
            TlsFailure::Other => "TLS failure",
        }
    }

    /// `first_header`: the failure came with the bytes of the first record's header.
    fn of(error: &rustls::Error, first_header: bool) -> TlsFailure {
        use rustls::{Error, InvalidMessage};
        match error {
            // The record header (RFC 8446 §5.1) is what rustls refuses before anything else. A
            // well-framed first record that holds a broken ClientHello is TLS that went wrong.
            Error::InvalidMessage(
                InvalidMessage::InvalidContentType
                | InvalidMessage::UnknownProtocolVersion
                | InvalidMessage::MessageTooLarge
                | InvalidMessage::InvalidEmptyPayload,
            ) if first_header => TlsFailure::NotTls,
            Error::AlertReceived(alert) => TlsFailure::PeerAlert(u8::from(*alert)),
            Error::InvalidCertificate(_) => TlsFailure::BadClientCertificate,
            Error::NoCertificatesPresented => TlsFailure::NoClientCertificate,
            Error::PeerIncompatible(_) => TlsFailure::NothingInCommon,
            Error::NoApplicationProtocol => TlsFailure::NoApplicationProtocol,
            Error::DecryptError => TlsFailure::Decrypt,
            Error::InvalidMessage(_)
            | Error::InappropriateMessage { .. }
            | Error::InappropriateHandshakeMessage { .. }
            | Error::PeerMisbehaved(_)
            | Error::PeerSentOversizedRecord => TlsFailure::Protocol,
            _ => TlsFailure::Other,
        }
    }
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsFailure::PeerAlert(code) => {
                let alert = AlertDescription::from(*code);
                write!(f, "the peer sent the TLS alert {alert:?}")
            }
            other => f.write_str(other.description()),
        }
    }
}

/// What a receive brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deciphered {
    /// The peer sent close_notify: nothing more will come.
    pub peer_closed: bool,
}

pub struct TlsSession {
    conn: UnbufferedServerConnection,
    /// Ciphertext received and not processed yet: the start of a record (or of a handshake
    /// message) the rest of which has not arrived. Empty, without an allocation, otherwise.
    incoming: Vec<u8>,
    /// Records to send that arose while receiving: the handshake's flights, session tickets,
    /// alerts. Taken by the next send, after which nothing is allocated.
    outgoing: Vec<u8>,
    /// Bytes of the first record's header (5, RFC 8446 §5.1) not received yet: a failure of
    /// that header means "not TLS at all".
    first_header_missing: usize,
    /// A failure happened; the alert is in `outgoing` and nothing else is processed.
    failed: bool,
}

/// What one step of rustls's state machine asks of us, once its borrows have ended.
enum Step {
    /// Handled; take the next step.
    Continue,
    /// Nothing more to do until more ciphertext arrives.
    Blocked,
    /// The peer's close_notify.
    PeerClosed,
    Failed(rustls::Error),
}

impl TlsSession {
    pub fn new(config: Arc<ServerConfig>) -> Result<TlsSession, TlsFailure> {
        let conn =
            UnbufferedServerConnection::new(config).map_err(|e| TlsFailure::of(&e, false))?;
        Ok(TlsSession {
            conn,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            first_header_missing: RECORD_HEADER_BYTES,
            failed: false,
        })
    }

    /// Takes in `ciphertext`, appending what it deciphers to `plaintext` (at most as many bytes
    /// as came in). On a failure the alert is queued: [`TlsSession::write_records`] still gives
    /// it, then the connection closes.
    pub fn receive(
        &mut self,
        ciphertext: &[u8],
        plaintext: &mut Vec<u8>,
    ) -> Result<Deciphered, TlsFailure> {
        let first_header = self.first_header_missing > 0;
        self.first_header_missing = self.first_header_missing.saturating_sub(ciphertext.len());
        if self.failed {
            return Ok(Deciphered::default());
        }
        if self.incoming.len() + ciphertext.len() > INCOMING_BYTES_MAX {
            self.failed = true;
            self.incoming = Vec::new();
            return Err(TlsFailure::TooLarge);
        }
        self.incoming.extend_from_slice(ciphertext);
        let mut deciphered = Deciphered::default();
        let mut outcome = Ok(());
        for _ in 0..STEPS_MAX {
            match self.step(Some(plaintext)) {
                Step::Continue => {}
                Step::Blocked => break,
                Step::PeerClosed => deciphered.peer_closed = true,
                Step::Failed(error) => {
                    log::debug!("TLS: {error}");
                    outcome = Err(TlsFailure::of(&error, first_header));
                    break;
                }
            }
        }
        if self.incoming.is_empty() {
            // What keeps an idle connection small: no receive buffer between records.
            self.incoming = Vec::new();
        }
        if outcome.is_err() {
            self.fail();
        }
        outcome.map(|()| deciphered)
    }

    /// One turn of rustls's state machine over the ciphertext held. `plaintext`: where
    /// application data goes; `None` when none may arrive (sealing), which stops at it.
    fn step(&mut self, plaintext: Option<&mut Vec<u8>>) -> Step {
        let UnbufferedStatus { mut discard, state } =
            self.conn.process_tls_records(&mut self.incoming);
        let step = match state {
            Err(error) => Step::Failed(error),
            Ok(ConnectionState::ReadTraffic(mut traffic)) => match plaintext {
                None => Step::Blocked,
                Some(plaintext) => loop {
                    match traffic.next_record() {
                        None => break Step::Continue,
                        Some(Err(error)) => break Step::Failed(error),
                        Some(Ok(record)) => {
                            discard += record.discard;
                            plaintext.extend_from_slice(record.payload);
                        }
                    }
                },
            },
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                append_encoded(&mut encode, &mut self.outgoing);
                Step::Continue
            }
            // The records are in `outgoing` already, which the next send takes.
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                transmit.done();
                Step::Continue
            }
            Ok(ConnectionState::PeerClosed) => Step::PeerClosed,
            // Early data is off (the default), so its state does not arise.
            Ok(_) => Step::Blocked,
        };
        self.incoming.drain(..discard);
        step
    }

    /// After a failure: the alert rustls queued goes to `outgoing`, and nothing more is read.
    fn fail(&mut self) {
        self.failed = true;
        self.incoming = Vec::new();
        for _ in 0..STEPS_MAX {
            let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut []);
            match state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    append_encoded(&mut encode, &mut self.outgoing);
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                _ => break,
            }
        }
    }

    /// Seals `plaintext` into records appended to `out`, gathering it in `scratch` first so
    /// that many small packets share a record; returns how many bytes it took: all of them
    /// once the handshake is done, none before.
    pub fn seal(
        &mut self,
        plaintext: &[IoSlice<'_>],
        scratch: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> usize {
        if self.failed || self.conn.is_handshaking() {
            return 0;
        }
        scratch.clear();
        for slice in plaintext {
            scratch.extend_from_slice(slice);
        }
        let sealed = self.with_write_traffic(out, |traffic, out| {
            let records = scratch.len().div_ceil(1 << 14).max(1);
            let start = out.len();
            out.resize(
                start + scratch.len() + records * SEAL_OVERHEAD_PER_RECORD,
                0,
            );
            let written = match traffic.encrypt(scratch, &mut out[start..]) {
                Err(EncryptError::InsufficientSize(size)) => {
                    out.resize(start + size.required_size, 0);
                    traffic.encrypt(scratch, &mut out[start..])
                }
                other => other,
            };
            match written {
                Ok(written) => {
                    out.truncate(start + written);
                    true
                }
                // The keys' limit is reached and rustls would rather close: so does the
                // connection, through the error of its next receive.
                Err(_) => {
                    out.truncate(start);
                    false
                }
            }
        });
        if sealed == Some(true) {
            scratch.len()
        } else {
            0
        }
    }

    /// Runs `write` with rustls's permission to encrypt into `out`, once the records it has to
    /// send first (a key update, say) are appended there. `None` when it gives none.
    fn with_write_traffic<R>(
        &mut self,
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut WriteTraffic<'_, ServerConnectionData>, &mut Vec<u8>) -> R,
    ) -> Option<R> {
        for _ in 0..STEPS_MAX {
            // The ciphertext held is an incomplete record, which this pass leaves as it is.
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            debug_assert_eq!(discard, 0, "receive processed every complete record");
            match state {
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    return Some(write(&mut traffic, out));
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => append_encoded(&mut encode, out),
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                _ => return None,
            }
        }
        None
    }

    /// Whether records wait to be written out.
    pub fn wants_write(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Appends every record waiting to be sent (handshake messages, tickets, alerts).
    pub fn write_records(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            std::mem::swap(out, &mut self.outgoing);
        } else {
            out.append(&mut self.outgoing);
        }
        self.outgoing = Vec::new();
    }

    /// Appends close_notify to `out`, so the peer knows the end is deliberate. Before the
    /// handshake is done there are no keys to send it with, and nothing is sent.
    pub fn close_notify(&mut self, out: &mut Vec<u8>) {
        if self.failed || self.conn.is_handshaking() {
            return;
        }
        self.write_records(out);
        self.with_write_traffic(out, |traffic, out| {
            let start = out.len();
            out.resize(start + RECORD_HEADER_BYTES + SEAL_OVERHEAD_PER_RECORD, 0);
            let written = traffic.queue_close_notify(&mut out[start..]).unwrap_or(0);
            out.truncate(start + written);
        });
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether every record received so far is whole: no part of one waits here for the rest.
    pub fn at_record_boundary(&self) -> bool {
        self.incoming.is_empty()
    }

    pub fn negotiated_suite(&self) -> Option<SupportedCipherSuite> {
        self.conn.negotiated_cipher_suite()
    }

    /// The version and traffic keys, to hand to the kernel; the session is gone with them.
    /// Needs `enable_secret_extraction`, a finished handshake and no records left to send.
    /// rustls's kernel-side remainder, which could follow a key update, is not kept: a key
    /// update after the hand-over closes the connection (`TlsFailure::AfterHandover`).
    pub fn into_secrets(self) -> Result<(ProtocolVersion, ExtractedSecrets), rustls::Error> {
        let version = self
            .conn
            .protocol_version()
            .ok_or(rustls::Error::HandshakeNotComplete)?;
        let (secrets, _kernel_side) = self.conn.dangerous_into_kernel_connection()?;
        Ok((version, secrets))
    }

    /// The identity of the client's certificate, once the handshake verified one.
    pub fn client_identity(&self) -> Option<String> {
        let end_entity = self.conn.peer_certificates()?.first()?;
        super::certificate_identity(end_entity)
    }
}

/// Appends the handshake or alert record rustls has ready to `out`.
fn append_encoded(encode: &mut EncodeTlsData<'_, ServerConnectionData>, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + RECORD_BYTES_MAX, 0);
    let encoded = match encode.encode(&mut out[start..]) {
        Err(EncodeError::InsufficientSize(size)) => {
            out.resize(start + size.required_size, 0);
            encode.encode(&mut out[start..])
        }
        other => other,
    };
    // Encoding into the room it asked for cannot fail; were it to, nothing is sent.
    out.truncate(start + encoded.unwrap_or(0));
}

//! One connection's TLS state: rustls's `ServerConnection`, fed ciphertext as it is received and
//! asked for records to send. It does no I/O: `net/` owns the sockets and the buffers the kernel
//! reads.
//!
//! Sealing: what is queued on a connection is handed to rustls as one vectored write of up to
//! [`SEAL_BYTES_MAX`] bytes, which rustls cuts into records of up to 16 KiB; so the AES-GCM cost
//! of a record is paid per send, not per MQTT packet.

use std::io::{IoSlice, Read, Write};
use std::sync::Arc;

use rustls::{
    AlertDescription, ExtractedSecrets, ProtocolVersion, ServerConfig, ServerConnection,
    SupportedCipherSuite,
};

/// Plaintext sealed for one send: four full records. A connection that keeps up sends less;
/// one that fell behind catches up 64 KiB per send, like its plain send queue would.
pub const SEAL_BYTES_MAX: usize = 64 * 1024;

/// A TLS record's header: content type, legacy version, length (RFC 8446 §5.1).
const RECORD_HEADER_BYTES: usize = 5;

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
    conn: ServerConnection,
    /// Bytes of the first record's header (5, RFC 8446 §5.1) not received yet: a failure of
    /// that header means "not TLS at all".
    first_header_missing: usize,
    /// Where the ciphertext received so far stops, for handing the keys to the kernel.
    records: RecordBoundary,
}

impl TlsSession {
    pub fn new(config: Arc<ServerConfig>) -> Result<TlsSession, TlsFailure> {
        let conn = ServerConnection::new(config).map_err(|e| TlsFailure::of(&e, false))?;
        Ok(TlsSession {
            conn,
            first_header_missing: RECORD_HEADER_BYTES,
            records: RecordBoundary::default(),
        })
    }

    /// Takes in `ciphertext`, appending what it deciphers to `plaintext` (at most as many bytes
    /// as came in). On a failure rustls has queued the alert to send: [`TlsSession::write_records`]
    /// still gives it, then the connection closes.
    pub fn receive(
        &mut self,
        mut ciphertext: &[u8],
        plaintext: &mut Vec<u8>,
    ) -> Result<Deciphered, TlsFailure> {
        let mut deciphered = Deciphered::default();
        self.records.feed(ciphertext);
        while !ciphertext.is_empty() {
            // Reading from a slice cannot fail for I/O; rustls refuses more only while its
            // plaintext buffer is full, which the reads below empty.
            let read = self.conn.read_tls(&mut ciphertext).unwrap_or(0);
            let first_header = self.first_header_missing > 0;
            self.first_header_missing = self.first_header_missing.saturating_sub(read);
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(error) => {
                    log::debug!("TLS: {error}");
                    return Err(TlsFailure::of(&error, first_header));
                }
            };
            let available = state.plaintext_bytes_to_read();
            if available > 0 {
                let start = plaintext.len();
                plaintext.resize(start + available, 0);
                let got = self
                    .conn
                    .reader()
                    .read(&mut plaintext[start..])
                    .unwrap_or(0);
                plaintext.truncate(start + got);
            }
            deciphered.peer_closed |= state.peer_has_closed();
            if read == 0 {
                break;
            }
        }
        Ok(deciphered)
    }

    /// Hands `plaintext` to rustls to seal; returns how many bytes it took: all of them once
    /// the handshake is done, what fits its buffer before.
    pub fn seal(&mut self, plaintext: &[IoSlice<'_>]) -> usize {
        self.conn.writer().write_vectored(plaintext).unwrap_or(0)
    }

    /// Whether records wait to be written out.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Appends every record rustls has to send (handshake messages, alerts, sealed data).
    pub fn write_records(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            // Writing into a Vec cannot fail.
            if self.conn.write_tls(out).unwrap_or(0) == 0 {
                break;
            }
        }
    }

    /// Queues close_notify, so the peer knows the end is deliberate.
    pub fn close_notify(&mut self) {
        self.conn.send_close_notify();
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether every record received so far is whole: rustls holds no part of one.
    pub fn at_record_boundary(&self) -> bool {
        self.records.at_boundary()
    }

    pub fn negotiated_suite(&self) -> Option<SupportedCipherSuite> {
        self.conn.negotiated_cipher_suite()
    }

    /// The version and traffic keys, to hand to the kernel; the session is gone with them.
    /// Needs `enable_secret_extraction`, a finished handshake and no records left to send.
    pub fn into_secrets(self) -> Result<(ProtocolVersion, ExtractedSecrets), rustls::Error> {
        let version = self
            .conn
            .protocol_version()
            .ok_or(rustls::Error::HandshakeNotComplete)?;
        Ok((version, self.conn.dangerous_extract_secrets()?))
    }

    /// The identity of the client's certificate, once the handshake verified one.
    pub fn client_identity(&self) -> Option<String> {
        let end_entity = self.conn.peer_certificates()?.first()?;
        super::certificate_identity(end_entity)
    }
}

/// Follows the record headers of the ciphertext received, to tell whether it ends between two
/// records. The kernel decrypts from the first byte still in the socket, so keys may go to it
/// only then: the start of a record left in rustls would be lost.
#[derive(Debug, Clone, Copy, Default)]
struct RecordBoundary {
    /// Bytes of the next record's 5-byte header seen so far (type, version, length).
    header: [u8; 5],
    header_len: usize,
    /// Bytes of the current record's body still to come.
    body_left: usize,
}

impl RecordBoundary {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let skipped = self.body_left.min(bytes.len());
                self.body_left -= skipped;
                bytes = &bytes[skipped..];
                continue;
            }
            let taken = (self.header.len() - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + taken].copy_from_slice(&bytes[..taken]);
            self.header_len += taken;
            bytes = &bytes[taken..];
            if self.header_len == self.header.len() {
                self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                self.header_len = 0;
            }
        }
    }

    fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.body_left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::RecordBoundary;

    #[test]
    fn record_boundaries_across_chunks() {
        // A 3-byte record, an empty one, then a 256-byte one.
        let bytes = [
            &[0x17, 3, 3, 0, 3][..],
            &[1, 2, 3],
            &[0x15, 3, 3, 0, 0],
            &[0x17, 3, 3, 1, 0],
            &[0; 256],
        ]
        .concat();
        for split in 0..bytes.len() {
            let mut boundary = RecordBoundary::default();
            boundary.feed(&bytes[..split]);
            let between = [0, 8, 13].contains(&split);
            assert_eq!(boundary.at_boundary(), between, "split at {split}");
            boundary.feed(&bytes[split..]);
            assert!(boundary.at_boundary(), "split at {split}");
        }
    }
}

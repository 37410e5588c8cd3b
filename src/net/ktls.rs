//! Kernel TLS (kTLS): once rustls has finished a handshake, the connection's traffic keys go to
//! the kernel, which from then on encrypts what the socket sends and decrypts what it
//! receives. The shard keeps sending the shared encoded bytes with plain io_uring sends, so
//! encode-once survives TLS.
//!
//! - [`probe`], once at start-up: does the kernel attach the `tls` upper-layer protocol, and
//!   for which [`Suite`]s does it take keys? Connections with another suite stay in user space.
//! - [`crypto_info`], pure: one direction of rustls's extracted secrets → the bytes of the
//!   kernel's `struct tls12_crypto_info_*`.
//! - [`hand_to_kernel`]: `TCP_ULP` = `"tls"`, then `TLS_TX`, then `TLS_RX`.
//! - [`send_close_notify`] and [`read_control_record`]: records other than application data,
//!   which plain sends and receives cannot carry (a plain receive fails with `EIO` on one).
//!
//! When the keys may be handed over, and what is left to rustls, is `io.rs`'s business; see
//! `docs/ktls.md`. Layouts and numbers: the Linux uapi header `include/uapi/linux/tls.h`.
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use libc::c_int;
use rustls::{
    CipherSuite, ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion, SupportedCipherSuite,
};
use zeroize::Zeroize;

/// `TCP_ULP`: attach an upper-layer protocol, by name, to an established TCP socket.
const TCP_ULP: c_int = 31;
/// `SOL_TLS`: the level of the options and control messages below.
const SOL_TLS: c_int = 282;
const TLS_TX: c_int = 1;
const TLS_RX: c_int = 2;
/// Control message of `sendmsg`: the type of the record it sends.
const TLS_SET_RECORD_TYPE: c_int = 1;
/// Control message of `recvmsg`: the type of the record it received.
const TLS_GET_RECORD_TYPE: c_int = 2;

/// Record content types (RFC 8446 §5.1).
const RECORD_ALERT: u8 = 21;
const RECORD_HANDSHAKE: u8 = 22;

/// The AEAD nonce of every suite here: 12 bytes (RFC 8446 §5.3, RFC 5288 §3).
const NONCE_LEN: usize = 12;
/// The largest `tls12_crypto_info_*` here (AES-256-GCM and ChaCha20-Poly1305).
const CRYPTO_INFO_BYTES_MAX: usize = 56;

/// A TLS version the kernel distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Tls12,
    Tls13,
}

/// A record cipher the kernel interface here covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Cipher {
    /// `TLS_CIPHER_*`.
    const fn kernel(self) -> u16 {
        match self {
            Cipher::Aes128Gcm => 51,
            Cipher::Aes256Gcm => 52,
            Cipher::Chacha20Poly1305 => 54,
        }
    }

    const fn key_len(self) -> usize {
        match self {
            Cipher::Aes128Gcm => 16,
            Cipher::Aes256Gcm | Cipher::Chacha20Poly1305 => 32,
        }
    }
}

/// A version and a cipher: what decides whether the kernel takes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    pub version: Version,
    pub cipher: Cipher,
}

impl Suite {
    /// Every suite the kernel interface here covers, in the order [`probe`] tries them.
    const ALL: [Suite; 6] = [
        Suite::new(Version::Tls13, Cipher::Aes128Gcm),
        Suite::new(Version::Tls13, Cipher::Aes256Gcm),
        Suite::new(Version::Tls13, Cipher::Chacha20Poly1305),
        Suite::new(Version::Tls12, Cipher::Aes128Gcm),
        Suite::new(Version::Tls12, Cipher::Aes256Gcm),
        Suite::new(Version::Tls12, Cipher::Chacha20Poly1305),
    ];

    pub const fn new(version: Version, cipher: Cipher) -> Suite {
        Suite { version, cipher }
    }

    /// The suite of a rustls connection, if the kernel interface here covers it.
    pub fn of(suite: SupportedCipherSuite) -> Option<Suite> {
        use CipherSuite as S;
        let (version, cipher) = match suite.suite() {
            S::TLS13_AES_128_GCM_SHA256 => (Version::Tls13, Cipher::Aes128Gcm),
            S::TLS13_AES_256_GCM_SHA384 => (Version::Tls13, Cipher::Aes256Gcm),
            S::TLS13_CHACHA20_POLY1305_SHA256 => (Version::Tls13, Cipher::Chacha20Poly1305),
            S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => (Version::Tls12, Cipher::Aes128Gcm),
            S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => (Version::Tls12, Cipher::Aes256Gcm),
            S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => {
                (Version::Tls12, Cipher::Chacha20Poly1305)
            }
            _ => return None,
        };
        Some(Suite { version, cipher })
    }

    fn bit(self) -> u8 {
        let index = Suite::ALL
            .iter()
            .position(|&suite| suite == self)
            .expect("ALL lists every suite");
        1 << index
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = match self.version {
            Version::Tls12 => "TLS 1.2",
            Version::Tls13 => "TLS 1.3",
        };
        let cipher = match self.cipher {
            Cipher::Aes128Gcm => "AES-128-GCM",
            Cipher::Aes256Gcm => "AES-256-GCM",
            Cipher::Chacha20Poly1305 => "CHACHA20-POLY1305",
        };
        write!(f, "{version} {cipher}")
    }
}

/// Which direction of a connection a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Transmit,
    Receive,
}

/// The bytes of one `struct tls12_crypto_info_*`, as `setsockopt(SOL_TLS, TLS_TX or TLS_RX)`
/// reads them: `version` and `cipher_type` (two `__u16` in host byte order), then `iv`, `key`,
/// `salt` and `rec_seq`, all byte arrays, so the C struct has no padding. Wiped when dropped.
pub struct CryptoInfo {
    bytes: [u8; CRYPTO_INFO_BYTES_MAX],
    len: usize,
}

impl CryptoInfo {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn push(&mut self, part: &[u8]) {
        self.bytes[self.len..self.len + part.len()].copy_from_slice(part);
        self.len += part.len();
    }

    /// The struct for one direction of a connection with `suite`, from the AEAD key, the
    /// 12-byte IV rustls gives for it, and the sequence number of the next record (`rec_seq`,
    /// big-endian, as the kernel counts it and puts it in the additional data).
    ///
    /// Where the IV goes, per the kernel's nonce construction:
    /// - AES-GCM, TLS 1.3: nonce = `salt || iv`, `rec_seq` XORed into its last 8 bytes (RFC
    ///   8446 §5.3). So `salt` = IV[0..4], `iv` = IV[4..12].
    /// - AES-GCM, TLS 1.2: nonce = `salt || explicit`, the explicit 8 bytes sent in front of
    ///   each record (RFC 5288 §3); `salt` = IV[0..4]. Receiving, the kernel reads each
    ///   record's explicit part and ignores `iv`. Sending, it sends `iv` first and adds one
    ///   per record, so `iv` must be a value rustls never used: [`tls12_first_explicit_nonce`].
    /// - ChaCha20-Poly1305: no salt, `iv` is the whole IV (RFC 7905 §2).
    fn new(
        suite: Suite,
        direction: Direction,
        key: &[u8],
        iv: &[u8; NONCE_LEN],
        seq: u64,
    ) -> Result<CryptoInfo, KtlsError> {
        if key.len() != suite.cipher.key_len() {
            return Err(KtlsError::Unsupported);
        }
        let mut info = CryptoInfo {
            bytes: [0; CRYPTO_INFO_BYTES_MAX],
            len: 0,
        };
        let version: u16 = match suite.version {
            Version::Tls12 => 0x0303,
            Version::Tls13 => 0x0304,
        };
        info.push(&version.to_ne_bytes());
        info.push(&suite.cipher.kernel().to_ne_bytes());
        match suite.cipher {
            Cipher::Chacha20Poly1305 => {
                info.push(iv);
                info.push(key);
            }
            Cipher::Aes128Gcm | Cipher::Aes256Gcm => {
                let (salt, explicit) = iv.split_at(4);
                let mut explicit = u64::from_be_bytes(explicit.try_into().expect("8 bytes"));
                if suite.version == Version::Tls12 && direction == Direction::Transmit {
                    explicit = tls12_first_explicit_nonce(explicit, seq);
                }
                info.push(&explicit.to_be_bytes());
                info.push(key);
                info.push(salt);
            }
        }
        info.push(&seq.to_be_bytes());
        Ok(info)
    }
}

impl Drop for CryptoInfo {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

/// The explicit nonce of the first TLS 1.2 AES-GCM record the kernel sends, given the 8
/// explicit bytes of rustls's IV (`e`) and how many records rustls sent under this key.
///
/// rustls sent record `s` with the explicit nonce `e XOR s`; the kernel sends its `iv`, then
/// `iv + 1`, .... Starting at `e` would repeat the nonce of the handshake's Finished under the
/// same key, which breaks AES-GCM. Every `e XOR s` with `s < sent` lies in the aligned block
/// of `e` as wide as the smallest power of two above `sent - 1`: start just past it. The peer
/// reads the explicit nonce off each record, so any fresh value is valid.
pub fn tls12_first_explicit_nonce(e: u64, sent: u64) -> u64 {
    if sent == 0 {
        return e;
    }
    let block = u64::MAX
        .checked_shr((sent - 1).leading_zeros())
        .unwrap_or(0);
    (e | block).wrapping_add(1)
}

/// The kernel's struct for one half (`tx` or `rx`) of rustls's [`ExtractedSecrets`].
pub fn crypto_info(
    version: ProtocolVersion,
    direction: Direction,
    secrets: &ConnectionTrafficSecrets,
    seq: u64,
) -> Result<CryptoInfo, KtlsError> {
    let version = match version {
        ProtocolVersion::TLSv1_2 => Version::Tls12,
        ProtocolVersion::TLSv1_3 => Version::Tls13,
        _ => return Err(KtlsError::Unsupported),
    };
    let (cipher, key, iv) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Cipher::Aes128Gcm, key, iv),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Cipher::Aes256Gcm, key, iv),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            (Cipher::Chacha20Poly1305, key, iv)
        }
        _ => return Err(KtlsError::Unsupported),
    };
    let iv: &[u8; NONCE_LEN] = iv.as_ref().try_into().map_err(|_| KtlsError::Unsupported)?;
    CryptoInfo::new(
        Suite::new(version, cipher),
        direction,
        key.as_ref(),
        iv,
        seq,
    )
}

/// Why a connection's keys did not reach the kernel.
#[derive(Debug)]
pub enum KtlsError {
    /// A version, cipher or key length the kernel interface here does not cover.
    Unsupported,
    /// A socket option failed; the socket may be half configured.
    SetSockOpt { step: Step, source: io::Error },
}

impl fmt::Display for KtlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KtlsError::Unsupported => f.write_str("a TLS suite kernel TLS here does not cover"),
            KtlsError::SetSockOpt { step, source } => {
                write!(f, "{step}: {}", explain(*step, source))
            }
        }
    }
}

impl std::error::Error for KtlsError {}

/// The socket options of a hand-over, in the order they are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    AttachUlp,
    Transmit,
    Receive,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::AttachUlp => "setsockopt(SOL_TCP, TCP_ULP, \"tls\")",
            Step::Transmit => "setsockopt(SOL_TLS, TLS_TX)",
            Step::Receive => "setsockopt(SOL_TLS, TLS_RX)",
        })
    }
}

/// What an errno of `step` means to an operator.
fn explain(step: Step, error: &io::Error) -> String {
    let meaning = match (step, error.raw_os_error().unwrap_or(0)) {
        (Step::AttachUlp, libc::ENOENT) => {
            "the kernel has no `tls` upper-layer protocol: built without CONFIG_TLS, or the \
             `tls` module is not loaded (`modprobe tls` as root)"
        }
        (Step::AttachUlp, libc::ENOPROTOOPT) => "the kernel is older than Linux 4.13",
        (Step::AttachUlp, libc::EPERM | libc::EACCES) => "refused by a seccomp filter or LSM",
        (_, libc::EINVAL | libc::ENOENT | libc::ENOPKG) => {
            "the kernel does not take this TLS version and cipher"
        }
        _ => return error.to_string(),
    };
    format!("{meaning} ({error})")
}

/// Sets a socket option; the tests put a recorder in its place.
trait SetSockOpt {
    fn set(&mut self, level: c_int, name: c_int, value: &[u8]) -> io::Result<()>;
}

/// setsockopt(2) on a socket.
struct Socket<'fd>(BorrowedFd<'fd>);

impl SetSockOpt for Socket<'_> {
    fn set(&mut self, level: c_int, name: c_int, value: &[u8]) -> io::Result<()> {
        let len = libc::socklen_t::try_from(value.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: the pointer and length describe `value`, borrowed for the call; the kernel
        // copies the option before it returns.
        let rc = unsafe {
            libc::setsockopt(self.0.as_raw_fd(), level, name, value.as_ptr().cast(), len)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The hand-over's socket options: the upper-layer protocol first (the `SOL_TLS` options
/// exist only once it is attached), then transmit, then receive; stops at the first failure.
fn install(
    socket: &mut impl SetSockOpt,
    tx: &CryptoInfo,
    rx: &CryptoInfo,
) -> Result<(), KtlsError> {
    let steps: [(Step, c_int, c_int, &[u8]); 3] = [
        (Step::AttachUlp, libc::SOL_TCP, TCP_ULP, b"tls"),
        (Step::Transmit, SOL_TLS, TLS_TX, tx.as_bytes()),
        (Step::Receive, SOL_TLS, TLS_RX, rx.as_bytes()),
    ];
    for (step, level, name, value) in steps {
        socket
            .set(level, name, value)
            .map_err(|source| KtlsError::SetSockOpt { step, source })?;
    }
    Ok(())
}

/// Gives a connection's traffic keys to the kernel: `version` and `secrets` from rustls
/// (`protocol_version()`, `dangerous_extract_secrets()`). The caller makes sure nothing of
/// the connection is in flight and rustls holds no part of a record (`io.rs`). Afterwards
/// plain sends and receives on `fd` carry plaintext; on error the connection cannot go on.
pub fn hand_to_kernel(
    fd: BorrowedFd<'_>,
    version: ProtocolVersion,
    secrets: ExtractedSecrets,
) -> Result<(), KtlsError> {
    let (tx_seq, tx) = &secrets.tx;
    let (rx_seq, rx) = &secrets.rx;
    let tx = crypto_info(version, Direction::Transmit, tx, *tx_seq)?;
    let rx = crypto_info(version, Direction::Receive, rx, *rx_seq)?;
    install(&mut Socket(fd), &tx, &rx)
}

/// One control message carrying one byte: `CMSG_SPACE(1)` bytes, the data at `CMSG_DATA`
/// (right after the header, whose size is already aligned), then padding.
#[repr(C)]
struct RecordTypeCmsg {
    header: libc::cmsghdr,
    record_type: u8,
    padding: [u8; 7],
}

/// Sends the alert `close_notify` on a socket whose keys the kernel has, without waiting:
/// a `sendmsg` whose `TLS_SET_RECORD_TYPE` control message makes the record an alert.
pub fn send_close_notify(fd: BorrowedFd<'_>) -> io::Result<()> {
    // Level warning (1), description close_notify (0).
    let alert = [1u8, 0];
    let mut control = RecordTypeCmsg {
        header: libc::cmsghdr {
            cmsg_len: size_of::<libc::cmsghdr>() + 1,
            cmsg_level: SOL_TLS,
            cmsg_type: TLS_SET_RECORD_TYPE,
        },
        record_type: RECORD_ALERT,
        padding: [0; 7],
    };
    let mut iov = libc::iovec {
        iov_base: alert.as_ptr() as *mut libc::c_void,
        iov_len: alert.len(),
    };
    let msg = libc::msghdr {
        msg_name: std::ptr::null_mut(),
        msg_namelen: 0,
        msg_iov: &mut iov,
        msg_iovlen: 1,
        msg_control: (&mut control as *mut RecordTypeCmsg).cast(),
        msg_controllen: size_of::<RecordTypeCmsg>(),
        msg_flags: 0,
    };
    // SAFETY: `msg` points at `iov`, `alert` and `control`, alive for the call, which only
    // reads them; `control` is one well-formed control message of `msg_controllen` bytes.
    let sent = unsafe {
        libc::sendmsg(
            fd.as_raw_fd(),
            &msg,
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A received record other than application data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRecord {
    /// An alert (RFC 8446 §6): `close_notify` is description 0.
    Alert { description: u8 },
    /// A handshake message after the handshake: a TLS 1.3 `KeyUpdate`, which the kernel can
    /// follow only with keys rustls no longer derives once it has handed them over.
    Handshake,
    /// Another content type.
    Other(u8),
}

/// Reads the record a plain receive refused with `EIO`: the kernel keeps it at the head of the
/// socket until a `recvmsg` with room for its `TLS_GET_RECORD_TYPE` control message takes it.
/// Does not wait.
pub fn read_control_record(fd: BorrowedFd<'_>) -> io::Result<ControlRecord> {
    // An alert is 2 bytes; of any other record only the type matters.
    let mut data = [0u8; 16];
    let mut control = RecordTypeCmsg {
        header: libc::cmsghdr {
            cmsg_len: 0,
            cmsg_level: 0,
            cmsg_type: 0,
        },
        record_type: 0,
        padding: [0; 7],
    };
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut msg = libc::msghdr {
        msg_name: std::ptr::null_mut(),
        msg_namelen: 0,
        msg_iov: &mut iov,
        msg_iovlen: 1,
        msg_control: (&mut control as *mut RecordTypeCmsg).cast(),
        msg_controllen: size_of::<RecordTypeCmsg>(),
        msg_flags: 0,
    };
    // SAFETY: `msg` points at `iov`, `data` and `control`, alive and writable for the call;
    // the kernel writes at most `iov_len` and `msg_controllen` bytes into them.
    let received = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if received < 0 {
        return Err(io::Error::last_os_error());
    }
    let typed = msg.msg_controllen > size_of::<libc::cmsghdr>()
        && control.header.cmsg_level == SOL_TLS
        && control.header.cmsg_type == TLS_GET_RECORD_TYPE;
    if !typed {
        return Err(io::Error::other("a record without its TLS record type"));
    }
    Ok(match control.record_type {
        RECORD_ALERT if received >= 2 => ControlRecord::Alert {
            description: data[1],
        },
        RECORD_HANDSHAKE => ControlRecord::Handshake,
        other => ControlRecord::Other(other),
    })
}

/// The suites the kernel took keys for when [`probe`] tried them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KtlsSupport {
    suites: u8,
}

impl KtlsSupport {
    pub fn supports(&self, suite: Suite) -> bool {
        self.suites & suite.bit() != 0
    }

    fn insert(&mut self, suite: Suite) {
        self.suites |= suite.bit();
    }
}

impl fmt::Display for KtlsSupport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suites = Suite::ALL.into_iter().filter(|&suite| self.supports(suite));
        for (index, suite) in suites.enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{suite}")?;
        }
        Ok(())
    }
}

/// Why kernel TLS is not used, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KtlsUnavailable(pub String);

impl fmt::Display for KtlsUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How long the probe waits for a loopback connection; the kernel makes it at once, so this
/// only bounds a broken loopback.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Asks the kernel, once at start-up, whether it takes TLS keys and for which suites: per
/// suite, a loopback TCP connection gets the `tls` upper-layer protocol and all-zero keys of
/// that suite for both directions. Nothing is ever sent on it; every socket is closed before
/// this returns.
pub fn probe() -> Result<KtlsSupport, KtlsUnavailable> {
    let unavailable = |what: &str, error: io::Error| KtlsUnavailable(format!("{what}: {error}"));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| unavailable("the probe cannot listen on loopback", e))?;
    let address = listener
        .local_addr()
        .map_err(|e| unavailable("the probe's listener has no address", e))?;
    let mut support = KtlsSupport::default();
    let mut refused = Vec::new();
    for suite in Suite::ALL {
        let stream = TcpStream::connect_timeout(&address, PROBE_CONNECT_TIMEOUT)
            .map_err(|e| unavailable("the probe cannot connect over loopback", e))?;
        let zeroes = CryptoInfo::new(
            suite,
            Direction::Receive,
            &[0; 32][..suite.cipher.key_len()],
            &[0; NONCE_LEN],
            0,
        )
        .expect("the key length is the cipher's");
        match install(&mut Socket(stream.as_fd()), &zeroes, &zeroes) {
            Ok(()) => support.insert(suite),
            Err(KtlsError::SetSockOpt {
                step: Step::AttachUlp,
                source,
            }) => {
                let why = explain(Step::AttachUlp, &source);
                return Err(KtlsUnavailable(format!("{}: {why}", Step::AttachUlp)));
            }
            Err(error) => refused.push(format!("{suite}: {error}")),
        }
    }
    if support.suites == 0 {
        return Err(KtlsUnavailable(format!(
            "the kernel took no keys: {}",
            refused.join("; ")
        )));
    }
    for refusal in &refused {
        log::info!("kernel TLS: {refusal}; such connections stay in user-space TLS");
    }
    Ok(support)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use ring::aead;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, ring as provider};
    use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
    use rustls::server::{ClientHello, ResolvesServerCert};
    use rustls::sign::CertifiedKey;
    use rustls::{
        ClientConfig, ClientConnection, ConnectionCommon, DigitallySignedStruct, ServerConfig,
        ServerConnection, SignatureScheme,
    };

    use super::*;

    // --- The structs, byte for byte, against the layouts of include/uapi/linux/tls.h. -------

    const IV: [u8; 12] = [
        0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab,
    ];
    const SEQ: u64 = 0x0102_0304_0506_0708;
    const REC_SEQ: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

    fn key(len: usize) -> Vec<u8> {
        (0..len as u8).map(|i| 0x10 + i).collect()
    }

    fn head(version: u16, cipher: u16) -> Vec<u8> {
        [version.to_ne_bytes(), cipher.to_ne_bytes()].concat()
    }

    fn built(version: Version, cipher: Cipher, direction: Direction, seq: u64) -> Vec<u8> {
        let suite = Suite::new(version, cipher);
        let info = CryptoInfo::new(suite, direction, &key(cipher.key_len()), &IV, seq);
        info.expect("valid").as_bytes().to_vec()
    }

    #[test]
    fn each_struct_has_the_kernels_layout() {
        use Direction::{Receive, Transmit};
        // (version, cipher, direction, struct = head, iv, key, salt, rec_seq, size)
        let cases: [(Version, Cipher, Direction, Vec<u8>, usize); 6] = [
            (
                Version::Tls13,
                Cipher::Aes128Gcm,
                Transmit,
                [
                    &head(0x0304, 51)[..],
                    &IV[4..],
                    &key(16),
                    &IV[..4],
                    &REC_SEQ,
                ]
                .concat(),
                40,
            ),
            (
                Version::Tls13,
                Cipher::Aes256Gcm,
                Receive,
                [
                    &head(0x0304, 52)[..],
                    &IV[4..],
                    &key(32),
                    &IV[..4],
                    &REC_SEQ,
                ]
                .concat(),
                56,
            ),
            (
                Version::Tls13,
                Cipher::Chacha20Poly1305,
                Transmit,
                [&head(0x0304, 54)[..], &IV, &key(32), &REC_SEQ].concat(),
                56,
            ),
            (
                Version::Tls12,
                Cipher::Chacha20Poly1305,
                Receive,
                [&head(0x0303, 54)[..], &IV, &key(32), &REC_SEQ].concat(),
                56,
            ),
            // Receiving, TLS 1.2 AES-GCM keeps rustls's explicit part, which the kernel ignores.
            (
                Version::Tls12,
                Cipher::Aes128Gcm,
                Receive,
                [
                    &head(0x0303, 51)[..],
                    &IV[4..],
                    &key(16),
                    &IV[..4],
                    &REC_SEQ,
                ]
                .concat(),
                40,
            ),
            // Sending, it starts past every explicit nonce rustls used: e ^ s for s below
            // 0x0102030405060708 stays within e's aligned block of 2^57.
            (
                Version::Tls12,
                Cipher::Aes256Gcm,
                Transmit,
                [
                    &head(0x0303, 52)[..],
                    &[0xa6, 0, 0, 0, 0, 0, 0, 0],
                    &key(32),
                    &IV[..4],
                ]
                .concat()
                .into_iter()
                .chain(REC_SEQ)
                .collect(),
                56,
            ),
        ];
        for (version, cipher, direction, expected, size) in cases {
            let bytes = built(version, cipher, direction, SEQ);
            assert_eq!(bytes.len(), size, "{version:?} {cipher:?}");
            assert_eq!(bytes, expected, "{version:?} {cipher:?} {direction:?}");
        }
        let wrong = CryptoInfo::new(
            Suite::new(Version::Tls13, Cipher::Aes128Gcm),
            Direction::Transmit,
            &[0; 32],
            &IV,
            0,
        );
        assert!(matches!(wrong, Err(KtlsError::Unsupported)));
    }

    #[test]
    fn the_kernel_never_repeats_an_explicit_nonce_rustls_sent() {
        for e in [0, 1, 0xa4a5_a6a7_a8a9_aaab, u64::MAX - 5, u64::MAX] {
            for sent in 0..=260u64 {
                let used: std::collections::HashSet<u64> = (0..sent).map(|s| e ^ s).collect();
                let first = tls12_first_explicit_nonce(e, sent);
                for k in 0..600 {
                    let nonce = first.wrapping_add(k);
                    assert!(!used.contains(&nonce), "e {e:#x}, {sent} sent, record {k}");
                }
            }
        }
        assert_eq!(tls12_first_explicit_nonce(7, 1), 8);
    }

    #[test]
    fn every_ring_suite_has_a_kernel_suite_and_support_is_a_set() {
        for suite in provider::ALL_CIPHER_SUITES {
            let kernel = Suite::of(*suite).unwrap_or_else(|| panic!("{:?}", suite.suite()));
            let tls13 = matches!(suite, SupportedCipherSuite::Tls13(_));
            assert_eq!(
                kernel.version == Version::Tls13,
                tls13,
                "{:?}",
                suite.suite()
            );
        }
        let mut support = KtlsSupport::default();
        support.insert(Suite::new(Version::Tls12, Cipher::Aes256Gcm));
        support.insert(Suite::new(Version::Tls13, Cipher::Aes128Gcm));
        assert!(!support.supports(Suite::new(Version::Tls13, Cipher::Aes256Gcm)));
        assert_eq!(
            support.to_string(),
            "TLS 1.3 AES-128-GCM, TLS 1.2 AES-256-GCM"
        );
    }

    #[test]
    fn the_record_type_control_message_has_the_libc_macros_layout() {
        // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes.
        let (space, len) = unsafe { (libc::CMSG_SPACE(1), libc::CMSG_LEN(1)) };
        assert_eq!(size_of::<RecordTypeCmsg>(), space as usize);
        assert_eq!(size_of::<libc::cmsghdr>() + 1, len as usize);
        assert_eq!(
            std::mem::offset_of!(RecordTypeCmsg, record_type),
            len as usize - 1
        );
    }

    // --- The socket options, in order. -----------------------------------------------------

    /// Records each option set, and fails the `fail_at`th with `errno`.
    #[derive(Default)]
    struct Recorder {
        set: Vec<(c_int, c_int, Vec<u8>)>,
        fail_at: Option<(usize, i32)>,
    }

    impl SetSockOpt for Recorder {
        fn set(&mut self, level: c_int, name: c_int, value: &[u8]) -> io::Result<()> {
            if self
                .fail_at
                .is_some_and(|(index, _)| index == self.set.len())
            {
                let errno = self.fail_at.map_or(0, |(_, errno)| errno);
                return Err(io::Error::from_raw_os_error(errno));
            }
            self.set.push((level, name, value.to_vec()));
            Ok(())
        }
    }

    #[test]
    fn the_ulp_then_transmit_then_receive_and_a_failure_stops_there() {
        let suite = Suite::new(Version::Tls13, Cipher::Aes128Gcm);
        let tx = CryptoInfo::new(suite, Direction::Transmit, &key(16), &IV, 3).expect("valid");
        let rx = CryptoInfo::new(suite, Direction::Receive, &[0x55; 16], &[6; 12], 4);
        let rx = rx.expect("valid");
        let mut recorder = Recorder::default();
        install(&mut recorder, &tx, &rx).expect("all set");
        assert_eq!(
            recorder.set,
            vec![
                (6, 31, b"tls".to_vec()),         // SOL_TCP, TCP_ULP
                (282, 1, tx.as_bytes().to_vec()), // SOL_TLS, TLS_TX
                (282, 2, rx.as_bytes().to_vec()), // SOL_TLS, TLS_RX
            ]
        );
        assert_eq!((TCP_ULP, SOL_TLS), (libc::TCP_ULP, libc::SOL_TLS));

        for (index, step) in [Step::AttachUlp, Step::Transmit, Step::Receive]
            .into_iter()
            .enumerate()
        {
            let mut recorder = Recorder {
                fail_at: Some((index, libc::EINVAL)),
                ..Recorder::default()
            };
            let error = install(&mut recorder, &tx, &rx).expect_err("fails");
            assert_eq!(recorder.set.len(), index);
            assert!(
                matches!(error, KtlsError::SetSockOpt { step: failed, .. } if failed == step),
                "{error:?}"
            );
        }
        let mut recorder = Recorder {
            fail_at: Some((0, libc::ENOENT)),
            ..Recorder::default()
        };
        let error = install(&mut recorder, &tx, &rx).expect_err("fails");
        assert!(error.to_string().contains("CONFIG_TLS"), "{error}");
    }

    #[test]
    fn the_probe_answers_with_suites_or_a_reason() {
        match probe() {
            Ok(support) => {
                assert_ne!(support, KtlsSupport::default());
                eprintln!("kernel TLS available for {support}");
            }
            Err(why) => {
                assert!(!why.0.trim().is_empty());
                eprintln!("kernel TLS unavailable: {why}");
            }
        }
    }

    // --- Key extraction: a model of the kernel's record layer against rustls. ---------------

    /// What the kernel does with a `tls12_crypto_info_*`, read back from its bytes by the
    /// header's offsets: the nonce and additional data of `net/tls`, one application-data
    /// record at a time. A byte in the wrong field, and one side fails to decrypt.
    struct KernelModel {
        tls13: bool,
        explicit_nonce: bool,
        key: aead::LessSafeKey,
        salt: Vec<u8>,
        iv: Vec<u8>,
        rec_seq: [u8; 8],
    }

    impl KernelModel {
        fn from_bytes(bytes: &[u8]) -> KernelModel {
            let version = u16::from_ne_bytes([bytes[0], bytes[1]]);
            let cipher = u16::from_ne_bytes([bytes[2], bytes[3]]);
            let (iv_len, key_len, salt_len, algorithm) = match cipher {
                51 => (8, 16, 4, &aead::AES_128_GCM),
                52 => (8, 32, 4, &aead::AES_256_GCM),
                54 => (12, 32, 0, &aead::CHACHA20_POLY1305),
                other => panic!("cipher {other}"),
            };
            assert_eq!(bytes.len(), 4 + iv_len + key_len + salt_len + 8);
            let (iv, rest) = bytes[4..].split_at(iv_len);
            let (key, rest) = rest.split_at(key_len);
            let (salt, rec_seq) = rest.split_at(salt_len);
            KernelModel {
                tls13: version == 0x0304,
                explicit_nonce: version == 0x0303 && cipher != 54,
                key: aead::LessSafeKey::new(aead::UnboundKey::new(algorithm, key).unwrap()),
                salt: salt.to_vec(),
                iv: iv.to_vec(),
                rec_seq: rec_seq.try_into().unwrap(),
            }
        }

        fn nonce(&self, explicit: Option<&[u8]>) -> aead::Nonce {
            let mut nonce = [self.salt.as_slice(), explicit.unwrap_or(&self.iv)].concat();
            if !self.explicit_nonce {
                for (byte, seq) in nonce[4..].iter_mut().zip(self.rec_seq) {
                    *byte ^= seq;
                }
            }
            aead::Nonce::try_assume_unique_for_key(&nonce).unwrap()
        }

        fn tls12_aad(&self, plaintext_len: usize) -> aead::Aad<Vec<u8>> {
            let len = (plaintext_len as u16).to_be_bytes();
            aead::Aad::from([&self.rec_seq[..], &[0x17, 3, 3], &len].concat())
        }

        fn next_record(&mut self) {
            self.rec_seq = (u64::from_be_bytes(self.rec_seq) + 1).to_be_bytes();
            if self.explicit_nonce {
                let iv = u64::from_be_bytes(self.iv[..].try_into().unwrap()) + 1;
                self.iv = iv.to_be_bytes().to_vec();
            }
        }

        /// One application-data record of `plaintext`, as the kernel sends it.
        fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
            let mut body = plaintext.to_vec();
            let record = if self.tls13 {
                body.push(0x17); // the inner content type
                let header = header(body.len() + 16);
                let nonce = self.nonce(None);
                let aad = aead::Aad::from(header);
                self.key
                    .seal_in_place_append_tag(nonce, aad, &mut body)
                    .unwrap();
                [&header[..], &body].concat()
            } else {
                let explicit = if self.explicit_nonce {
                    self.iv.clone()
                } else {
                    Vec::new()
                };
                let header = header(explicit.len() + body.len() + 16);
                let nonce = self.nonce(self.explicit_nonce.then_some(&self.iv[..]));
                let aad = self.tls12_aad(body.len());
                self.key
                    .seal_in_place_append_tag(nonce, aad, &mut body)
                    .unwrap();
                [&header[..], &explicit, &body].concat()
            };
            self.next_record();
            record
        }

        /// The plaintext of one application-data record, as the kernel receives it.
        fn open(&mut self, record: &[u8]) -> Vec<u8> {
            assert_eq!(record[0], 0x17, "an application-data record");
            let mut body = record[5..].to_vec();
            let plaintext = if self.tls13 {
                let nonce = self.nonce(None);
                let aad = aead::Aad::from(&record[..5]);
                let inner = self.key.open_in_place(nonce, aad, &mut body).unwrap();
                let end = inner.iter().rposition(|&byte| byte != 0).unwrap();
                assert_eq!(inner[end], 0x17, "inner content type");
                inner[..end].to_vec()
            } else {
                let (explicit, mut ciphertext) = if self.explicit_nonce {
                    let ciphertext = body.split_off(8);
                    (Some(body), ciphertext)
                } else {
                    (None, body)
                };
                let nonce = self.nonce(explicit.as_deref());
                let aad = self.tls12_aad(ciphertext.len() - 16);
                let plaintext = self.key.open_in_place(nonce, aad, &mut ciphertext);
                plaintext.unwrap().to_vec()
            };
            self.next_record();
            plaintext
        }
    }

    fn header(len: usize) -> [u8; 5] {
        let len = (len as u16).to_be_bytes();
        [0x17, 3, 3, len[0], len[1]]
    }

    // A server with an Ed25519 key and a placeholder certificate, which the client accepts
    // without looking: only the record layer is under test.

    #[derive(Debug)]
    struct OneKey(Arc<CertifiedKey>);

    impl ResolvesServerCert for OneKey {
        fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    #[derive(Debug)]
    struct TrustAnything;

    impl ServerCertVerifier for TrustAnything {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }

        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }
    }

    /// A client and a server config that agree on `suite` only; the server hands out secrets.
    fn configs(suite: SupportedCipherSuite) -> (Arc<ClientConfig>, Arc<ServerConfig>) {
        let provider = Arc::new(CryptoProvider {
            cipher_suites: vec![suite],
            ..provider::default_provider()
        });
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pkcs8 = PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
        let key = provider::sign::any_eddsa_type(&pkcs8).unwrap();
        let certified = CertifiedKey::new(vec![CertificateDer::from(vec![0x30, 0x00])], key);
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[suite.version()])
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(OneKey(Arc::new(certified))));
        server.enable_secret_extraction = true;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[suite.version()])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(TrustAnything))
            .with_no_client_auth();
        (Arc::new(client), Arc::new(server))
    }

    /// Moves what `from` has to send into `to`, and lets `to` process it.
    fn transfer<A, B>(from: &mut ConnectionCommon<A>, to: &mut ConnectionCommon<B>) {
        let mut bytes = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut bytes).unwrap();
        }
        let mut unread = &bytes[..];
        while !unread.is_empty() {
            to.read_tls(&mut unread).unwrap();
            to.process_new_packets().unwrap();
        }
    }

    const SUITES: [SupportedCipherSuite; 6] = [
        provider::cipher_suite::TLS13_AES_128_GCM_SHA256,
        provider::cipher_suite::TLS13_AES_256_GCM_SHA384,
        provider::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ];

    #[test]
    fn extracted_keys_make_records_rustls_reads_and_read_records_rustls_makes() {
        for suite in SUITES {
            let (client_config, server_config) = configs(suite);
            let name = ServerName::try_from("fanfare.test").unwrap();
            let mut client = ClientConnection::new(client_config, name).unwrap();
            let mut server = ServerConnection::new(server_config).unwrap();
            for _ in 0..10 {
                transfer(&mut client, &mut server);
                transfer(&mut server, &mut client);
            }
            assert!(!client.is_handshaking() && !server.is_handshaking());
            let version = server.protocol_version().unwrap();
            let secrets = server.dangerous_extract_secrets().unwrap();
            // TLS 1.2: the Finished; TLS 1.3: the session tickets. rustls sent records under
            // the keys it hands over, so the kernel must go on from there.
            assert!(secrets.tx.0 > 0, "{suite:?}");
            let tx = crypto_info(version, Direction::Transmit, &secrets.tx.1, secrets.tx.0);
            let rx = crypto_info(version, Direction::Receive, &secrets.rx.1, secrets.rx.0);
            let mut kernel_tx = KernelModel::from_bytes(tx.unwrap().as_bytes());
            let mut kernel_rx = KernelModel::from_bytes(rx.unwrap().as_bytes());

            for message in [&b"from the kernel"[..], b"", &[0xab; 3000]] {
                let record = kernel_tx.seal(message);
                client.read_tls(&mut &record[..]).unwrap();
                client
                    .process_new_packets()
                    .unwrap_or_else(|error| panic!("{suite:?}: {error}"));
                let mut received = vec![0; message.len()];
                client.reader().read_exact(&mut received).unwrap();
                assert_eq!(received, message, "{suite:?}");
            }
            for message in [&b"from rustls"[..], &[0xcd; 5000]] {
                client.writer().write_all(message).unwrap();
                let mut record = Vec::new();
                client.write_tls(&mut record).unwrap();
                assert_eq!(kernel_rx.open(&record), message, "{suite:?}");
            }
        }
    }

    // --- The real kernel, where it has TLS (skipped, saying so, where it has not). -----------

    /// Over loopback: a rustls client, and a server that hands its keys to the kernel after
    /// the handshake, then writes and reads plaintext with plain system calls, sends
    /// close_notify and reads the client's as a control record.
    #[test]
    fn over_loopback_the_kernel_encrypts_and_decrypts() {
        let support = match probe() {
            Ok(support) => support,
            Err(why) => {
                eprintln!("skipped: kernel TLS is unavailable here: {why}");
                return;
            }
        };
        for suite in SUITES {
            let kernel_suite = Suite::of(suite).unwrap();
            if !support.supports(kernel_suite) {
                eprintln!("skipped {kernel_suite}: this kernel does not take it");
                continue;
            }
            loopback_round_trip(suite);
            eprintln!("{kernel_suite}: the kernel's records and rustls agree");
        }
    }

    fn loopback_round_trip(suite: SupportedCipherSuite) {
        let (client_config, server_config) = configs(suite);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let mut client_socket = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server_socket, _) = listener.accept().unwrap();
        for socket in [&client_socket, &server_socket] {
            let timeout = Some(Duration::from_secs(5));
            socket.set_read_timeout(timeout).unwrap();
            socket.set_write_timeout(timeout).unwrap();
        }

        let client = std::thread::spawn(move || {
            let name = ServerName::try_from("fanfare.test").unwrap();
            let mut tls = ClientConnection::new(client_config, name).unwrap();
            let mut stream = rustls::Stream::new(&mut tls, &mut client_socket);
            let mut received = [0; 15];
            stream.read_exact(&mut received).unwrap();
            assert_eq!(&received, b"from the kernel");
            stream.write_all(b"from rustls").unwrap();
            // The server's close_notify, then its FIN: a clean end, not a truncation.
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
            tls.send_close_notify();
            tls.complete_io(&mut client_socket).unwrap();
        });

        let mut tls = ServerConnection::new(server_config).unwrap();
        while tls.is_handshaking() {
            tls.complete_io(&mut server_socket).unwrap();
        }
        while tls.wants_write() {
            tls.write_tls(&mut server_socket).unwrap();
        }
        let version = tls.protocol_version().unwrap();
        let secrets = tls.dangerous_extract_secrets().unwrap();
        hand_to_kernel(server_socket.as_fd(), version, secrets).unwrap();

        server_socket.write_all(b"from the kernel").unwrap();
        let mut received = [0; 11];
        server_socket.read_exact(&mut received).unwrap();
        assert_eq!(&received, b"from rustls");
        send_close_notify(server_socket.as_fd()).unwrap();
        server_socket.shutdown(std::net::Shutdown::Write).unwrap();
        client.join().unwrap();
        // The client's close_notify: an alert, which a plain read refuses and leaves queued.
        let error = server_socket.read(&mut received).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
        let record = read_control_record(server_socket.as_fd()).unwrap();
        assert_eq!(record, ControlRecord::Alert { description: 0 });
    }
}

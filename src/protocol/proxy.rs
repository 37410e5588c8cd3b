//! The PROXY protocol header (HAProxy, "The PROXY protocol, Versions 1 & 2"): the line or block
//! a TCP proxy or load balancer puts before the first byte of a connection to say whose
//! connection it relays.
//!
//! [`parse`] reads it from the first bytes of a connection, version 1 (a line of text) or 2
//! (binary), told apart by their first byte. `Ok(None)` asks for more and consumes nothing;
//! `Ok(Some((header, consumed)))` leaves the bytes after `consumed` alone (they are the
//! connection's MQTT or HTTP). Whatever is wrong is refused from the first bytes that show it,
//! so a prefix of the bytes answers "need more" or what the whole does.
//!
//! Trust is the caller's: the spec (§5) forbids guessing whether a header is there, and a peer
//! that may send one can claim any address. A listener with the PROXY protocol on takes a
//! header only from a trusted proxy (`crate::config::TrustedProxies`), and refuses a
//! connection from anyone else whose first bytes [`looks_like_proxy_header`].
//!
//! Bounded: a header is at most [`PROXY_HEADER_BYTES_MAX`] bytes, a version 1 line at most 107
//! (§2.1). No allocation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Most bytes buffered for a header. A version 1 line is at most 107 bytes (§2.1). A version 2
/// header is 16 bytes, the addresses (36 for TCP over IPv6) and TLVs, which its 16-bit length
/// would let reach 65 551 bytes; what senders attach is far less: the TLS details a
/// terminating proxy passes on (ALPN, SNI up to 255 bytes, version, cipher, client
/// certificate's CN), a unique ID of at most 128 bytes (§2.2.5), a CRC32C and a cloud's
/// endpoint ID come to about 700 bytes. 2 KiB is thrice that and is what a connection's
/// pending bytes may hold before the header is judged; a longer header is refused
/// ([`ProxyError::TooLong`]) as soon as its length field is in.
pub const PROXY_HEADER_BYTES_MAX: usize = 2048;

/// The longest version 1 line, CRLF included: "PROXY UNKNOWN" with two IPv6 addresses and two
/// ports (§2.1). No CRLF within this many bytes is an error.
const V1_LINE_BYTES_MAX: usize = 107;

/// How a version 1 line starts (§2.1): "PROXY" and exactly one space.
const V1_START: &[u8] = b"PROXY ";

/// How a version 2 header starts (§2.2): chosen to be refused by HTTP, TLS, SMTP and others.
const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// The fixed part of a version 2 header: signature, version and command, family and
/// transport, length of the rest.
const V2_FIXED_BYTES: usize = 16;

/// The version 2 commands (§2.2, low nibble of the 13th byte).
const V2_LOCAL: u8 = 0x0;
const V2_PROXY: u8 = 0x1;

/// Version 2 families (high nibble of the 14th byte) up to AF_UNIX, transports (low nibble) up
/// to DGRAM; higher values "must be rejected as invalid by receivers" (§2.2).
const V2_FAMILY_MAX: u8 = 0x3;
const V2_TRANSPORT_MAX: u8 = 0x2;

/// The version 2 protocol bytes this server reads addresses from (§2.2): TCP over IPv4 and TCP
/// over IPv6, with their address blocks' lengths.
const V2_TCP4: u8 = 0x11;
const V2_TCP4_ADDRESS_BYTES: usize = 2 * 4 + 2 * 2;
const V2_TCP6: u8 = 0x21;
const V2_TCP6_ADDRESS_BYTES: usize = 2 * 16 + 2 * 2;

/// What a PROXY header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The proxy relays a connection from `source` to `destination`: the client is `source`.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The proxy speaks for itself (version 2 LOCAL, a health check) or could not tell
    /// (version 1 UNKNOWN, a version 2 family or transport other than TCP over IPv4 or IPv6):
    /// keep the connection's own address.
    Local,
}

impl ProxyHeader {
    /// The client's address, or `None` to keep the connection's own.
    pub const fn source(&self) -> Option<SocketAddr> {
        match self {
            ProxyHeader::Proxied { source, .. } => Some(*source),
            ProxyHeader::Local => None,
        }
    }
}

/// Why a PROXY header is refused; the spec's answer to each is to close the connection. In the
/// order of the bytes that show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyError {
    /// Neither "PROXY " nor the version 2 signature (§2.2: "the connection must be dropped").
    NotProxy,
    /// Version 1: no CRLF within 107 bytes (§2.1). Version 2: longer than
    /// [`PROXY_HEADER_BYTES_MAX`].
    TooLong,
    /// Version 1: not exactly the format of §2.1: a CR or LF alone, a protocol other than TCP4,
    /// TCP6 or UNKNOWN, a field missing or too many, more than one space between fields.
    LineMalformed,
    /// Version 1: an address not in the canonical form of the line's family: an IPv4 number
    /// with a leading zero or over 255, an IPv6 address on a TCP4 line or the reverse.
    AddressInvalid,
    /// Version 1: a port that is not a decimal number from 0 to 65535 without leading zeros.
    PortInvalid,
    /// Version 2: a version other than 2 (§2.2: "the receiver must only accept this value").
    VersionUnsupported,
    /// Version 2: a command other than LOCAL or PROXY.
    CommandUnknown,
    /// Version 2: a family past AF_UNIX or a transport past DGRAM.
    FamilyUnknown,
    /// Version 2: TCP over IPv4 or IPv6 with a length too short for the addresses.
    AddressesTruncated,
    /// Version 2: a TLV that runs past the end of the header (§2.2).
    TlvMalformed,
}

impl ProxyError {
    /// Text for logs.
    pub const fn description(self) -> &'static str {
        match self {
            ProxyError::NotProxy => "no PROXY protocol header",
            ProxyError::TooLong => "PROXY header too long",
            ProxyError::LineMalformed => "malformed PROXY v1 line",
            ProxyError::AddressInvalid => "invalid address in PROXY v1 line",
            ProxyError::PortInvalid => "invalid port in PROXY v1 line",
            ProxyError::VersionUnsupported => "PROXY v2 header of another version",
            ProxyError::CommandUnknown => "unknown PROXY v2 command",
            ProxyError::FamilyUnknown => "unknown PROXY v2 address family or transport",
            ProxyError::AddressesTruncated => "PROXY v2 addresses truncated",
            ProxyError::TlvMalformed => "malformed PROXY v2 TLV",
        }
    }
}

impl core::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for ProxyError {}

/// Parses the PROXY header at the start of `buf`. `Ok(None)`: need more bytes, nothing
/// consumed. `Ok(Some((header, consumed)))`: `buf[..consumed]` was the header.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if starts_like(buf, &V2_SIGNATURE) {
        parse_v2(buf)
    } else if starts_like(buf, V1_START) {
        parse_v1(buf)
    } else {
        Err(ProxyError::NotProxy)
    }
}

/// Whether `buf` (possibly short, possibly empty) could be the start of a PROXY header: it
/// starts with "PROXY " or the version 2 signature, or is a prefix of one. A listener that
/// takes no header from this peer refuses such a connection rather than read the header as
/// MQTT or HTTP; neither starts with these bytes.
pub fn looks_like_proxy_header(buf: &[u8]) -> bool {
    starts_like(buf, &V2_SIGNATURE) || starts_like(buf, V1_START)
}

/// Whether `buf` starts with a PROXY header's signature ("PROXY " or version 2's 12 bytes):
/// `None` while `buf` is too short to tell, a prefix of one of them (at most 11 bytes). What
/// a listener asks of a peer that may not send a header: whatever else the bytes are, it is
/// not theirs to judge.
pub fn starts_with_signature(buf: &[u8]) -> Option<bool> {
    if buf.starts_with(&V2_SIGNATURE) || buf.starts_with(V1_START) {
        Some(true)
    } else if looks_like_proxy_header(buf) {
        None
    } else {
        Some(false)
    }
}

/// `buf` starts with `start`, or is a prefix of it.
fn starts_like(buf: &[u8], start: &[u8]) -> bool {
    let len = buf.len().min(start.len());
    buf[..len] == start[..len]
}

/// Version 1 (§2.1): "PROXY " is in or on its way. The line ends at its first CR or LF, which
/// must be a CRLF, within 107 bytes; nothing of it is read before then.
fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let window = &buf[..buf.len().min(V1_LINE_BYTES_MAX)];
    let incomplete = if buf.len() >= V1_LINE_BYTES_MAX {
        Err(ProxyError::TooLong)
    } else {
        Ok(None)
    };
    let Some(end) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return incomplete;
    };
    // "The receiver must not tolerate a single CR or LF character to end the line."
    match (window[end], window.get(end + 1)) {
        (b'\r', Some(b'\n')) => {}
        (b'\r', None) => return incomplete,
        _ => return Err(ProxyError::LineMalformed),
    }
    // A CR or LF comes after "PROXY " at the earliest: before, the bytes are checked to be
    // exactly "PROXY ".
    let line = buf
        .get(V1_START.len()..end)
        .ok_or(ProxyError::LineMalformed)?;
    parse_v1_line(line).map(|header| Some((header, end + 2)))
}

/// The line after "PROXY " and before CRLF: "TCP4" or "TCP6", the source and destination
/// addresses, the source and destination ports, separated by single spaces; or "UNKNOWN",
/// after which "the receiver must ignore anything presented before the CRLF".
fn parse_v1_line(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let mut fields = line.split(|&b| b == b' ');
    let ipv6 = match fields.next() {
        Some(b"UNKNOWN") => return Ok(ProxyHeader::Local),
        Some(b"TCP4") => false,
        Some(b"TCP6") => true,
        _ => return Err(ProxyError::LineMalformed),
    };
    let (Some(source), Some(destination), Some(source_port), Some(destination_port), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyError::LineMalformed);
    };
    if [source, destination, source_port, destination_port]
        .iter()
        .any(|field| field.is_empty())
    {
        return Err(ProxyError::LineMalformed);
    }
    let address = |text: &[u8]| {
        let ip = if ipv6 {
            v1_ipv6(text).map(IpAddr::V6)
        } else {
            v1_ipv4(text).map(IpAddr::V4)
        };
        ip.ok_or(ProxyError::AddressInvalid)
    };
    let port = |text: &[u8]| {
        decimal(text, 5)
            .and_then(|n| u16::try_from(n).ok())
            .ok_or(ProxyError::PortInvalid)
    };
    let source = address(source)?;
    let destination = address(destination)?;
    Ok(ProxyHeader::Proxied {
        source: SocketAddr::new(source, port(source_port)?),
        destination: SocketAddr::new(destination, port(destination_port)?),
    })
}

/// "Exactly 4 integers in the range [0..255] inclusive written in decimal representation
/// separated by exactly one dot", without leading zeros "to avoid any possible confusion with
/// octal numbers" (§2.1).
fn v1_ipv4(text: &[u8]) -> Option<Ipv4Addr> {
    let mut numbers = text.split(|&b| b == b'.');
    let mut octets = [0u8; 4];
    for octet in &mut octets {
        *octet = u8::try_from(decimal(numbers.next()?, 3)?).ok()?;
    }
    numbers.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// Groups of hexadecimal digits separated by colons, one `::` at most, 128 bits in all
/// (§2.1). Senders write it with `inet_ntop`, which leaves out leading zeros and writes an
/// IPv4-mapped address with a dotted tail (`::ffff:192.0.2.1`): both are taken.
fn v1_ipv6(text: &[u8]) -> Option<Ipv6Addr> {
    let hex_colon_dot = text
        .iter()
        .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    if !hex_colon_dot {
        return None;
    }
    core::str::from_utf8(text).ok()?.parse().ok()
}

/// A decimal number of 1 to `digits_max` digits without a leading zero ("0" itself is one).
fn decimal(text: &[u8], digits_max: usize) -> Option<u32> {
    let well_formed = !text.is_empty()
        && text.len() <= digits_max
        && text.iter().all(u8::is_ascii_digit)
        && (text.len() == 1 || text[0] != b'0');
    well_formed.then(|| {
        text.iter()
            .fold(0, |n, &digit| n * 10 + u32::from(digit - b'0'))
    })
}

/// Version 2 (§2.2): the signature is in or on its way. Each fixed byte is judged once it is
/// in; the addresses and TLVs once the whole header is.
fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let Some(&version_command) = buf.get(12) else {
        return Ok(None);
    };
    if version_command >> 4 != 2 {
        return Err(ProxyError::VersionUnsupported);
    }
    let command = version_command & 0x0F;
    if command != V2_LOCAL && command != V2_PROXY {
        return Err(ProxyError::CommandUnknown);
    }
    let Some(&protocol) = buf.get(13) else {
        return Ok(None);
    };
    // LOCAL: "discard the protocol block including the family which is ignored".
    if command == V2_PROXY && (protocol >> 4 > V2_FAMILY_MAX || protocol & 0x0F > V2_TRANSPORT_MAX)
    {
        return Err(ProxyError::FamilyUnknown);
    }
    let Some(&[length_high, length_low]) = buf.get(14..V2_FIXED_BYTES) else {
        return Ok(None);
    };
    let consumed = V2_FIXED_BYTES + usize::from(u16::from_be_bytes([length_high, length_low]));
    if consumed > PROXY_HEADER_BYTES_MAX {
        return Err(ProxyError::TooLong);
    }
    let Some(block) = buf.get(V2_FIXED_BYTES..consumed) else {
        return Ok(None);
    };
    // "Receivers MUST always consider this field to skip the appropriate number of bytes and
    // must not assume zero is presented for LOCAL connections."
    if command == V2_LOCAL {
        return Ok(Some((ProxyHeader::Local, consumed)));
    }
    let (header, tlvs) = match protocol {
        V2_TCP4 => {
            let (addresses, tlvs) = block
                .split_at_checked(V2_TCP4_ADDRESS_BYTES)
                .ok_or(ProxyError::AddressesTruncated)?;
            let ip = |at: usize| {
                let octets: [u8; 4] = addresses[at..at + 4].try_into().expect("4 bytes");
                IpAddr::V4(Ipv4Addr::from(octets))
            };
            (v2_proxied(ip(0), ip(4), &addresses[8..]), tlvs)
        }
        V2_TCP6 => {
            let (addresses, tlvs) = block
                .split_at_checked(V2_TCP6_ADDRESS_BYTES)
                .ok_or(ProxyError::AddressesTruncated)?;
            let ip = |at: usize| {
                let octets: [u8; 16] = addresses[at..at + 16].try_into().expect("16 bytes");
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            (v2_proxied(ip(0), ip(16), &addresses[32..]), tlvs)
        }
        // UNSPEC, and the valid combinations not served here (UDP, UNIX sockets): "a receiver
        // is not required to implement other ones, provided that it automatically falls back
        // to the UNSPEC mode", which ignores the address block, TLVs included.
        _ => return Ok(Some((ProxyHeader::Local, consumed))),
    };
    check_tlvs(tlvs)?;
    Ok(Some((header, consumed)))
}

/// The two addresses and the 4 bytes of ports after them, in network byte order.
fn v2_proxied(source: IpAddr, destination: IpAddr, ports: &[u8]) -> ProxyHeader {
    ProxyHeader::Proxied {
        source: SocketAddr::new(source, u16::from_be_bytes([ports[0], ports[1]])),
        destination: SocketAddr::new(destination, u16::from_be_bytes([ports[2], ports[3]])),
    }
}

/// The TLVs after the addresses (§2.2): a type byte, a 16-bit length, that many bytes; they
/// must fill the rest of the header exactly. Their contents are skipped: none of them changes
/// whose connection this is. The CRC32C (§2.2.3) is one a receiver "may" check; it is not.
/// Bounded: every TLV takes at least 3 of at most [`PROXY_HEADER_BYTES_MAX`] bytes.
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), ProxyError> {
    while let [_type, length_high, length_low, rest @ ..] = tlvs {
        let length = usize::from(u16::from_be_bytes([*length_high, *length_low]));
        tlvs = rest.get(length..).ok_or(ProxyError::TlvMalformed)?;
    }
    if tlvs.is_empty() {
        Ok(())
    } else {
        Err(ProxyError::TlvMalformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn proxied(source: &str, destination: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: source.parse().expect("a socket address"),
            destination: destination.parse().expect("a socket address"),
        }
    }

    /// `buf` is a whole header of `len` bytes: every shorter prefix asks for more, the whole
    /// (and the whole with bytes after it) parses to `header`.
    fn assert_parses(buf: &[u8], header: ProxyHeader, len: usize) {
        assert_eq!(parse(buf), Ok(Some((header, len))), "{buf:?}");
        for end in 0..len {
            assert_eq!(parse(&buf[..end]), Ok(None), "prefix of {end} bytes");
            assert!(looks_like_proxy_header(&buf[..end]));
        }
        let mut longer = buf[..len].to_vec();
        longer.extend_from_slice(b"\x10\x0c\x00\x04MQTT");
        assert_eq!(parse(&longer), Ok(Some((header, len))));
    }

    /// `buf` is refused with `error`, and every prefix asks for more or is refused the same.
    fn assert_refused(buf: &[u8], error: ProxyError) {
        assert_eq!(parse(buf), Err(error), "{buf:?}");
        for end in 0..buf.len() {
            let prefix = parse(&buf[..end]);
            assert!(
                prefix == Ok(None) || prefix == Err(error),
                "{end}: {prefix:?}"
            );
        }
    }

    /// A version 2 header: signature, version and command, protocol, then `rest` with its
    /// length.
    fn v2(version_command: u8, protocol: u8, rest: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.extend_from_slice(&[version_command, protocol]);
        let length = u16::try_from(rest.len()).expect("a short block");
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(rest);
        out
    }

    /// §2.1's example, with the HTTP request that follows it.
    #[test]
    fn v1_example_of_the_spec() {
        let buf = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n\
            GET / HTTP/1.1\r\n\
            Host: 192.168.0.11\r\n\
            \r\n";
        let header = proxied("192.168.0.1:56324", "192.168.0.11:443");
        assert_parses(buf, header, 47);
        assert_eq!(header.source(), "192.168.0.1:56324".parse().ok());
    }

    /// §2.1's longest lines: 56, 104, 15 and 107 bytes.
    #[test]
    fn v1_longest_lines() {
        assert_parses(
            b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
            proxied("255.255.255.255:65535", "255.255.255.255:65535"),
            56,
        );
        let ffff = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let line = format!("PROXY TCP6 {ffff} {ffff} 65535 65535\r\n");
        assert_parses(
            line.as_bytes(),
            proxied(&format!("[{ffff}]:65535"), &format!("[{ffff}]:65535")),
            104,
        );
        assert_parses(b"PROXY UNKNOWN\r\n", ProxyHeader::Local, 15);
        let line = format!("PROXY UNKNOWN {ffff} {ffff} 65535 65535\r\n");
        assert_parses(line.as_bytes(), ProxyHeader::Local, 107);
        assert_eq!(ProxyHeader::Local.source(), None);
    }

    #[test]
    fn v1_forms_taken() {
        for (line, header) in [
            (
                "PROXY TCP4 0.0.0.0 10.0.0.1 0 1\r\n",
                proxied("0.0.0.0:0", "10.0.0.1:1"),
            ),
            (
                "PROXY TCP6 2001:db8::1 ::1 4711 8883\r\n",
                proxied("[2001:db8::1]:4711", "[::1]:8883"),
            ),
            (
                "PROXY TCP6 2001:DB8:0:0:0:0:0:1 :: 1 2\r\n",
                proxied("[2001:db8::1]:1", "[::]:2"),
            ),
            (
                "PROXY TCP6 ::ffff:192.0.2.1 ::ffff:192.0.2.2 1 2\r\n",
                proxied("[::ffff:192.0.2.1]:1", "[::ffff:192.0.2.2]:2"),
            ),
            ("PROXY UNKNOWN \r\n", ProxyHeader::Local),
        ] {
            assert_parses(line.as_bytes(), header, line.len());
        }
        // UNKNOWN: anything before the CRLF is ignored.
        let line = b"PROXY UNKNOWN whatever \x01\xff\r\n";
        assert_parses(line, ProxyHeader::Local, line.len());
    }

    #[test]
    fn v1_refusals() {
        use ProxyError::*;
        for (line, error) in [
            ("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", NotProxy),
            ("PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n", NotProxy),
            ("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", LineMalformed),
            ("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", LineMalformed),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", LineMalformed),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", LineMalformed),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", LineMalformed),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", LineMalformed),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", LineMalformed),
            ("PROXY TCP4 1.2.3.4\n5.6.7.8 1 2\r\n", LineMalformed),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx", LineMalformed),
            ("PROXY \r\n", LineMalformed),
            ("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", LineMalformed),
            ("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", LineMalformed),
            ("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", LineMalformed),
            ("PROXY UNKNOWNX\r\n", LineMalformed),
            ("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", AddressInvalid),
            ("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", AddressInvalid),
            ("PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", AddressInvalid),
            ("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", AddressInvalid),
            ("PROXY TCP4 1.2..4 5.6.7.8 1 2\r\n", AddressInvalid),
            ("PROXY TCP4 1.2.3.4 5.6.7.0008 1 2\r\n", AddressInvalid),
            ("PROXY TCP4 1.2.3.-4 5.6.7.8 1 2\r\n", AddressInvalid),
            ("PROXY TCP4 ::1 5.6.7.8 1 2\r\n", AddressInvalid),
            ("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", AddressInvalid),
            ("PROXY TCP6 ::1 1:2:3:4:5:6:7:8:9 1 2\r\n", AddressInvalid),
            ("PROXY TCP6 ::1 1::2::3 1 2\r\n", AddressInvalid),
            ("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", AddressInvalid),
            ("PROXY TCP6 [::1] ::1 1 2\r\n", AddressInvalid),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", PortInvalid),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", PortInvalid),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 123456\r\n", PortInvalid),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", PortInvalid),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 0x2\r\n", PortInvalid),
        ] {
            assert_refused(line.as_bytes(), error);
        }
    }

    #[test]
    fn v1_no_crlf_within_107_bytes() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_LINE_BYTES_MAX, b'x');
        assert_eq!(parse(&line[..V1_LINE_BYTES_MAX - 1]), Ok(None));
        assert_eq!(parse(&line), Err(ProxyError::TooLong));
        // A CR as the 107th byte would need its LF as the 108th.
        line[V1_LINE_BYTES_MAX - 1] = b'\r';
        assert_eq!(parse(&line), Err(ProxyError::TooLong));
        line.push(b'\n');
        assert_refused(&line, ProxyError::TooLong);
        line.truncate(V1_LINE_BYTES_MAX - 2);
        line.extend_from_slice(b"\r\n");
        assert_parses(&line, ProxyHeader::Local, V1_LINE_BYTES_MAX);
    }

    /// TCP over IPv4 as §2.2 lays it out: 0x21 (version 2, PROXY), 0x11, length 12, then
    /// source 192.0.2.1, destination 198.51.100.2, ports 56324 and 1883.
    #[test]
    fn v2_tcp4() {
        let buf = [
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, //
            0x21, 0x11, 0x00, 0x0C, //
            192, 0, 2, 1, 198, 51, 100, 2, 0xDC, 0x04, 0x07, 0x5B, //
            0x10, 0x0C, // the start of a CONNECT
        ];
        assert_parses(&buf, proxied("192.0.2.1:56324", "198.51.100.2:1883"), 28);
    }

    /// TCP over IPv6 with TLVs after the addresses: ALPN "mqtt", a NOOP of 0 bytes, the
    /// authority "scores.example" and a CRC32C (not checked).
    #[test]
    fn v2_tcp6_with_tlvs() {
        let mut block = vec![0x20, 0x01, 0x0D, 0xB8];
        block.extend_from_slice(&[0; 11]);
        block.push(0x01);
        block.extend_from_slice(&[0; 15]);
        block.push(0x01);
        block.extend_from_slice(&[0x12, 0x67, 0x22, 0xB3]);
        block.extend_from_slice(&[0x01, 0x00, 0x04, b'm', b'q', b't', b't']);
        block.extend_from_slice(&[0x04, 0x00, 0x00]);
        block.extend_from_slice(&[0x02, 0x00, 0x0E]);
        block.extend_from_slice(b"scores.example");
        block.extend_from_slice(&[0x03, 0x00, 0x04, 0xDE, 0xAD, 0xBE, 0xEF]);
        let buf = v2(0x21, 0x21, &block);
        let len = buf.len();
        assert_eq!(len, 16 + 36 + 7 + 3 + 17 + 7);
        assert_parses(&buf, proxied("[2001:db8::1]:4711", "[::1]:8883"), len);
    }

    #[test]
    fn v2_local_and_fallbacks() {
        // LOCAL: a health check; the block is skipped whatever it holds, family included.
        assert_parses(&v2(0x20, 0x00, &[]), ProxyHeader::Local, 16);
        assert_parses(&v2(0x20, 0x11, &[1, 2, 3]), ProxyHeader::Local, 19);
        assert_parses(&v2(0x20, 0xFF, &[]), ProxyHeader::Local, 16);
        // PROXY with UNSPEC, or a family or transport not served: the connection's own
        // address, the block ignored.
        for protocol in [0x00, 0x01, 0x02, 0x10, 0x12, 0x20, 0x22, 0x30, 0x31, 0x32] {
            assert_parses(&v2(0x21, protocol, &[]), ProxyHeader::Local, 16);
            let block = [0xAB; 216];
            assert_parses(&v2(0x21, protocol, &block), ProxyHeader::Local, 16 + 216);
        }
    }

    #[test]
    fn v2_refusals() {
        use ProxyError::*;
        let tcp4 = [192, 0, 2, 1, 198, 51, 100, 2, 0, 1, 0, 2];
        for (buf, error) in [
            (v2(0x11, 0x11, &tcp4), VersionUnsupported),
            (v2(0x31, 0x11, &tcp4), VersionUnsupported),
            (v2(0x01, 0x11, &tcp4), VersionUnsupported),
            (v2(0x22, 0x11, &tcp4), CommandUnknown),
            (v2(0x2F, 0x00, &[]), CommandUnknown),
            (v2(0x21, 0x41, &tcp4), FamilyUnknown),
            (v2(0x21, 0x13, &tcp4), FamilyUnknown),
            (v2(0x21, 0xF0, &tcp4), FamilyUnknown),
            (v2(0x21, 0x11, &tcp4[..11]), AddressesTruncated),
            (v2(0x21, 0x21, &[0; 35]), AddressesTruncated),
            (v2(0x21, 0x11, &[]), AddressesTruncated),
            (v2(0x21, 0x11, &[&tcp4[..], &[0x04]].concat()), TlvMalformed),
            (
                v2(0x21, 0x11, &[&tcp4[..], &[0x04, 0]].concat()),
                TlvMalformed,
            ),
            (
                v2(0x21, 0x11, &[&tcp4[..], &[0x04, 0, 2, 9]].concat()),
                TlvMalformed,
            ),
            (
                v2(0x21, 0x11, &[&tcp4[..], &[0x04, 0, 0, 0x01]].concat()),
                TlvMalformed,
            ),
        ] {
            assert_refused(&buf, error);
        }
    }

    #[test]
    fn v2_length_limit() {
        let most = PROXY_HEADER_BYTES_MAX - V2_FIXED_BYTES;
        let mut block = vec![192, 0, 2, 1, 198, 51, 100, 2, 0, 1, 0, 2];
        let noop = most - block.len() - 3;
        block.extend_from_slice(&[0x04]);
        block.extend_from_slice(&u16::try_from(noop).expect("short").to_be_bytes());
        block.resize(most, 0);
        let buf = v2(0x21, 0x11, &block);
        assert_parses(
            &buf,
            proxied("192.0.2.1:1", "198.51.100.2:2"),
            PROXY_HEADER_BYTES_MAX,
        );
        block.extend_from_slice(&[0]);
        let buf = v2(0x21, 0x11, &block);
        // Refused from the length field, before the rest is in.
        assert_eq!(parse(&buf[..V2_FIXED_BYTES]), Err(ProxyError::TooLong));
        assert_refused(&buf, ProxyError::TooLong);
        assert_refused(&v2(0x20, 0x00, &[0; 65_535]), ProxyError::TooLong);
    }

    #[test]
    fn not_a_proxy_header() {
        for buf in [
            &b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c"[..],
            b"GET /mqtt HTTP/1.1\r\n",
            b"\x16\x03\x01\x02\x00",
            b"PROXX",
            b"\r\n\r\n\x01",
            b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0B",
        ] {
            assert_eq!(parse(buf), Err(ProxyError::NotProxy), "{buf:?}");
            assert!(!looks_like_proxy_header(buf), "{buf:?}");
        }
        // Nothing yet could be either.
        assert_eq!(parse(b""), Ok(None));
        assert!(looks_like_proxy_header(b""));
        for start in [
            &b"P"[..],
            b"PROXY",
            b"PROXY ",
            b"PROXY TCP4",
            b"\r",
            b"\r\n\r\n\0",
        ] {
            assert!(looks_like_proxy_header(start), "{start:?}");
            assert_eq!(parse(start), Ok(None), "{start:?}");
        }
        assert!(looks_like_proxy_header(&V2_SIGNATURE));
        assert!(looks_like_proxy_header(&v2(0x99, 0, &[])));
    }

    #[test]
    fn signatures() {
        for buf in [
            &b"PROXY "[..],
            b"PROXY garbage",
            &V2_SIGNATURE,
            &v2(0x99, 0, &[]),
        ] {
            assert_eq!(starts_with_signature(buf), Some(true), "{buf:?}");
        }
        for buf in [&b""[..], b"P", b"PROXY", b"\r\n\r\n\0", &V2_SIGNATURE[..11]] {
            assert_eq!(starts_with_signature(buf), None, "{buf:?}");
        }
        for buf in [
            &b"\x10"[..],
            b"GET /",
            b"PROXX",
            b"POST",
            b"\x16\x03\x01",
            b"PROXYTCP4",
        ] {
            assert_eq!(starts_with_signature(buf), Some(false), "{buf:?}");
        }
    }

    #[test]
    fn every_error_has_a_description() {
        use ProxyError::*;
        let all = [
            NotProxy,
            TooLong,
            LineMalformed,
            AddressInvalid,
            PortInvalid,
            VersionUnsupported,
            CommandUnknown,
            FamilyUnknown,
            AddressesTruncated,
            TlvMalformed,
        ];
        for (i, error) in all.iter().enumerate() {
            assert!(!error.description().is_empty());
            assert_eq!(error.to_string(), error.description());
            for other in &all[i + 1..] {
                assert_ne!(error.description(), other.description());
            }
        }
    }

    /// A version 1 line as a sender writes it.
    fn v1_line(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
        let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
        format!(
            "PROXY {family} {} {} {} {}\r\n",
            source.ip(),
            destination.ip(),
            source.port(),
            destination.port()
        )
        .into_bytes()
    }

    /// A version 2 header as a sender writes it, with `tlvs` (type, value) after the
    /// addresses.
    fn v2_header(source: SocketAddr, destination: SocketAddr, tlvs: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut block = Vec::new();
        let protocol = match (source.ip(), destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                block.extend_from_slice(&s.octets());
                block.extend_from_slice(&d.octets());
                V2_TCP4
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                block.extend_from_slice(&s.octets());
                block.extend_from_slice(&d.octets());
                V2_TCP6
            }
            _ => unreachable!("one family"),
        };
        block.extend_from_slice(&source.port().to_be_bytes());
        block.extend_from_slice(&destination.port().to_be_bytes());
        for (kind, value) in tlvs {
            block.push(*kind);
            let length = u16::try_from(value.len()).expect("short");
            block.extend_from_slice(&length.to_be_bytes());
            block.extend_from_slice(value);
        }
        v2(0x21, protocol, &block)
    }

    /// Two addresses of one family.
    fn address_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
        prop_oneof![
            (
                any::<[u8; 4]>(),
                any::<[u8; 4]>(),
                any::<u16>(),
                any::<u16>()
            )
                .prop_map(|(s, d, sp, dp)| (
                    SocketAddr::new(Ipv4Addr::from(s).into(), sp),
                    SocketAddr::new(Ipv4Addr::from(d).into(), dp)
                )),
            (
                any::<[u8; 16]>(),
                any::<[u8; 16]>(),
                any::<u16>(),
                any::<u16>()
            )
                .prop_map(|(s, d, sp, dp)| (
                    SocketAddr::new(Ipv6Addr::from(s).into(), sp),
                    SocketAddr::new(Ipv6Addr::from(d).into(), dp)
                )),
        ]
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            for start in [&b""[..], V1_START, b"PROXY TCP4 ", b"PROXY TCP6 ", &V2_SIGNATURE] {
                let mut buf = start.to_vec();
                buf.extend_from_slice(&bytes);
                if let Ok(Some((_, consumed))) = parse(&buf) {
                    prop_assert!(consumed <= buf.len());
                    prop_assert!(consumed <= PROXY_HEADER_BYTES_MAX);
                }
                let looks = looks_like_proxy_header(&buf);
                prop_assert_eq!(starts_with_signature(&buf) == Some(false), !looks);
            }
        }

        #[test]
        fn written_headers_parse_back(
            (source, destination) in address_pair(),
            tlvs in proptest::collection::vec(
                (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)),
                0..6,
            ),
            after in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let header = ProxyHeader::Proxied { source, destination };
            for mut buf in [v1_line(source, destination), v2_header(source, destination, &tlvs)] {
                let len = buf.len();
                for end in 0..len {
                    prop_assert_eq!(parse(&buf[..end]), Ok(None));
                    prop_assert!(looks_like_proxy_header(&buf[..end]));
                }
                buf.extend_from_slice(&after);
                prop_assert_eq!(parse(&buf), Ok(Some((header, len))));
            }
        }
    }
}

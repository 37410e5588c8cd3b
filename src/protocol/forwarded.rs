//! The client's address behind HTTP reverse proxies, from the `Forwarded` (RFC 7239) and
//! `X-Forwarded-For` header fields of a request head ([`super::http::RequestHead`]).
//!
//! Each proxy appends the address it received the request from, so the list reads from the
//! client on the left to the proxy nearest this server on the right, and anything left of
//! what a trusted proxy appended is whatever the client chose to send. [`forwarded_client`]
//! therefore reads from the right: only while each address is a trusted proxy's does the one
//! before it count, and the first address that is not a trusted proxy's is the client's. A hop
//! that names no address (`unknown`, an obfuscated identifier, bad syntax) ends the walk at the
//! last trusted hop: the answer is never an address that nobody trusted vouched for.
//!
//! Bounded by the request head (`ws_handshake_bytes_max`): one pass over the fields, no
//! allocation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::http::{RequestHead, trim};

/// The address of the client that a request comes from: `peer`, the address of the
/// connection, unless `trusted(peer)`, in which case the hops its proxies appended are walked
/// from the right, past every address that is `trusted`, to the first that is not.
///
/// The hops are those of `Forwarded` (the `for=` parameter of each element), or else those of
/// `X-Forwarded-For`; repeated fields are one list, in order (RFC 9110 §5.3). A proxy appends
/// to one of the two and passes the other on as the client sent it, so when a request holds
/// both and they disagree, one of them is the client's invention and the answer is `peer`.
pub fn forwarded_client(
    head: &RequestHead<'_>,
    peer: IpAddr,
    trusted: impl Fn(IpAddr) -> bool,
) -> IpAddr {
    if !trusted(peer) {
        return peer;
    }
    let forwarded = head
        .values("forwarded")
        .flat_map(|value| split_unquoted(value, b','))
        .map(trim)
        .filter(|element| !element.is_empty())
        .map(forwarded_for);
    let x_forwarded_for = head.list("x-forwarded-for").map(address_of_hop);
    match (walk(forwarded, &trusted), walk(x_forwarded_for, &trusted)) {
        (None, None) => peer,
        (Some(client), None) | (None, Some(client)) => client.unwrap_or(peer),
        (Some(one), Some(other)) if one == other => one.unwrap_or(peer),
        (Some(_), Some(_)) => peer,
    }
}

/// Where the walk from the right ends, judged from the hops read so far from the left.
#[derive(Clone, Copy)]
enum Walk {
    /// No hops.
    Empty,
    /// Every hop is a trusted address: the walk passes them all, ending at the leftmost.
    Trusted { leftmost: IpAddr },
    /// The rightmost hop that is not a trusted address (`stop`: an untrusted address, or
    /// `None` for a hop that names none), and the trusted address right after it, if any.
    Stopped {
        stop: Option<IpAddr>,
        after: Option<IpAddr>,
    },
}

/// The end of the walk over `hops` from the right (`None`: no hops), as one pass from the
/// left: `Some(None)` means the walk stopped at a hop naming no address before passing any
/// trusted one, so the answer is the peer.
fn walk(
    hops: impl Iterator<Item = Option<IpAddr>>,
    trusted: &impl Fn(IpAddr) -> bool,
) -> Option<Option<IpAddr>> {
    let mut state = Walk::Empty;
    for hop in hops {
        state = match (hop.filter(|&address| trusted(address)), state) {
            (Some(address), Walk::Empty) => Walk::Trusted { leftmost: address },
            (Some(address), Walk::Stopped { stop, after: None }) => Walk::Stopped {
                stop,
                after: Some(address),
            },
            (Some(_), unchanged) => unchanged,
            (None, _) => Walk::Stopped {
                stop: hop,
                after: None,
            },
        };
    }
    match state {
        Walk::Empty => None,
        Walk::Trusted { leftmost } => Some(Some(leftmost)),
        Walk::Stopped {
            stop: Some(client), ..
        } => Some(Some(client)),
        Walk::Stopped { stop: None, after } => Some(after),
    }
}

/// The address in the `for=` parameter of one forwarded-element (RFC 7239 §4), `None` when
/// the element is malformed, has no `for=` or several, or its node is `unknown` or
/// obfuscated (§6.2, §6.3). Every pair must be well formed: a client's unterminated quoted
/// string could otherwise swallow what a proxy appended after it into the client's element.
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    let mut node = None;
    for pair in split_unquoted(element, b';').map(trim) {
        // "[ forwarded-pair ] *( ";" [ forwarded-pair ] )": empty pairs are allowed.
        if pair.is_empty() {
            continue;
        }
        let at = pair.iter().position(|&b| b == b'=')?;
        let (name, value) = (&pair[..at], &pair[at + 1..]);
        let value = pair_value(value)?;
        if !is_token(name) {
            return None;
        }
        if name.eq_ignore_ascii_case(b"for") {
            // §4: "Each parameter MUST NOT occur more than once per forwarded-element."
            if node.replace(value).is_some() {
                return None;
            }
        }
    }
    node_address(node?)
}

/// A parameter's value: a token, or a quoted string without its quotes (RFC 9110 §5.6.4). A
/// quoted string with an escape never holds a node (§6: digits, letters, `.:[]_-`), and is
/// refused rather than unescaped.
fn pair_value(value: &[u8]) -> Option<&[u8]> {
    if is_token(value) {
        return Some(value);
    }
    let inner = value.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    let plain = inner.iter().all(|&b| b != b'"' && b != b'\\');
    plain.then_some(inner)
}

/// A node (RFC 7239 §6): an IPv4 address or a bracketed IPv6 address, each optionally with a
/// port, numeric or obfuscated. `unknown` and obfuscated names give `None`.
fn node_address(node: &[u8]) -> Option<IpAddr> {
    let (address, port) = if let Some(bracketed) = node.strip_prefix(b"[") {
        let end = bracketed.iter().position(|&b| b == b']')?;
        let address = parse_text::<Ipv6Addr>(&bracketed[..end])?;
        (IpAddr::V6(address), &bracketed[end + 1..])
    } else {
        let end = node.iter().position(|&b| b == b':').unwrap_or(node.len());
        let address = parse_text::<Ipv4Addr>(&node[..end])?;
        (IpAddr::V4(address), &node[end..])
    };
    let port_ok = match port {
        [] => true,
        [b':', port @ ..] => is_node_port(port),
        _ => false,
    };
    port_ok.then_some(address)
}

/// `node-port = port / obfport`: 1 to 5 digits, or `_` and letters, digits, `.`, `_`, `-`
/// (RFC 7239 §6).
fn is_node_port(port: &[u8]) -> bool {
    match port {
        [b'_', rest @ ..] => {
            !rest.is_empty()
                && rest
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }
        digits => (1..=5).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit),
    }
}

/// One element of `X-Forwarded-For`: an address, with or without a port (`192.0.2.1:4711`),
/// an IPv6 address with or without brackets (`[2001:db8::1]:4711`). Anything else names no
/// address.
fn address_of_hop(hop: &[u8]) -> Option<IpAddr> {
    parse_text::<IpAddr>(hop)
        .or_else(|| parse_text::<SocketAddr>(hop).map(|address| address.ip()))
        .or_else(|| {
            let bracketed = hop.strip_prefix(b"[")?.strip_suffix(b"]")?;
            parse_text::<Ipv6Addr>(bracketed).map(IpAddr::V6)
        })
}

fn parse_text<T: core::str::FromStr>(text: &[u8]) -> Option<T> {
    core::str::from_utf8(text).ok()?.parse().ok()
}

/// A token (RFC 9110 §5.6.2): one or more of the visible characters that are not delimiters.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Splits `s` at every `separator` outside a quoted string, where a backslash escapes the next
/// byte (RFC 9110 §5.6.4). A quoted string left open runs to the end: that last piece is then
/// malformed, which [`forwarded_for`] refuses.
fn split_unquoted(s: &[u8], separator: u8) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(s);
    core::iter::from_fn(move || {
        let s = rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (at, &b) in s.iter().enumerate() {
            if escaped {
                escaped = false;
            } else if quoted {
                match b {
                    b'\\' => escaped = true,
                    b'"' => quoted = false,
                    _ => {}
                }
            } else if b == b'"' {
                quoted = true;
            } else if b == separator {
                rest = Some(&s[at + 1..]);
                return Some(&s[..at]);
            }
        }
        rest = None;
        Some(s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http::{Fields, parse_head};
    use proptest::prelude::*;

    /// The proxy this server sees: trusted, like every address in 10.0.0.0/8.
    const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

    fn in_10_8(address: IpAddr) -> bool {
        match address.to_canonical() {
            IpAddr::V4(v4) => v4.octets()[0] == 10,
            IpAddr::V6(_) => false,
        }
    }

    /// The client of a request with the given header lines, from `peer`.
    fn client_from(peer: IpAddr, fields: &str) -> IpAddr {
        let request = format!("GET /mqtt HTTP/1.1\r\nHost: broker\r\n{fields}\r\n");
        let mut table = Fields::new();
        let (head, _) = parse_head(request.as_bytes(), 8192, &mut table)
            .expect("a valid head")
            .expect("a whole head");
        forwarded_client(&head, peer, in_10_8)
    }

    fn client(fields: &str) -> IpAddr {
        client_from(PROXY, fields)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let peer = ip("203.0.113.7");
        for fields in [
            "",
            "X-Forwarded-For: 198.51.100.1\r\n",
            "Forwarded: for=198.51.100.1\r\n",
            "X-Forwarded-For: 10.0.0.2\r\n",
        ] {
            assert_eq!(client_from(peer, fields), peer, "{fields:?}");
        }
    }

    #[test]
    fn a_trusted_peer_without_headers_is_the_client() {
        assert_eq!(client(""), PROXY);
        assert_eq!(client("X-Forwarded-For:\r\n"), PROXY);
        assert_eq!(client("X-Forwarded-For: , ,\r\nForwarded: ,\r\n"), PROXY);
    }

    #[test]
    fn x_forwarded_for_from_the_right() {
        for (value, expected) in [
            ("203.0.113.7", "203.0.113.7"),
            ("198.51.100.9, 203.0.113.7", "203.0.113.7"),
            ("198.51.100.9, 203.0.113.7, 10.0.0.2", "203.0.113.7"),
            ("198.51.100.9,203.0.113.7,10.0.0.2,10.0.0.3", "203.0.113.7"),
            // Every hop trusted: the leftmost.
            ("10.0.0.3, 10.0.0.2", "10.0.0.3"),
            // Ports and brackets.
            ("192.0.2.1:4711", "192.0.2.1"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("::ffff:10.0.0.2, 203.0.113.7", "203.0.113.7"),
            ("203.0.113.7, ::ffff:10.0.0.2", "203.0.113.7"),
        ] {
            let fields = format!("X-Forwarded-For: {value}\r\n");
            assert_eq!(client(&fields), ip(expected), "{value:?}");
        }
    }

    #[test]
    fn x_forwarded_for_hops_naming_no_address_end_the_walk() {
        for (value, expected) in [
            ("unknown", PROXY),
            ("203.0.113.7, unknown", PROXY),
            ("203.0.113.7, garbage, 10.0.0.2", ip("10.0.0.2")),
            ("203.0.113.7, \"10.0.0.2\"", PROXY),
            ("203.0.113.7, 10.0.0.2:99999", PROXY),
            ("203.0.113.7, fe80::1%eth0", PROXY),
            ("203.0.113.7 10.0.0.2", PROXY),
        ] {
            let fields = format!("X-Forwarded-For: {value}\r\n");
            assert_eq!(client(&fields), expected, "{value:?}");
        }
    }

    #[test]
    fn repeated_fields_are_one_list() {
        assert_eq!(
            client("X-Forwarded-For: 198.51.100.9\r\nX-Forwarded-For: 203.0.113.7\r\n"),
            ip("203.0.113.7")
        );
        assert_eq!(
            client("X-Forwarded-For: 203.0.113.7\r\nx-forwarded-for: 10.0.0.2\r\n"),
            ip("203.0.113.7")
        );
        assert_eq!(
            client("Forwarded: for=198.51.100.9\r\nforwarded: for=203.0.113.7, for=10.0.0.2\r\n"),
            ip("203.0.113.7")
        );
    }

    /// A client that sends its own X-Forwarded-For through a trusted proxy gets what the proxy
    /// appended, whatever it wrote: addresses, trusted-looking ones, garbage.
    #[test]
    fn a_client_cannot_choose_its_address() {
        let real = ip("203.0.113.7");
        for sent in [
            "1.1.1.1",
            "10.9.9.9",
            "1.1.1.1, 10.9.9.9",
            "garbage",
            "unknown",
            "[::1]:1, ,",
            "\"1.1.1.1",
        ] {
            let fields = format!("X-Forwarded-For: {sent}, 203.0.113.7\r\n");
            assert_eq!(client(&fields), real, "{sent:?}");
            let fields = format!("X-Forwarded-For: {sent}\r\nX-Forwarded-For: 203.0.113.7\r\n");
            assert_eq!(client(&fields), real, "{sent:?}");
        }
        // Behind a proxy that appends to Forwarded, the client's own elements are left of it.
        for sent in [
            "for=1.1.1.1",
            "for=10.9.9.9",
            "for=1.1.1.1;by=10.0.0.1",
            "for=\"1.1.1.1\", for=10.9.9.9",
        ] {
            let fields = format!("Forwarded: {sent}, for=203.0.113.7\r\n");
            assert_eq!(client(&fields), real, "{sent:?}");
        }
    }

    /// A client's quoted string left open would swallow the element the proxy appended into
    /// the client's own; the element is refused instead.
    #[test]
    fn an_open_quote_cannot_swallow_the_proxys_element() {
        for sent in [
            "for=1.1.1.1;x=\"",
            "for=1.1.1.1;x=\"a\\",
            "for=\"1.1.1.1",
            "for=1.1.1.1;x=\"a\"\"",
        ] {
            for appended in ["for=203.0.113.7", "for=\"[2001:db8::7]:4711\""] {
                let fields = format!("Forwarded: {sent}, {appended}\r\n");
                assert_eq!(client(&fields), PROXY, "{fields:?}");
            }
        }
    }

    /// A client may send Forwarded through a proxy that appends X-Forwarded-For (or the
    /// reverse): when the two disagree, neither is believed.
    #[test]
    fn both_fields_must_agree() {
        assert_eq!(
            client("Forwarded: for=1.1.1.1\r\nX-Forwarded-For: 203.0.113.7\r\n"),
            PROXY
        );
        assert_eq!(
            client("X-Forwarded-For: 1.1.1.1\r\nForwarded: for=203.0.113.7\r\n"),
            PROXY
        );
        assert_eq!(
            client("Forwarded: for=1.1.1.1\r\nX-Forwarded-For: 1.1.1.1, 203.0.113.7\r\n"),
            PROXY
        );
        assert_eq!(
            client("Forwarded: for=203.0.113.7\r\nX-Forwarded-For: 203.0.113.7\r\n"),
            ip("203.0.113.7")
        );
        assert_eq!(
            client("Forwarded: for=\"[2001:db8::1]:1\"\r\nX-Forwarded-For: 2001:db8::1\r\n"),
            ip("2001:db8::1")
        );
        // One that names nobody disagrees as well.
        assert_eq!(
            client("Forwarded: for=unknown\r\nX-Forwarded-For: 203.0.113.7\r\n"),
            PROXY
        );
    }

    /// The examples of RFC 7239 §4, §6 and §7.1.
    #[test]
    fn forwarded_examples_of_the_rfc() {
        for (value, expected) in [
            ("for=\"_gazonk\"", PROXY),
            ("For=\"[2001:db8:cafe::17]:4711\"", ip("2001:db8:cafe::17")),
            (
                "for=192.0.2.60;proto=http;by=203.0.113.43",
                ip("192.0.2.60"),
            ),
            ("for=192.0.2.43, for=198.51.100.17", ip("198.51.100.17")),
            (
                "for=192.0.2.43,for=\"[2001:db8:cafe::17]\",for=unknown",
                PROXY,
            ),
            (
                "for=192.0.2.43, for=\"[2001:db8:cafe::17]\"",
                ip("2001:db8:cafe::17"),
            ),
            ("for=unknown", PROXY),
            ("for=_hidden, for=_SEVKISEK", PROXY),
            ("for=\"192.0.2.43:47011\"", ip("192.0.2.43")),
            ("for=\"[2001:db8:cafe::17]:_p1\"", ip("2001:db8:cafe::17")),
        ] {
            let fields = format!("Forwarded: {value}\r\n");
            assert_eq!(client(&fields), expected, "{value:?}");
        }
    }

    #[test]
    fn forwarded_walks_past_trusted_hops() {
        for (value, expected) in [
            ("for=192.0.2.43, for=10.0.0.2", ip("192.0.2.43")),
            (
                "for=192.0.2.43;proto=https, for=10.0.0.2;by=10.0.0.1",
                ip("192.0.2.43"),
            ),
            ("for=10.0.0.3, for=10.0.0.2", ip("10.0.0.3")),
            ("for=192.0.2.43, for=_hidden, for=10.0.0.2", ip("10.0.0.2")),
            ("for=192.0.2.43, proto=https", PROXY),
            ("for=192.0.2.43, ;for=10.0.0.2;", ip("192.0.2.43")),
            (
                "for=192.0.2.43;host=\"a,b;c\", for=10.0.0.2",
                ip("192.0.2.43"),
            ),
        ] {
            let fields = format!("Forwarded: {value}\r\n");
            assert_eq!(client(&fields), expected, "{value:?}");
        }
    }

    #[test]
    fn malformed_forwarded_elements_end_the_walk() {
        for value in [
            "for=2001:db8::1",
            "for=[2001:db8::1]",
            "for=\"[2001:db8::1\"",
            "for=\"2001:db8::1\"",
            "for=\"[192.0.2.1]\"",
            "for=192.0.2.43:80",
            "for=\"192.0.2.43:x\"",
            "for=\"192.0.2.43:123456\"",
            "for=\"192.0.2.43:_\"",
            "for=\"[2001:db8::1]x\"",
            "for=192.0.2.43;for=198.51.100.1",
            "for=",
            "for",
            "for=192.0.2.43;by",
            "for=192.0.2.43;b y=1",
            "for=\"192.0.2\\.43\"",
            "for=\"192.0.2.43\"x",
            "for=192.0.2.043",
        ] {
            let fields = format!("Forwarded: {value}\r\n");
            assert_eq!(client(&fields), PROXY, "{value:?}");
            let fields = format!("Forwarded: {value}, for=10.0.0.2\r\n");
            assert_eq!(client(&fields), ip("10.0.0.2"), "{value:?}");
        }
    }

    #[test]
    fn ipv4_mapped_peers_are_trusted_as_their_ipv4_address() {
        let mapped = ip("::ffff:10.0.0.1");
        assert_eq!(
            client_from(mapped, "X-Forwarded-For: 203.0.113.7\r\n"),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn splitting_outside_quotes() {
        let split = |s: &'static [u8]| split_unquoted(s, b',').collect::<Vec<_>>();
        assert_eq!(split(b"a,b"), [&b"a"[..], b"b"]);
        assert_eq!(split(b""), [&b""[..]]);
        assert_eq!(split(b","), [&b""[..], b""]);
        assert_eq!(split(b"a=\"x,y\",b"), [&b"a=\"x,y\""[..], b"b"]);
        assert_eq!(split(b"a=\"x\\\",y\",b"), [&b"a=\"x\\\",y\""[..], b"b"]);
        assert_eq!(split(b"a=\"x,b"), [&b"a=\"x,b"[..]]);
    }

    /// A value a client could send: list syntax, quotes, escapes, addresses.
    fn sent_value() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just(",".to_owned()),
                Just(";".to_owned()),
                Just("\"".to_owned()),
                Just("\\".to_owned()),
                Just("=".to_owned()),
                Just(" ".to_owned()),
                Just("for=".to_owned()),
                Just("[".to_owned()),
                Just("]".to_owned()),
                Just(":".to_owned()),
                Just("unknown".to_owned()),
                Just("10.0.0.9".to_owned()),
                Just("1.1.1.1".to_owned()),
                Just("2001:db8::9".to_owned()),
                "[ -~]{1,6}",
            ],
            0..12,
        )
        .prop_map(|parts| parts.concat())
    }

    fn untrusted_address() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
            any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
        ]
        .prop_filter("not trusted", |address| !in_10_8(*address))
    }

    /// How a proxy writes an address as a Forwarded node.
    fn node(address: IpAddr) -> String {
        match address {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_answers_an_address_it_was_given(
            forwarded in sent_value(),
            x_forwarded_for in sent_value(),
        ) {
            let fields = format!("Forwarded: {forwarded}\r\nX-Forwarded-For: {x_forwarded_for}\r\n");
            let mut table = Fields::new();
            let request = format!("GET / HTTP/1.1\r\nHost: b\r\n{fields}\r\n");
            if let Ok(Some((head, _))) = parse_head(request.as_bytes(), 8192, &mut table) {
                let answer = forwarded_client(&head, PROXY, in_10_8);
                let text = answer.to_string();
                prop_assert!(
                    answer == PROXY || fields.contains(&text) || answer.is_ipv6(),
                    "{} from {:?}", text, fields
                );
            }
        }

        /// Whatever a client sends, a proxy that appends the client's address makes that
        /// address the answer (or, for a Forwarded value the client left malformed, the
        /// proxy's own): never one the client chose.
        #[test]
        fn what_the_proxy_appended_wins(sent in sent_value(), real in untrusted_address()) {
            let fields = format!("X-Forwarded-For: {sent}, {real}\r\n");
            let request = format!("GET / HTTP/1.1\r\nHost: b\r\n{fields}\r\n");
            let mut table = Fields::new();
            if let Ok(Some((head, _))) = parse_head(request.as_bytes(), 8192, &mut table) {
                prop_assert_eq!(forwarded_client(&head, PROXY, in_10_8), real);
            }
            let fields = format!("Forwarded: {sent}, for={}\r\n", node(real));
            let request = format!("GET / HTTP/1.1\r\nHost: b\r\n{fields}\r\n");
            let mut table = Fields::new();
            if let Ok(Some((head, _))) = parse_head(request.as_bytes(), 8192, &mut table) {
                let answer = forwarded_client(&head, PROXY, in_10_8);
                prop_assert!(answer == real || answer == PROXY, "{} from {:?}", answer, fields);
            }
            let fields = format!("Forwarded: {sent}\r\nForwarded: for={}\r\n", node(real));
            let request = format!("GET / HTTP/1.1\r\nHost: b\r\n{fields}\r\n");
            let mut table = Fields::new();
            if let Ok(Some((head, _))) = parse_head(request.as_bytes(), 8192, &mut table) {
                prop_assert_eq!(forwarded_client(&head, PROXY, in_10_8), real);
            }
        }
    }
}

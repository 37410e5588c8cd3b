//! What a connection on a listener with the PROXY protocol on starts with, before its stream:
//! from a trusted proxy, the header that names the client; from anyone else, anything but a
//! header. It is read here, below the TLS layer, because a TCP proxy in front of a TLS listener
//! passes the TLS bytes through and puts its header before the first record: rustls must never
//! see it, and nothing above `net/` may see ciphertext.
//!
//! Bounded: bytes are held only while the header is incomplete, at most
//! [`PROXY_HEADER_BYTES_MAX`], or, from a peer that may not send one, while its first bytes
//! could still be a header's signature (at most 11). Time is bounded by the connection's
//! opening deadline, which runs from the accept.

use crate::protocol::proxy::{
    PROXY_HEADER_BYTES_MAX, ProxyError, ProxyHeader, parse, starts_with_signature,
};

/// What the first bytes of a connection must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A PROXY header (the peer is a trusted proxy).
    Header,
    /// Anything but a PROXY header (the peer is not a trusted proxy).
    NoHeader,
}

/// Why a connection's first bytes were refused; the connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreambleRefusal {
    /// A PROXY header from a peer that is not a trusted proxy: it could claim any address.
    Untrusted,
    /// The header a trusted proxy must send is missing ([`ProxyError::NotProxy`]), malformed or
    /// too long.
    Header(ProxyError),
}

impl std::fmt::Display for PreambleRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PreambleRefusal::Untrusted => {
                f.write_str("PROXY header from a source that is not in trusted_proxies")
            }
            PreambleRefusal::Header(error) => {
                write!(f, "{error}, and a trusted proxy must send one")
            }
        }
    }
}

/// The state of a connection whose first bytes are not judged yet.
#[derive(Debug)]
pub(super) struct Preamble {
    expect: Expect,
    /// The bytes so far, when one receive did not bring enough to judge.
    held: Vec<u8>,
    /// Refused: the connection is closing, and what else it sent is dropped unread.
    refused: bool,
}

/// What one receive's bytes did to the preamble.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step<'a> {
    /// Not enough bytes yet to judge; they are held.
    NeedMore,
    /// The preamble is over: the header, if one was read, and the stream's first bytes (maybe
    /// none).
    Done {
        header: Option<ProxyHeader>,
        rest: &'a mut [u8],
    },
    Refused(PreambleRefusal),
    /// Bytes that came after a refusal, before the connection stopped reading: dropped, so
    /// that nothing of a refused connection reaches TLS or the shard.
    Dropped,
}

impl Preamble {
    pub(super) fn new(expect: Expect) -> Preamble {
        Preamble {
            expect,
            held: Vec::new(),
            refused: false,
        }
    }

    /// Takes in the bytes of one receive. The stream's bytes in [`Step::Done`] are the end of
    /// `data`, or, when bytes were held without a header, the held bytes with `data` after them.
    pub(super) fn feed<'a>(&'a mut self, data: &'a mut [u8]) -> Step<'a> {
        if self.refused {
            return Step::Dropped;
        }
        match self.expect {
            Expect::Header => self.feed_header(data),
            Expect::NoHeader => self.feed_no_header(data),
        }
    }

    fn refuse<'a>(&mut self, refusal: PreambleRefusal) -> Step<'a> {
        self.refused = true;
        self.held = Vec::new();
        Step::Refused(refusal)
    }

    fn feed_header<'a>(&mut self, data: &'a mut [u8]) -> Step<'a> {
        let held = self.held.len();
        let parsed = if held == 0 {
            parse(data)
        } else {
            // A header does not run past the limit, so neither does what is held of it.
            let take = data.len().min(PROXY_HEADER_BYTES_MAX.saturating_sub(held));
            self.held.extend_from_slice(&data[..take]);
            parse(&self.held)
        };
        match parsed {
            Ok(Some((header, consumed))) => {
                // The held bytes were an incomplete header, so it ends in `data`.
                debug_assert!(consumed > held, "a prefix of a header is not a header");
                let used = consumed.saturating_sub(held).min(data.len());
                Step::Done {
                    header: Some(header),
                    rest: &mut data[used..],
                }
            }
            Ok(None) => {
                if held == 0 {
                    // Under the limit: `parse` refuses as too long whatever is not.
                    self.held.extend_from_slice(data);
                }
                Step::NeedMore
            }
            Err(error) => self.refuse(PreambleRefusal::Header(error)),
        }
    }

    fn feed_no_header<'a>(&'a mut self, data: &'a mut [u8]) -> Step<'a> {
        if self.held.is_empty() {
            return match starts_with_signature(data) {
                Some(false) => Step::Done {
                    header: None,
                    rest: data,
                },
                Some(true) => self.refuse(PreambleRefusal::Untrusted),
                None => {
                    self.held.extend_from_slice(data);
                    Step::NeedMore
                }
            };
        }
        self.held.extend_from_slice(data);
        match starts_with_signature(&self.held) {
            Some(false) => Step::Done {
                header: None,
                rest: &mut self.held,
            },
            Some(true) => self.refuse(PreambleRefusal::Untrusted),
            None => Step::NeedMore,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &[u8] = b"PROXY TCP4 192.0.2.1 198.51.100.2 4711 1883\r\n";
    const CONNECT: &[u8] = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00";

    fn header() -> ProxyHeader {
        ProxyHeader::Proxied {
            source: "192.0.2.1:4711".parse().expect("an address"),
            destination: "198.51.100.2:1883".parse().expect("an address"),
        }
    }

    /// Feeds `bytes` cut at `cuts`; the outcome of the last piece, as owned bytes.
    fn feed_in_pieces(
        expect: Expect,
        bytes: &[u8],
        cuts: &[usize],
    ) -> Result<(Option<ProxyHeader>, Vec<u8>), Option<PreambleRefusal>> {
        let mut preamble = Preamble::new(expect);
        let mut start = 0;
        for &end in cuts.iter().chain([&bytes.len()]) {
            let mut piece = bytes[start..end].to_vec();
            start = end;
            match preamble.feed(&mut piece) {
                Step::NeedMore => continue,
                Step::Dropped => panic!("nothing was refused"),
                Step::Done { header, rest } => return Ok((header, rest.to_vec())),
                Step::Refused(refusal) => return Err(Some(refusal)),
            }
        }
        Err(None)
    }

    #[test]
    fn a_header_in_one_piece_or_many() {
        let bytes = [V1, CONNECT].concat();
        for cut in 0..bytes.len() {
            let cuts: &[usize] = if cut == 0 { &[] } else { &[cut] };
            let (got, rest) = feed_in_pieces(Expect::Header, &bytes, cuts).expect("a header");
            assert_eq!(got, Some(header()), "cut at {cut}");
            // The stream starts right after the header, up to the end of its piece.
            let end = if (1..V1.len()).contains(&cut) || cut == 0 {
                bytes.len()
            } else {
                cut
            };
            assert_eq!(rest, &bytes[V1.len()..end], "cut at {cut}");
        }
        let every_byte: Vec<usize> = (1..bytes.len()).collect();
        let (got, rest) = feed_in_pieces(Expect::Header, &bytes, &every_byte).expect("a header");
        assert_eq!((got, rest), (Some(header()), Vec::new()));
    }

    #[test]
    fn a_trusted_proxy_must_send_a_header() {
        assert_eq!(
            feed_in_pieces(Expect::Header, CONNECT, &[]),
            Err(Some(PreambleRefusal::Header(ProxyError::NotProxy)))
        );
        assert_eq!(
            feed_in_pieces(
                Expect::Header,
                b"PROXY TCP4 300.0.0.1 198.51.100.2 1 2\r\n",
                &[3]
            ),
            Err(Some(PreambleRefusal::Header(ProxyError::AddressInvalid)))
        );
        // Incomplete: held, under the limit.
        assert_eq!(feed_in_pieces(Expect::Header, &V1[..20], &[5]), Err(None));
    }

    #[test]
    fn held_bytes_stay_under_the_limit() {
        // A version 2 header that claims the most its length field allows.
        let mut bytes = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff".to_vec();
        bytes.resize(70_000, 0);
        for cuts in [&[][..], &[8], &[8, 16], &[16, 2000, 2047]] {
            assert_eq!(
                feed_in_pieces(Expect::Header, &bytes, cuts),
                Err(Some(PreambleRefusal::Header(ProxyError::TooLong))),
                "{cuts:?}"
            );
        }
        let mut preamble = Preamble::new(Expect::Header);
        let mut piece = b"PROXY ".to_vec();
        assert_eq!(preamble.feed(&mut piece), Step::NeedMore);
        let mut long = vec![b'x'; 4096];
        assert!(matches!(preamble.feed(&mut long), Step::Refused(_)));
        assert!(preamble.held.len() <= PROXY_HEADER_BYTES_MAX);
    }

    #[test]
    fn anyone_else_may_not_send_one() {
        for cuts in [&[][..], &[1], &[2, 5]] {
            assert_eq!(
                feed_in_pieces(Expect::NoHeader, V1, cuts),
                Err(Some(PreambleRefusal::Untrusted)),
                "{cuts:?}"
            );
        }
        let v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c";
        assert_eq!(
            feed_in_pieces(Expect::NoHeader, v2, &[3, 11]),
            Err(Some(PreambleRefusal::Untrusted))
        );
        // Everything else is the stream, held bytes first.
        assert_eq!(
            feed_in_pieces(Expect::NoHeader, CONNECT, &[]),
            Ok((None, CONNECT.to_vec()))
        );
        let post = b"POST /mqtt HTTP/1.1\r\n";
        assert_eq!(
            feed_in_pieces(Expect::NoHeader, post, &[1]),
            Ok((None, post.to_vec()))
        );
        assert_eq!(
            feed_in_pieces(Expect::NoHeader, b"PROXYTCP4", &[1, 3, 5]),
            Ok((None, b"PROXYTCP4".to_vec()))
        );
    }

    #[test]
    fn nothing_after_a_refusal_goes_on() {
        let mut preamble = Preamble::new(Expect::NoHeader);
        let mut header = V1.to_vec();
        assert_eq!(
            preamble.feed(&mut header),
            Step::Refused(PreambleRefusal::Untrusted)
        );
        let mut after = CONNECT.to_vec();
        assert_eq!(preamble.feed(&mut after), Step::Dropped);
        let mut preamble = Preamble::new(Expect::Header);
        let mut connect = CONNECT.to_vec();
        assert!(matches!(preamble.feed(&mut connect), Step::Refused(_)));
        let mut header = V1.to_vec();
        assert_eq!(preamble.feed(&mut header), Step::Dropped);
    }

    #[test]
    fn refusals_say_why() {
        let untrusted = PreambleRefusal::Untrusted.to_string();
        assert!(untrusted.contains("trusted_proxies"), "{untrusted}");
        let missing = PreambleRefusal::Header(ProxyError::NotProxy).to_string();
        assert!(missing.starts_with("no PROXY protocol header"), "{missing}");
    }
}

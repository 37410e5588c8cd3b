//! Hand-made inputs for each target, written to `seeds/<target>/` by
//! `cargo run --example write_seeds`: golden packets from the specs, a browser's upgrade
//! request, client frames, PROXY protocol headers, and broker sessions through subscriptions, QoS 1/2 flows, wills,
//! takeovers, expiry and several shards. Each input starts with its target's control bytes.

use fanfare::broker::Broker;
use fanfare::protocol::mqtt::{
    Ack, Auth, ConnAck, Connect, Delivery, Disconnect, Packet, PacketId, PropertiesBuf, Property,
    ProtocolVersion, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscribeReturnCode, SubscriptionOptions, UnsubAck, Unsubscribe, Will, encode,
};

use crate::session::{CLIENT_IDS, SLOTS, Step};

/// The seeds of one target: file name and bytes.
pub type Seeds = Vec<(&'static str, Vec<u8>)>;

/// Every target's seeds, by target name.
pub fn all() -> Vec<(&'static str, Seeds)> {
    vec![
        ("mqtt_v311", mqtt_v311()),
        ("mqtt_v5", mqtt_v5()),
        ("ws_frame", ws_frame()),
        ("http_request", http_request()),
        ("proxy_header", proxy_header()),
        ("broker_session", broker_session()),
    ]
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn id(value: u16) -> PacketId {
    PacketId::new(value).expect("not zero")
}

fn encoded(version: ProtocolVersion, packets: &[Packet<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for packet in packets {
        encode(packet, version, &mut out);
    }
    out
}

/// MQTT 3.1.1 CONNECT: clean session, keep alive 60 s, client id "c1" (§3.1).
const CONNECT_311: &[u8] = &[
    0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'c', b'1',
];

/// MQTT 3.1.1 CONNECT with a QoS 1 retained will on "w/t", user name "u" and password "p".
const CONNECT_311_WILL: &[u8] = &[
    0x10, 30, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xEE, 0, 10, 0, 2, b'c', b'2', 0, 3, b'w', b'/',
    b't', 0, 3, b'b', b'y', b'e', 0, 1, b'u', 0, 1, b'p',
];

/// MQTT 3.1 CONNECT: protocol name "MQIsdp", level 3, client id "c31".
const CONNECT_31: &[u8] = &[
    0x10, 17, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 60, 0, 3, b'c', b'3', b'1',
];

/// What a 3.1.1 client sends after CONNECT: SUBSCRIBE "a/+" QoS 1, PUBLISH at QoS 0 (retained),
/// 1 and 2 (DUP), the acknowledgements of both flows, UNSUBSCRIBE, PINGREQ, DISCONNECT.
const SESSION_311: &[u8] = &[
    0x82, 8, 0, 1, 0, 3, b'a', b'/', b'+', 1, //
    0x31, 7, 0, 3, b'a', b'/', b'b', b'h', b'i', //
    0x32, 9, 0, 3, b'a', b'/', b'b', 0, 7, b'h', b'i', //
    0x3C, 9, 0, 3, b'a', b'/', b'b', 0, 8, b'h', b'i', //
    0x40, 2, 0, 7, //
    0x50, 2, 0, 8, //
    0x62, 2, 0, 8, //
    0x70, 2, 0, 8, //
    0xA2, 7, 0, 2, 0, 3, b'a', b'/', b'+', //
    0xC0, 0, //
    0xE0, 0,
];

fn mqtt_v311() -> Seeds {
    use ProtocolVersion::V311;
    // Control byte: bits 0-1 start (0 none, 1 3.1, 2 3.1.1), bit 2 small limits, bit 3 client.
    let server_311 = encoded(
        V311,
        &[
            Packet::ConnAck(ConnAck::new(
                true,
                fanfare::protocol::mqtt::ConnectReturnCode::Accepted,
            )),
            Packet::SubAck(SubAck {
                packet_id: id(1),
                codes: vec![
                    SubscribeReturnCode::Granted(QoS::AtLeastOnce),
                    SubscribeReturnCode::Failure,
                ],
                properties: Default::default(),
            }),
            Packet::UnsubAck(UnsubAck::new(id(2))),
            Packet::PubRel(Ack::new(id(3))),
            Packet::PingResp,
        ],
    );
    vec![
        ("connect", cat(&[&[0], CONNECT_311])),
        ("connect-will-user-password", cat(&[&[0], CONNECT_311_WILL])),
        ("connect-3.1", cat(&[&[0], CONNECT_31])),
        ("session-3.1.1", cat(&[&[0], CONNECT_311, SESSION_311])),
        ("session-3.1", cat(&[&[0], CONNECT_31, SESSION_311])),
        ("after-connect-3.1.1", cat(&[&[2], SESSION_311])),
        // 3.1 clients set DUP on a repeated PUBREL, SUBSCRIBE and UNSUBSCRIBE.
        (
            "pubrel-dup-3.1",
            cat(&[&[1], &[0x6A, 2, 0, 5, 0x8A, 6, 0, 9, 0, 1, b'#', 0]]),
        ),
        ("small-limits", cat(&[&[4], CONNECT_311_WILL])),
        ("small-limits-session", cat(&[&[6], SESSION_311])),
        ("server-3.1.1", cat(&[&[8 | 2], &server_311])),
        // Remaining length in five bytes.
        (
            "remaining-length-too-long",
            vec![2, 0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        ),
    ]
}

fn mqtt_v5() -> Seeds {
    use ProtocolVersion::V5;
    let mut connect_props = PropertiesBuf::new();
    connect_props
        .push(Property::SessionExpiryInterval(60))
        .push(Property::ReceiveMaximum(10))
        .push(Property::MaximumPacketSize(4096))
        .push(Property::TopicAliasMaximum(5))
        .push(Property::RequestProblemInformation(1))
        .push(Property::UserProperty("k", "v"))
        .push(Property::AuthenticationMethod("SCRAM-SHA-1"))
        .push(Property::AuthenticationData(b"client-first"));
    let mut will_props = PropertiesBuf::new();
    will_props
        .push(Property::WillDelayInterval(5))
        .push(Property::PayloadFormatIndicator(1))
        .push(Property::MessageExpiryInterval(10))
        .push(Property::ContentType("text/plain"))
        .push(Property::ResponseTopic("r/t"))
        .push(Property::CorrelationData(b"cd"));
    let connect = Packet::Connect(Connect {
        version: V5,
        clean_session: true,
        keep_alive_s: 30,
        client_id: "v5",
        will: Some(Will {
            topic: "w/t",
            payload: b"bye",
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: will_props.as_properties(),
        }),
        username: Some("user"),
        password: Some(b"secret"),
        properties: connect_props.as_properties(),
        bridge: false,
    });
    let mut publish_props = PropertiesBuf::new();
    publish_props
        .push(Property::TopicAlias(1))
        .push(Property::MessageExpiryInterval(30))
        .push(Property::UserProperty("a", "b"));
    let mut alias_only = PropertiesBuf::new();
    alias_only.push(Property::TopicAlias(1));
    let mut subscribe_props = PropertiesBuf::new();
    subscribe_props.push(Property::SubscriptionIdentifier(268_435_455));
    let mut reason_props = PropertiesBuf::new();
    reason_props.push(Property::ReasonString("why"));
    let mut disconnect_props = PropertiesBuf::new();
    disconnect_props.push(Property::SessionExpiryInterval(0));
    let mut auth_props = PropertiesBuf::new();
    auth_props
        .push(Property::AuthenticationMethod("SCRAM-SHA-1"))
        .push(Property::AuthenticationData(b"client-final"));
    let options = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::SendAtNewSubscribe,
    };
    let mut failed = Ack::new(id(4));
    failed.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
    failed.properties = reason_props.as_properties();
    let session = encoded(
        V5,
        &[
            Packet::Publish(Publish {
                dup: false,
                retain: false,
                delivery: Delivery::AtLeastOnce(id(1)),
                topic: "s/1",
                payload: b"{\"score\":1}",
                properties: publish_props.as_properties(),
            }),
            Packet::Publish(Publish {
                dup: true,
                retain: true,
                delivery: Delivery::ExactlyOnce(id(2)),
                topic: "",
                payload: b"2",
                properties: alias_only.as_properties(),
            }),
            Packet::Subscribe(Subscribe {
                packet_id: id(3),
                filters: vec![
                    ("s/#", options),
                    ("$share/g/s/+", SubscriptionOptions::new(QoS::AtLeastOnce)),
                ],
                properties: subscribe_props.as_properties(),
            }),
            Packet::PubComp(failed),
            Packet::PubRel(Ack::new(id(2))),
            Packet::Unsubscribe(Unsubscribe {
                packet_id: id(5),
                filters: vec!["s/#", "$share/g/s/+"],
                properties: Default::default(),
            }),
            Packet::PingReq,
            Packet::Auth(Auth {
                reason: ReasonCode::CONTINUE_AUTHENTICATION,
                properties: auth_props.as_properties(),
            }),
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
                properties: disconnect_props.as_properties(),
            }),
        ],
    );
    let mut connack_props = PropertiesBuf::new();
    connack_props
        .push(Property::AssignedClientIdentifier("auto-1"))
        .push(Property::ReceiveMaximum(64))
        .push(Property::MaximumPacketSize(1 << 20))
        .push(Property::TopicAliasMaximum(64))
        .push(Property::SharedSubscriptionAvailable(1));
    let server = encoded(
        V5,
        &[
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason: ReasonCode::SUCCESS,
                properties: connack_props.as_properties(),
            }),
            Packet::SubAck(SubAck {
                packet_id: id(3),
                codes: vec![
                    SubscribeReturnCode::Granted(QoS::ExactlyOnce),
                    SubscribeReturnCode::Refused(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED),
                ],
                properties: reason_props.as_properties(),
            }),
            Packet::UnsubAck(UnsubAck {
                packet_id: id(5),
                reasons: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
                properties: Default::default(),
            }),
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::SESSION_TAKEN_OVER,
                properties: reason_props.as_properties(),
            }),
        ],
    );
    let connect = encoded(V5, &[connect]);
    // A v5 CONNECT: level 5, clean start, keep alive 60 s, no properties, client id "x".
    let minimal: &[u8] = &[
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'x',
    ];
    vec![
        ("connect-minimal", cat(&[&[0], minimal])),
        ("connect-properties-will", cat(&[&[0], &connect])),
        ("session", cat(&[&[0], &connect, &session])),
        ("after-connect", cat(&[&[1], &session])),
        ("small-limits-session", cat(&[&[5], &session])),
        ("server", cat(&[&[8 | 1], &server])),
        // PUBACK with a reason code and no property length (§3.4.2.2.1).
        ("puback-reason-only", vec![1, 0x40, 3, 0, 1, 0x10]),
    ]
}

/// A client frame: FIN and `opcode`, masked with `mask` (RFC 6455 §5.3), with the shortest
/// length form unless `long_form`.
fn frame(first: u8, payload: &[u8], mask: [u8; 4], long_form: bool) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        len @ 0..=125 if !long_form => out.push(0x80 | len as u8),
        len @ 0..=0xFFFF if !long_form || len < 126 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn ws_frame() -> Seeds {
    // Header: limits byte (0x3F: 1 MiB frames and messages; 0x1B: 7 bytes), cut count,
    // cuts (2 bytes each), refusal byte.
    const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];
    let connect = frame(0x82, CONNECT_311, MASK, false);
    let session = cat(&[
        &frame(0x82, CONNECT_311, MASK, false),
        &frame(0x89, b"ping", MASK, false),
        &frame(0x02, &SESSION_311[..20], MASK, false),
        &frame(0x8A, b"", MASK, false),
        &frame(0x00, &SESSION_311[20..40], MASK, false),
        &frame(0x80, &SESSION_311[40..], MASK, false),
        &frame(0x88, b"\x03\xe8bye", MASK, false),
        b"ignored after close",
    ]);
    let long = cat(&[
        &frame(0x82, &[0x5A; 300], MASK, false),
        &frame(0x82, &[0xA5; 130], MASK, true),
    ]);
    let cuts: &[u8] = &[5, 1, 0, 3, 0, 7, 0, 15, 0, 16, 0];
    vec![
        ("connect", cat(&[&[0x3F, 0, 0], &connect])),
        ("session", cat(&[&[0x3F, 0, 0], &session])),
        ("session-cut", cat(&[&[0x3F], cuts, &[0], &session])),
        ("session-refused", cat(&[&[0x3F, 0, 3], &session])),
        (
            "session-small-limits",
            cat(&[&[0x1B], cuts, &[0], &session]),
        ),
        ("long-lengths", cat(&[&[0x3F, 2, 3, 0, 200, 0, 0], &long])),
        ("unmasked", vec![0x3F, 0, 0, 0x82, 0x02, 0xC0, 0x00]),
        (
            "text",
            cat(&[&[0x3F, 0, 0], &frame(0x81, b"hi", MASK, false)]),
        ),
        (
            "close-bad-code",
            cat(&[&[0x3F, 0, 0], &frame(0x88, b"\x03\xed", MASK, false)]),
        ),
    ]
}

fn http_request() -> Seeds {
    // Control byte: bits 0-1 limit (8 KiB, 256, 40, 5 bytes), bit 2 allow no subprotocol, bit 3
    // allow only the origin https://scores.example.
    let browser: &[u8] = b"GET /mqtt HTTP/1.1\r\nHost: localhost:8083\r\nConnection: Upgrade\r\n\
        Pragma: no-cache\r\nCache-Control: no-cache\r\nUpgrade: websocket\r\n\
        Origin: http://localhost:8080\r\nSec-WebSocket-Version: 13\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept-Encoding: gzip, deflate, br\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
        Sec-WebSocket-Protocol: mqtt\r\n\r\n\x82\x80\x00\x00\x00\x00";
    let mqtt_js: &[u8] = b"GET /mqtt?client=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
        Connection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nSec-WebSocket-Protocol: mqttv3.1, mqtt\r\n\r\n";
    let no_protocol: &[u8] = b"GET /mqtt HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\
        Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n\r\n";
    let page: &[u8] = b"GET /index.html?v=2 HTTP/1.1\r\nHost: example.com\r\n\
        Accept-Encoding: br;q=1.0, gzip;q=0.5, *;q=0\r\nIf-None-Match: \"abc\", W/\"def\"\r\n\r\n";
    let head: &[u8] = b"HEAD / HTTP/1.1\r\nHost: example.com\r\nAccept-Encoding: x-gzip\r\n\r\n";
    vec![
        ("browser-upgrade", cat(&[&[0], browser])),
        ("mqtt-js-upgrade", cat(&[&[0], mqtt_js])),
        ("no-subprotocol", cat(&[&[4], no_protocol])),
        ("no-subprotocol-refused", cat(&[&[0], no_protocol])),
        ("upgrade-over-limit", cat(&[&[1], browser])),
        ("origin-refused", cat(&[&[8], browser])),
        (
            "origin-allowed",
            cat(&[
                &[8],
                b"GET /mqtt HTTP/1.1\r\nHost: scores.example\r\nOrigin: https://scores.example\r\n\
                  Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
            ]),
        ),
        ("origin-missing", cat(&[&[8], mqtt_js])),
        ("page", cat(&[&[0], page])),
        ("head", cat(&[&[0], head])),
        (
            "metrics",
            cat(&[&[2], b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n"]),
        ),
        ("http-1.0", cat(&[&[0], b"GET / HTTP/1.0\r\n\r\n"])),
        (
            "post",
            cat(&[&[0], b"POST /mqtt HTTP/1.1\r\nHost: h\r\n\r\n"]),
        ),
        (
            "two-hosts",
            cat(&[&[4], b"GET /mqtt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"]),
        ),
        (
            "bare-lf",
            cat(&[&[0], b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n"]),
        ),
    ]
}

/// The version 2 signature (PROXY protocol §2.2).
const PROXY_V2_SIGNATURE: &[u8] = b"\r\n\r\n\x00\r\nQUIT\n";

/// A version 2 header: signature, version and command, family and transport, the length of
/// `block`, then `block`.
fn proxy_v2(version_command: u8, protocol: u8, block: &[u8]) -> Vec<u8> {
    let length = u16::try_from(block.len()).expect("a short block");
    cat(&[
        PROXY_V2_SIGNATURE,
        &[version_command, protocol],
        &length.to_be_bytes(),
        block,
    ])
}

fn proxy_header() -> Seeds {
    // TCP over IPv4: 192.0.2.1:56324 to 198.51.100.2:1883.
    let tcp4: &[u8] = &[192, 0, 2, 1, 198, 51, 100, 2, 0xDC, 0x04, 0x07, 0x5B];
    // TCP over IPv6: [2001:db8::1]:4711 to [::1]:8883.
    let mut tcp6 = vec![0x20, 0x01, 0x0D, 0xB8];
    tcp6.extend_from_slice(&[0; 11]);
    tcp6.push(1);
    tcp6.extend_from_slice(&[0; 15]);
    tcp6.extend_from_slice(&[1, 0x12, 0x67, 0x22, 0xB3]);
    // TLVs: ALPN "mqtt", authority "scores.example", a NOOP, a CRC32C, an SSL TLV with a
    // version sub-TLV.
    let tlvs: &[u8] = b"\x01\x00\x04mqtt\x02\x00\x0escores.example\x04\x00\x00\
        \x03\x00\x04\xde\xad\xbe\xef\x20\x00\x0c\x01\x00\x00\x00\x00\x21\x00\x04TLS1";
    vec![
        // §2.1's example, then an HTTP request.
        (
            "v1-tcp4-http",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n\
              Host: 192.168.0.11\r\n\r\n"
                .to_vec(),
        ),
        (
            "v1-tcp6-connect",
            cat(&[b"PROXY TCP6 2001:db8::1 ::1 4711 8883\r\n", CONNECT_311]),
        ),
        (
            "v1-tcp6-longest",
            b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
              ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
                .to_vec(),
        ),
        ("v1-unknown", b"PROXY UNKNOWN\r\n".to_vec()),
        (
            "v1-unknown-longest",
            b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
              ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
                .to_vec(),
        ),
        (
            "v1-mapped",
            b"PROXY TCP6 ::ffff:192.0.2.1 ::ffff:192.0.2.2 1 2\r\n".to_vec(),
        ),
        (
            "v1-two-spaces",
            b"PROXY TCP4  192.0.2.1 192.0.2.2 1 2\r\n".to_vec(),
        ),
        (
            "v1-bare-lf",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n".to_vec(),
        ),
        (
            "v1-leading-zero",
            b"PROXY TCP4 192.0.2.01 192.0.2.2 1 02\r\n".to_vec(),
        ),
        ("v1-no-crlf", cat(&[b"PROXY UNKNOWN ", &[b'x'; 100]])),
        (
            "v2-tcp4-connect",
            cat(&[&proxy_v2(0x21, 0x11, tcp4), CONNECT_311]),
        ),
        ("v2-tcp6-tlvs", proxy_v2(0x21, 0x21, &cat(&[&tcp6, tlvs]))),
        ("v2-local", proxy_v2(0x20, 0x00, &[])),
        ("v2-local-with-block", proxy_v2(0x20, 0x11, tcp4)),
        ("v2-unspec", proxy_v2(0x21, 0x00, &[])),
        ("v2-udp4", proxy_v2(0x21, 0x12, tcp4)),
        ("v2-unix-stream", proxy_v2(0x21, 0x31, &[b'/'; 216])),
        ("v2-version-1", proxy_v2(0x11, 0x11, tcp4)),
        ("v2-command-2", proxy_v2(0x22, 0x11, tcp4)),
        ("v2-family-4", proxy_v2(0x21, 0x41, tcp4)),
        ("v2-addresses-truncated", proxy_v2(0x21, 0x21, tcp4)),
        (
            "v2-tlv-past-the-end",
            proxy_v2(0x21, 0x11, &cat(&[tcp4, b"\x04\x00\x09abc"])),
        ),
        (
            "v2-too-long",
            cat(&[PROXY_V2_SIGNATURE, b"\x21\x11\xff\xff", tcp4]),
        ),
        ("not-proxy-connect", CONNECT_311.to_vec()),
    ]
}

/// Writes a broker session, placing connections as [`crate::session`] does: on the shard
/// owning the client id, in its first free slot.
struct Script {
    config: u8,
    shards: usize,
    used: Vec<[bool; SLOTS]>,
    steps: Vec<Step>,
}

/// CONNECT flags of [`Step::Connect`].
const V311: u8 = 1;
const V5: u8 = 2;
const CLEAN: u8 = 0b100;
const WS: u8 = 0b1000;
const WILL: u8 = 0b1_0000;
const WILL_QOS1: u8 = 0b10_0000;

impl Script {
    fn new(config: u8) -> Script {
        let shards = 1 + usize::from(config % 3);
        Script {
            config,
            shards,
            used: vec![[false; SLOTS]; shards],
            steps: Vec::new(),
        }
    }

    /// Connects `CLIENT_IDS[client & 0xF]`; returns the `conn` byte naming it.
    fn connect(&mut self, client: u8, flags: u8, keep_alive: u8, v5: u8) -> u8 {
        let id = CLIENT_IDS[usize::from(client & 0x0F)];
        assert!(!id.is_empty(), "scripts name their clients");
        let shard = Broker::owner_shard(id, self.shards);
        let slot = self.used[shard]
            .iter()
            .position(|used| !used)
            .expect("a free slot");
        self.used[shard][slot] = true;
        self.steps.push(Step::Connect {
            shard: 0,
            client,
            flags,
            keep_alive,
            v5,
        });
        (shard * SLOTS + slot) as u8
    }

    fn lost(&mut self, conn: u8) {
        let index = usize::from(conn);
        self.used[index / SLOTS][index % SLOTS] = false;
        self.steps.push(Step::Lost { conn });
    }

    fn step(&mut self, step: Step) -> &mut Script {
        self.steps.push(step);
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = vec![self.config];
        for step in &self.steps {
            step.write(&mut out);
        }
        out
    }
}

fn publish(conn: u8, topic: u8, flags: u8, id: u8) -> Step {
    Step::Publish {
        conn,
        topic,
        flags,
        id,
        payload: 3,
    }
}

fn broker_session() -> Seeds {
    use Step::*;
    let ack = |conn, kind, id| Ack { conn, kind, id };
    let mut seeds = Vec::new();

    // QoS 1 and 2 both ways between two 3.1.1 clients; "t/#" matches "t/a".
    let mut s = Script::new(0);
    let a = s.connect(0, V311 | CLEAN, 0, 0);
    s.step(Subscribe {
        conn: a,
        filter: 2,
        options: 2,
        id: 1,
    });
    let b = s.connect(1, V311 | CLEAN | WS, 0, 0);
    s.step(publish(b, 1, 1, 1)).step(Fanout { shard: 128 });
    s.step(ack(a, 0, 1)).step(publish(b, 1, 2, 2));
    s.step(ack(a, 1, 2)).step(ack(a, 3, 2)).step(ack(b, 2, 2));
    s.step(PingReq { conn: a }).step(Unsubscribe {
        conn: a,
        filter: 2,
        id: 3,
    });
    s.step(Disconnect { conn: b, flags: 0 });
    s.lost(b);
    seeds.push(("qos-flows", s.bytes()));

    // A persistent session queues QoS 1 while offline and gets it on its return.
    let mut s = Script::new(0);
    let a = s.connect(0, V311, 0, 0);
    s.step(Subscribe {
        conn: a,
        filter: 0,
        options: 1,
        id: 1,
    });
    s.lost(a);
    let b = s.connect(1, V311 | CLEAN, 0, 0);
    for id in 1..=4 {
        s.step(publish(b, 0, 1, id));
    }
    let a = s.connect(0, V311, 0, 0);
    s.step(Fanout { shard: 0 })
        .step(ack(a, 0, 1))
        .step(ack(a, 0, 2));
    seeds.push(("offline-queue", s.bytes()));

    // A will on "t/a" (client bits 4-7 = 1) published when the keep alive of 1 s runs out.
    let mut s = Script::new(0);
    let sub = s.connect(1, V311 | CLEAN, 0, 0);
    s.step(Subscribe {
        conn: sub,
        filter: 1,
        options: 1,
        id: 1,
    });
    s.connect(0x10, V311 | CLEAN | WILL | WILL_QOS1, 1, 0);
    s.step(Advance { amount: 20 }).step(Tick { shard: 128 });
    s.step(Fanout { shard: 128 });
    seeds.push(("will-on-keep-alive", s.bytes()));

    // The same client id twice: the second connection takes the session over.
    let mut s = Script::new(0);
    let first = s.connect(2, V311, 0, 0);
    s.step(Subscribe {
        conn: first,
        filter: 3,
        options: 1,
        id: 1,
    });
    let second = s.connect(2, V311, 0, 0);
    s.lost(first);
    s.step(publish(second, 0, 1, 1));
    seeds.push(("takeover", s.bytes()));

    // MQTT 5: Session Expiry 10 s, Receive Maximum 1, Maximum Packet Size 100, Will Delay 5 s;
    // subscription identifiers, No Local, topic aliases, expiry, DISCONNECT with will.
    let mut s = Script::new(0);
    let v5 = 0b10 | 0b01 << 2 | 0b10 << 4 | 0b10 << 6;
    let a = s.connect(0x10, V5 | CLEAN | WILL | WILL_QOS1, 3, v5);
    s.step(Subscribe {
        conn: a,
        filter: 2,
        options: 0x40 | 0b10_0110,
        id: 1,
    });
    let b = s.connect(1, V5 | CLEAN, 0, 0);
    s.step(Subscribe {
        conn: b,
        filter: 1,
        options: 0x40 | 0x80 | 1,
        id: 1,
    });
    s.step(publish(b, 1, 0b01_0001, 1))
        .step(publish(b, 1, 0b10_0001, 2));
    s.step(publish(b, 1, 0x40 | 2, 3)).step(Fanout { shard: 0 });
    s.step(ack(a, 0, 1))
        .step(ack(a, 4, 2))
        .step(publish(a, 2, 0x80, 0));
    s.step(Disconnect {
        conn: a,
        flags: 0b011,
    });
    s.step(Advance { amount: 60 }).step(Tick { shard: 0 });
    s.step(Advance { amount: 140 }).step(Tick { shard: 0 });
    seeds.push(("v5-features", s.bytes()));

    // Three shards: clients spread by id, shared and plain subscriptions, mail between shards.
    let mut s = Script::new(2);
    let conns: Vec<u8> = (0..4).map(|c| s.connect(c, V311 | CLEAN, 0, 0)).collect();
    s.step(Subscribe {
        conn: conns[0],
        filter: 6,
        options: 1,
        id: 1,
    });
    s.step(Subscribe {
        conn: conns[1],
        filter: 6,
        options: 1,
        id: 1,
    });
    s.step(Subscribe {
        conn: conns[2],
        filter: 0,
        options: 0,
        id: 1,
    });
    for id in 1..=3 {
        s.step(publish(conns[3], 0, 1, id));
    }
    for route in [0x80, 0x81, 0x82, 0x90, 0x91, 0x92, 0x80, 0x81, 0x82] {
        s.step(Mail { route });
    }
    s.step(Fanout { shard: 128 });
    seeds.push(("three-shards-shared", s.bytes()));

    // Tight limits: two subscriptions at most, a window of two, one retained message.
    let mut s = Script::new(4);
    let a = s.connect(0, V311 | CLEAN, 0, 0);
    for filter in 0..3 {
        s.step(Subscribe {
            conn: a,
            filter,
            options: 1,
            id: filter + 1,
        });
    }
    let b = s.connect(1, V311 | CLEAN, 0, 0);
    for id in 1..=4 {
        s.step(publish(b, 0, 1 | 0b100, id));
    }
    s.step(publish(b, 1, 0b100, 0)).step(ack(a, 0, 1));
    seeds.push(("tight-limits", s.bytes()));

    // A connected QoS 1 subscriber that acknowledges nothing, past its window (2) and session
    // queue (200 bytes): the broker asks for its close, and again at every later publish,
    // since it keeps the connection until `connection_lost` (docs/testing.md, "Fuzzing").
    let mut s = Script::new(6);
    let a = s.connect(0, V311 | CLEAN, 0, 0);
    s.step(Subscribe {
        conn: a,
        filter: 0,
        options: 1,
        id: 1,
    });
    let b = s.connect(1, V311 | CLEAN, 0, 0);
    for id in 1..=9 {
        s.step(Publish {
            conn: b,
            topic: 0,
            flags: 1,
            id,
            payload: 10,
        });
    }
    s.lost(a);
    seeds.push(("slow-consumer-closed-again", s.bytes()));

    // An MQTT 5 session that never expires, Maximum Packet Size 1000, gets a 500-byte QoS 1
    // publish and loses its connection before acknowledging it; it comes back with a Maximum
    // Packet Size of 100, and the broker resends the publish anyway (docs/testing.md).
    let mut s = Script::new(0);
    let a = s.connect(0, V5, 0, 0b11 | 0b11 << 4);
    s.step(Subscribe {
        conn: a,
        filter: 0,
        options: 1,
        id: 1,
    });
    let b = s.connect(1, V5 | CLEAN, 0, 0);
    s.step(Publish {
        conn: b,
        topic: 0,
        flags: 1,
        id: 1,
        payload: 125,
    });
    s.lost(a);
    s.connect(0, V5, 0, 0b11 | 0b10 << 4);
    seeds.push(("resend-past-maximum-packet-size", s.bytes()));

    // The same with the window: five QoS 1 publishes in flight to a session without a Receive
    // Maximum (window 8); it comes back with Receive Maximum 1 and gets all five again.
    let mut s = Script::new(0);
    let a = s.connect(0, V5, 0, 0b11);
    s.step(Subscribe {
        conn: a,
        filter: 0,
        options: 1,
        id: 1,
    });
    let b = s.connect(1, V5 | CLEAN, 0, 0);
    for id in 1..=5 {
        s.step(publish(b, 0, 1, id));
    }
    s.lost(a);
    s.connect(0, V5, 0, 0b11 | 0b01 << 2);
    seeds.push(("resend-past-receive-maximum", s.bytes()));

    // Raw bytes: a CONNECT with a SUBSCRIBE behind it, then a packet split over two reads and
    // a malformed one.
    let mut s = Script::new(0);
    s.step(RawConnect {
        shard: 0,
        bytes: cat(&[CONNECT_311, &SESSION_311[..10]]),
    });
    s.step(Raw {
        conn: 0,
        bytes: SESSION_311[10..15].to_vec(),
    });
    s.step(Raw {
        conn: 0,
        bytes: SESSION_311[15..].to_vec(),
    });
    s.step(Raw {
        conn: 0,
        bytes: vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
    });
    s.step(Lost { conn: 0 });
    seeds.push(("raw-bytes", s.bytes()));
    seeds
}

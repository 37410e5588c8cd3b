//! Unit tests of the WebSocket frame decoder and encoder.

use super::*;
use proptest::prelude::*;

const LIMITS: FrameLimits = FrameLimits {
    frame_bytes_max: 1 << 20,
    message_bytes_max: 4 << 20,
};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// What a client sends: first header byte `b0`, masked payload. Lengths are encoded
/// here rather than by the encoder under test.
fn masked(b0: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![b0];
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len @ 126..=0xFFFF => {
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

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Data(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>, Vec<u8>),
}

/// Feeds `bytes` split at `cuts`, stopping at the first error. Consecutive `Data` events
/// are merged, since where the stream splits them is not part of the contract.
fn run(bytes: &[u8], cuts: &[usize], limits: &FrameLimits) -> (Vec<Ev>, Option<WsError>) {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
    cuts.push(0);
    cuts.push(bytes.len());
    cuts.sort_unstable();
    let mut decoder = FrameDecoder::new();
    let mut events: Vec<Ev> = Vec::new();
    for pair in cuts.windows(2) {
        let mut chunk = bytes[pair[0]..pair[1]].to_vec();
        let result = decoder.feed(&mut chunk, limits, |event| {
            match (event, events.last_mut()) {
                (WsEvent::Data(d), Some(Ev::Data(last))) => last.extend_from_slice(d),
                (WsEvent::Data(d), _) => events.push(Ev::Data(d.to_vec())),
                (WsEvent::Ping(p), _) => events.push(Ev::Ping(p.to_vec())),
                (WsEvent::Pong, _) => events.push(Ev::Pong),
                (WsEvent::Close { code, reason }, _) => {
                    events.push(Ev::Close(code, reason.to_vec()))
                }
            }
            Ok::<(), ()>(())
        });
        match result {
            Ok(()) => {}
            Err(FeedError::Ws(err)) => return (events, Some(err)),
            Err(FeedError::Callback(())) => unreachable!("the callback never refuses"),
        }
    }
    (events, None)
}

fn whole(bytes: &[u8]) -> (Vec<Ev>, Option<WsError>) {
    run(bytes, &[], &LIMITS)
}

fn error_of(bytes: &[u8]) -> WsError {
    whole(bytes).1.expect("an error")
}

fn byte_at_a_time(bytes: &[u8]) -> (Vec<Ev>, Option<WsError>) {
    let cuts: Vec<usize> = (0..bytes.len()).collect();
    run(bytes, &cuts, &LIMITS)
}

// RFC 6455 §5.7 examples.

#[test]
fn rfc_masked_hello_as_binary() {
    let bytes = [
        0x82, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(masked(0x82, b"Hello", MASK), bytes);
    let expected = (vec![Ev::Data(b"Hello".to_vec())], None);
    assert_eq!(whole(&bytes), expected);
    assert_eq!(byte_at_a_time(&bytes), expected);
}

#[test]
fn rfc_text_frames_are_refused() {
    // A single-frame masked text message.
    let bytes = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(whole(&bytes), (vec![], Some(WsError::TextFrame)));
    assert_eq!(WsError::TextFrame.close_code(), 1003);
    // A single-frame unmasked text message.
    assert_eq!(
        error_of(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]),
        WsError::TextFrame
    );
    // A fragmented unmasked text message.
    assert_eq!(
        error_of(&[0x01, 0x03, 0x48, 0x65, 0x6c]),
        WsError::TextFrame
    );
}

#[test]
fn rfc_fragmented_message_as_binary() {
    let mut bytes = masked(0x02, b"Hel", MASK);
    bytes.extend(masked(0x80, b"lo", MASK));
    let expected = (vec![Ev::Data(b"Hello".to_vec())], None);
    assert_eq!(whole(&bytes), expected);
    assert_eq!(byte_at_a_time(&bytes), expected);
}

#[test]
fn rfc_ping_and_pong() {
    // The RFC's unmasked ping is what a server sends; from a client it is refused.
    assert_eq!(
        error_of(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]),
        WsError::Unmasked
    );
    let pong = [
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(whole(&pong), (vec![Ev::Pong], None));
    let ping = masked(0x89, b"Hello", MASK);
    assert_eq!(whole(&ping), (vec![Ev::Ping(b"Hello".to_vec())], None));
    assert_eq!(
        byte_at_a_time(&ping),
        (vec![Ev::Ping(b"Hello".to_vec())], None)
    );

    let mut out = Vec::new();
    write_pong(b"Hello", &mut out);
    assert_eq!(out, [0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
}

#[test]
fn rfc_256_byte_binary() {
    let payload: Vec<u8> = (0..=255).collect();
    let mut out = Vec::new();
    write_binary_frame(&payload, &mut out);
    assert_eq!(out[..4], [0x82, 0x7E, 0x01, 0x00]);
    assert_eq!(out[4..], payload[..]);
    assert_eq!(header_len(256), 4);

    let bytes = masked(0x82, &payload, MASK);
    assert_eq!(bytes[..8], [0x82, 0xFE, 0x01, 0x00, 0x37, 0xfa, 0x21, 0x3d]);
    assert_eq!(whole(&bytes), (vec![Ev::Data(payload.clone())], None));
    assert_eq!(byte_at_a_time(&bytes), (vec![Ev::Data(payload)], None));
}

#[test]
fn rfc_64k_binary() {
    let payload: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let mut out = Vec::new();
    write_binary_frame(&payload, &mut out);
    assert_eq!(
        out[..10],
        [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
    );
    assert_eq!(out.len(), 10 + 65536);
    assert_eq!(header_len(65536), 10);

    let bytes = masked(0x82, &payload, MASK);
    assert_eq!(bytes[..2], [0x82, 0xFF]);
    // Split like 4 KiB receive buffers, and oddly.
    let cuts: Vec<usize> = (1..20).map(|i| i * 4096).collect();
    assert_eq!(
        run(&bytes, &cuts, &LIMITS),
        (vec![Ev::Data(payload.clone())], None)
    );
    assert_eq!(
        run(&bytes, &[1, 3, 9, 13, 77], &LIMITS),
        (vec![Ev::Data(payload)], None)
    );
}

#[test]
fn header_forms() {
    for (len, header) in [
        (0usize, vec![0x82, 0x00]),
        (125, vec![0x82, 125]),
        (126, vec![0x82, 126, 0x00, 126]),
        (0xFFFF, vec![0x82, 126, 0xFF, 0xFF]),
        (0x1_0000, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
    ] {
        let mut out = Vec::new();
        write_frame_header(Opcode::Binary, true, len, &mut out);
        assert_eq!(out, header, "length {len}");
        assert_eq!(header_len(len), header.len());
    }
    let mut out = Vec::new();
    write_frame_header(Opcode::Continuation, false, 3, &mut out);
    assert_eq!(out, [0x00, 0x03]);
}

#[test]
fn close_frames_written() {
    let mut out = Vec::new();
    write_close_frame(1000, "", &mut out);
    assert_eq!(out, [0x88, 0x02, 0x03, 0xE8]);
    out.clear();
    write_close_frame(1002, "bad", &mut out);
    assert_eq!(out, [0x88, 0x05, 0x03, 0xEA, b'b', b'a', b'd']);
    // A long reason is cut to fit 125 bytes, never inside a character.
    out.clear();
    write_close_frame(1011, &"é".repeat(100), &mut out);
    assert_eq!(out[1], 2 + 122);
    assert!(core::str::from_utf8(&out[4..]).is_ok());
    for err in [
        WsError::TextFrame,
        WsError::MessageNotFinished,
        WsError::MessageTooLarge,
    ] {
        out.clear();
        write_close_frame(err.close_code(), err.description(), &mut out);
        assert_eq!(usize::from(out[1]), 2 + err.description().len());
    }
}

#[test]
fn close_frames_read() {
    assert_eq!(
        whole(&masked(0x88, b"", MASK)),
        (vec![Ev::Close(None, vec![])], None)
    );
    assert_eq!(
        whole(&masked(0x88, b"\x03\xe8", MASK)),
        (vec![Ev::Close(Some(1000), vec![])], None)
    );
    assert_eq!(
        whole(&masked(0x88, b"\x0f\xa0bye \xc3\xa9", MASK)),
        (
            vec![Ev::Close(Some(4000), "bye é".as_bytes().to_vec())],
            None
        )
    );
    assert_eq!(
        error_of(&masked(0x88, b"\x03", MASK)),
        WsError::CloseTooShort
    );
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        let bytes = masked(0x88, &code.to_be_bytes(), MASK);
        assert_eq!(error_of(&bytes), WsError::CloseCodeInvalid, "code {code}");
    }
    for code in [1000u16, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999] {
        let bytes = masked(0x88, &code.to_be_bytes(), MASK);
        assert_eq!(whole(&bytes).1, None, "code {code}");
    }
    assert_eq!(
        error_of(&masked(0x88, b"\x03\xe8\xff", MASK)),
        WsError::CloseReasonNotUtf8
    );
}

#[test]
fn bytes_after_close_are_ignored() {
    let mut bytes = masked(0x88, b"\x03\xe8", MASK);
    bytes.extend(masked(0x82, b"late", MASK));
    bytes.extend([0x81, 0x00]);
    let expected = (vec![Ev::Close(Some(1000), vec![])], None);
    assert_eq!(whole(&bytes), expected);
    assert_eq!(byte_at_a_time(&bytes), expected);
}

#[test]
fn control_frames_between_fragments() {
    let mut bytes = masked(0x02, b"ab", MASK);
    bytes.extend(masked(0x89, b"p", MASK));
    bytes.extend(masked(0x00, b"", MASK));
    bytes.extend(masked(0x8A, b"", MASK));
    bytes.extend(masked(0x80, b"cd", MASK));
    bytes.extend(masked(0x82, b"e", MASK));
    let expected = vec![
        Ev::Data(b"ab".to_vec()),
        Ev::Ping(b"p".to_vec()),
        Ev::Pong,
        Ev::Data(b"cde".to_vec()),
    ];
    assert_eq!(whole(&bytes), (expected.clone(), None));
    assert_eq!(byte_at_a_time(&bytes), (expected, None));
}

#[test]
fn frame_errors() {
    let cases: [(Vec<u8>, WsError); 12] = [
        (vec![0x82, 0x00], WsError::Unmasked),
        (vec![0x80 | 0x40 | 0x2, 0x80], WsError::ReservedBits),
        (vec![0x80 | 0x20 | 0x2, 0x80], WsError::ReservedBits),
        (vec![0x80 | 0x10 | 0x2, 0x80], WsError::ReservedBits),
        (vec![0x83, 0x80], WsError::UnknownOpcode),
        (vec![0x8B, 0x80], WsError::UnknownOpcode),
        (vec![0x8F, 0x80], WsError::UnknownOpcode),
        (vec![0x09, 0x80], WsError::ControlFragmented),
        (vec![0x89, 0x80 | 126, 0x00, 0x7E], WsError::ControlTooLong),
        (vec![0x88, 0x80 | 127], WsError::ControlTooLong),
        (vec![0x80, 0x80], WsError::ContinuationWithoutMessage),
        (
            [masked(0x02, b"a", MASK), vec![0x82, 0x80]].concat(),
            WsError::MessageNotFinished,
        ),
    ];
    for (bytes, err) in cases {
        // Refused as soon as the two bytes that break the rule arrive.
        assert_eq!(whole(&bytes).1, Some(err), "{bytes:02x?}");
        assert_eq!(err.close_code(), 1002);
    }
    let top_bit = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
    assert_eq!(error_of(&top_bit), WsError::LengthTopBit);
    assert_eq!(WsError::LengthTopBit.close_code(), 1002);
    // After the first error, every feed repeats it.
    let mut decoder = FrameDecoder::new();
    let mut bytes = [0x82, 0x00];
    let mut again = masked(0x82, b"ok", MASK);
    let ignore = |_: WsEvent<'_>| Ok::<(), ()>(());
    assert_eq!(
        decoder.feed(&mut bytes, &LIMITS, ignore),
        Err(FeedError::Ws(WsError::Unmasked))
    );
    assert_eq!(
        decoder.feed(&mut again, &LIMITS, ignore),
        Err(FeedError::Ws(WsError::Unmasked))
    );
}

#[test]
fn limits_checked_on_the_header() {
    let limits = FrameLimits {
        frame_bytes_max: 100,
        message_bytes_max: 250,
    };
    // Only the header of a 101-byte frame: refused before its payload.
    let header = &masked(0x82, &[0; 101], MASK)[..6];
    assert_eq!(run(header, &[], &limits).1, Some(WsError::FrameTooLarge));
    assert_eq!(WsError::FrameTooLarge.close_code(), 1009);
    assert_eq!(run(&masked(0x82, &[7; 100], MASK), &[], &limits).1, None);
    // A 64-bit length far past the limit.
    let huge = [
        0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4,
    ];
    assert_eq!(run(&huge, &[], &limits).1, Some(WsError::FrameTooLarge));

    let mut message = masked(0x02, &[1; 100], MASK);
    message.extend(masked(0x00, &[2; 100], MASK));
    message.extend(masked(0x80, &[3; 50], MASK));
    assert_eq!(run(&message, &[], &limits).1, None);
    message.extend(masked(0x02, &[1; 100], MASK));
    message.extend(masked(0x00, &[2; 100], MASK));
    let before = message.len();
    message.extend(masked(0x80, &[3; 51], MASK));
    let (events, err) = run(&message[..before + 6], &[], &limits);
    assert_eq!(err, Some(WsError::MessageTooLarge));
    assert_eq!(WsError::MessageTooLarge.close_code(), 1009);
    assert_eq!(events.len(), 1);
    // Control frames do not count toward either limit.
    let tiny = FrameLimits {
        frame_bytes_max: 0,
        message_bytes_max: 0,
    };
    assert_eq!(
        run(&masked(0x89, &[5; 125], MASK), &[], &tiny),
        (vec![Ev::Ping(vec![5; 125])], None)
    );
}

#[test]
fn callback_error_stops_decoding() {
    let mut bytes = masked(0x82, b"one", MASK);
    bytes.extend(masked(0x82, b"two", MASK));
    let mut decoder = FrameDecoder::new();
    let mut seen = Vec::new();
    let result = decoder.feed(&mut bytes, &LIMITS, |event| {
        seen.push(format!("{event:?}"));
        Err("mqtt error")
    });
    assert_eq!(result, Err(FeedError::Callback("mqtt error")));
    assert_eq!(seen.len(), 1);
}

#[test]
fn data_is_unmasked_in_place() {
    let mut bytes = masked(0x82, b"in place", MASK);
    let mut decoder = FrameDecoder::new();
    decoder
        .feed(&mut bytes, &LIMITS, |_| Ok::<(), ()>(()))
        .expect("valid frame");
    assert_eq!(&bytes[6..], b"in place");
}

#[test]
fn decoder_state_stays_small() {
    // Held per connection: a million connections cost this many megabytes.
    assert!(core::mem::size_of::<FrameDecoder>() <= 56);
}

#[test]
fn descriptions_fit_a_close_frame() {
    use WsError::*;
    for err in [
        ReservedBits,
        UnknownOpcode,
        TextFrame,
        Unmasked,
        ControlFragmented,
        ControlTooLong,
        ContinuationWithoutMessage,
        MessageNotFinished,
        LengthTopBit,
        FrameTooLarge,
        MessageTooLarge,
        CloseTooShort,
        CloseCodeInvalid,
        CloseReasonNotUtf8,
    ] {
        assert!(err.description().len() <= CONTROL_BYTES_MAX - 2);
        assert!(close_code_valid(err.close_code()));
    }
}

/// One client action in a valid stream, with the events it should produce.
#[derive(Debug, Clone)]
enum Action {
    Message(Vec<Vec<u8>>, Vec<(usize, Vec<u8>)>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

fn payload(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn action() -> impl Strategy<Value = Action> {
    let fragments = prop_oneof![
        8 => proptest::collection::vec(payload(300), 1..4),
        1 => proptest::collection::vec(payload(70_000), 1..2),
    ];
    let pings = proptest::collection::vec((0usize..4, payload(126)), 0..3);
    prop_oneof![
        4 => (fragments, pings).prop_map(|(f, p)| Action::Message(f, p)),
        1 => payload(126).prop_map(Action::Ping),
        1 => payload(126).prop_map(Action::Pong),
    ]
}

/// Encodes actions as a client would, returning the bytes and expected events.
fn encode(actions: &[Action], mask: [u8; 4], close: Option<(u16, String)>) -> (Vec<u8>, Vec<Ev>) {
    let mut bytes = Vec::new();
    let mut events: Vec<Ev> = Vec::new();
    let push_data = |events: &mut Vec<Ev>, d: &[u8]| match events.last_mut() {
        _ if d.is_empty() => {}
        Some(Ev::Data(last)) => last.extend_from_slice(d),
        _ => events.push(Ev::Data(d.to_vec())),
    };
    for action in actions {
        match action {
            Action::Message(fragments, pings) => {
                for (i, fragment) in fragments.iter().enumerate() {
                    let fin = if i + 1 == fragments.len() { 0x80 } else { 0 };
                    let opcode = if i == 0 { 0x2 } else { 0x0 };
                    bytes.extend(masked(fin | opcode, fragment, mask));
                    push_data(&mut events, fragment);
                    // Control frames may sit between fragments (RFC 6455 §5.4).
                    if fin == 0 {
                        for (_, ping) in pings.iter().filter(|(at, _)| *at == i) {
                            bytes.extend(masked(0x89, ping, mask));
                            events.push(Ev::Ping(ping.clone()));
                        }
                    }
                }
            }
            Action::Ping(p) => {
                bytes.extend(masked(0x89, p, mask));
                events.push(Ev::Ping(p.clone()));
            }
            Action::Pong(p) => {
                bytes.extend(masked(0x8A, p, mask));
                events.push(Ev::Pong);
            }
        }
    }
    if let Some((code, reason)) = close {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason.as_bytes());
        bytes.extend(masked(0x88, &p, mask));
        events.push(Ev::Close(Some(code), reason.into_bytes()));
    }
    (bytes, events)
}

fn cuts(max: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..max, 0..40)
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        cuts in cuts(2000),
        frame_bytes_max in 0u64..3000,
        message_bytes_max in 0u64..6000,
        set_mask_bits in any::<bool>(),
    ) {
        // With mask bits forced on, more inputs get past the first check.
        if set_mask_bits {
            for b in bytes.iter_mut().skip(1).step_by(7) {
                *b |= 0x80;
            }
        }
        let limits = FrameLimits { frame_bytes_max, message_bytes_max };
        let _ = run(&bytes, &cuts, &limits);
    }

    #[test]
    fn chunking_invariance_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        cuts in cuts(600),
    ) {
        prop_assert_eq!(run(&bytes, &cuts, &LIMITS), whole(&bytes));
        prop_assert_eq!(byte_at_a_time(&bytes), whole(&bytes));
    }

    #[test]
    fn round_trip_and_chunking_invariance(
        actions in proptest::collection::vec(action(), 0..8),
        mask in any::<[u8; 4]>(),
        close in proptest::option::of((
            proptest::sample::select(vec![1000u16, 1001, 1011, 3000, 4999]),
            "[a-zé]{0,40}",
        )),
        cuts in cuts(80_000),
        trailing in payload(20),
    ) {
        let (mut bytes, expected) = encode(&actions, mask, close.clone());
        // Anything after a close frame is ignored.
        if close.is_some() {
            bytes.extend_from_slice(&trailing);
        }
        prop_assert_eq!(whole(&bytes), (expected.clone(), None));
        prop_assert_eq!(run(&bytes, &cuts, &LIMITS), (expected, None));
    }

    #[test]
    fn chunking_invariance_when_a_valid_stream_turns_bad(
        actions in proptest::collection::vec(action(), 0..6),
        mask in any::<[u8; 4]>(),
        garbage in proptest::collection::vec(any::<u8>(), 1..40),
        cuts in cuts(80_000),
    ) {
        let (mut bytes, _) = encode(&actions, mask, None);
        bytes.extend_from_slice(&garbage);
        prop_assert_eq!(run(&bytes, &cuts, &LIMITS), whole(&bytes));
    }

    #[test]
    fn server_frames_decode_once_masked(
        data in payload(70_000),
        mask in any::<[u8; 4]>(),
    ) {
        // The encoder's frame, masked the way a client would: same payload back.
        let mut out = Vec::new();
        write_binary_frame(&data, &mut out);
        let header = header_len(data.len());
        prop_assert_eq!(out.len(), header + data.len());
        let mut client = out[..header].to_vec();
        client[1] |= 0x80;
        client.extend_from_slice(&mask);
        let mut body = out[header..].to_vec();
        apply_mask(&mut body, mask, 0);
        client.extend_from_slice(&body);
        let expected = if data.is_empty() { vec![] } else { vec![Ev::Data(data)] };
        prop_assert_eq!(whole(&client), (expected, None));
    }
}

/// Feeds `bytes` whole to a decoder of a server's frames.
fn from_server(bytes: &[u8]) -> (Vec<Ev>, Option<WsError>) {
    let mut decoder = FrameDecoder::for_server_frames();
    let mut events = Vec::new();
    let mut bytes = bytes.to_vec();
    let result = decoder.feed(&mut bytes, &LIMITS, |event| {
        events.push(match event {
            WsEvent::Data(d) => Ev::Data(d.to_vec()),
            WsEvent::Ping(p) => Ev::Ping(p.to_vec()),
            WsEvent::Pong => Ev::Pong,
            WsEvent::Close { code, reason } => Ev::Close(code, reason.to_vec()),
        });
        Ok::<(), ()>(())
    });
    match result {
        Ok(()) => (events, None),
        Err(FeedError::Ws(err)) => (events, Some(err)),
        Err(FeedError::Callback(())) => unreachable!("the callback never refuses"),
    }
}

#[test]
fn server_frames_are_unmasked_and_client_frames_masked() {
    // RFC 6455 §5.7: a single-frame unmasked message, here binary, then an unmasked ping.
    let mut bytes = vec![0x82, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    bytes.extend_from_slice(&[0x89, 0x02, 0x68, 0x69]);
    assert_eq!(
        from_server(&bytes),
        (
            vec![Ev::Data(b"Hello".to_vec()), Ev::Ping(b"hi".to_vec())],
            None
        )
    );
    assert_eq!(
        from_server(&masked(0x82, b"Hello", MASK)).1,
        Some(WsError::Masked)
    );
    // What a client writes is what a server's decoder reads back.
    let mut out = Vec::new();
    write_masked_frame(Opcode::Binary, b"Hello", MASK, &mut out);
    assert_eq!(out, masked(0x82, b"Hello", MASK));
    let big = vec![7u8; 70_000];
    let mut out = Vec::new();
    write_masked_frame(Opcode::Binary, &big, MASK, &mut out);
    assert_eq!(whole(&out), (vec![Ev::Data(big)], None));
}

//! The WebSocket frame decoder, fed as the network delivers: the same bytes whole, in pieces cut
//! where the fuzzer chooses, and a byte at a time must give the same events and the same error.
//!
//! Input: a limits byte, a byte `n`, `n % 8` cut offsets (2 bytes each, little endian, taken
//! modulo the stream length), a byte naming the event at which the callback refuses, then the
//! client's byte stream.
//! - limits byte, bits 0-2: `frame_bytes_max` from [`SIZES`]; bits 3-5: `message_bytes_max`
//!   from [`SIZES`]. Small sizes make partial frames and the limit checks meet.
//! - refusal byte: the callback refuses event number `byte - 1` in a fourth run (0: none); the
//!   events before it must be those of the whole run.
//!
//! Also checked: after an error the decoder repeats it on more bytes; after a close frame it
//! reports closed and ignores the rest.

use fanfare::protocol::ws::frame::{FeedError, FrameDecoder, FrameLimits, WsError, WsEvent};

/// Frame and message limits to pick from, in bytes.
pub const SIZES: [u64; 8] = [0, 1, 2, 7, 125, 126, 300, 1 << 20];

/// An event, owned; consecutive data merged, since where `Data` splits depends on the pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Data(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>, Vec<u8>),
}

/// What one run produced: its events, the error it stopped at, and whether it saw a close.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    events: Vec<Event>,
    error: Option<FeedError<()>>,
    closed: bool,
}

pub fn frames(data: &[u8]) {
    let [limits_byte, cut_count, rest @ ..] = data else {
        return;
    };
    let cut_bytes = usize::from(cut_count % 8) * 2;
    let Some((cuts, [refuse, stream @ ..])) = rest.split_at_checked(cut_bytes) else {
        return;
    };
    let limits = FrameLimits {
        frame_bytes_max: SIZES[usize::from(limits_byte & 0b111)],
        message_bytes_max: SIZES[usize::from((limits_byte >> 3) & 0b111)],
    };
    let mut offsets: Vec<usize> = cuts
        .chunks_exact(2)
        .map(|pair| usize::from(u16::from_le_bytes([pair[0], pair[1]])) % (stream.len() + 1))
        .collect();
    offsets.sort_unstable();

    let whole = feed(stream, &[], &limits, None);
    assert_eq!(
        feed(stream, &offsets, &limits, None),
        whole,
        "cut where chosen"
    );
    if stream.len() <= 2048 {
        let every: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(feed(stream, &every, &limits, None), whole, "byte at a time");
    }
    if let Some(at) = usize::from(*refuse).checked_sub(1) {
        let refused = feed(stream, &offsets, &limits, Some(at));
        assert!(
            is_prefix(&refused.events, &whole.events),
            "a refusing callback sees the events of the whole run, in order"
        );
    }
    if let Some(FeedError::Ws(error)) = whole.error {
        assert!(error.close_code() >= 1000, "close codes are at least 1000");
    }
}

/// Feeds `stream` to a new decoder in the pieces that `offsets` (sorted) cut. The callback
/// refuses the event numbered `refuse_at`, if any.
fn feed(
    stream: &[u8],
    offsets: &[usize],
    limits: &FrameLimits,
    refuse_at: Option<usize>,
) -> Outcome {
    let mut bytes = stream.to_vec();
    let mut decoder = FrameDecoder::new();
    let mut events: Vec<Event> = Vec::new();
    let mut seen = 0usize;
    let mut error = None;
    let mut start = 0;
    for end in offsets.iter().copied().chain([bytes.len()]) {
        if end < start {
            continue;
        }
        let piece = &mut bytes[start..end];
        start = end;
        let fed = decoder.feed(piece, limits, |event| {
            let refused = refuse_at == Some(seen);
            seen += 1;
            push(&mut events, event);
            if refused { Err(()) } else { Ok(()) }
        });
        if let Err(err) = fed {
            error = Some(err);
            break;
        }
    }
    if let Some(FeedError::Ws(err)) = error {
        check_error_sticks(&mut decoder, limits, err);
    }
    // A close frame is the last event the decoder reports.
    let closed = matches!(events.last(), Some(Event::Close(..)));
    if closed {
        // Everything after a close frame is ignored.
        let mut more = [0x82, 0x80, 0, 0, 0, 0];
        let fed = decoder.feed(&mut more, limits, |_| Err(()));
        assert_eq!(fed, Ok(()), "bytes after a close frame are ignored");
    }
    Outcome {
        events,
        error,
        closed,
    }
}

/// After an error the decoder answers every later feed with it, and reports no event.
fn check_error_sticks(decoder: &mut FrameDecoder, limits: &FrameLimits, err: WsError) {
    let mut more = [0x82, 0x80, 0, 0, 0, 0];
    let fed = decoder.feed(&mut more, limits, |_| -> Result<(), ()> {
        panic!("an event after an error")
    });
    assert_eq!(fed, Err(FeedError::Ws(err)), "the error sticks");
}

fn push(events: &mut Vec<Event>, event: WsEvent<'_>) {
    match event {
        WsEvent::Data(data) => {
            assert!(!data.is_empty(), "empty data is not reported");
            match events.last_mut() {
                Some(Event::Data(last)) => last.extend_from_slice(data),
                _ => events.push(Event::Data(data.to_vec())),
            }
        }
        WsEvent::Ping(payload) => {
            assert!(
                payload.len() <= 125,
                "control payloads are at most 125 bytes"
            );
            events.push(Event::Ping(payload.to_vec()));
        }
        WsEvent::Pong => events.push(Event::Pong),
        WsEvent::Close { code, reason } => {
            assert!(reason.len() <= 123, "a close reason fits a control frame");
            assert!(
                std::str::from_utf8(reason).is_ok(),
                "a close reason is UTF-8"
            );
            events.push(Event::Close(code, reason.to_vec()))
        }
    }
}

/// Whether `part` begins `whole`, the last data event of `part` possibly cut short.
fn is_prefix(part: &[Event], whole: &[Event]) -> bool {
    let Some((last, init)) = part.split_last() else {
        return true;
    };
    if init.len() >= whole.len() || whole[..init.len()] != *init {
        return false;
    }
    match (last, &whole[init.len()]) {
        (Event::Data(cut), Event::Data(full)) => full.starts_with(cut),
        (last, full) => last == full,
    }
}

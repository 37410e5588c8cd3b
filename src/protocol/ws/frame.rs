//! WebSocket frames (RFC 6455 §5) as MQTT uses them: binary data in, binary data out.
//!
//! Inbound, [`FrameDecoder`] is a streaming state machine over whatever chunks the network
//! delivers: a header may be split across receive buffers, a payload may span many, one buffer
//! may hold many frames. It unmasks payload bytes in place and hands them on as they arrive,
//! so no frame is ever buffered whole; its only buffers are the 14 header bytes and the 125
//! bytes a control frame may carry, allocated with the first control frame that has a payload
//! (MQTT clients rarely send one before closing). MQTT treats the data as one byte stream (MQTT 3.1.1 §6:
//! packets need not align with frames), so message boundaries are not reported.
//!
//! Outbound, server frames are never masked (RFC 6455 §5.1) and are written into the
//! caller's buffer.
//!
//! The same decoder reads a server's frames for the client side (a bridge over WebSocket,
//! `crate::bridge::transport`): [`FrameDecoder::for_server_frames`] requires them unmasked,
//! and [`write_masked_frame`] writes the masked frames a client must send (RFC 6455 §5.3).

use super::mask::apply_mask;

/// Frame opcodes, in RFC 6455 §5.2 numeric order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl Opcode {
    /// The opcode in the low four bits of the first header byte, if defined.
    pub const fn from_bits(bits: u8) -> Option<Opcode> {
        match bits {
            0x0 => Some(Opcode::Continuation),
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xA => Some(Opcode::Pong),
            _ => None,
        }
    }

    /// Control frames have the high opcode bit set (RFC 6455 §5.5).
    pub const fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// Bounds on what a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest data frame payload, in bytes. Checked on the header, so an oversized frame is
    /// refused (close 1009) before any of its payload is read.
    pub frame_bytes_max: u64,
    /// Largest fragmented message, in bytes, summed over its frames. Bounds how long a client
    /// can keep one message open.
    pub message_bytes_max: u64,
}

/// What the decoder found, in wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsEvent<'a> {
    /// Unmasked payload bytes of binary and continuation frames, in order. One frame may be
    /// reported in several parts; empty parts are not reported.
    Data(&'a [u8]),
    /// A ping; answer with [`write_pong`] carrying the same payload (RFC 6455 §5.5.2).
    Ping(&'a [u8]),
    /// A pong; needs no answer.
    Pong,
    /// A close frame, already validated. The decoder ignores everything after it; answer with
    /// a close frame and shut the connection (RFC 6455 §5.5.1).
    Close { code: Option<u16>, reason: &'a [u8] },
}

/// Why the client's frames are refused; each maps to the close code to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WsError {
    /// RSV1-3 set without a negotiated extension (RFC 6455 §5.2).
    ReservedBits,
    /// Opcode 0x3-0x7 or 0xB-0xF (RFC 6455 §5.2).
    UnknownOpcode,
    /// Text frames: MQTT travels in binary frames only (MQTT 3.1.1 §6, [MQTT-6.0.0-1]).
    TextFrame,
    /// A client frame without a mask (RFC 6455 §5.1).
    Unmasked,
    /// A server frame with a mask (RFC 6455 §5.1).
    Masked,
    /// A control frame without FIN (RFC 6455 §5.5).
    ControlFragmented,
    /// A control frame with more than 125 payload bytes (RFC 6455 §5.5).
    ControlTooLong,
    /// A continuation frame with no fragmented message open (RFC 6455 §5.4).
    ContinuationWithoutMessage,
    /// A new binary frame while a fragmented message is still open (RFC 6455 §5.4).
    MessageNotFinished,
    /// A 64-bit payload length with the most significant bit set (RFC 6455 §5.2).
    LengthTopBit,
    /// A data frame longer than `frame_bytes_max`.
    FrameTooLarge,
    /// A message longer than `message_bytes_max`.
    MessageTooLarge,
    /// A close payload of one byte: too short for a code (RFC 6455 §5.5.1).
    CloseTooShort,
    /// A close code a peer may not send (RFC 6455 §7.4).
    CloseCodeInvalid,
    /// A close reason that is not UTF-8 (RFC 6455 §5.5.1).
    CloseReasonNotUtf8,
}

impl WsError {
    /// The close code to send before closing (RFC 6455 §7.4.1).
    pub const fn close_code(self) -> u16 {
        match self {
            WsError::TextFrame => 1003,
            WsError::FrameTooLarge | WsError::MessageTooLarge => 1009,
            WsError::ReservedBits
            | WsError::UnknownOpcode
            | WsError::Unmasked
            | WsError::Masked
            | WsError::ControlFragmented
            | WsError::ControlTooLong
            | WsError::ContinuationWithoutMessage
            | WsError::MessageNotFinished
            | WsError::LengthTopBit
            | WsError::CloseTooShort
            | WsError::CloseCodeInvalid
            | WsError::CloseReasonNotUtf8 => 1002,
        }
    }

    /// A short reason, fit for a close frame (at most 123 bytes) and logs.
    pub const fn description(self) -> &'static str {
        match self {
            WsError::ReservedBits => "reserved bits set",
            WsError::UnknownOpcode => "unknown opcode",
            WsError::TextFrame => "text frames not supported, MQTT needs binary",
            WsError::Unmasked => "client frame not masked",
            WsError::Masked => "server frame masked",
            WsError::ControlFragmented => "fragmented control frame",
            WsError::ControlTooLong => "control frame payload over 125 bytes",
            WsError::ContinuationWithoutMessage => "continuation without a message",
            WsError::MessageNotFinished => "new message before the last one finished",
            WsError::LengthTopBit => "payload length has its top bit set",
            WsError::FrameTooLarge => "frame too large",
            WsError::MessageTooLarge => "message too large",
            WsError::CloseTooShort => "close payload of one byte",
            WsError::CloseCodeInvalid => "invalid close code",
            WsError::CloseReasonNotUtf8 => "close reason not UTF-8",
        }
    }
}

impl core::fmt::Display for WsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} (close {})", self.description(), self.close_code())
    }
}

impl std::error::Error for WsError {}

/// Why [`FrameDecoder::feed`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedError<E> {
    /// The client broke RFC 6455: send a close frame with `close_code()` and close.
    Ws(WsError),
    /// The event callback refused an event; bytes after that event were not decoded.
    Callback(E),
}

/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask (RFC 6455 §5.2).
const HEADER_BYTES_MAX: usize = 14;

/// Longest control frame payload (RFC 6455 §5.5).
const CONTROL_BYTES_MAX: usize = 125;

/// The inbound half of one connection: 56 bytes of state, and a 125-byte buffer for control
/// payloads once a control frame with a payload arrives.
///
/// After it returns `FeedError::Ws`, the decoder returns the same error from every later
/// `feed`. After a close frame it ignores all further bytes.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    /// Bytes of the header being received; meaningful up to `header_len`.
    header: [u8; HEADER_BYTES_MAX],
    header_len: u8,
    /// Whether a header is complete and its payload is being received.
    in_payload: bool,
    opcode: Opcode,
    payload_remaining: u64,
    mask: [u8; 4],
    /// Payload bytes received so far in this frame, modulo 4: where the mask resumes.
    mask_offset: u8,
    /// Whether a binary message has started without its final frame.
    message_open: bool,
    /// Payload bytes of the open message, this frame included.
    message_bytes: u64,
    /// Boxed so a connection that never sends a control payload does not carry the room for
    /// one: most WebSocket MQTT clients send none until their close frame.
    control: Option<Box<[u8; CONTROL_BYTES_MAX]>>,
    control_len: u8,
    closed: bool,
    failed: Option<WsError>,
    /// Whether the peer must mask its frames: a client's, yes; a server's, never (RFC 6455
    /// §5.1).
    peer_masks: bool,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    /// A decoder of a client's frames, which are masked.
    pub const fn new() -> Self {
        FrameDecoder {
            header: [0; HEADER_BYTES_MAX],
            header_len: 0,
            in_payload: false,
            opcode: Opcode::Binary,
            payload_remaining: 0,
            mask: [0; 4],
            mask_offset: 0,
            message_open: false,
            message_bytes: 0,
            control: None,
            control_len: 0,
            closed: false,
            failed: None,
            peer_masks: true,
        }
    }

    /// A decoder of a server's frames, which are not masked.
    pub const fn for_server_frames() -> Self {
        let mut decoder = FrameDecoder::new();
        decoder.peer_masks = false;
        decoder
    }

    /// Mask bytes in this peer's headers.
    const fn mask_bytes(&self) -> usize {
        if self.peer_masks { 4 } else { 0 }
    }

    /// Decodes all of `buf`, unmasking data in place and calling `on_event` in wire order.
    ///
    /// Partial headers and control payloads are kept inside the decoder, so the caller never
    /// keeps bytes back: feeding a stream a byte at a time yields the same events as feeding
    /// it whole, with `Data` split differently. Work per call is linear in `buf.len()`.
    pub fn feed<E>(
        &mut self,
        buf: &mut [u8],
        limits: &FrameLimits,
        mut on_event: impl FnMut(WsEvent<'_>) -> Result<(), E>,
    ) -> Result<(), FeedError<E>> {
        if let Some(err) = self.failed {
            return Err(FeedError::Ws(err));
        }
        let mut pos = 0;
        while pos < buf.len() && !self.closed {
            if self.in_payload {
                pos += self.take_payload(&mut buf[pos..], &mut on_event)?;
            } else {
                pos += self
                    .take_header(&buf[pos..], limits)
                    .map_err(|err| self.fail(err))?;
                // An empty payload ends its frame now, not when the next bytes arrive.
                if self.in_payload && self.payload_remaining == 0 {
                    self.end_frame(&mut on_event)?;
                }
            }
        }
        Ok(())
    }

    fn fail<E>(&mut self, err: WsError) -> FeedError<E> {
        self.failed = Some(err);
        FeedError::Ws(err)
    }

    /// Copies header bytes from `input` until `target` header bytes are held.
    fn fill(&mut self, input: &[u8], target: usize) -> usize {
        let have = usize::from(self.header_len);
        let n = target.saturating_sub(have).min(input.len());
        self.header[have..have + n].copy_from_slice(&input[..n]);
        self.header_len += n as u8;
        n
    }

    /// Takes header bytes; returns how many. Sets `in_payload` once the header is complete.
    fn take_header(&mut self, input: &[u8], limits: &FrameLimits) -> Result<usize, WsError> {
        let had = self.header_len;
        let mut used = self.fill(input, 2);
        if self.header_len < 2 {
            return Ok(used);
        }
        // The first two bytes decide the header's length; check them before waiting for the
        // rest, which a frame masked the wrong way would never send.
        if had < 2 {
            self.check_start()?;
        }
        let full = 2 + extended_len_bytes(self.header[1]) + self.mask_bytes();
        used += self.fill(&input[used..], full);
        if usize::from(self.header_len) == full {
            self.begin_payload(limits)?;
        }
        Ok(used)
    }

    /// Checks the first two header bytes (RFC 6455 §5.2, §5.4, §5.5).
    fn check_start(&self) -> Result<(), WsError> {
        let [b0, b1, ..] = self.header;
        if b0 & 0x70 != 0 {
            return Err(WsError::ReservedBits);
        }
        let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(WsError::UnknownOpcode)?;
        let fin = b0 & 0x80 != 0;
        if opcode == Opcode::Text {
            return Err(WsError::TextFrame);
        }
        match (b1 & 0x80 != 0, self.peer_masks) {
            (false, true) => return Err(WsError::Unmasked),
            (true, false) => return Err(WsError::Masked),
            _ => {}
        }
        if opcode.is_control() {
            if !fin {
                return Err(WsError::ControlFragmented);
            }
            if usize::from(b1 & 0x7F) > CONTROL_BYTES_MAX {
                return Err(WsError::ControlTooLong);
            }
        }
        match opcode {
            Opcode::Continuation if !self.message_open => Err(WsError::ContinuationWithoutMessage),
            Opcode::Binary if self.message_open => Err(WsError::MessageNotFinished),
            _ => Ok(()),
        }
    }

    /// With the whole header held: checks the length against the limits and starts the
    /// payload. Data frames are checked here, before any payload byte is read.
    fn begin_payload(&mut self, limits: &FrameLimits) -> Result<(), WsError> {
        let h = self.header;
        let fin = h[0] & 0x80 != 0;
        let opcode = Opcode::from_bits(h[0] & 0x0F).ok_or(WsError::UnknownOpcode)?;
        // RFC 6455 §5.2 asks senders for the shortest length form; a longer one is harmless,
        // so it is accepted.
        let (len, mask_at) = match h[1] & 0x7F {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let len = u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]);
                if len >> 63 != 0 {
                    return Err(WsError::LengthTopBit);
                }
                (len, 10)
            }
            short => (u64::from(short), 2),
        };
        if !opcode.is_control() {
            if len > limits.frame_bytes_max {
                return Err(WsError::FrameTooLarge);
            }
            let message_bytes = match opcode {
                Opcode::Continuation => self.message_bytes.saturating_add(len),
                _ => len,
            };
            if message_bytes > limits.message_bytes_max {
                return Err(WsError::MessageTooLarge);
            }
            // Frames do not nest, so the next header sees this frame's FIN.
            self.message_open = !fin;
            self.message_bytes = if fin { 0 } else { message_bytes };
        }
        // An unmasked frame XORs with zeros: the payload paths stay the same for both peers.
        self.mask = if self.peer_masks {
            [h[mask_at], h[mask_at + 1], h[mask_at + 2], h[mask_at + 3]]
        } else {
            [0; 4]
        };
        self.opcode = opcode;
        self.payload_remaining = len;
        self.mask_offset = 0;
        self.control_len = 0;
        self.header_len = 0;
        self.in_payload = true;
        Ok(())
    }

    /// Takes payload bytes of the current frame; returns how many.
    fn take_payload<E>(
        &mut self,
        input: &mut [u8],
        on_event: &mut impl FnMut(WsEvent<'_>) -> Result<(), E>,
    ) -> Result<usize, FeedError<E>> {
        let n = usize::try_from(self.payload_remaining)
            .unwrap_or(usize::MAX)
            .min(input.len());
        let offset = usize::from(self.mask_offset);
        self.payload_remaining -= n as u64;
        self.mask_offset = ((offset + n) % 4) as u8;
        if self.opcode.is_control() {
            // check_start bounded the payload to 125 bytes, so it fits.
            let start = usize::from(self.control_len);
            let control = self
                .control
                .get_or_insert_with(|| Box::new([0; CONTROL_BYTES_MAX]));
            let part = &mut control[start..start + n];
            part.copy_from_slice(&input[..n]);
            apply_mask(part, self.mask, offset);
            self.control_len += n as u8;
            if self.payload_remaining == 0 {
                self.end_frame(on_event)?;
            }
        } else {
            let data = &mut input[..n];
            if self.peer_masks {
                apply_mask(data, self.mask, offset);
            }
            // State first, event second: a refusing callback leaves the decoder consistent.
            if self.payload_remaining == 0 {
                self.in_payload = false;
            }
            on_event(WsEvent::Data(data)).map_err(FeedError::Callback)?;
        }
        Ok(n)
    }

    /// Completes the current frame once its whole payload is in.
    fn end_frame<E>(
        &mut self,
        on_event: &mut impl FnMut(WsEvent<'_>) -> Result<(), E>,
    ) -> Result<(), FeedError<E>> {
        self.in_payload = false;
        let payload = match &self.control {
            Some(control) => &control[..usize::from(self.control_len)],
            None => &[],
        };
        let event = match self.opcode {
            Opcode::Ping => WsEvent::Ping(payload),
            Opcode::Pong => WsEvent::Pong,
            Opcode::Close => match parse_close(payload) {
                Ok((code, reason)) => WsEvent::Close { code, reason },
                Err(err) => return Err(self.fail(err)),
            },
            // An empty data frame carries nothing to report.
            Opcode::Continuation | Opcode::Binary | Opcode::Text => return Ok(()),
        };
        // Set after the payload is read: the borrow of `control` is live inside `event`.
        let closed = matches!(event, WsEvent::Close { .. });
        let result = on_event(event).map_err(FeedError::Callback);
        self.closed |= closed;
        result
    }
}

/// Splits a close payload into code and reason (RFC 6455 §5.5.1).
fn parse_close(payload: &[u8]) -> Result<(Option<u16>, &[u8]), WsError> {
    match payload {
        [] => Ok((None, &[])),
        [_] => Err(WsError::CloseTooShort),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close_code_valid(code) {
                return Err(WsError::CloseCodeInvalid);
            }
            if core::str::from_utf8(reason).is_err() {
                return Err(WsError::CloseReasonNotUtf8);
            }
            Ok((Some(code), reason))
        }
    }
}

/// Codes that may appear in a close frame (RFC 6455 §7.4): the defined ones (1012-1014 were
/// registered with IANA after the RFC) and the ranges for libraries and applications. 1005,
/// 1006 and 1015 are reserved for reporting and never sent.
const fn close_code_valid(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Header bytes after the first two that carry an extended length (RFC 6455 §5.2).
const fn extended_len_bytes(b1: u8) -> usize {
    match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    }
}

/// Length of an unmasked (server) frame header for `payload_len` bytes: 2, 4 or 10.
pub const fn header_len(payload_len: usize) -> usize {
    match payload_len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

/// Writes an unmasked frame header using the shortest length form (RFC 6455 §5.2).
pub fn write_frame_header(opcode: Opcode, fin: bool, payload_len: usize, out: &mut Vec<u8>) {
    // The encoder asserts what the decoder checks (RFC 6455 §5.5).
    assert!(
        !opcode.is_control() || fin,
        "control frames are never fragmented"
    );
    assert!(
        !opcode.is_control() || payload_len <= CONTROL_BYTES_MAX,
        "control frame payloads are at most 125 bytes"
    );
    let b0 = (u8::from(fin) << 7) | opcode as u8;
    match payload_len {
        0..=125 => out.extend_from_slice(&[b0, payload_len as u8]),
        126..=0xFFFF => {
            out.extend_from_slice(&[b0, 126]);
            out.extend_from_slice(&(payload_len as u16).to_be_bytes());
        }
        _ => {
            out.extend_from_slice(&[b0, 127]);
            out.extend_from_slice(&(payload_len as u64).to_be_bytes());
        }
    }
}

/// Writes one complete binary frame.
pub fn write_binary_frame(payload: &[u8], out: &mut Vec<u8>) {
    write_frame_header(Opcode::Binary, true, payload.len(), out);
    out.extend_from_slice(payload);
}

/// Writes a close frame. The reason is cut at a character boundary to fit the 125-byte
/// control payload with the code.
pub fn write_close_frame(code: u16, reason: &str, out: &mut Vec<u8>) {
    assert!(close_code_valid(code), "close code {code} may not be sent");
    let reason = &reason[..reason.floor_char_boundary(CONTROL_BYTES_MAX - 2)];
    write_frame_header(Opcode::Close, true, 2 + reason.len(), out);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
}

/// Writes one complete frame as a client sends it: masked with `mask` (RFC 6455 §5.3), which
/// the caller draws fresh and unpredictable for every frame.
pub fn write_masked_frame(opcode: Opcode, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    let start = out.len();
    write_frame_header(opcode, true, payload.len(), out);
    out[start + 1] |= 0x80;
    out.extend_from_slice(&mask);
    let at = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[at..], mask, 0);
}

/// Writes the pong that answers a ping, echoing its payload (RFC 6455 §5.5.3).
pub fn write_pong(payload: &[u8], out: &mut Vec<u8>) {
    write_frame_header(Opcode::Pong, true, payload.len(), out);
    out.extend_from_slice(payload);
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;

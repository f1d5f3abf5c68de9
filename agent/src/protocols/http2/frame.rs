//! HTTP/2 framing (RFC 9113 §4): the client preface, 9-byte frame headers, and a reader that
//! cuts one direction's byte stream into frames without ever buffering more than a bounded
//! prefix of a payload.

use super::huffman::integer;
use crate::protocols::skips::SkipCounter;

/// The client connection preface (RFC 9113 §3.4).
pub(super) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The shortest prefix of the preface that detection accepts on its own.
pub(super) const PREFACE_MIN: usize = 14;
pub(super) const FRAME_HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE before the peer says otherwise, and its smallest legal value.
pub(super) const DEFAULT_MAX_FRAME_LEN: u32 = 16_384;
/// The largest length a frame header can carry (2^24 - 1), and the largest legal
/// SETTINGS_MAX_FRAME_SIZE.
pub(super) const MAX_FRAME_LEN: u32 = (1 << 24) - 1;

pub(super) const DATA: u8 = 0x0;
pub(super) const HEADERS: u8 = 0x1;
pub(super) const PRIORITY: u8 = 0x2;
pub(super) const RST_STREAM: u8 = 0x3;
pub(super) const SETTINGS: u8 = 0x4;
pub(super) const PUSH_PROMISE: u8 = 0x5;
pub(super) const PING: u8 = 0x6;
pub(super) const GOAWAY: u8 = 0x7;
pub(super) const WINDOW_UPDATE: u8 = 0x8;
pub(super) const CONTINUATION: u8 = 0x9;

/// DATA, HEADERS.
pub(super) const FLAG_END_STREAM: u8 = 0x1;
/// SETTINGS, PING.
pub(super) const FLAG_ACK: u8 = 0x1;
/// HEADERS, PUSH_PROMISE, CONTINUATION.
pub(super) const FLAG_END_HEADERS: u8 = 0x4;
/// DATA, HEADERS, PUSH_PROMISE.
pub(super) const FLAG_PADDED: u8 = 0x8;
/// HEADERS.
pub(super) const FLAG_PRIORITY: u8 = 0x20;

/// How much of a header block (HEADERS/PUSH_PROMISE plus CONTINUATIONs) is kept for HPACK
/// decoding; a larger block is decoded up to here and costs the direction its HPACK state.
pub(super) const MAX_HEADER_BLOCK: usize = 32 * 1024;
/// How many bytes of a SETTINGS payload are read (32 settings; real peers send fewer than 10).
const MAX_SETTINGS_KEPT: usize = 6 * 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    /// The reserved bit before the stream id (senders must leave it clear).
    pub reserved: bool,
}

impl FrameHeader {
    pub fn parse(b: &[u8; FRAME_HEADER_LEN]) -> Self {
        let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
        FrameHeader {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: stream & 0x7fff_ffff,
            reserved: stream & 0x8000_0000 != 0,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Whether a conforming peer could have sent this header (RFC 9113 §6). Frames of unknown
    /// types pass: receivers must ignore them. A header that fails means we lost the framing.
    pub fn is_valid(&self) -> bool {
        if self.reserved {
            return false;
        }
        let on_stream = self.stream != 0;
        match self.kind {
            DATA | HEADERS | CONTINUATION | PUSH_PROMISE => on_stream,
            PRIORITY => on_stream && self.len == 5,
            RST_STREAM => on_stream && self.len == 4,
            SETTINGS => {
                !on_stream && self.len.is_multiple_of(6) && (!self.has(FLAG_ACK) || self.len == 0)
            }
            PING => !on_stream && self.len == 8,
            GOAWAY => !on_stream && self.len >= 8,
            WINDOW_UPDATE => self.len == 4,
            _ => true,
        }
    }

    /// Stricter than [`is_valid`](Self::is_valid), for deciding whether bytes of unknown
    /// origin are HTTP/2 frames: a known type, only the flags the type defines, a length the
    /// receiver allows and room for the fields the flags announce.
    pub fn is_plausible(&self, max_len: u32) -> bool {
        if !self.is_valid() || self.len > max_len {
            return false;
        }
        let padded = u32::from(self.has(FLAG_PADDED));
        let (allowed_flags, min_len) = match self.kind {
            DATA => (FLAG_END_STREAM | FLAG_PADDED, padded),
            HEADERS => (
                FLAG_END_STREAM | FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY,
                padded + if self.has(FLAG_PRIORITY) { 5 } else { 0 },
            ),
            PUSH_PROMISE => (FLAG_END_HEADERS | FLAG_PADDED, 4 + padded),
            CONTINUATION => (FLAG_END_HEADERS, 0),
            SETTINGS | PING => (FLAG_ACK, 0),
            PRIORITY | RST_STREAM | GOAWAY | WINDOW_UPDATE => (0, 0),
            _ => return false,
        };
        self.flags & !allowed_flags == 0 && self.len >= min_len
    }

    /// How many payload bytes the decoder needs to see; the rest is skipped by count.
    fn keep_len(&self) -> usize {
        let wanted = match self.kind {
            // Only the pad length: the body itself is counted, never stored.
            DATA => usize::from(self.has(FLAG_PADDED)),
            // Pad length, priority fields and promised stream id come on top of the block.
            HEADERS | PUSH_PROMISE | CONTINUATION => MAX_HEADER_BLOCK + 6,
            SETTINGS => MAX_SETTINGS_KEPT,
            RST_STREAM => 4,
            GOAWAY => 8,
            _ => 0,
        };
        wanted.min(self.len as usize)
    }
}

/// Whether `data` starts with HTTP/2 frames: at least one whole frame header, and every frame
/// header found by walking the lengths plausible.
pub(super) fn starts_with_frames(data: &[u8], max_len: u32) -> bool {
    let mut found = false;
    for_each_frame(data, |header, _| {
        found = true;
        header.is_plausible(max_len)
    }) && found
}

/// Walks the frames at the start of `data`, calling `visit` with each whole frame header and
/// the captured part of its payload, while `visit` returns true. Returns false when a visit
/// did.
pub(super) fn for_each_frame(
    data: &[u8],
    mut visit: impl FnMut(&FrameHeader, &[u8]) -> bool,
) -> bool {
    let mut rest = data;
    while let Some((head, tail)) = rest.split_first_chunk::<FRAME_HEADER_LEN>() {
        let header = FrameHeader::parse(head);
        let len = (header.len as usize).min(tail.len());
        if !visit(&header, &tail[..len]) {
            return false;
        }
        rest = &tail[len..];
    }
    true
}

/// One frame, as far as it was captured.
#[derive(Debug)]
pub(super) struct Frame {
    pub header: FrameHeader,
    /// The captured prefix of the payload the decoder wants (see `keep_len`).
    pub payload: Vec<u8>,
    /// Part of the wanted prefix went uncaptured: `payload` stops at the gap.
    pub cut: bool,
    /// `first_byte_ns` of the chunk holding the frame's first byte.
    pub start_ns: u64,
    /// `last_byte_ns` of the chunk holding its last byte.
    pub end_ns: u64,
}

impl Frame {
    /// Whether `payload` holds the whole payload.
    pub fn is_whole(&self) -> bool {
        !self.cut && self.payload.len() == self.header.len as usize
    }
}

#[derive(Debug)]
pub(super) enum Event {
    Frame(Frame),
    /// The framing was lost (a gap over a frame header, or bytes that are not frames): frames
    /// went by unseen until the reader found frames again at the start of a chunk.
    Lost,
}

#[derive(Debug)]
enum State {
    /// Waiting for the session to say how the stream begins (see [`FrameReader::start`]).
    Start,
    Preface {
        matched: usize,
    },
    Header {
        buf: [u8; FRAME_HEADER_LEN],
        have: usize,
        start_ns: u64,
    },
    Payload {
        header: FrameHeader,
        start_ns: u64,
        keep: usize,
        kept: Vec<u8>,
        /// Payload bytes still to come (kept or skipped).
        remaining: u32,
        cut: bool,
    },
    /// Framing lost: skipping until a chunk starts with plausible frames.
    Seeking,
}

/// Cuts one direction of a connection into frames.
#[derive(Debug)]
pub(super) struct FrameReader {
    state: State,
    /// What frame lengths resynchronisation accepts: the receiver's SETTINGS_MAX_FRAME_SIZE.
    max_frame_len: u32,
    chunk_first_ns: u64,
    chunk_last_ns: u64,
    /// Stretches skipped while seeking frames.
    skips: SkipCounter,
}

impl FrameReader {
    pub fn new() -> Self {
        FrameReader {
            state: State::Start,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            chunk_first_ns: 0,
            chunk_last_ns: 0,
            skips: SkipCounter::default(),
        }
    }

    pub fn at_start(&self) -> bool {
        matches!(self.state, State::Start)
    }

    /// Decides how the stream begins, before its first chunk: with the client preface
    /// (`preface`), at a frame boundary (`aligned`, the connection's start for the server), or
    /// somewhere unknown (the agent joined late): then frames are looked for at chunk starts.
    pub fn start(&mut self, preface: bool, aligned: bool) {
        self.state = if preface {
            State::Preface { matched: 0 }
        } else if aligned {
            Self::header_state()
        } else {
            State::Seeking
        };
    }

    /// Sets the SETTINGS_MAX_FRAME_SIZE the receiver of this direction advertised.
    pub fn set_max_frame_len(&mut self, len: u32) {
        self.max_frame_len = len.clamp(DEFAULT_MAX_FRAME_LEN, MAX_FRAME_LEN);
    }

    /// Reads one chunk: `data` then `missing` uncaptured bytes.
    pub fn feed(
        &mut self,
        data: &[u8],
        missing: usize,
        first_ns: u64,
        last_ns: u64,
        events: &mut Vec<Event>,
    ) {
        self.chunk_first_ns = first_ns;
        self.chunk_last_ns = last_ns;
        // Senders start syscalls at frame boundaries: a lost stream is picked up there.
        if matches!(self.state, State::Seeking) && starts_with_frames(data, self.max_frame_len) {
            self.state = Self::header_state();
            self.skips.stretch_over();
        }
        let mut rest = data;
        while !rest.is_empty() {
            rest = self.read_bytes(rest, events);
        }
        let mut gap = missing as u64;
        while gap > 0 {
            gap = self.skip_gap(gap, events);
        }
    }

    /// Stretches of bytes skipped while seeking frames, since the last call.
    pub fn take_skips(&mut self) -> u64 {
        self.skips.take()
    }

    fn header_state() -> State {
        State::Header {
            buf: [0; FRAME_HEADER_LEN],
            have: 0,
            start_ns: 0,
        }
    }

    fn lose(&mut self, events: &mut Vec<Event>) {
        self.state = State::Seeking;
        events.push(Event::Lost);
    }

    /// Consumes a prefix of `data`, returning the rest.
    fn read_bytes<'a>(&mut self, data: &'a [u8], events: &mut Vec<Event>) -> &'a [u8] {
        match &mut self.state {
            State::Start => &[],
            State::Seeking => {
                self.skips.skipping(data.len(), 0);
                &[]
            }
            State::Preface { matched } => {
                let n = (PREFACE.len() - *matched).min(data.len());
                if data[..n] != PREFACE[*matched..*matched + n] {
                    self.lose(events);
                    // Left to the seeking state, which skips (and counts) it.
                    return data;
                }
                *matched += n;
                if *matched == PREFACE.len() {
                    self.state = Self::header_state();
                }
                &data[n..]
            }
            State::Header {
                buf,
                have,
                start_ns,
            } => {
                if *have == 0 {
                    *start_ns = self.chunk_first_ns;
                }
                let n = (FRAME_HEADER_LEN - *have).min(data.len());
                buf[*have..*have + n].copy_from_slice(&data[..n]);
                *have += n;
                if *have == FRAME_HEADER_LEN {
                    let (header, start_ns) = (FrameHeader::parse(buf), *start_ns);
                    self.begin_payload(header, start_ns, events);
                }
                &data[n..]
            }
            State::Payload {
                keep,
                kept,
                remaining,
                cut,
                ..
            } => {
                let n = (*remaining as usize).min(data.len());
                if !*cut && kept.len() < *keep {
                    let k = (*keep - kept.len()).min(n);
                    kept.extend_from_slice(&data[..k]);
                }
                *remaining -= n as u32;
                if *remaining == 0 {
                    self.end_payload(events);
                }
                &data[n..]
            }
        }
    }

    /// Skips up to `gap` uncaptured bytes, returning how many are left.
    fn skip_gap(&mut self, gap: u64, events: &mut Vec<Event>) -> u64 {
        match &mut self.state {
            State::Start => 0,
            State::Seeking => {
                self.skips.skipping(0, gap);
                0
            }
            State::Preface { matched } => {
                // The preface is fixed: its bytes need not be seen.
                let n = ((PREFACE.len() - *matched) as u64).min(gap);
                *matched += n as usize;
                if *matched == PREFACE.len() {
                    self.state = Self::header_state();
                }
                gap - n
            }
            State::Header { .. } => {
                self.lose(events);
                self.skips.skipping(0, gap);
                0
            }
            State::Payload {
                keep,
                kept,
                remaining,
                cut,
                ..
            } => {
                let n = u64::from(*remaining).min(gap);
                *cut |= kept.len() < *keep;
                *remaining -= n as u32;
                if *remaining == 0 {
                    self.end_payload(events);
                }
                gap - n
            }
        }
    }

    fn begin_payload(&mut self, header: FrameHeader, start_ns: u64, events: &mut Vec<Event>) {
        if !header.is_valid() {
            self.lose(events);
            return;
        }
        let keep = header.keep_len();
        self.state = State::Payload {
            header,
            start_ns,
            keep,
            kept: Vec::with_capacity(keep.min(4096)),
            remaining: header.len,
            cut: false,
        };
        if header.len == 0 {
            self.end_payload(events);
        }
    }

    fn end_payload(&mut self, events: &mut Vec<Event>) {
        let state = std::mem::replace(&mut self.state, Self::header_state());
        if let State::Payload {
            header,
            start_ns,
            kept,
            cut,
            ..
        } = state
        {
            events.push(Event::Frame(Frame {
                header,
                payload: kept,
                cut,
                start_ns,
                end_ns: self.chunk_last_ns,
            }));
        }
    }
}

/// What the pseudo-header fields of a header block say about its sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BlockClass {
    /// Names request pseudo-headers from the static table (:authority, :method, :path,
    /// :scheme).
    Request,
    /// Names :status from the static table.
    Response,
    Other,
}

/// Classifies a header block fragment by the pseudo-header fields it references in the static
/// table (RFC 7541 §6), walking the field representations without decoding any value. The
/// names of pseudo-header fields are in the static table, so this needs no HPACK state
/// (encoders may still spell them as literals, or index the whole field dynamically: such
/// fields are not counted). A block naming both kinds, or neither, is `Other`.
pub(super) fn classify_block(block: &[u8]) -> BlockClass {
    let (mut request, mut response) = (false, false);
    let mut rest = block;
    while let Some(&first) = rest.first() {
        let (index, prefix, has_value) = match first {
            0x80..=0xff => (true, 7, false),
            0x40..=0x7f => (false, 6, true),
            0x20..=0x3f => (false, 5, false),
            _ => (false, 4, true),
        };
        let Some((value, used)) = integer(rest, prefix) else {
            break;
        };
        rest = &rest[used..];
        let name_index = if prefix == 5 { 0 } else { value };
        request |= (1..=7).contains(&name_index);
        response |= (8..=14).contains(&name_index);
        if !index && has_value {
            let strings = if value == 0 { 2 } else { 1 };
            for _ in 0..strings {
                let Some((len, used)) = integer(rest, 7) else {
                    return BlockClass::Other;
                };
                let Some(after) = rest.get(used.saturating_add(len as usize)..) else {
                    rest = &[];
                    break;
                };
                rest = after;
            }
        }
    }
    match (request, response) {
        (true, false) => BlockClass::Request,
        (false, true) => BlockClass::Response,
        _ => BlockClass::Other,
    }
}

/// The header block fragment inside a HEADERS or PUSH_PROMISE payload, without padding and
/// priority or promised-stream fields; `None` when the payload's fields contradict its length.
/// For a payload captured only in part the fragment is what was captured of it.
pub(super) fn block_fragment<'a>(header: &FrameHeader, payload: &'a [u8]) -> Option<&'a [u8]> {
    let mut start = 0usize;
    let mut pad = 0usize;
    if header.has(FLAG_PADDED) {
        pad = usize::from(*payload.first()?);
        start += 1;
    }
    match header.kind {
        HEADERS if header.has(FLAG_PRIORITY) => start += 5,
        PUSH_PROMISE => start += 4,
        _ => {}
    }
    let end = (header.len as usize).checked_sub(pad)?;
    if start > end {
        return None;
    }
    Some(
        payload
            .get(start..end.min(payload.len()))
            .unwrap_or_default(),
    )
}

//! Cuts one direction of a PostgreSQL connection into messages.
//!
//! Messages are `tag, int32 length, body` (the length counts itself but not the tag), except
//! the first messages of a connection (startup, SSL/GSS negotiation, cancel), which have no
//! tag. Only a bounded prefix of each body is kept (as much as the decoder needs for that
//! message type); the rest is skipped by count, also across uncaptured gaps. A header that
//! falls into a gap, or one that fails validation, loses the framing until [`Reader::resync`]
//! finds a plausible message boundary at the start of a later chunk.

use super::super::{Flow, skips::SkipCounter};

/// The largest any message may declare: the server's own limit (`MaxAllocSize`).
const MAX_DATA_MESSAGE: u32 = 1 << 30;
/// Startup packets are limited to this by the server.
pub(super) const MAX_STARTUP_LEN: u32 = 10_000;
/// Query text kept per `Query`/`Parse` message (plus room for the statement name).
pub(super) const MAX_QUERY_TEXT: usize = 4096;
const MAX_NAME_KEPT: usize = 256;

/// What the reader reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// A whole message; its kept body prefix is in [`Reader::take_body`].
    Message(Message),
    /// A single byte answering an SSL or GSS encryption request.
    Byte { byte: u8, at_ns: u64 },
    /// The framing was lost (a header fell into a gap or made no sense).
    Lost,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Message {
    /// The type byte; 0 for the untyped startup-phase messages.
    pub tag: u8,
    /// Body length as declared (without the length field).
    pub len: u32,
    /// Part of the kept prefix fell into a gap: the body is incomplete.
    pub damaged: bool,
    /// First byte's chunk start and last byte's chunk end.
    pub start_ns: u64,
    pub end_ns: u64,
}

/// Bytes of one chunk not yet consumed: captured data, then `gap` uncaptured bytes.
pub(super) struct Input<'a> {
    pub data: &'a [u8],
    pub gap: u64,
}

impl Input<'_> {
    pub fn is_empty(&self) -> bool {
        self.data.is_empty() && self.gap == 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Header,
    Body,
    /// The answer to an SSL/GSS request: one byte, no framing.
    SingleByte,
    Lost,
}

pub(super) struct Reader {
    flow: Flow,
    state: State,
    /// The next header has no type byte.
    untyped: bool,
    header: [u8; 5],
    header_len: usize,
    tag: u8,
    len: u32,
    remaining: u64,
    keep: usize,
    body: Vec<u8>,
    damaged: bool,
    start_ns: u64,
    chunk_first_ns: u64,
    chunk_last_ns: u64,
    skips: SkipCounter,
}

impl Reader {
    pub fn new(flow: Flow) -> Self {
        Reader {
            flow,
            state: State::Header,
            untyped: false,
            header: [0; 5],
            header_len: 0,
            tag: 0,
            len: 0,
            remaining: 0,
            keep: 0,
            body: Vec::new(),
            damaged: false,
            start_ns: 0,
            chunk_first_ns: 0,
            chunk_last_ns: 0,
            skips: SkipCounter::default(),
        }
    }

    /// The kept prefix of the last message's body (give it back with [`Reader::put_body`]).
    pub fn take_body(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.body)
    }

    pub fn put_body(&mut self, body: Vec<u8>) {
        self.body = body;
    }

    pub fn begin_chunk(&mut self, first_ns: u64, last_ns: u64) {
        self.chunk_first_ns = first_ns;
        self.chunk_last_ns = last_ns;
    }

    pub fn chunk_last_ns(&self) -> u64 {
        self.chunk_last_ns
    }

    /// Whether the next message starts untyped (startup phase).
    pub fn set_untyped(&mut self, untyped: bool) {
        self.untyped = untyped;
    }

    /// The next byte is a bare answer to an SSL/GSS request.
    pub fn expect_single_byte(&mut self) {
        if self.state == State::Header && self.header_len == 0 {
            self.state = State::SingleByte;
        }
    }

    pub fn is_lost(&self) -> bool {
        self.state == State::Lost
    }

    /// Between messages (no message partly read).
    pub fn at_boundary(&self) -> bool {
        self.state == State::Header && self.header_len == 0
    }

    /// Picks the stream up again at the start of a chunk, if the framing was lost and `data`
    /// plausibly starts with messages.
    pub fn resync(&mut self, data: &[u8]) -> bool {
        if self.state == State::Lost && plausible_start(self.flow, data) {
            self.restart();
            return true;
        }
        false
    }

    /// A chunk the session drops unread because the framing is lost (it did not resync).
    pub fn skip_chunk(&mut self, data_len: usize, gap: u64) {
        self.skips.skipping(data_len, gap);
    }

    /// Stretches of bytes skipped while the framing was lost, since the last call.
    pub fn take_skips(&mut self) -> u64 {
        self.skips.take()
    }

    /// Treat the end of the current chunk as a message boundary (the caller found one there).
    pub fn restart(&mut self) {
        self.skips.stretch_over();
        self.state = State::Header;
        self.header_len = 0;
        self.untyped = false;
    }

    /// Gives up the framing for good (until a resync).
    pub fn lose(&mut self) {
        self.state = State::Lost;
        self.header_len = 0;
        self.body.clear();
    }

    pub fn next_event(&mut self, input: &mut Input<'_>) -> Option<Event> {
        loop {
            match self.state {
                State::Lost => {
                    self.skips.skipping(input.data.len(), input.gap);
                    input.data = &[];
                    input.gap = 0;
                    return None;
                }
                State::SingleByte => {
                    if let Some((&byte, rest)) = input.data.split_first() {
                        input.data = rest;
                        self.state = State::Header;
                        return Some(Event::Byte {
                            byte,
                            at_ns: self.chunk_first_ns,
                        });
                    }
                    if input.gap > 0 {
                        self.lose();
                        return Some(Event::Lost);
                    }
                    return None;
                }
                State::Header => {
                    if input.is_empty() {
                        return None;
                    }
                    let need = if self.untyped { 4 } else { 5 };
                    if self.header_len == 0 {
                        self.start_ns = self.chunk_first_ns;
                    }
                    let take = (need - self.header_len).min(input.data.len());
                    self.header[self.header_len..self.header_len + take]
                        .copy_from_slice(&input.data[..take]);
                    self.header_len += take;
                    input.data = &input.data[take..];
                    if self.header_len < need {
                        if input.gap > 0 {
                            self.lose();
                            return Some(Event::Lost);
                        }
                        return None;
                    }
                    let (tag, len_bytes) = if self.untyped {
                        (0, &self.header[..4])
                    } else {
                        (self.header[0], &self.header[1..5])
                    };
                    let len = u32::from_be_bytes([
                        len_bytes[0],
                        len_bytes[1],
                        len_bytes[2],
                        len_bytes[3],
                    ]);
                    if !valid_length(self.flow, tag, len) {
                        self.lose();
                        return Some(Event::Lost);
                    }
                    self.tag = tag;
                    self.len = len - 4;
                    self.remaining = u64::from(self.len);
                    self.keep = keep_limit(self.flow, tag).min(self.len as usize);
                    self.body.clear();
                    self.damaged = false;
                    self.header_len = 0;
                    self.state = State::Body;
                }
                State::Body => {
                    let take = (self.remaining.min(input.data.len() as u64)) as usize;
                    let room = self.keep - self.body.len().min(self.keep);
                    // Bytes land in the kept prefix only while it is contiguous.
                    if !self.damaged {
                        self.body.extend_from_slice(&input.data[..take.min(room)]);
                    }
                    input.data = &input.data[take..];
                    self.remaining -= take as u64;
                    if self.remaining > 0 && input.data.is_empty() && input.gap > 0 {
                        let skip = self.remaining.min(input.gap);
                        if self.body.len() < self.keep {
                            self.damaged = true;
                        }
                        self.remaining -= skip;
                        input.gap -= skip;
                    }
                    if self.remaining > 0 {
                        return None;
                    }
                    self.state = State::Header;
                    return Some(Event::Message(Message {
                        tag: self.tag,
                        len: self.len,
                        damaged: self.damaged,
                        start_ns: self.start_ns,
                        end_ns: self.chunk_last_ns,
                    }));
                }
            }
        }
    }
}

/// Whether a message of this type may declare this length (including the length field).
pub(super) fn valid_length(flow: Flow, tag: u8, len: u32) -> bool {
    let range = match (flow, tag) {
        // Untyped: startup, SSL/GSS requests, cancel (and nothing else answers untyped).
        (Flow::Request, 0) => 8..=MAX_STARTUP_LEN,
        (Flow::Response, 0) => return false,
        (Flow::Request, tag) => match tag {
            b'S' | b'H' | b'X' | b'c' => 4..=4,
            b'E' => 9..=4 + MAX_NAME_KEPT as u32 + 5,
            b'D' | b'C' => 6..=4 + MAX_NAME_KEPT as u32 + 2,
            b'Q' => 5..=MAX_DATA_MESSAGE,
            b'P' => 8..=MAX_DATA_MESSAGE,
            b'B' => 12..=MAX_DATA_MESSAGE,
            b'F' => 14..=MAX_DATA_MESSAGE,
            b'd' => 4..=MAX_DATA_MESSAGE,
            b'f' => 5..=1 << 16,
            b'p' => 4..=1 << 20,
            _ => return false,
        },
        (Flow::Response, tag) => match tag {
            b'Z' => 5..=5,
            b'1' | b'2' | b'3' | b'n' | b'I' | b's' | b'c' => 4..=4,
            b'K' => 12..=12 + 256,
            b'R' => 8..=1 << 16,
            b'S' => 6..=1 << 16,
            b'C' => 5..=1024,
            b'E' | b'N' => 5..=1 << 20,
            b'A' => 10..=1 << 20,
            b'T' => 6..=1 << 26,
            b't' => 6..=1 << 20,
            b'D' => 6..=MAX_DATA_MESSAGE,
            b'G' | b'H' | b'W' => 7..=1 << 16,
            b'd' => 4..=MAX_DATA_MESSAGE,
            b'V' => 8..=MAX_DATA_MESSAGE,
            b'v' => 12..=1 << 16,
            _ => return false,
        },
    };
    range.contains(&len)
}

/// How much of a body the decoder reads; the rest is skipped.
fn keep_limit(flow: Flow, tag: u8) -> usize {
    match (flow, tag) {
        (Flow::Request, 0) => 2048,
        (Flow::Request, b'Q') => MAX_QUERY_TEXT + 1,
        (Flow::Request, b'P') => MAX_NAME_KEPT + MAX_QUERY_TEXT + 1,
        (Flow::Request, b'B') => 2 * MAX_NAME_KEPT,
        (Flow::Request, b'E' | b'C' | b'D') => MAX_NAME_KEPT + 2,
        (Flow::Response, b'C') => 64,
        (Flow::Response, b'E') => 2048,
        (Flow::Response, b'R') => 4,
        _ => 0,
    }
}

/// Whether `data` (the captured start of a chunk) looks like it begins with whole messages:
/// every header that fits in it is valid, and either two or more headers were seen, or the
/// last message ends exactly where the data does, or it is one Query/Parse whose text reads
/// as SQL.
pub(super) fn plausible_start(flow: Flow, data: &[u8]) -> bool {
    let mut at = 0usize;
    let mut headers = 0;
    while data.len() - at >= 5 {
        let tag = data[at];
        let len = u32::from_be_bytes([data[at + 1], data[at + 2], data[at + 3], data[at + 4]]);
        if tag == 0 || !valid_length(flow, tag, len) {
            return false;
        }
        headers += 1;
        let end = at as u64 + 1 + u64::from(len);
        if end == data.len() as u64 {
            return true;
        }
        if end > data.len() as u64 || headers >= 8 {
            // One message running past the data: a query whose text reads as SQL will do.
            let sql = |body: &[u8]| super::sql_plausible(body, false);
            return headers >= 2
                || match (flow, tag) {
                    (Flow::Request, b'Q') => sql(&data[at + 5..]),
                    (Flow::Request, b'P') => data[at + 5..]
                        .iter()
                        .position(|&b| b == 0)
                        .is_some_and(|nul| sql(&data[at + 5 + nul + 1..])),
                    _ => false,
                };
        }
        at = end as usize;
    }
    // A partial header at the end: believe it only after a full one.
    headers >= 1 && at < data.len() && is_tag(flow, data[at])
}

/// A type byte this direction uses.
fn is_tag(flow: Flow, tag: u8) -> bool {
    tag != 0 && (4..=16).any(|len| valid_length(flow, tag, len))
}

//! One direction of a connection: a small state machine that cuts the byte stream into
//! messages (head, then body as the head frames it) and reports them as events.
//!
//! The reader knows nothing about the other direction: the session chooses each message's
//! body framing after seeing its head (a response's framing depends on the request's method).

use memchr::memchr;

use super::head::{self, Head, Prefix, WholeHead};
use crate::protocols::{Flow, skips::SkipCounter};

/// Largest header block buffered; beyond it the head is reported partial and the reader resyncs.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A head buffer that grew beyond this is released after use rather than kept per connection.
const KEPT_HEAD_CAPACITY: usize = 4 * 1024;
/// Chunk-size line after the digits (extensions), and the whole trailer section.
const MAX_CHUNK_EXTENSION_BYTES: u32 = 4 * 1024;
const MAX_TRAILER_BYTES: u32 = 16 * 1024;

/// What is left of one chunk: captured bytes, then bytes moved but not captured.
pub(super) struct Input<'a> {
    pub data: &'a [u8],
    pub gap: u64,
    /// The connection ended after these bytes: finish whatever can be finished.
    pub eof: bool,
}

impl Input<'_> {
    /// No bytes: lets a reader report what a state change decided.
    pub(super) fn empty() -> Self {
        Input {
            data: &[],
            gap: 0,
            eof: false,
        }
    }

    pub(super) fn end_of_stream() -> Self {
        Input {
            data: &[],
            gap: 0,
            eof: true,
        }
    }
}

#[derive(Debug)]
pub(super) enum Event {
    /// A head was parsed; the session must answer with [`Reader::set_framing`].
    Head {
        head: Head,
        start_ns: u64,
        /// The head's length when it began at the first byte of a chunk and ended in that
        /// chunk: then a prefix of that length was all the chunk had to show of it.
        chunk_head_len: Option<usize>,
    },
    /// The message ended in the current chunk. `partial`: framing was lost or cut short.
    End {
        partial: bool,
        body_len: Option<u64>,
    },
}

/// How the body of the message whose head was just reported is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body: the message ends with its head.
    NoBody,
    Length(u64),
    Chunked,
    UntilClose,
    /// Unknown: end the message now as partial and resynchronise.
    Lost,
}

#[derive(Debug)]
enum State {
    /// Between messages.
    Idle,
    /// Collecting a header block in `head`.
    Head,
    /// The head was cut short: report what can be parsed of it, then resynchronise.
    Abandoning,
    /// A head was reported and the session has not chosen its framing yet.
    AwaitingFraming,
    Body(Body),
    /// Report the end of the message, then go idle (or resync, if framing was lost).
    Ending {
        partial: bool,
        body_len: Option<u64>,
    },
    /// Framing lost: skip chunks until one starts a message (see [`Reader::resync_at`]).
    Resync,
    /// The connection switched protocols (101, CONNECT tunnel): ignore everything.
    Opaque,
}

#[derive(Debug)]
enum Body {
    Length { declared: u64, remaining: u64 },
    Chunked(Chunked),
    UntilClose { seen: u64 },
}

enum BodyProgress {
    NeedMore,
    Done(Option<u64>),
    Lost,
}

pub(super) struct Reader {
    flow: Flow,
    state: State,
    /// The header block being collected (bounded by `MAX_HEAD_BYTES`) when it spans chunks.
    head: Vec<u8>,
    scan: HeadScan,
    message_start_ns: u64,
    message_partial: bool,
    chunk_first_ns: u64,
    chunk_last_ns: u64,
    /// Stretches of bytes skipped while resynchronising.
    skips: SkipCounter,
    /// Captured bytes of the chunk being read.
    chunk_len: usize,
}

impl Reader {
    pub(super) fn new(flow: Flow) -> Self {
        Reader {
            flow,
            state: State::Idle,
            head: Vec::new(),
            scan: HeadScan::default(),
            message_start_ns: 0,
            message_partial: false,
            chunk_first_ns: 0,
            chunk_last_ns: 0,
            skips: SkipCounter::default(),
            chunk_len: 0,
        }
    }

    /// Called before the bytes of each chunk, with its timing and captured length.
    pub(super) fn begin_chunk(&mut self, first_byte_ns: u64, last_byte_ns: u64, len: usize) {
        self.chunk_first_ns = first_byte_ns;
        self.chunk_last_ns = last_byte_ns;
        self.chunk_len = len;
    }

    /// Timing of the chunk being read: a message ending now ends there.
    pub(super) fn chunk_last_ns(&self) -> u64 {
        self.chunk_last_ns
    }

    pub(super) fn is_in_body(&self) -> bool {
        matches!(self.state, State::Body(_))
    }

    /// A new chunk begins with a complete start line while we are still collecting a head: the
    /// previous head lost its end somewhere (no sender splits a head that way). Give it up.
    /// Returns whether there was such a head; drain events after this.
    pub(super) fn abandon_head_if_restarted(&mut self, chunk: &[u8]) -> bool {
        let restarted = matches!(self.state, State::Head)
            && head::chunk_starts_message(self.flow, chunk, false);
        if restarted {
            self.state = State::Abandoning;
        }
        restarted
    }

    /// End the message whose body is being read now, as partial. Used when the next message
    /// visibly began although the body did not (see the session for when that is trusted).
    pub(super) fn cut_body(&mut self) {
        if let State::Body(body) = &self.state {
            let body_len = match body {
                Body::Length { declared, .. } => Some(*declared),
                Body::Chunked(_) => None,
                Body::UntilClose { seen } => Some(*seen),
            };
            self.state = State::Ending {
                partial: true,
                body_len,
            };
        }
    }

    /// At a chunk start: leave resynchronisation if this chunk begins a message.
    pub(super) fn resync_at(&mut self, chunk: &[u8]) {
        if matches!(self.state, State::Resync) && head::chunk_starts_message(self.flow, chunk, true)
        {
            self.state = State::Idle;
        }
    }

    pub(super) fn go_opaque(&mut self) {
        self.state = State::Opaque;
        self.release_head();
    }

    /// The session's answer to [`Event::Head`].
    pub(super) fn set_framing(&mut self, framing: Framing) {
        if !matches!(self.state, State::AwaitingFraming) {
            return;
        }
        self.state = match framing {
            Framing::NoBody | Framing::Length(0) => State::Ending {
                partial: self.message_partial,
                body_len: Some(0),
            },
            Framing::Length(n) => State::Body(Body::Length {
                declared: n,
                remaining: n,
            }),
            Framing::Chunked => State::Body(Body::Chunked(Chunked::default())),
            Framing::UntilClose => State::Body(Body::UntilClose { seen: 0 }),
            Framing::Lost => State::Ending {
                partial: true,
                body_len: None,
            },
        };
    }

    /// Consumes input until something happens or the input is used up (`None`).
    pub(super) fn next_event(&mut self, input: &mut Input<'_>) -> Option<Event> {
        loop {
            match &mut self.state {
                State::Idle => {
                    // Stray line ends between messages are tolerated (RFC 9112 §2.2).
                    let blank = input.data.iter().take_while(|b| matches!(b, b'\r' | b'\n'));
                    input.data = &input.data[blank.count()..];
                    if !input.data.is_empty() {
                        self.begin_head();
                    } else if input.gap > 0 {
                        // A message starts in bytes we cannot see.
                        self.resync();
                    } else {
                        return None;
                    }
                }
                State::Head => match self.read_head(input) {
                    HeadProgress::NeedMore => return None,
                    HeadProgress::Invalid => {
                        self.release_head();
                        self.resync();
                    }
                    HeadProgress::Cut => self.state = State::Abandoning,
                    HeadProgress::Complete {
                        parsed,
                        chunk_head_len,
                    } => {
                        if let Some(event) = self.report_head(parsed, chunk_head_len) {
                            return Some(event);
                        }
                    }
                },
                State::Abandoning => {
                    let parsed = if self.scan.prefix_ok {
                        head::parse_head(self.flow, &self.head, true)
                    } else {
                        None
                    };
                    if let Some(event) = self.report_head(parsed, None) {
                        return Some(event);
                    }
                }
                // The session did not choose a framing; nothing sensible to do but resync.
                State::AwaitingFraming => self.resync(),
                State::Body(body) => {
                    let progress = match body {
                        Body::Length { remaining, .. } if *remaining > 0 => {
                            take(remaining, input);
                            if *remaining > 0 {
                                BodyProgress::NeedMore
                            } else {
                                BodyProgress::Done(None)
                            }
                        }
                        Body::Length { .. } => BodyProgress::Done(None),
                        Body::Chunked(chunked) => chunked.advance(input),
                        Body::UntilClose { seen } => {
                            *seen = seen.saturating_add(input.data.len() as u64 + input.gap);
                            input.data = &[];
                            input.gap = 0;
                            BodyProgress::NeedMore
                        }
                    };
                    let (partial, body_len) = match progress {
                        BodyProgress::NeedMore if input.eof => match body {
                            Body::UntilClose { seen } => (self.message_partial, Some(*seen)),
                            Body::Length { declared, .. } => (true, Some(*declared)),
                            Body::Chunked(_) => (true, None),
                        },
                        BodyProgress::NeedMore => return None,
                        BodyProgress::Done(len) => {
                            let declared = match body {
                                Body::Length { declared, .. } => Some(*declared),
                                _ => None,
                            };
                            (self.message_partial, len.or(declared))
                        }
                        BodyProgress::Lost => (true, None),
                    };
                    self.state = State::Ending { partial, body_len };
                }
                State::Ending { partial, body_len } => {
                    let (partial, body_len) = (*partial, *body_len);
                    if partial {
                        self.resync();
                    } else {
                        self.state = State::Idle;
                    }
                    self.message_partial = false;
                    return Some(Event::End { partial, body_len });
                }
                State::Resync => {
                    self.skips.skipping(input.data.len(), input.gap);
                    input.data = &[];
                    input.gap = 0;
                    return None;
                }
                State::Opaque => {
                    input.data = &[];
                    input.gap = 0;
                    return None;
                }
            }
        }
    }

    /// Framing is lost: skip bytes until a chunk starts a message.
    fn resync(&mut self) {
        self.state = State::Resync;
        self.skips.stretch_over();
    }

    pub(super) fn take_skips(&mut self) -> u64 {
        self.skips.take()
    }

    fn begin_head(&mut self) {
        self.state = State::Head;
        self.head.clear();
        self.scan = HeadScan::default();
        self.message_start_ns = self.chunk_first_ns;
        self.message_partial = false;
    }

    /// Turns a parsed head into an event, or resyncs when there is nothing to report.
    fn report_head(
        &mut self,
        parsed: Option<Head>,
        chunk_head_len: Option<usize>,
    ) -> Option<Event> {
        self.release_head();
        let Some(head) = parsed else {
            self.resync();
            return None;
        };
        self.message_partial = head.partial;
        self.state = State::AwaitingFraming;
        Some(Event::Head {
            head,
            start_ns: self.message_start_ns,
            chunk_head_len,
        })
    }

    fn release_head(&mut self) {
        self.head.clear();
        if self.head.capacity() > KEPT_HEAD_CAPACITY {
            self.head = Vec::new();
        }
    }

    /// Reads input up to the blank line that ends the header block, and parses the block.
    fn read_head(&mut self, input: &mut Input<'_>) -> HeadProgress {
        let data = input.data;
        let window = &data[..data.len().min(MAX_HEAD_BYTES - self.head.len())];
        let old_len = self.head.len();
        if old_len == 0 {
            // Usually the whole head is in one chunk: parse it where it is, copying nothing, in
            // one pass. (The head began in this very input: nothing was read since
            // `begin_head`.) Otherwise the scan takes over, chunk by chunk.
            match head::parse_whole_head(self.flow, window) {
                WholeHead::Parsed(parsed, len) => {
                    input.data = &data[len..];
                    return HeadProgress::Complete {
                        parsed: Some(parsed),
                        chunk_head_len: (data.len() == self.chunk_len).then_some(len),
                    };
                }
                WholeHead::InvalidStart => return HeadProgress::Invalid,
                WholeHead::NotWhole => {}
            }
            match self.scan.advance(self.flow, window, 0) {
                // Not expected after the one-pass parse found no blank line; kept exact anyway.
                Scan::Complete(len) => {
                    input.data = &data[len..];
                    return HeadProgress::Complete {
                        parsed: head::parse_head(self.flow, &window[..len], false),
                        chunk_head_len: (data.len() == self.chunk_len).then_some(len),
                    };
                }
                Scan::Invalid => return HeadProgress::Invalid,
                Scan::Incomplete => self.head.extend_from_slice(window),
            }
        } else {
            self.head.extend_from_slice(window);
            match self.scan.advance(self.flow, &self.head, old_len) {
                Scan::Complete(len) => {
                    self.head.truncate(len);
                    input.data = &data[len - old_len..];
                    return HeadProgress::Complete {
                        parsed: head::parse_head(self.flow, &self.head, false),
                        chunk_head_len: None,
                    };
                }
                Scan::Invalid => return HeadProgress::Invalid,
                Scan::Incomplete => {}
            }
        }

        input.data = &data[window.len()..];
        // Bytes left over mean the head outgrew its buffer; a gap or the end cut it short.
        if !input.data.is_empty() || input.gap > 0 || input.eof {
            HeadProgress::Cut
        } else {
            HeadProgress::NeedMore
        }
    }
}

enum HeadProgress {
    NeedMore,
    /// The block is complete (and was consumed); this is what it parsed to, and its length
    /// when it began and ended in this chunk (see [`Event::Head`]).
    Complete {
        parsed: Option<Head>,
        chunk_head_len: Option<usize>,
    },
    Invalid,
    Cut,
}

/// How far a header block has been checked, so that each byte is looked at once.
#[derive(Default)]
struct HeadScan {
    /// Where the line being scanned starts, and whether the first line was checked.
    line_start: usize,
    first_line_done: bool,
    /// The start of the block was checked to be a plausible start line.
    prefix_ok: bool,
}

enum Scan {
    /// The block, blank line included, is this long.
    Complete(usize),
    Incomplete,
    Invalid,
}

impl HeadScan {
    /// Checks `block` (the header block so far) from `from` on.
    fn advance(&mut self, flow: Flow, block: &[u8], from: usize) -> Scan {
        if !self.prefix_ok {
            match head::start_prefix(flow, block) {
                Prefix::Valid => self.prefix_ok = true,
                Prefix::Undecided => {}
                Prefix::Invalid => return Scan::Invalid,
            }
        }
        let mut scan = from;
        while let Some(offset) = memchr(b'\n', &block[scan..]) {
            let nl = scan + offset;
            let line = &block[self.line_start..nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !self.first_line_done {
                if !head::valid_start_line(flow, line) {
                    return Scan::Invalid;
                }
                self.first_line_done = true;
            } else if line.is_empty() {
                return Scan::Complete(nl + 1);
            }
            self.line_start = nl + 1;
            scan = nl + 1;
        }
        Scan::Incomplete
    }
}

/// Skips up to `remaining` bytes of input, captured first, then uncaptured.
fn take(remaining: &mut u64, input: &mut Input<'_>) {
    let n = input
        .data
        .len()
        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
    input.data = &input.data[n..];
    *remaining -= n as u64;
    if input.data.is_empty() {
        let n = input.gap.min(*remaining);
        input.gap -= n;
        *remaining -= n;
    }
}

/// Chunked transfer coding (RFC 9112 §7.1), one byte at a time outside chunk data.
#[derive(Debug, Default)]
struct Chunked {
    phase: ChunkPhase,
    body_len: u64,
}

#[derive(Debug)]
enum ChunkPhase {
    /// Hex digits of a chunk size.
    Size {
        value: u64,
        digits: u8,
    },
    /// After the digits: whitespace, `;` extensions, up to the line end.
    SizeLineRest {
        size: u64,
        len: u32,
    },
    Data {
        remaining: u64,
    },
    /// The CRLF after chunk data.
    DataEnd {
        saw_cr: bool,
    },
    /// Trailer fields after the last chunk, up to a blank line.
    Trailers {
        line_len: u32,
        total: u32,
    },
}

impl Default for ChunkPhase {
    fn default() -> Self {
        ChunkPhase::Size {
            value: 0,
            digits: 0,
        }
    }
}

impl Chunked {
    fn advance(&mut self, input: &mut Input<'_>) -> BodyProgress {
        while let Some(&byte) = input.data.first() {
            if let ChunkPhase::Data { remaining } = &mut self.phase {
                take(remaining, input);
                if *remaining == 0 {
                    self.phase = ChunkPhase::DataEnd { saw_cr: false };
                }
                continue;
            }
            input.data = &input.data[1..];
            match self.step(byte) {
                Ok(false) => {}
                Ok(true) => return BodyProgress::Done(Some(self.body_len)),
                Err(()) => return BodyProgress::Lost,
            }
        }
        // Uncaptured bytes can be skipped only inside chunk data: elsewhere they hide framing.
        if let ChunkPhase::Data { remaining } = &mut self.phase {
            take(remaining, input);
            if *remaining == 0 {
                self.phase = ChunkPhase::DataEnd { saw_cr: false };
            }
        }
        if input.gap > 0 {
            BodyProgress::Lost
        } else {
            BodyProgress::NeedMore
        }
    }

    /// One framing byte: `Ok(true)` when the body is complete, `Err` when it is malformed.
    fn step(&mut self, b: u8) -> Result<bool, ()> {
        self.phase = match self.phase {
            ChunkPhase::Size { value, digits } => match hex_value(b) {
                Some(d) if digits < 16 => ChunkPhase::Size {
                    value: value << 4 | d,
                    digits: digits + 1,
                },
                Some(_) => return Err(()),
                None if digits == 0 => return Err(()),
                None => return self.size_line_rest(value, 0, b),
            },
            ChunkPhase::SizeLineRest { size, len } => return self.size_line_rest(size, len, b),
            // Data is skipped in bulk by `advance`, never stepped through; should that ever
            // change, call it malformed rather than panic.
            ChunkPhase::Data { .. } => return Err(()),
            ChunkPhase::DataEnd { saw_cr: false } if b == b'\r' => {
                ChunkPhase::DataEnd { saw_cr: true }
            }
            ChunkPhase::DataEnd { .. } if b == b'\n' => ChunkPhase::Size {
                value: 0,
                digits: 0,
            },
            ChunkPhase::DataEnd { .. } => return Err(()),
            ChunkPhase::Trailers { line_len, total } => match b {
                b'\n' if line_len == 0 => return Ok(true),
                b'\n' => ChunkPhase::Trailers { line_len: 0, total },
                b'\r' => ChunkPhase::Trailers { line_len, total },
                _ if total >= MAX_TRAILER_BYTES => return Err(()),
                _ => ChunkPhase::Trailers {
                    line_len: line_len + 1,
                    total: total + 1,
                },
            },
        };
        Ok(false)
    }

    fn size_line_rest(&mut self, size: u64, len: u32, b: u8) -> Result<bool, ()> {
        self.phase = match b {
            b'\n' if size == 0 => ChunkPhase::Trailers {
                line_len: 0,
                total: 0,
            },
            b'\n' => {
                self.body_len = self.body_len.checked_add(size).ok_or(())?;
                ChunkPhase::Data { remaining: size }
            }
            _ if len >= MAX_CHUNK_EXTENSION_BYTES => return Err(()),
            _ => ChunkPhase::SizeLineRest { size, len: len + 1 },
        };
        Ok(false)
    }
}

fn hex_value(b: u8) -> Option<u64> {
    char::from(b).to_digit(16).map(u64::from)
}

//! Cuts the server's byte stream into top-level RESP2/RESP3 values.
//!
//! Aggregates are followed with a stack of element counts (bounded depth); string values are
//! skipped by length. Attributes (`|`) are read and dropped: they annotate the value after
//! them. Streamed strings (`$?` with `;` chunks) and streamed aggregates (`*?` … `.`) are
//! followed too. Only what the session needs is kept: the type of the top-level value, its
//! error text or simple string, and for aggregates their first element (a string, to tell
//! pub/sub messages) and third element (an integer, the subscription count).

use super::command::parse_number;
use super::{Input, lossy_into};
use crate::protocols::skips::SkipCounter;

/// Error texts and simple strings kept, in bytes.
const MAX_TEXT_KEEP: usize = 512;
/// Bytes kept of an aggregate's first element.
const MAX_FIRST_KEEP: usize = 32;
/// Nesting deeper than this is not believed to be RESP.
const MAX_DEPTH: usize = 64;
/// Longest number line (`:`, `$`, `*`, …).
const MAX_NUMBER_LINE: usize = 24;
/// Longest simple string or error line followed.
const MAX_LINE: usize = 1024 * 1024;

/// A complete top-level value.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    /// The type byte of the value (`+`, `-`, `$`, `*`, `%`, `>`, …).
    pub kind: u8,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Text of a simple error (`-`) or blob error (`!`), bounded.
    pub error: Option<String>,
    /// Text of a simple string (`+`), bounded.
    pub simple: Option<String>,
    /// First element of an aggregate, when it is a string (bounded).
    pub first: Option<Vec<u8>>,
    /// Third element of an aggregate, when it is an integer.
    pub third_int: Option<i64>,
    /// Something we wanted to keep was not captured.
    pub partial: bool,
}

impl Reply {
    pub fn is_push(&self) -> bool {
        self.kind == b'>'
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// A type byte is next.
    Type,
    /// The rest of the line after type byte `ty`.
    Line {
        ty: u8,
    },
    /// String bytes; `chunk`: part of a streamed string.
    Bulk {
        remaining: u64,
        chunk: bool,
    },
    /// The CRLF after string bytes.
    BulkEnd {
        remaining: u8,
        chunk: bool,
    },
    /// A streamed string: `;N` chunk headers until `;0`.
    StreamedChunk,
    Lost,
}

#[derive(Clone, Copy, Debug)]
struct Frame {
    /// Values still to come; `None` for a streamed aggregate (ends with `.`).
    remaining: Option<u64>,
    attribute: bool,
}

/// Where the bytes of the string being read go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keep {
    Nothing,
    Error,
    First,
}

pub struct ReplyReader {
    state: State,
    /// The line read so far, without its CR.
    line: Vec<u8>,
    line_len: usize,
    /// The line's CR was read: LF must follow.
    line_cr: bool,
    stack: Vec<Frame>,
    /// A top-level value has begun.
    in_value: bool,
    /// Elements of the top-level aggregate completed so far.
    top_index: u64,
    keep: Keep,
    kept: Vec<u8>,
    reply: Reply,
    chunk_first_ns: u64,
    chunk_last_ns: u64,
    skips: SkipCounter,
}

impl ReplyReader {
    pub fn new() -> Self {
        ReplyReader {
            state: State::Type,
            line: Vec::new(),
            line_len: 0,
            line_cr: false,
            stack: Vec::new(),
            in_value: false,
            top_index: 0,
            keep: Keep::Nothing,
            kept: Vec::new(),
            reply: Reply::default(),
            chunk_first_ns: 0,
            chunk_last_ns: 0,
            skips: SkipCounter::default(),
        }
    }

    pub fn begin_chunk(&mut self, first_ns: u64, last_ns: u64) {
        self.chunk_first_ns = first_ns;
        self.chunk_last_ns = last_ns;
    }

    pub fn is_lost(&self) -> bool {
        self.state == State::Lost
    }

    pub fn lose(&mut self) {
        self.state = State::Lost;
    }

    /// Assume a value starts at the next byte.
    pub fn restart(&mut self) {
        *self = ReplyReader {
            chunk_first_ns: self.chunk_first_ns,
            chunk_last_ns: self.chunk_last_ns,
            line: std::mem::take(&mut self.line),
            kept: std::mem::take(&mut self.kept),
            stack: std::mem::take(&mut self.stack),
            skips: std::mem::take(&mut self.skips),
            ..ReplyReader::new()
        };
        self.skips.stretch_over();
        self.line.clear();
        self.kept.clear();
        self.stack.clear();
    }

    /// Stretches of bytes skipped while the framing was lost, since the last call.
    pub fn take_skips(&mut self) -> u64 {
        self.skips.take()
    }

    /// When the value being read began, if one is partly read.
    pub fn value_start_ns(&self) -> Option<u64> {
        self.in_value.then_some(self.reply.start_ns)
    }

    /// Reads until a top-level value is complete; `None` once the input is used up.
    pub fn next(&mut self, input: &mut Input<'_>) -> Option<Reply> {
        loop {
            match self.state {
                State::Lost => {
                    self.skips.skipping(input.data.len(), input.gap as u64);
                    input.data = &[];
                    input.gap = 0;
                    return None;
                }
                State::Bulk { remaining, chunk } => {
                    if remaining == 0 {
                        self.state = State::BulkEnd {
                            remaining: 2,
                            chunk,
                        };
                    } else if !input.data.is_empty() {
                        let n = usize::try_from(remaining)
                            .unwrap_or(usize::MAX)
                            .min(input.data.len());
                        let limit = match self.keep {
                            Keep::Nothing => 0,
                            Keep::Error => MAX_TEXT_KEEP,
                            Keep::First => MAX_FIRST_KEEP,
                        };
                        let keep = n.min(limit.saturating_sub(self.kept.len()));
                        self.kept.extend_from_slice(&input.data[..keep]);
                        input.data = &input.data[n..];
                        self.state = State::Bulk {
                            remaining: remaining - n as u64,
                            chunk,
                        };
                    } else if input.gap > 0 {
                        let n = remaining.min(input.gap as u64);
                        if self.keep != Keep::Nothing {
                            self.reply.partial = true;
                        }
                        input.gap -= n as usize;
                        self.state = State::Bulk {
                            remaining: remaining - n,
                            chunk,
                        };
                    } else {
                        return None;
                    }
                }
                State::BulkEnd { remaining, chunk } => {
                    if remaining == 0 {
                        if chunk {
                            self.state = State::StreamedChunk;
                            continue;
                        }
                        self.state = State::Type;
                        self.string_done();
                        if let Some(reply) = self.value_done() {
                            return Some(reply);
                        }
                        continue;
                    }
                    if let Some((&b, rest)) = input.data.split_first() {
                        let expected = if remaining == 2 { b'\r' } else { b'\n' };
                        if b != expected {
                            self.state = State::Lost;
                            continue;
                        }
                        input.data = rest;
                    } else if input.gap > 0 {
                        input.gap -= 1;
                    } else {
                        return None;
                    }
                    self.state = State::BulkEnd {
                        remaining: remaining - 1,
                        chunk,
                    };
                }
                State::Type | State::StreamedChunk => {
                    let Some((&b, rest)) = input.data.split_first() else {
                        if input.gap > 0 {
                            self.state = State::Lost;
                            continue;
                        }
                        return None;
                    };
                    let valid = match self.state {
                        State::StreamedChunk => b == b';',
                        _ => b"+-:$*_#,(!=%~|>.".contains(&b),
                    };
                    if !valid {
                        self.state = State::Lost;
                        continue;
                    }
                    input.data = rest;
                    if !self.in_value {
                        self.in_value = true;
                        self.top_index = 0;
                        self.reply = Reply {
                            start_ns: self.chunk_first_ns,
                            ..Reply::default()
                        };
                    }
                    if self.stack.is_empty() && b != b'|' && b != b';' {
                        self.reply.kind = b;
                    }
                    self.line.clear();
                    self.line_len = 0;
                    self.line_cr = false;
                    self.state = State::Line { ty: b };
                }
                State::Line { ty } => {
                    let Some((&b, rest)) = input.data.split_first() else {
                        if input.gap > 0 {
                            self.state = State::Lost;
                            continue;
                        }
                        return None;
                    };
                    input.data = rest;
                    if b != b'\n' {
                        self.line_len += 1;
                        let textual = matches!(ty, b'+' | b'-' | b',' | b'(');
                        let limit = if textual {
                            MAX_TEXT_KEEP
                        } else {
                            MAX_NUMBER_LINE
                        };
                        if self.line_cr
                            || self.line_len > MAX_LINE
                            || (!textual && self.line_len > limit)
                        {
                            // A CR not ending the line, or a line no server sends.
                            self.state = State::Lost;
                        } else if b == b'\r' {
                            self.line_cr = true;
                        } else if self.line.len() < limit {
                            self.line.push(b);
                        }
                        continue;
                    }
                    if let Some(reply) = self.line_done(ty) {
                        return Some(reply);
                    }
                }
            }
        }
    }

    /// Whether the scalar being read is the top-level value or an element we keep.
    fn position(&self) -> Keep {
        match self.stack.as_slice() {
            [] => Keep::Error,
            [top] if !top.attribute && self.top_index == 0 => Keep::First,
            _ => Keep::Nothing,
        }
    }

    fn line_done(&mut self, ty: u8) -> Option<Reply> {
        if !self.line_cr {
            self.state = State::Lost;
            return None;
        }
        let text = self.line.as_slice();
        self.state = State::Type;
        match ty {
            b'+' | b'-' | b',' | b'(' | b'#' | b'_' => {
                match (ty, self.position()) {
                    (b'+', Keep::Error) => {
                        let mut s = String::new();
                        lossy_into(&mut s, text, MAX_TEXT_KEEP);
                        self.reply.simple = Some(s);
                    }
                    (b'-', Keep::Error) => {
                        let mut s = String::new();
                        lossy_into(&mut s, text, MAX_TEXT_KEEP);
                        self.reply.error = Some(s);
                    }
                    (b'+', Keep::First) => {
                        self.reply.first = Some(text[..text.len().min(MAX_FIRST_KEEP)].to_vec());
                    }
                    _ => {}
                }
                self.value_done()
            }
            b':' => {
                let Some(n) = parse_number(text) else {
                    self.state = State::Lost;
                    return None;
                };
                if self.stack.len() == 1 && !self.stack[0].attribute && self.top_index == 2 {
                    self.reply.third_int = Some(n);
                }
                self.value_done()
            }
            b'.' => {
                // End of a streamed aggregate.
                let streamed = self.stack.last().is_some_and(|f| f.remaining.is_none());
                if !text.is_empty() || !streamed {
                    self.state = State::Lost;
                    return None;
                }
                self.stack.pop();
                self.value_done()
            }
            b';' => match parse_number(text) {
                Some(0) => {
                    self.string_done();
                    self.value_done()
                }
                Some(n) if n > 0 => {
                    self.state = State::Bulk {
                        remaining: n as u64,
                        chunk: true,
                    };
                    None
                }
                _ => {
                    self.state = State::Lost;
                    None
                }
            },
            b'$' | b'!' | b'=' => {
                if text == b"?" && ty == b'$' {
                    self.start_string(ty);
                    self.state = State::StreamedChunk;
                    return None;
                }
                match parse_number(text) {
                    Some(-1) => self.value_done(),
                    Some(n) if n >= 0 => {
                        self.start_string(ty);
                        self.state = State::Bulk {
                            remaining: n as u64,
                            chunk: false,
                        };
                        None
                    }
                    _ => {
                        self.state = State::Lost;
                        None
                    }
                }
            }
            // '*', '%', '~', '>', '|'
            _ => {
                let count = if text == b"?" && ty != b'|' {
                    None
                } else {
                    match parse_number(text) {
                        Some(-1) if ty == b'*' => return self.value_done(),
                        Some(n) if n >= 0 => {
                            Some(n as u64 * if matches!(ty, b'%' | b'|') { 2 } else { 1 })
                        }
                        _ => {
                            self.state = State::Lost;
                            return None;
                        }
                    }
                };
                if count == Some(0) {
                    // An empty aggregate is a complete value; an empty attribute is nothing.
                    return if ty == b'|' { None } else { self.value_done() };
                }
                if self.stack.len() >= MAX_DEPTH {
                    self.state = State::Lost;
                    return None;
                }
                self.stack.push(Frame {
                    remaining: count,
                    attribute: ty == b'|',
                });
                None
            }
        }
    }

    fn start_string(&mut self, ty: u8) {
        self.kept.clear();
        self.keep = match (ty, self.position()) {
            (b'!', Keep::Error) => Keep::Error,
            (b'$', Keep::First) => Keep::First,
            _ => Keep::Nothing,
        };
    }

    fn string_done(&mut self) {
        match std::mem::replace(&mut self.keep, Keep::Nothing) {
            Keep::Nothing => {}
            Keep::Error => {
                let mut s = String::new();
                lossy_into(&mut s, &self.kept, MAX_TEXT_KEEP);
                self.reply.error = Some(s);
            }
            Keep::First => self.reply.first = Some(self.kept.clone()),
        }
    }

    /// A value ended: count it in its aggregate; `Some` when that completes the top level.
    fn value_done(&mut self) -> Option<Reply> {
        loop {
            let depth = self.stack.len();
            let Some(frame) = self.stack.last_mut() else {
                self.in_value = false;
                let mut reply = std::mem::take(&mut self.reply);
                reply.end_ns = self.chunk_last_ns;
                return Some(reply);
            };
            if depth == 1 && !frame.attribute {
                self.top_index += 1;
            }
            let Some(remaining) = &mut frame.remaining else {
                return None;
            };
            *remaining -= 1;
            if *remaining > 0 {
                return None;
            }
            let attribute = frame.attribute;
            self.stack.pop();
            if attribute {
                // Attributes annotate the next value; they are not one.
                if self.stack.is_empty() {
                    let start_ns = self.reply.start_ns;
                    self.reply = Reply {
                        start_ns,
                        ..Reply::default()
                    };
                    self.top_index = 0;
                }
                return None;
            }
        }
    }
}

/// Whether `data` starts like a top-level RESP value (to pick a lost stream up again).
pub fn starts_reply(data: &[u8]) -> bool {
    let Some((&ty, rest)) = data.split_first() else {
        return false;
    };
    let line_end = rest.windows(2).position(|w| w == b"\r\n");
    let line = &rest[..line_end.unwrap_or(rest.len().min(64))];
    let printable = line.iter().all(|&b| (0x20..0x7f).contains(&b));
    let number = |allow_stream: bool| {
        let digits = line.strip_prefix(b"-").unwrap_or(line);
        line_end.is_some()
            && ((!digits.is_empty() && digits.len() <= 20 && digits.iter().all(u8::is_ascii_digit))
                || (allow_stream && line == b"?"))
    };
    match ty {
        b'+' | b'-' => printable && !line.is_empty(),
        b':' | b'!' | b'=' | b'(' => number(false),
        b'$' | b'*' | b'%' | b'~' | b'>' => number(true),
        b'|' => number(false),
        b'_' => line_end == Some(0),
        b'#' => line == b"t" || line == b"f",
        b',' => printable && line_end.is_some() && !line.is_empty(),
        _ => false,
    }
}

//! Start lines and header blocks: recognising them and pulling out the fields spans need.
//!
//! Everything here works on borrowed bytes; the only allocations are the few bounded strings a
//! parsed head carries.

use std::borrow::Cow;

use memchr::{memchr, memchr_iter, memrchr};

use crate::protocols::{Flow, KNOWN_METHODS, method_text};

/// Methods accepted where we have no framing to trust (connection detection, resynchronisation).
/// Once in sync, any method token is accepted (WebDAV and friends).
fn known_methods() -> impl Iterator<Item = &'static [u8]> {
    KNOWN_METHODS.iter().map(|m| m.as_bytes())
}
const MAX_METHOD_LEN: usize = 24;
pub(super) const MAX_TARGET_LEN: usize = 2048;
pub(super) const MAX_HEADER_VALUE_LEN: usize = 512;
const STATUS_PREFIX: &[u8] = b"HTTP/1.";
/// How far [`chunk_starts_message`] looks for the end of a start line.
const MAX_START_LINE_LEN: usize = MAX_TARGET_LEN + 64;

/// A parsed (possibly incomplete) request or response head.
#[derive(Debug)]
pub(super) struct Head {
    pub start: StartLine,
    /// The head was cut short (uncaptured bytes, too large, connection closed): the fields
    /// present are right but others may be missing, and the message framing is unknown.
    pub partial: bool,
    pub content_length: ContentLength,
    pub transfer_encoding: TransferEncoding,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

#[derive(Debug)]
pub(super) enum StartLine {
    Request {
        method: Cow<'static, str>,
        target: String,
        /// "1.0", "1.1", or "" when the line was cut before the version.
        version: &'static str,
    },
    Response {
        status: u16,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ContentLength {
    Absent,
    Valid(u64),
    /// Unparseable or contradictory values: the framing cannot be trusted.
    Invalid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TransferEncoding {
    Absent,
    /// The last coding is `chunked`: the body is chunk-framed.
    ChunkedLast,
    /// Some other final coding: a request cannot be framed, a response runs until close.
    Other,
}

/// How far the bytes seen so far go towards a valid start line (checked while a head is still
/// arriving, so garbage is dropped without waiting for a line end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Prefix {
    Valid,
    Undecided,
    Invalid,
}

/// Whether the first bytes of a connection start an HTTP/1.x message in `flow`.
pub(super) fn detect(flow: Flow, first: &[u8]) -> bool {
    match flow {
        Flow::Request => known_methods()
            .any(|m| first.len() > m.len() && first.starts_with(m) && first[m.len()] == b' '),
        Flow::Response => first.starts_with(b"HTTP/1.0 ") || first.starts_with(b"HTTP/1.1 "),
    }
}

/// Whether a chunk (one syscall) begins a new message, judged without context.
///
/// The chunk must start like a start line (a known method and a space, or `HTTP/1.x `), which
/// rejects almost every body chunk in constant time. When the chunk holds the whole first line,
/// that line must be valid. With `allow_prefix`, a chunk without a line end is accepted too: a
/// sender may split even its first line across syscalls, or the line may be longer than what
/// was captured.
pub(super) fn chunk_starts_message(flow: Flow, data: &[u8], allow_prefix: bool) -> bool {
    let plausible = !data.is_empty()
        && match flow {
            Flow::Request => known_methods().any(|m| {
                let n = data.len().min(m.len());
                data[..n] == m[..n] && data.get(m.len()).is_none_or(|&b| b == b' ')
            }),
            Flow::Response => status_prefix(data) != Prefix::Invalid,
        };
    if !plausible {
        return false;
    }
    let searched = &data[..data.len().min(MAX_START_LINE_LEN)];
    match memchr(b'\n', searched) {
        Some(nl) => {
            let line = strip_cr(&data[..nl]);
            match flow {
                Flow::Request => {
                    parse_request_line(line).is_some_and(|r| known_methods().any(|m| m == r.method))
                }
                Flow::Response => parse_status_line(line).is_some(),
            }
        }
        None => allow_prefix,
    }
}

/// Checks the first bytes of a head in sync with the stream (any method token allowed).
pub(super) fn start_prefix(flow: Flow, bytes: &[u8]) -> Prefix {
    match flow {
        Flow::Request => {
            for (i, &b) in bytes.iter().take(MAX_METHOD_LEN + 1).enumerate() {
                if b == b' ' {
                    return if i > 0 {
                        Prefix::Valid
                    } else {
                        Prefix::Invalid
                    };
                }
                if !is_method_byte(b) {
                    return Prefix::Invalid;
                }
            }
            if bytes.len() > MAX_METHOD_LEN {
                Prefix::Invalid
            } else {
                Prefix::Undecided
            }
        }
        Flow::Response => status_prefix(bytes),
    }
}

/// `HTTP/1.0 ` or `HTTP/1.1 `, as far as `bytes` go.
fn status_prefix(bytes: &[u8]) -> Prefix {
    for (i, &b) in bytes.iter().take(STATUS_PREFIX.len() + 2).enumerate() {
        let ok = match i {
            _ if i < STATUS_PREFIX.len() => b == STATUS_PREFIX[i],
            7 => b == b'0' || b == b'1',
            _ => b == b' ',
        };
        if !ok {
            return Prefix::Invalid;
        }
    }
    if bytes.len() >= STATUS_PREFIX.len() + 2 {
        Prefix::Valid
    } else {
        Prefix::Undecided
    }
}

/// Whether a complete first line (without its line end) is a valid start line in `flow`.
pub(super) fn valid_start_line(flow: Flow, line: &[u8]) -> bool {
    match flow {
        Flow::Request => parse_request_line(line).is_some(),
        Flow::Response => parse_status_line(line).is_some(),
    }
}

/// Parses a head buffer: the whole block up to and including its blank line, or, when
/// `partial`, whatever prefix of it was captured. In a partial head only complete header
/// lines count and the start line may be cut (a request needs its method, a response its
/// status code). Returns `None` when not even that much is there.
pub(super) fn parse_head(flow: Flow, buf: &[u8], partial: bool) -> Option<Head> {
    let first_nl = memchr(b'\n', buf);
    let first_line = strip_cr(&buf[..first_nl.unwrap_or(buf.len())]);
    let start = match (flow, first_nl) {
        // The status code sits in the first 12 bytes: a cut reason phrase does not matter.
        (_, Some(_)) | (Flow::Response, None) => parse_start_line(flow, first_line)?,
        (Flow::Request, None) if partial => request_start(parse_cut_request_line(first_line)?),
        (Flow::Request, None) => return None,
    };
    let mut head = Head::new(start, partial);
    // Header lines are those between the first line and the last line end; anything after the
    // last line end is a cut line and is ignored.
    let (Some(first_nl), Some(last_nl)) = (first_nl, memrchr(b'\n', buf)) else {
        return Some(head);
    };
    if last_nl > first_nl {
        let block = &buf[first_nl + 1..last_nl];
        let mut start = 0;
        for end in memchr_iter(b'\n', block).chain([block.len()]) {
            head.add_header_line(flow, strip_cr(&block[start..end]));
            start = end + 1;
        }
    }
    Some(head)
}

/// What [`parse_whole_head`] found at the start of a buffer.
pub(super) enum WholeHead {
    /// A complete header block of this many bytes (blank line included), parsed.
    Parsed(Head, usize),
    /// The first line is complete and is no start line.
    InvalidStart,
    /// No blank line (or not even a whole first line) in the buffer.
    NotWhole,
}

/// The usual case, a header block that starts the buffer and ends in it, parsed in one pass
/// over its lines: it finds the blank line and fills the head on the way. The same lines count
/// as for [`parse_head`] on the block found.
pub(super) fn parse_whole_head(flow: Flow, buf: &[u8]) -> WholeHead {
    let Some(first_nl) = memchr(b'\n', buf) else {
        return WholeHead::NotWhole;
    };
    let Some(start) = parse_start_line(flow, strip_cr(&buf[..first_nl])) else {
        return WholeHead::InvalidStart;
    };
    let mut head = Head::new(start, false);
    let lines_from = first_nl + 1;
    let mut line_start = lines_from;
    for nl in memchr_iter(b'\n', &buf[lines_from..]) {
        let end = lines_from + nl;
        let line = strip_cr(&buf[line_start..end]);
        if line.is_empty() {
            return WholeHead::Parsed(head, end + 1);
        }
        head.add_header_line(flow, line);
        line_start = end + 1;
    }
    WholeHead::NotWhole
}

/// A complete start line (without its line end), as the head's start.
fn parse_start_line(flow: Flow, line: &[u8]) -> Option<StartLine> {
    match flow {
        Flow::Request => Some(request_start(parse_request_line(line)?)),
        Flow::Response => Some(StartLine::Response {
            status: parse_status_line(line)?,
        }),
    }
}

impl Head {
    fn new(start: StartLine, partial: bool) -> Self {
        Head {
            start,
            partial,
            content_length: ContentLength::Absent,
            transfer_encoding: TransferEncoding::Absent,
            host: None,
            user_agent: None,
            traceparent: None,
            tracestate: None,
        }
    }

    fn add_header_line(&mut self, flow: Flow, line: &[u8]) {
        // Empty lines end the block; lines starting with whitespace are obsolete folding.
        if line.first().is_none_or(|&b| b == b' ' || b == b'\t') {
            return;
        }
        let Some(colon) = memchr(b':', line) else {
            return;
        };
        let name = &line[..colon];
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            self.content_length = merge_content_length(self.content_length, value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only the last coding of the last such header decides the framing.
            if let Some(last) = value
                .rsplit(|&b| b == b',')
                .map(trim)
                .find(|c| !c.is_empty())
            {
                self.transfer_encoding = if last.eq_ignore_ascii_case(b"chunked") {
                    TransferEncoding::ChunkedLast
                } else {
                    TransferEncoding::Other
                };
            }
        } else if flow == Flow::Request {
            let slot = if name.eq_ignore_ascii_case(b"host") {
                &mut self.host
            } else if name.eq_ignore_ascii_case(b"user-agent") {
                &mut self.user_agent
            } else if name.eq_ignore_ascii_case(b"traceparent") {
                &mut self.traceparent
            } else if name.eq_ignore_ascii_case(b"tracestate") {
                &mut self.tracestate
            } else {
                return;
            };
            // The first occurrence wins.
            if slot.is_none() {
                *slot = Some(bounded_string(value, MAX_HEADER_VALUE_LEN));
            }
        }
    }
}

/// Content-Length may repeat (as headers or as a list) only with one and the same value.
fn merge_content_length(current: ContentLength, value: &[u8]) -> ContentLength {
    let mut merged = current;
    for item in value.split(|&b| b == b',').map(trim) {
        let parsed = parse_decimal(item);
        merged = match (merged, parsed) {
            (ContentLength::Invalid, _) | (_, None) => ContentLength::Invalid,
            (ContentLength::Absent, Some(n)) => ContentLength::Valid(n),
            (ContentLength::Valid(m), Some(n)) if m == n => ContentLength::Valid(n),
            (ContentLength::Valid(_), Some(_)) => ContentLength::Invalid,
        };
    }
    merged
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

struct RequestLine<'a> {
    method: &'a [u8],
    target: &'a [u8],
    version: &'static str,
}

fn request_start(line: RequestLine<'_>) -> StartLine {
    StartLine::Request {
        method: method_text(line.method, |m| bounded_string(m, MAX_METHOD_LEN)),
        target: bounded_string(line.target, MAX_TARGET_LEN),
        version: line.version,
    }
}

/// `METHOD SP request-target SP HTTP/1.x`
fn parse_request_line(line: &[u8]) -> Option<RequestLine<'_>> {
    let (method, rest) = split_method(line)?;
    let sp = memchr(b' ', rest)?;
    let target = &rest[..sp];
    if target.is_empty() || !target.iter().all(|&b| is_target_byte(b)) {
        return None;
    }
    let version = parse_version(&rest[sp + 1..])?;
    Some(RequestLine {
        method,
        target,
        version,
    })
}

/// A request line cut short by the capture: method and space, then as much target as there is.
fn parse_cut_request_line(line: &[u8]) -> Option<RequestLine<'_>> {
    let (method, rest) = split_method(line)?;
    let target_len = rest
        .iter()
        .position(|&b| !is_target_byte(b))
        .unwrap_or(rest.len());
    let (target, after) = rest.split_at(target_len);
    let version = after
        .strip_prefix(b" ")
        .and_then(parse_version)
        .unwrap_or("");
    Some(RequestLine {
        method,
        target,
        version,
    })
}

fn split_method(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let sp = line
        .iter()
        .take(MAX_METHOD_LEN + 1)
        .position(|&b| b == b' ')?;
    let method = &line[..sp];
    (!method.is_empty() && method.iter().all(|&b| is_method_byte(b)))
        .then(|| (method, &line[sp + 1..]))
}

/// `HTTP/1.x SP 3DIGIT [SP reason-phrase]`; some servers leave out the reason phrase.
fn parse_status_line(line: &[u8]) -> Option<u16> {
    let (version, rest) = line.split_at_checked(STATUS_PREFIX.len() + 1)?;
    parse_version(version)?;
    let rest = rest.strip_prefix(b" ")?;
    let (code, after) = rest.split_at_checked(3)?;
    if !(after.is_empty() || after[0] == b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let status = code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    (status >= 100).then_some(status)
}

fn parse_version(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        b"HTTP/1.1" => Some("1.1"),
        b"HTTP/1.0" => Some("1.0"),
        _ => None,
    }
}

/// Method tokens as seen in practice: upper-case letters, `-` and `_`.
fn is_method_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'-' || b == b'_'
}

/// Visible characters (and bytes beyond ASCII, which some clients send unencoded).
fn is_target_byte(b: u8) -> bool {
    b > b' ' && b != 0x7f
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Lossy UTF-8 of at most `max` bytes, cut at a character boundary.
pub(super) fn bounded_string(bytes: &[u8], max: usize) -> String {
    let mut s = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned();
    if s.len() > max {
        // Replacement characters take three bytes for one invalid byte.
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

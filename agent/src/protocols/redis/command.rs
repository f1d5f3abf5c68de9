//! Cuts the client's byte stream into commands: RESP arrays of bulk strings
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or inline commands (`PING\r\n`).
//!
//! Argument values are skipped by length; only a bounded prefix of each is kept, for the
//! command text and for the few arguments the session interprets.

use super::{Input, lossy_into};
use crate::protocols::skips::SkipCounter;

/// Bytes of command text kept (name and arguments joined by spaces).
pub const MAX_TEXT_LEN: usize = 4096;
/// Bytes of one argument kept in the text.
pub const MAX_ARG_LEN: usize = 256;
/// Arguments kept verbatim (bounded) for the session to interpret.
const KEPT_ARGS: usize = 3;
/// Longest inline command Redis accepts.
const MAX_INLINE_LEN: usize = 64 * 1024;
/// Longest `*N` / `$N` line.
const MAX_NUMBER_LINE: usize = 24;
/// Redis' own limits on a multibulk request.
const MAX_ARGS: i64 = 1024 * 1024;
const MAX_BULK: i64 = 512 * 1024 * 1024;

/// One command as read from the client.
#[derive(Clone, Debug, Default)]
pub struct Command {
    /// The first arguments (bounded), the command name first.
    pub args: Vec<Vec<u8>>,
    /// How many arguments the command had, the name included.
    pub argc: u64,
    /// Name and arguments joined by spaces, bounded and lossy.
    pub text: String,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Parts of the command were not captured.
    pub partial: bool,
}

impl Command {
    /// The command name upper-cased, if it looks like one.
    pub fn name(&self) -> Option<String> {
        let name = self.args.first()?;
        let plausible = !name.is_empty()
            && name.len() <= 64
            && name.iter().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'|' | b':' | b'-')
            });
        plausible.then(|| String::from_utf8_lossy(name).to_ascii_uppercase())
    }

    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        self.args.get(i).map(Vec::as_slice)
    }

    fn push_arg(&mut self, arg: &[u8], cut: bool) {
        if self.argc > 0 && self.text.len() < MAX_TEXT_LEN {
            self.text.push(' ');
        }
        if self.text.len() < MAX_TEXT_LEN {
            let room = MAX_TEXT_LEN - self.text.len();
            let mut piece = String::new();
            lossy_into(&mut piece, arg, room.min(MAX_ARG_LEN));
            if cut && piece.len() + 3 <= room {
                piece.push_str("...");
            }
            self.text.push_str(&piece);
        }
        if self.args.len() < KEPT_ARGS {
            self.args.push(arg[..arg.len().min(MAX_ARG_LEN)].to_vec());
        }
        self.argc += 1;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between commands.
    Start,
    /// After `*`: the argument count line.
    ArrayLen,
    /// `left` arguments to come, the next starts with `$`.
    BulkStart {
        left: u64,
    },
    /// After `$`: the length line.
    BulkLen {
        left: u64,
    },
    /// Inside an argument value.
    BulkData {
        left: u64,
        remaining: u64,
    },
    /// The CRLF after a value; `remaining` of its two bytes to come.
    BulkEnd {
        left: u64,
        remaining: u8,
    },
    Inline,
    /// Framing is unknown until a chunk starts with a plausible command.
    Lost,
}

pub struct CommandReader {
    state: State,
    line: Vec<u8>,
    /// An inline line longer than we keep: the rest is skipped up to its end.
    line_len: usize,
    arg: Vec<u8>,
    arg_cut: bool,
    command: Command,
    chunk_first_ns: u64,
    chunk_last_ns: u64,
    skips: SkipCounter,
}

/// What reading produced.
pub enum Event {
    Command(Command),
    /// A line or array that is not a command (Redis answers garbage inline lines with an
    /// error, so it still takes a reply).
    Unknown,
}

impl CommandReader {
    pub fn new() -> Self {
        CommandReader {
            state: State::Start,
            line: Vec::new(),
            line_len: 0,
            arg: Vec::new(),
            arg_cut: false,
            command: Command::default(),
            chunk_first_ns: 0,
            chunk_last_ns: 0,
            skips: SkipCounter::default(),
        }
    }

    pub fn begin_chunk(&mut self, data: &[u8], first_ns: u64, last_ns: u64) {
        if self.state == State::Lost && starts_command(data) {
            self.state = State::Start;
            self.skips.stretch_over();
        }
        self.chunk_first_ns = first_ns;
        self.chunk_last_ns = last_ns;
    }

    /// Reads until a command is complete; `None` once the input is used up.
    pub fn next(&mut self, input: &mut Input<'_>) -> Option<Event> {
        loop {
            if let State::BulkData { left, remaining } = self.state {
                if remaining == 0 {
                    self.state = State::BulkEnd { left, remaining: 2 };
                    continue;
                }
                if !input.data.is_empty() {
                    let n = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.data.len());
                    let keep = n.min(MAX_ARG_LEN.saturating_sub(self.arg.len()));
                    self.arg.extend_from_slice(&input.data[..keep]);
                    self.arg_cut |= keep < n;
                    input.data = &input.data[n..];
                    self.state = State::BulkData {
                        left,
                        remaining: remaining - n as u64,
                    };
                } else if input.gap > 0 {
                    let n = remaining.min(input.gap as u64);
                    if self.arg.len() < MAX_ARG_LEN {
                        self.command.partial = true;
                        self.arg_cut = true;
                    }
                    input.gap -= n as usize;
                    self.state = State::BulkData {
                        left,
                        remaining: remaining - n,
                    };
                } else {
                    return None;
                }
                continue;
            }
            if let State::BulkEnd { left, remaining } = self.state {
                if remaining == 0 {
                    let arg = std::mem::take(&mut self.arg);
                    self.command.push_arg(&arg, self.arg_cut);
                    self.arg = arg;
                    self.arg.clear();
                    self.arg_cut = false;
                    if left == 0 {
                        return Some(self.finish());
                    }
                    self.state = State::BulkStart { left };
                    continue;
                }
                if let Some((&b, rest)) = input.data.split_first() {
                    let expected = if remaining == 2 { b'\r' } else { b'\n' };
                    if b != expected {
                        return self.lose(input);
                    }
                    input.data = rest;
                } else if input.gap > 0 {
                    input.gap -= 1;
                } else {
                    return None;
                }
                self.state = State::BulkEnd {
                    left,
                    remaining: remaining - 1,
                };
                continue;
            }
            if self.state == State::Lost {
                self.skips.skipping(input.data.len(), input.gap as u64);
                input.data = &[];
                input.gap = 0;
                return None;
            }
            // Everything else reads bytes one by one (lines), and cannot cross a gap.
            let Some((&b, rest)) = input.data.split_first() else {
                if input.gap > 0 {
                    return self.lose(input);
                }
                return None;
            };
            match self.state {
                State::Start => {
                    self.command = Command {
                        start_ns: self.chunk_first_ns,
                        ..Command::default()
                    };
                    self.arg.clear();
                    self.arg_cut = false;
                    self.line.clear();
                    self.line_len = 0;
                    if b == b'*' {
                        input.data = rest;
                        self.state = State::ArrayLen;
                    } else {
                        self.state = State::Inline;
                    }
                }
                State::ArrayLen | State::BulkLen { .. } => {
                    input.data = rest;
                    if b != b'\n' {
                        if self.line.len() >= MAX_NUMBER_LINE {
                            return self.lose(input);
                        }
                        self.line.push(b);
                        continue;
                    }
                    let Some(n) = parse_number_line(&self.line) else {
                        return self.lose(input);
                    };
                    self.line.clear();
                    match self.state {
                        State::ArrayLen if n <= 0 => self.state = State::Start,
                        State::ArrayLen if n <= MAX_ARGS => {
                            self.state = State::BulkStart { left: n as u64 }
                        }
                        State::BulkLen { left } if (0..=MAX_BULK).contains(&n) => {
                            self.state = State::BulkData {
                                left: left - 1,
                                remaining: n as u64,
                            }
                        }
                        _ => return self.lose(input),
                    }
                }
                State::BulkStart { left } => {
                    if b != b'$' {
                        return self.lose(input);
                    }
                    input.data = rest;
                    self.state = State::BulkLen { left };
                }
                State::Inline => {
                    input.data = rest;
                    if b != b'\n' {
                        self.line_len += 1;
                        if self.line_len > MAX_INLINE_LEN {
                            return self.lose(input);
                        }
                        if self.line.len() < MAX_TEXT_LEN {
                            self.line.push(b);
                        }
                        continue;
                    }
                    self.state = State::Start;
                    let line = std::mem::take(&mut self.line);
                    let words = line
                        .split(|b| b.is_ascii_whitespace())
                        .filter(|w| !w.is_empty());
                    for word in words {
                        self.command.push_arg(word, false);
                    }
                    self.line = line;
                    if self.command.argc == 0 {
                        // Empty lines are ignored by Redis.
                        continue;
                    }
                    self.command.partial |= self.line_len > self.line.len();
                    return Some(self.finish());
                }
                // Handled above.
                State::BulkData { .. } | State::BulkEnd { .. } | State::Lost => return None,
            }
        }
    }

    /// Stretches of bytes skipped while the framing was lost, since the last call.
    pub fn take_skips(&mut self) -> u64 {
        self.skips.take()
    }

    fn finish(&mut self) -> Event {
        self.state = State::Start;
        let mut command = std::mem::take(&mut self.command);
        command.end_ns = self.chunk_last_ns;
        if command.name().is_some() {
            Event::Command(command)
        } else {
            Event::Unknown
        }
    }

    /// The framing is gone: a command whose name was read is still reported (partial).
    fn lose(&mut self, input: &mut Input<'_>) -> Option<Event> {
        let had_command = !matches!(self.state, State::Start | State::Inline | State::Lost)
            && self.command.argc > 0;
        self.state = State::Lost;
        self.skips.skipping(input.data.len(), input.gap as u64);
        input.data = &[];
        input.gap = 0;
        if had_command && self.command.name().is_some() {
            let mut command = std::mem::take(&mut self.command);
            command.partial = true;
            command.end_ns = self.chunk_last_ns;
            return Some(Event::Command(command));
        }
        None
    }
}

/// `N\r` (the `\n` already consumed) as a number; `?` and garbage are `None`.
fn parse_number_line(line: &[u8]) -> Option<i64> {
    parse_number(line.strip_suffix(b"\r")?)
}

/// A decimal number, optionally negative.
pub fn parse_number(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, digits),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits.iter().try_fold(0i64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(i64::from(d - b'0'))
    })?;
    Some(if negative { -value } else { value })
}

/// Inline commands accepted at the start of a connection or to pick a stream up again. Not
/// GET and the like: an HTTP request line must never pass.
const INLINE_COMMANDS: &[&str] = &[
    "PING",
    "ECHO",
    "AUTH",
    "HELLO",
    "SELECT",
    "INFO",
    "SET",
    "DEL",
    "INCR",
    "DECR",
    "EXISTS",
    "KEYS",
    "DBSIZE",
    "FLUSHALL",
    "FLUSHDB",
    "MONITOR",
    "CLIENT",
    "CONFIG",
    "QUIT",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "PUBLISH",
    "LPUSH",
    "RPUSH",
    "LRANGE",
    "HSET",
    "HGET",
    "HGETALL",
    "MGET",
    "MSET",
    "EXPIRE",
    "TTL",
    "SCAN",
    "MULTI",
    "EXEC",
];

/// Whether `data` starts with a command: `*N\r\n$` or a well-known inline command line.
pub fn starts_command(data: &[u8]) -> bool {
    if let Some(rest) = data.strip_prefix(b"*") {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        return (1..=7).contains(&digits)
            && rest.first() != Some(&b'0')
            && rest[digits..].starts_with(b"\r\n$")
            && rest.get(digits + 3).is_some_and(u8::is_ascii_digit);
    }
    let Some(end) = data.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let line = data[..end].strip_suffix(b"\r").unwrap_or(&data[..end]);
    if line.len() > 512
        || !line
            .iter()
            .all(|&b| (0x20..0x7f).contains(&b) || b == b'\t')
    {
        return false;
    }
    let word = line
        .split(|&b| b == b' ' || b == b'\t')
        .next()
        .unwrap_or_default();
    let rest = &line[word.len()..];
    INLINE_COMMANDS
        .iter()
        .any(|c| c.as_bytes().eq_ignore_ascii_case(word))
        && !rest.windows(6).any(|w| w.eq_ignore_ascii_case(b" HTTP/"))
}

//! Redis (RESP2 and RESP3) over one TCP connection.
//!
//! The client's stream is cut into commands ([`command::CommandReader`]), the server's into
//! top-level values ([`reply::ReplyReader`]). Redis answers commands in order, also when they
//! are pipelined, so replies are paired with commands first in, first out: one [`Exchange`]
//! per command, with `+QUEUED` as the reply of commands inside MULTI and the array as the
//! reply of EXEC.
//!
//! Not every value the server sends is a reply:
//! - RESP3 pushes (`>`) are out of band (pub/sub messages, client-side caching
//!   invalidations) and skipped.
//! - `(P|S)SUBSCRIBE` and `(P|S)UNSUBSCRIBE` are answered by one confirmation per channel (a
//!   push in RESP3, an array in RESP2); the command's exchange ends with its last
//!   confirmation. In RESP2 subscribed mode, arrays that start with `message`, `pmessage`,
//!   `smessage` or a (un)subscribe confirmation are pub/sub traffic, never replies.
//! - `CLIENT REPLY OFF|SKIP` suppress replies: such commands are emitted without a response.
//! - After `MONITOR` the connection only carries the monitor feed: decoding stops.
//!
//! `namespace` is the database index: "0" until a `SELECT n` succeeds (or after `RESET`).
//! `query_text` is the command with its arguments joined by spaces, bounded (see
//! [`command::MAX_TEXT_LEN`]); `rows` is not set. Errors (`-ERR …`, blob errors `!`) put
//! the first word in `status_code` and the rest in `error_message`.
//!
//! When a gap hides a reply's framing, the replies awaited are completed (partial) once the
//! client sends its next command, and the reader picks the server's stream up again at the
//! first write that starts like a reply. When a gap hides a command's framing, the reader
//! waits for a write that starts like a command. Clients that keep pipelining across such a
//! loss can get replies paired with the wrong commands until the streams quiet down.

mod command;
#[cfg(test)]
mod replay_tests;
mod reply;
#[cfg(test)]
mod robustness_tests;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

pub use self::command::MAX_TEXT_LEN;
use self::command::{Command, CommandReader, Event};
use self::reply::{Reply, ReplyReader};
use super::{Chunk, DbExchange, Exchange, ExchangeDetail, Flow, Protocol, Session};

/// Commands awaiting replies; beyond this the oldest is emitted unanswered (its reply is
/// still skipped when it comes, so pairing stays right).
const MAX_PENDING: usize = 256;
/// Bytes of an error code (`ERR`, `WRONGTYPE`, …) kept.
const MAX_ERROR_CODE_LEN: usize = 64;

pub struct Redis;

impl Protocol for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn detect(&self, flow: Flow, first: &[u8]) -> bool {
        // Replies are too unspecific to tell Redis by.
        flow == Flow::Request && command::starts_command(first)
    }

    fn new_session(&self) -> Box<dyn Session> {
        Box::new(RedisSession::new())
    }
}

/// The rest of one syscall's bytes: `data` captured, then `gap` bytes that were not.
struct Input<'a> {
    data: &'a [u8],
    gap: usize,
}

/// Appends at most `max` bytes of `bytes` as text: invalid UTF-8 replaced, no split character.
fn lossy_into(out: &mut String, bytes: &[u8], max: usize) {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]);
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut text = &text[..end];
    // A character cut by the byte limit decodes as a replacement at the end: drop it.
    if bytes.len() > max {
        text = text.strip_suffix('\u{fffd}').unwrap_or(text);
    }
    out.push_str(text);
}

/// The pub/sub family a command or confirmation belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PubSub {
    Subscribe,
    PSubscribe,
    SSubscribe,
    Unsubscribe,
    PUnsubscribe,
    SUnsubscribe,
}

impl PubSub {
    fn of_command(name: &str) -> Option<Self> {
        Some(match name {
            "SUBSCRIBE" => PubSub::Subscribe,
            "PSUBSCRIBE" => PubSub::PSubscribe,
            "SSUBSCRIBE" => PubSub::SSubscribe,
            "UNSUBSCRIBE" => PubSub::Unsubscribe,
            "PUNSUBSCRIBE" => PubSub::PUnsubscribe,
            "SUNSUBSCRIBE" => PubSub::SUnsubscribe,
            _ => return None,
        })
    }

    fn of_confirmation(kind: &[u8]) -> Option<Self> {
        let kind = std::str::from_utf8(kind).ok()?.to_ascii_uppercase();
        Self::of_command(&kind)
    }

    fn is_unsubscribe(self) -> bool {
        matches!(
            self,
            PubSub::Unsubscribe | PubSub::PUnsubscribe | PubSub::SUnsubscribe
        )
    }
}

/// Pub/sub traffic that is no reply to anything.
fn is_message(kind: &[u8]) -> bool {
    [b"message".as_slice(), b"pmessage", b"smessage"]
        .iter()
        .any(|k| k.eq_ignore_ascii_case(kind))
}

/// What the session does when a command's reply arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Effect {
    None,
    Select(String),
    Hello(Option<u8>),
    Monitor,
    Reset,
}

struct Pending {
    command: Option<Command>,
    operation: Option<String>,
    effect: Effect,
    /// Confirmations a pub/sub command still waits for (`None`: as many as channels are
    /// subscribed, known at the first one).
    pubsub: Option<(PubSub, Option<u64>)>,
    response_start_ns: Option<u64>,
    partial: bool,
}

/// `CLIENT REPLY` state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReplyMode {
    On,
    Off,
    SkipNext,
}

/// Decoder state for one Redis connection.
pub struct RedisSession {
    requests: CommandReader,
    responses: ReplyReader,
    pending: VecDeque<Pending>,
    /// Replies still to come for commands emitted unanswered when `pending` overflowed.
    skip_replies: u64,
    namespace: String,
    resp3: bool,
    reply_mode: ReplyMode,
    /// Subscriptions: channels, patterns, shard channels.
    channels: u64,
    patterns: u64,
    shard_channels: u64,
    /// MONITOR (or something we cannot follow) took the connection over.
    stopped: bool,
    /// The server's stream is not understood until the client sends its next command.
    response_lost: bool,
    /// Pick the server's stream up at the next chunk that starts like a reply.
    response_resync: bool,
    last_response_ns: u64,
}

impl Default for RedisSession {
    fn default() -> Self {
        Self::new()
    }
}

impl RedisSession {
    pub fn new() -> Self {
        RedisSession {
            requests: CommandReader::new(),
            responses: ReplyReader::new(),
            pending: VecDeque::new(),
            skip_replies: 0,
            namespace: "0".to_owned(),
            resp3: false,
            reply_mode: ReplyMode::On,
            channels: 0,
            patterns: 0,
            shard_channels: 0,
            stopped: false,
            response_lost: false,
            response_resync: false,
            last_response_ns: 0,
        }
    }

    fn subscribed(&self) -> bool {
        self.channels + self.patterns + self.shard_channels > 0
    }

    // ---- client to server ----

    fn command(&mut self, event: Event, out: &mut Vec<Exchange>) {
        if self.response_lost {
            // The client moved on; what it awaited has ended as far as we can tell.
            let end_ns = self.last_response_ns;
            while let Some(mut pending) = self.pending.pop_front() {
                pending.partial = true;
                let end = pending.response_start_ns.map(|_| end_ns);
                self.emit(pending, None, end, out);
            }
            self.skip_replies = 0;
            self.response_lost = false;
            self.response_resync = true;
        }
        let command = match event {
            Event::Command(command) => command,
            Event::Unknown => {
                // Garbage still earns an error reply; take it without reporting.
                self.push_pending(
                    Pending {
                        command: None,
                        operation: None,
                        effect: Effect::None,
                        pubsub: None,
                        response_start_ns: None,
                        partial: false,
                    },
                    out,
                );
                return;
            }
        };
        let name = command.name().unwrap_or_default();
        let sub = command
            .arg(1)
            .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase());
        let mut effect = Effect::None;
        let mut expects_reply = true;
        match (name.as_str(), sub.as_deref()) {
            ("CLIENT", Some("REPLY")) => {
                let mode = command
                    .arg(2)
                    .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase());
                match mode.as_deref() {
                    Some("ON") => self.reply_mode = ReplyMode::On,
                    Some("OFF") => {
                        self.reply_mode = ReplyMode::Off;
                        expects_reply = false;
                    }
                    Some("SKIP") if self.reply_mode == ReplyMode::On => {
                        self.reply_mode = ReplyMode::SkipNext;
                        expects_reply = false;
                    }
                    _ => {}
                }
            }
            _ => match self.reply_mode {
                ReplyMode::On => {}
                ReplyMode::Off => expects_reply = false,
                ReplyMode::SkipNext => {
                    self.reply_mode = ReplyMode::On;
                    expects_reply = false;
                }
            },
        }
        match name.as_str() {
            "SELECT" => {
                if let Some(db) = command.arg(1).and_then(command::parse_number) {
                    effect = Effect::Select(db.to_string());
                }
            }
            "HELLO" => {
                let version = command
                    .arg(1)
                    .and_then(command::parse_number)
                    .and_then(|v| u8::try_from(v).ok());
                effect = Effect::Hello(version);
            }
            "MONITOR" => effect = Effect::Monitor,
            "RESET" => effect = Effect::Reset,
            _ => {}
        }
        let pubsub = PubSub::of_command(&name).map(|kind| {
            let channels = command.argc.saturating_sub(1);
            let expected = if channels == 0 && kind.is_unsubscribe() {
                None
            } else {
                Some(channels.max(1))
            };
            (kind, expected)
        });
        let pending = Pending {
            operation: Some(name),
            effect,
            pubsub,
            response_start_ns: None,
            partial: command.partial,
            command: Some(command),
        };
        if expects_reply {
            self.push_pending(pending, out);
        } else {
            self.emit(pending, None, None, out);
        }
    }

    fn push_pending(&mut self, pending: Pending, out: &mut Vec<Exchange>) {
        if self.pending.len() >= MAX_PENDING
            && let Some(mut oldest) = self.pending.pop_front()
        {
            let end = oldest.response_start_ns.map(|_| self.last_response_ns);
            oldest.partial = true;
            if oldest.pubsub.is_none() {
                self.skip_replies += 1;
            }
            self.emit(oldest, None, end, out);
        }
        self.pending.push_back(pending);
    }

    // ---- server to client ----

    fn reply(&mut self, reply: Reply, out: &mut Vec<Exchange>) {
        if self.response_lost || self.stopped {
            return;
        }
        if reply.is_push() {
            self.resp3 = true;
            if let Some(first) = &reply.first {
                self.pubsub_event(first, &reply, out);
            }
            return;
        }
        if let Some(first) = &reply.first
            && reply.kind == b'*'
        {
            let confirmation = PubSub::of_confirmation(first);
            let awaited = self
                .pending
                .front()
                .and_then(|p| p.pubsub)
                .is_some_and(|(kind, _)| Some(kind) == confirmation);
            let pubsub_traffic = confirmation.is_some() || is_message(first);
            if awaited || (!self.resp3 && self.subscribed() && pubsub_traffic) {
                self.pubsub_event(first, &reply, out);
                return;
            }
        }
        if self.skip_replies > 0 {
            self.skip_replies -= 1;
            return;
        }
        if !self.front_sent_by(reply.start_ns) {
            // Its command was not seen (or came after it began).
            return;
        }
        let Some(mut pending) = self.pending.pop_front() else {
            return;
        };
        pending.response_start_ns.get_or_insert(reply.start_ns);
        pending.partial |= reply.partial;
        let error = reply.error.is_some();
        match &pending.effect {
            _ if error => {}
            Effect::None => {}
            Effect::Select(db) => {
                if reply.simple.as_deref() == Some("OK") {
                    self.namespace = db.clone();
                }
            }
            Effect::Hello(version) => match version {
                Some(3) => self.resp3 = true,
                Some(2) => self.resp3 = false,
                _ => {}
            },
            Effect::Monitor => self.stopped = true,
            Effect::Reset => {
                self.namespace = "0".to_owned();
                self.resp3 = false;
                self.reply_mode = ReplyMode::On;
                self.channels = 0;
                self.patterns = 0;
                self.shard_channels = 0;
            }
        }
        self.emit(pending, reply.error.as_deref(), Some(reply.end_ns), out);
    }

    /// A pub/sub push or array: a confirmation some command awaits, or a message.
    fn pubsub_event(&mut self, first: &[u8], reply: &Reply, out: &mut Vec<Exchange>) {
        let Some(kind) = PubSub::of_confirmation(first) else {
            return;
        };
        let channels_before = match kind {
            PubSub::Subscribe | PubSub::Unsubscribe => self.channels,
            PubSub::PSubscribe | PubSub::PUnsubscribe => self.patterns,
            PubSub::SSubscribe | PubSub::SUnsubscribe => self.shard_channels,
        };
        if let Some(count) = reply.third_int.and_then(|n| u64::try_from(n).ok()) {
            // The count is of channels and patterns together (shard channels apart).
            match kind {
                PubSub::Subscribe | PubSub::Unsubscribe => {
                    self.channels = count.saturating_sub(self.patterns)
                }
                PubSub::PSubscribe | PubSub::PUnsubscribe => {
                    self.patterns = count.saturating_sub(self.channels)
                }
                PubSub::SSubscribe | PubSub::SUnsubscribe => self.shard_channels = count,
            }
        }
        if !self.front_sent_by(reply.start_ns) {
            return;
        }
        let Some(front) = self.pending.front_mut() else {
            return;
        };
        let Some((awaited, left)) = &mut front.pubsub else {
            return;
        };
        if *awaited != kind {
            return;
        }
        front.response_start_ns.get_or_insert(reply.start_ns);
        let remaining = left.unwrap_or(channels_before.max(1)).saturating_sub(1);
        *left = Some(remaining);
        if remaining == 0
            && let Some(pending) = self.pending.pop_front()
        {
            self.emit(pending, None, Some(reply.end_ns), out);
        }
    }

    /// Whether a command waits whose request began by `ns` (a reply cannot precede it).
    fn front_sent_by(&self, ns: u64) -> bool {
        self.pending
            .front()
            .is_some_and(|p| p.command.as_ref().is_none_or(|c| c.start_ns <= ns))
    }

    /// The server's stream is no longer understood.
    fn lose_response(&mut self) {
        self.response_lost = true;
        let started = self
            .responses
            .value_start_ns()
            .filter(|&ns| self.front_sent_by(ns));
        if let Some(front) = self.pending.front_mut() {
            front.partial = true;
            if front.response_start_ns.is_none() {
                front.response_start_ns = started;
            }
        }
    }

    fn emit(
        &mut self,
        pending: Pending,
        error: Option<&str>,
        response_end_ns: Option<u64>,
        out: &mut Vec<Exchange>,
    ) {
        let Some(command) = pending.command else {
            return;
        };
        let (status_code, error_message) = match error {
            Some(error) => {
                let (code, message) = error.split_once(' ').unwrap_or((error, ""));
                let mut code_text = String::new();
                lossy_into(&mut code_text, code.as_bytes(), MAX_ERROR_CODE_LEN);
                let message = message.trim();
                (
                    Some(code_text),
                    (!message.is_empty()).then(|| message.to_owned()),
                )
            }
            None => (None, None),
        };
        let response = pending
            .response_start_ns
            .zip(response_end_ns)
            .map(|(start, end)| (start, end.max(start)));
        out.push(Exchange {
            request_start_ns: command.start_ns,
            request_end_ns: command.end_ns,
            response_start_ns: response.map(|(start, _)| start),
            response_end_ns: response.map(|(_, end)| end),
            detail: ExchangeDetail::Db(DbExchange {
                system: "redis",
                operation: pending.operation,
                collection: None,
                namespace: Some(self.namespace.clone()),
                query_without_values: Some(without_values(&command)),
                query_text: Some(command.text),
                status_code,
                error_message,
                rows: None,
                partial: pending.partial,
            }),
        });
    }
}

/// `SET user:1 "a b"` → `SET ? ?`: the command name, then one `?` per argument.
fn without_values(command: &Command) -> String {
    let mut out = command.name().unwrap_or_else(|| "?".to_owned());
    for _ in 1..command.argc.min(64) {
        out.push_str(" ?");
    }
    if command.argc > 64 {
        out.push_str(" ...");
    }
    out
}

impl Session for RedisSession {
    fn feed(&mut self, flow: Flow, chunk: Chunk<'_>, out: &mut Vec<Exchange>) {
        if self.stopped {
            return;
        }
        let mut input = Input {
            data: chunk.data,
            gap: chunk.missing,
        };
        match flow {
            Flow::Request => {
                self.requests
                    .begin_chunk(chunk.data, chunk.first_byte_ns, chunk.last_byte_ns);
                while let Some(event) = self.requests.next(&mut input) {
                    self.command(event, out);
                }
            }
            Flow::Response => {
                self.last_response_ns = chunk.last_byte_ns;
                if self.response_resync {
                    if !self.pending.is_empty() && reply::starts_reply(chunk.data) {
                        self.responses.restart();
                        self.response_resync = false;
                    } else {
                        self.responses.lose();
                    }
                }
                self.responses
                    .begin_chunk(chunk.first_byte_ns, chunk.last_byte_ns);
                while let Some(reply) = self.responses.next(&mut input) {
                    self.reply(reply, out);
                    if self.stopped {
                        return;
                    }
                }
                if self.responses.is_lost() && !self.response_resync && !self.response_lost {
                    self.lose_response();
                }
            }
        }
    }

    fn close(&mut self, _at_ns: u64, out: &mut Vec<Exchange>) {
        if !self.response_lost
            && let Some(start) = self.responses.value_start_ns()
            && self.front_sent_by(start)
            && let Some(front) = self.pending.front_mut()
        {
            // A reply cut by the close.
            front.response_start_ns.get_or_insert(start);
        }
        let end_ns = self.last_response_ns;
        while let Some(mut pending) = self.pending.pop_front() {
            let end = pending.response_start_ns.map(|_| end_ns);
            pending.partial |= end.is_some();
            self.emit(pending, None, end, out);
        }
        *self = Self::new();
    }

    fn take_resync_skips(&mut self) -> u64 {
        self.requests.take_skips() + self.responses.take_skips()
    }
}

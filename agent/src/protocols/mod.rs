//! Application protocols: per-connection byte streams in, request/response exchanges out.
//!
//! Every protocol implements [`Protocol`] (detection from the first bytes) and hands out one
//! [`Session`] per connection. A session is fed the bytes of each syscall in order, per flow,
//! and emits an [`Exchange`] whenever a request has met its response. Sessions must accept any
//! bytes: they never panic, never allocate without bound, and resynchronise after garbage.

pub mod http1;
pub mod http2;
pub mod mysql;
pub mod postgres;
pub mod redis;
mod skips;
pub mod sql;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;
#[cfg(test)]
mod replay;

use std::borrow::Cow;
use std::fmt;

/// Which way bytes travel relative to the application protocol (not to the traced process).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    /// Client to server.
    Request,
    /// Server to client.
    Response,
}

/// The bytes one syscall moved, as far as the kernel copied them.
#[derive(Clone, Copy, Debug)]
pub struct Chunk<'a> {
    /// The captured prefix.
    pub data: &'a [u8],
    /// Bytes the syscall moved beyond `data` (not captured, but they occupy stream positions).
    pub missing: usize,
    /// When the first byte of this chunk was on the wire as far as the process is concerned:
    /// the syscall's exit time for received bytes, its entry time for sent bytes (monotonic ns).
    pub first_byte_ns: u64,
    /// When the syscall returned (monotonic ns).
    pub last_byte_ns: u64,
}

/// A request matched with its response (or with the connection's end, if none came).
#[derive(Clone, Debug, PartialEq)]
pub struct Exchange {
    /// First byte of the request seen.
    pub request_start_ns: u64,
    /// Last byte of the request seen.
    pub request_end_ns: u64,
    /// First/last byte of the response; `None` when the connection ended without one.
    pub response_start_ns: Option<u64>,
    pub response_end_ns: Option<u64>,
    pub detail: ExchangeDetail,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExchangeDetail {
    Http(HttpExchange),
    Db(DbExchange),
}

/// One database operation (a query, a statement execution, a command) and its outcome.
/// Text fields are raw as sent (bounded); the span stage sanitises `query_text`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DbExchange {
    /// `db.system.name`: "postgresql", "mysql", "mariadb" or "redis".
    pub system: &'static str,
    /// `db.operation.name`: SELECT, INSERT, … for SQL; the command (GET, SET, …) for Redis.
    pub operation: Option<String>,
    /// `db.collection.name`: the table a simple statement works on, where it can be read.
    pub collection: Option<String>,
    /// `db.namespace`: the database (PostgreSQL/MySQL) or database index (Redis) in use.
    pub namespace: Option<String>,
    /// The statement text as sent (for prepared statements: the text they were prepared
    /// from); for Redis the command line with its arguments.
    pub query_text: Option<String>,
    /// The statement without its values, where the protocol's structure tells them apart
    /// better than a text sanitiser could (Redis: the command and one `?` per argument).
    pub query_without_values: Option<String>,
    /// `db.response.status_code`: SQLSTATE, MySQL error number, or the Redis error prefix
    /// (`ERR`, `WRONGTYPE`, …); `None` on success.
    pub status_code: Option<String>,
    /// The server's error message, when it failed.
    pub error_message: Option<String>,
    /// Rows returned or affected, where the protocol says.
    pub rows: Option<u64>,
    /// Part of the operation was not captured or not understood.
    pub partial: bool,
}

/// A request whose head has been read, reported before its response arrives so that calls
/// made while serving it can be linked to it (see `Session::take_started`).
#[derive(Clone, Debug, PartialEq)]
pub struct RequestStarted {
    /// Equal to the `request_start_ns` of the exchange this request will complete as.
    pub request_start_ns: u64,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// What an HTTP/1.x exchange carried that spans need. Strings are lossily decoded and bounded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HttpExchange {
    /// The method; one the protocol defines is not copied.
    pub method: Cow<'static, str>,
    /// Request target exactly as sent (path and query, or absolute form for proxies).
    pub target: String,
    /// "1.0", "1.1" or "2" (empty when the request line was cut before it).
    pub version: &'static str,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// Final (non-1xx) status code; `None` when no response was seen.
    pub status: Option<u16>,
    pub request_body_len: Option<u64>,
    pub response_body_len: Option<u64>,
    /// Part of the exchange was not captured or could not be parsed (e.g. a chunked body lost
    /// its framing inside an uncaptured gap); the fields above are still right.
    pub partial: bool,
    /// Request `Content-Type` (tells gRPC apart: `application/grpc…`).
    pub content_type: Option<String>,
    /// gRPC status from the `grpc-status` trailer (or trailers-only response headers).
    pub grpc_status: Option<i64>,
    pub grpc_message: Option<String>,
    /// HTTP/2 only: the stream was reset (RST_STREAM) or cut by GOAWAY; the error code name.
    pub reset: Option<String>,
}

/// The methods of RFC 9110 and PATCH: the only ones HTTP/1 detection trusts, and kept by an
/// exchange without a copy of their own.
pub const KNOWN_METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// A request method as the exchange keeps it: a known one is not copied.
pub fn method_text(method: &[u8], owned: impl FnOnce(&[u8]) -> String) -> Cow<'static, str> {
    match KNOWN_METHODS.iter().find(|m| m.as_bytes() == method) {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(owned(method)),
    }
}

/// A protocol the agent can decode.
pub trait Protocol: Sync {
    fn name(&self) -> &'static str;
    /// Whether `first` (the first captured bytes of a connection in `flow`) start this protocol.
    /// Cheap, allocation-free, and conservative: a false positive costs a whole connection.
    fn detect(&self, flow: Flow, first: &[u8]) -> bool;
    /// A new decoder for one connection.
    fn new_session(&self) -> Box<dyn Session>;
}

/// Decoder state for one connection.
pub trait Session: Send {
    /// Feed the next chunk of one flow. Chunks of each flow arrive in order; the two flows
    /// interleave as the syscalls happened.
    fn feed(&mut self, flow: Flow, chunk: Chunk<'_>, out: &mut Vec<Exchange>);
    /// The connection ended: emit what is pending (a request without response, a response
    /// delimited by close).
    fn close(&mut self, at_ns: u64, out: &mut Vec<Exchange>);
    /// Requests whose head was read since the last call, in order. Protocols that carry
    /// trace context (HTTP) report them; others need not.
    fn take_started(&mut self, _out: &mut Vec<RequestStarted>) {}
    /// Stretches of bytes skipped since the last call because the decoder had lost the message
    /// framing and was waiting for a message to visibly start again. Messages inside them are
    /// never reported; how many there were cannot be known, so the stretches are counted.
    /// Every decoder here reports them; the default of none is for sessions that never skip.
    fn take_resync_skips(&mut self) -> u64 {
        0
    }
    /// Once the decoder has learned that a prefix of each syscall's bytes in the response flow
    /// tells it everything it needs: that prefix. The kernel then copies no more of them.
    /// `None` (the default) asks for the configured prefix.
    fn response_prefix_needed(&self) -> Option<PrefixNeed> {
        None
    }
}

/// The part of each syscall's bytes in one flow that a decoder needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixNeed {
    /// At most this many bytes.
    pub bytes: u16,
    /// In a vectored syscall, no buffer past the one holding this many bytes (a message head
    /// of up to this length is then still whole).
    pub whole_buffers: u16,
}

/// Every protocol, in detection order.
pub fn all() -> &'static [&'static dyn Protocol] {
    static ALL: [&dyn Protocol; 5] = [
        &http2::Http2,
        &http1::Http1,
        &mysql::Mysql,
        &postgres::Postgres,
        &redis::Redis,
    ];
    &ALL
}

/// Find the protocol whose detector accepts these first bytes.
pub fn detect(flow: Flow, first: &[u8]) -> Option<&'static dyn Protocol> {
    all().iter().copied().find(|p| p.detect(flow, first))
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flow::Request => "request",
            Flow::Response => "response",
        })
    }
}

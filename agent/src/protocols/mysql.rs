//! MySQL and MariaDB client/server protocol over one TCP connection.
//!
//! Each direction is cut into packets by a [`PacketReader`]. The session follows the
//! connection phase (server greeting, client handshake response, authentication exchanges)
//! and then the command phase, where every packet with sequence id 0 from the client is a
//! command and the server's answer is parsed according to that command.
//!
//! What becomes an [`Exchange`]:
//! - `COM_QUERY`: one exchange; operation and table from [`sql::summarize`].
//! - `COM_STMT_EXECUTE` (and MariaDB's `COM_STMT_BULK_EXECUTE`): one exchange per execution,
//!   carrying the text the statement was prepared from (remembered per connection from
//!   `COM_STMT_PREPARE` and its `PREPARE_OK`; MariaDB's "last prepared" id -1 works too). A
//!   statement prepared before the capture began has no text and is marked partial.
//! - `COM_STMT_PREPARE`: no exchange when it succeeds (its executions are the operations); a
//!   failed prepare is one exchange with the error, since no execution will follow.
//! - `COM_INIT_DB`: one exchange with operation `USE` and no query text; on success it sets
//!   the connection's namespace, as do `USE db` queries and schema changes the server reports
//!   through session tracking.
//! - `COM_PING`: one exchange with operation `PING`.
//! - Housekeeping (`COM_STMT_CLOSE`, `COM_STMT_RESET`, `COM_STMT_FETCH`, `COM_SET_OPTION`,
//!   `COM_RESET_CONNECTION`, `COM_CHANGE_USER`, `COM_QUIT`, …) is followed but not reported.
//!
//! `rows` is the number of rows of the result sets, or the affected-rows count of OK packets,
//! summed over all results of a multi-result response; `None` for failed commands.
//!
//! Decoding stops for good on TLS (SSL request), compression and replication streams.
//! When a gap hides a packet header of the server, the exchange in progress is completed
//! (partial) once the client sends its next command, and the reader picks the server's stream
//! up again at the first write that starts a plausible response. When a gap hides a client
//! header, the reader waits for a write that starts with a plausible command packet.

mod packet;
#[cfg(test)]
pub(crate) mod replay_tests;
#[cfg(test)]
mod robustness_tests;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use self::packet::{Cursor, Input, MAX_PHYSICAL, Packet, PacketReader};
use super::{Chunk, DbExchange, Exchange, ExchangeDetail, Flow, Protocol, Session, sql};

/// Bytes of statement text kept (longer statements are truncated).
pub const MAX_QUERY_LEN: usize = 8192;
/// Bytes of an error message kept.
const MAX_ERROR_LEN: usize = 512;
/// Payload prefix kept of client packets: a command byte, query attributes and the text.
const REQUEST_CAP: usize = MAX_QUERY_LEN + 512;
/// Payload prefix kept of server packets: enough for OK/ERR/EOF and the greeting.
const RESPONSE_CAP: usize = 1024;
/// Commands awaiting a response; beyond this the oldest is emitted unanswered.
const MAX_PENDING: usize = 64;
/// Prepared statements remembered per connection, and their total text size.
const MAX_STATEMENTS: usize = 256;
const MAX_STATEMENT_BYTES: usize = 512 * 1024;

const CLIENT_CONNECT_WITH_DB: u32 = 0x0000_0008;
const CLIENT_COMPRESS: u32 = 0x0000_0020;
const CLIENT_PROTOCOL_41: u32 = 0x0000_0200;
const CLIENT_SSL: u32 = 0x0000_0800;
const CLIENT_SECURE_CONNECTION: u32 = 0x0000_8000;
const CLIENT_PLUGIN_AUTH_LENENC_DATA: u32 = 0x0020_0000;
const CLIENT_SESSION_TRACK: u32 = 0x0080_0000;
const CLIENT_DEPRECATE_EOF: u32 = 0x0100_0000;
const CLIENT_ZSTD_COMPRESSION: u32 = 0x0400_0000;
const CLIENT_QUERY_ATTRIBUTES: u32 = 0x0800_0000;

const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
const SERVER_SESSION_STATE_CHANGED: u16 = 0x4000;
const SESSION_TRACK_SCHEMA: u8 = 1;

const COM_QUIT: u8 = 0x01;
const COM_INIT_DB: u8 = 0x02;
const COM_QUERY: u8 = 0x03;
const COM_FIELD_LIST: u8 = 0x04;
const COM_PROCESS_INFO: u8 = 0x0a;
const COM_PING: u8 = 0x0e;
const COM_CHANGE_USER: u8 = 0x11;
const COM_BINLOG_DUMP: u8 = 0x12;
const COM_REGISTER_SLAVE: u8 = 0x15;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
const COM_STMT_CLOSE: u8 = 0x19;
const COM_STMT_FETCH: u8 = 0x1c;
const COM_RESET_CONNECTION: u8 = 0x1f;
const COM_BINLOG_DUMP_GTID: u8 = 0x1e;
const COM_STMT_BULK_EXECUTE: u8 = 0xfa;

/// MariaDB's statement id for "the statement prepared last" (used when pipelining).
const LAST_PREPARED_ID: u32 = 0xffff_ffff;

pub struct Mysql;

impl Protocol for Mysql {
    fn name(&self) -> &'static str {
        "mysql"
    }

    fn detect(&self, flow: Flow, first: &[u8]) -> bool {
        match flow {
            Flow::Response => is_greeting(first),
            Flow::Request => is_plain_command(first),
        }
    }

    fn new_session(&self) -> Box<dyn Session> {
        Box::new(MysqlSession::new())
    }
}

/// A server greeting: protocol 10 and a printable version string starting with a digit.
fn is_greeting(first: &[u8]) -> bool {
    let [l0, l1, l2, 0, 0x0a, version @ ..] = first else {
        return false;
    };
    let len = usize::from(*l0) | usize::from(*l1) << 8 | usize::from(*l2) << 16;
    if !(20..=1024).contains(&len) || first.len() > len + 4 {
        return false;
    }
    let Some(end) = version.iter().position(|&b| b == 0) else {
        return false;
    };
    let text = &version[..end];
    text.len() <= 64
        && text.first().is_some_and(u8::is_ascii_digit)
        && text.iter().all(|b| (0x20..0x7f).contains(b))
}

/// A `COM_QUERY` with printable SQL, or a `COM_PING`: how an established connection the agent
/// joins late shows itself.
fn is_plain_command(first: &[u8]) -> bool {
    if first == [1, 0, 0, 0, COM_PING] {
        return true;
    }
    let [l0, l1, l2, 0, COM_QUERY, text @ ..] = first else {
        return false;
    };
    let len = usize::from(*l0) | usize::from(*l1) << 8 | usize::from(*l2) << 16;
    if len < 3 || first.len() > len + 4 {
        return false;
    }
    // Query attributes (MySQL 8): no parameters, one parameter set.
    let text = text.strip_prefix(&[0, 1]).unwrap_or(text);
    let text = &text[..text.len().min(len - 1)];
    let Some(start) = text.iter().position(|b| !b.is_ascii_whitespace()) else {
        return false;
    };
    let starts_like_sql = text[start].is_ascii_alphabetic() || matches!(text[start], b'(' | b'/');
    starts_like_sql
        && text.len() >= 3
        && text.iter().all(|&b| {
            b >= 0x80 || b == b'\t' || b == b'\n' || b == b'\r' || (0x20..0x7f).contains(&b)
        })
}

/// Where the connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing understood yet.
    Start,
    /// The server greeted; the client's handshake response is next.
    Greeted,
    /// Authentication exchanges until the server's OK or ERR.
    Auth,
    Command,
    /// TLS, compression, replication or not MySQL at all: nothing more is decoded.
    Stopped,
}

/// What a command is, for reporting.
#[derive(Clone, Debug)]
enum Report {
    /// Followed for framing only.
    Silent,
    Query(Arc<Statement>),
    Execute(Option<Arc<Statement>>),
    /// Reported only if it fails.
    Prepare(Arc<Statement>),
    InitDb,
    Ping,
}

/// Statement text with what [`sql::summarize`] made of it.
#[derive(Debug)]
struct Statement {
    text: String,
    operation: Option<String>,
    collection: Option<String>,
    /// The text was cut by uncaptured bytes.
    partial: bool,
}

impl Statement {
    fn new(text: String, partial: bool) -> Self {
        let (operation, collection) = sql::summarize(&text);
        Statement {
            text,
            operation,
            collection,
            partial,
        }
    }
}

/// How the server's answer to a command is shaped, and how far it has been read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// OK, ERR, LOCAL INFILE request or result set(s).
    Result(ResultPhase),
    /// `PREPARE_OK` and its parameter and column definitions, or ERR.
    Prepare { defs_left: u32, final_eof: bool },
    /// Exactly one packet, whatever it is.
    Simple,
    /// Column definitions until EOF (`COM_FIELD_LIST`).
    FieldList,
    /// Rows until EOF/OK (`COM_STMT_FETCH`).
    Rows,
    /// Authentication exchanges until OK or ERR (`COM_CHANGE_USER`).
    Auth,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResultPhase {
    Start,
    /// The server asked for a local file; the client streams it, then OK or ERR follows.
    LocalInfile,
    Columns(u64),
    /// Column definitions are done: an EOF may follow (unless `CLIENT_DEPRECATE_EOF`).
    AfterColumns,
    Rows,
}

struct Pending {
    report: Report,
    expect: Expect,
    request_start_ns: u64,
    request_end_ns: u64,
    response_start_ns: Option<u64>,
    /// The sequence id the next server packet must carry; `None` when it cannot be known.
    next_seq: Option<u8>,
    /// The namespace this command switches to if it succeeds.
    use_db: Option<String>,
    rows: u64,
    counted_rows: bool,
    error: Option<(u16, String)>,
    /// What `PREPARE_OK` said.
    statement_id: Option<u32>,
    partial: bool,
}

/// Decoder state for one MySQL connection.
pub struct MysqlSession {
    requests: PacketReader,
    responses: PacketReader,
    core: Core,
}

struct Core {
    phase: Phase,
    system: &'static str,
    /// Effective capabilities once the handshake response was seen.
    caps: Option<u32>,
    server_caps: Option<u32>,
    namespace: Option<String>,
    pending: VecDeque<Pending>,
    statements: HashMap<u32, Arc<Statement>>,
    /// Statement ids in the order they were prepared (for eviction).
    statement_order: VecDeque<u32>,
    statement_bytes: usize,
    last_prepared: Option<Arc<Statement>>,
    /// An EOF with this sequence id may trail the previous response (capabilities unknown).
    optional_eof_seq: Option<u8>,
    /// The server's stream is not understood until the client sends its next command.
    response_lost: bool,
    /// Pick the server's stream up at the next chunk that starts a plausible response.
    response_resync: bool,
    /// `last_byte_ns` of the latest server chunk.
    last_response_ns: u64,
}

impl Default for MysqlSession {
    fn default() -> Self {
        Self::new()
    }
}

impl MysqlSession {
    pub fn new() -> Self {
        MysqlSession {
            requests: PacketReader::new(REQUEST_CAP),
            responses: PacketReader::new(RESPONSE_CAP),
            core: Core {
                phase: Phase::Start,
                system: "mysql",
                caps: None,
                server_caps: None,
                namespace: None,
                pending: VecDeque::new(),
                statements: HashMap::new(),
                statement_order: VecDeque::new(),
                statement_bytes: 0,
                last_prepared: None,
                optional_eof_seq: None,
                response_lost: false,
                response_resync: false,
                last_response_ns: 0,
            },
        }
    }
}

/// Hands each packet the chunk completes to `handle` (a request or a response handler), with
/// the time its last byte was seen. Returns false once the session has stopped.
fn pump_packets(
    reader: &mut PacketReader,
    chunk: &Chunk<'_>,
    input: &mut Input<'_>,
    core: &mut Core,
    handle: fn(&mut Core, Packet, &[u8], u64, &mut Vec<Exchange>),
    out: &mut Vec<Exchange>,
) -> bool {
    reader.begin_chunk(chunk.first_byte_ns, chunk.last_byte_ns);
    while let Some(packet) = reader.next(input) {
        let end_ns = reader.chunk_last_ns();
        handle(core, packet, reader.payload(), end_ns, out);
        if core.phase == Phase::Stopped {
            return false;
        }
    }
    true
}

impl Session for MysqlSession {
    fn feed(&mut self, flow: Flow, chunk: Chunk<'_>, out: &mut Vec<Exchange>) {
        if self.core.phase == Phase::Stopped {
            return;
        }
        let mut input = Input {
            data: chunk.data,
            gap: chunk.missing,
        };
        match flow {
            Flow::Request => {
                if self.requests.is_lost() && plausible_command(chunk.data, chunk.missing) {
                    self.requests.restart();
                }
                // Nothing follows in this arm: whether the session stopped needs no check.
                pump_packets(
                    &mut self.requests,
                    &chunk,
                    &mut input,
                    &mut self.core,
                    Core::request,
                    out,
                );
            }
            Flow::Response => {
                self.core.last_response_ns = chunk.last_byte_ns;
                if self.core.response_resync {
                    let expected = self.core.pending.front().and_then(|p| p.next_seq);
                    if expected
                        .is_some_and(|seq| plausible_response(chunk.data, chunk.missing, seq))
                    {
                        self.responses.restart();
                        self.core.response_resync = false;
                    } else {
                        self.responses.lose();
                    }
                }
                if !pump_packets(
                    &mut self.responses,
                    &chunk,
                    &mut input,
                    &mut self.core,
                    Core::response,
                    out,
                ) {
                    return;
                }
                if self.responses.is_lost() && !self.core.response_resync {
                    self.core.lose_response();
                }
            }
        }
    }

    fn close(&mut self, _at_ns: u64, out: &mut Vec<Exchange>) {
        let end_ns = self.core.last_response_ns;
        while let Some(mut pending) = self.core.pending.pop_front() {
            // A response cut by the close (or never understood) ended with the last bytes seen.
            let end = pending.response_start_ns.map(|_| end_ns);
            if end.is_some() {
                pending.partial = true;
                pending.counted_rows = false;
            }
            self.core.emit(pending, end, out);
        }
        *self = Self::new();
    }

    fn take_resync_skips(&mut self) -> u64 {
        self.requests.take_skips() + self.responses.take_skips()
    }
}

/// Whether a client chunk starts with a packet a client plausibly sends as a command.
fn plausible_command(data: &[u8], missing: usize) -> bool {
    let [l0, l1, l2, 0, command, ..] = data else {
        return false;
    };
    let len = usize::from(*l0) | usize::from(*l1) << 8 | usize::from(*l2) << 16;
    let known = matches!(*command, 0x01..=0x1f | COM_STMT_BULK_EXECUTE);
    known && len >= 1 && len + 4 <= data.len() + missing
}

/// Whether a server chunk starts with the first packet of a response.
fn plausible_response(data: &[u8], missing: usize, seq: u8) -> bool {
    let [l0, l1, l2, s, first, ..] = data else {
        return false;
    };
    let len = usize::from(*l0) | usize::from(*l1) << 8 | usize::from(*l2) << 16;
    *s == seq
        && len >= 1
        && len + 4 <= data.len() + missing
        && match first {
            0x00 => len >= 7,
            0xff => len >= 3,
            0xfe => len < 9,
            0xfb => true,
            // A column count: a single byte, or a MariaDB metadata flag after it.
            _ => len <= 2 && *first <= 0xfa,
        }
}

impl Core {
    fn deprecate_eof(&self) -> Option<bool> {
        self.caps.map(|c| c & CLIENT_DEPRECATE_EOF != 0)
    }

    fn session_track(&self) -> bool {
        self.caps.is_some_and(|c| c & CLIENT_SESSION_TRACK != 0)
    }

    // ---- client to server ----

    fn request(&mut self, packet: Packet, payload: &[u8], end_ns: u64, out: &mut Vec<Exchange>) {
        match self.phase {
            Phase::Start | Phase::Greeted if packet.seq == 1 => self.handshake_response(payload),
            // Joined late, or the end of authentication was not seen.
            Phase::Start | Phase::Greeted | Phase::Auth
                if packet.seq == 0 && !payload.is_empty() =>
            {
                self.phase = Phase::Command;
                self.command(packet, payload, end_ns, out);
            }
            Phase::Command if packet.seq == 0 => self.command(packet, payload, end_ns, out),
            // Authentication data, LOCAL INFILE contents, continued handshakes.
            _ => {}
        }
    }

    fn handshake_response(&mut self, payload: &[u8]) {
        let mut c = Cursor::new(payload, 0);
        let Some(client_caps) = c.u32() else {
            self.phase = Phase::Stopped;
            return;
        };
        let caps = client_caps & self.server_caps.unwrap_or(u32::MAX);
        if client_caps & CLIENT_PROTOCOL_41 == 0
            || caps & (CLIENT_COMPRESS | CLIENT_ZSTD_COMPRESSION) != 0
        {
            self.phase = Phase::Stopped;
            return;
        }
        // max packet size, character set, filler
        if c.skip(4 + 1 + 23).is_none() || (c.at_end() && client_caps & CLIENT_SSL != 0) {
            // An SSL request: TLS follows.
            self.phase = Phase::Stopped;
            return;
        }
        self.caps = Some(caps);
        self.phase = Phase::Auth;
        let _user = c.nul_terminated();
        let auth = if client_caps & CLIENT_PLUGIN_AUTH_LENENC_DATA != 0 {
            c.lenenc_bytes()
        } else if client_caps & CLIENT_SECURE_CONNECTION != 0 {
            c.u8().and_then(|n| c.take(usize::from(n)))
        } else {
            c.nul_terminated()
        };
        if auth.is_some()
            && client_caps & CLIENT_CONNECT_WITH_DB != 0
            && let Some(db) = c.nul_terminated()
            && !db.is_empty()
        {
            self.namespace = Some(bounded_lossy(db, 256).0);
        }
    }

    fn command(&mut self, packet: Packet, payload: &[u8], end_ns: u64, out: &mut Vec<Exchange>) {
        let Some((&code, body)) = payload.split_first() else {
            return;
        };
        let start_ns = packet.start_ns;
        let mut use_db = None;
        let (report, expect) = match code {
            COM_QUIT | COM_STMT_SEND_LONG_DATA => return,
            COM_STMT_CLOSE => {
                if let Some(id) = Cursor::new(body, 0).u32() {
                    self.forget_statement(id);
                }
                return;
            }
            COM_BINLOG_DUMP | COM_BINLOG_DUMP_GTID | COM_REGISTER_SLAVE => {
                self.phase = Phase::Stopped;
                return;
            }
            COM_QUERY => {
                let statement = match self.query_text(body) {
                    Some(text) => {
                        // Uncaptured bytes matter if they hid text we would have kept.
                        let partial = packet.truncated && text.len() < MAX_QUERY_LEN;
                        Statement::new(bounded_lossy(text, MAX_QUERY_LEN).0, partial)
                    }
                    None => Statement::new(String::new(), true),
                };
                use_db = use_statement_target(&statement.text);
                (
                    Report::Query(Arc::new(statement)),
                    Expect::Result(ResultPhase::Start),
                )
            }
            COM_STMT_PREPARE => {
                let (text, _) = bounded_lossy(body, MAX_QUERY_LEN);
                let partial = packet.truncated && text.len() < MAX_QUERY_LEN;
                let statement = Arc::new(Statement::new(text, partial));
                self.last_prepared = Some(statement.clone());
                (
                    Report::Prepare(statement),
                    Expect::Prepare {
                        defs_left: 0,
                        final_eof: false,
                    },
                )
            }
            COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE => {
                let statement = match Cursor::new(body, 0).u32() {
                    Some(LAST_PREPARED_ID) => self.last_prepared.clone(),
                    Some(id) => self.statements.get(&id).cloned(),
                    None => None,
                };
                (
                    Report::Execute(statement),
                    Expect::Result(ResultPhase::Start),
                )
            }
            COM_INIT_DB => {
                use_db = Some(bounded_lossy(body, 256).0);
                (Report::InitDb, Expect::Simple)
            }
            COM_PING => (Report::Ping, Expect::Simple),
            COM_FIELD_LIST => (Report::Silent, Expect::FieldList),
            COM_PROCESS_INFO => (Report::Silent, Expect::Result(ResultPhase::Start)),
            COM_STMT_FETCH => (Report::Silent, Expect::Rows),
            COM_CHANGE_USER => {
                use_db = change_user_database(body, self.caps.unwrap_or(0));
                (Report::Silent, Expect::Auth)
            }
            // COM_STMT_RESET, COM_SET_OPTION, COM_RESET_CONNECTION, COM_STATISTICS, …, and
            // unknown commands, which the server answers with one ERR.
            _ => (Report::Silent, Expect::Simple),
        };
        if code == COM_RESET_CONNECTION || code == COM_CHANGE_USER {
            self.forget_all_statements();
        }
        if self.response_lost {
            // The client would not send this before the response it waited for was complete.
            self.finish_lost_responses(out);
        }
        if self.pending.len() >= MAX_PENDING
            && let Some(mut oldest) = self.pending.pop_front()
        {
            let end = oldest.response_start_ns.map(|_| self.last_response_ns);
            oldest.partial |= end.is_some();
            self.emit(oldest, end, out);
        }
        let next_seq = match expect {
            Expect::Auth => None,
            _ => Some(packet.last_seq.wrapping_add(1)),
        };
        self.pending.push_back(Pending {
            report,
            expect,
            request_start_ns: start_ns,
            request_end_ns: end_ns,
            response_start_ns: None,
            next_seq,
            use_db,
            rows: 0,
            counted_rows: false,
            error: None,
            statement_id: None,
            partial: false,
        });
    }

    /// The SQL of a `COM_QUERY` body, after query attributes if the client sends them.
    fn query_text<'a>(&self, body: &'a [u8]) -> Option<&'a [u8]> {
        let attributes = match self.caps {
            Some(caps) => caps & CLIENT_QUERY_ATTRIBUTES != 0,
            // SQL starts with printable text; a parameter count is a small number.
            None => body
                .first()
                .is_some_and(|&b| b < 0x09 || (0x0e..0x20).contains(&b)),
        };
        if !attributes {
            return Some(body);
        }
        let mut c = Cursor::new(body, 0);
        let count = c.lenenc()?;
        let _sets = c.lenenc()?;
        if count > 0 {
            skip_query_attributes(&mut c, count)?;
        }
        Some(c.rest())
    }

    fn remember_statement(&mut self, id: u32, statement: Arc<Statement>) {
        self.forget_statement(id);
        while self.statement_order.len() >= MAX_STATEMENTS
            || self.statement_bytes + statement.text.len() > MAX_STATEMENT_BYTES
        {
            let Some(oldest) = self.statement_order.pop_front() else {
                break;
            };
            if let Some(s) = self.statements.remove(&oldest) {
                self.statement_bytes -= s.text.len();
            }
        }
        self.statement_bytes += statement.text.len();
        self.statements.insert(id, statement);
        self.statement_order.push_back(id);
    }

    fn forget_statement(&mut self, id: u32) {
        if let Some(s) = self.statements.remove(&id) {
            self.statement_bytes -= s.text.len();
            self.statement_order.retain(|&other| other != id);
        }
    }

    fn forget_all_statements(&mut self) {
        self.statements.clear();
        self.statement_order.clear();
        self.statement_bytes = 0;
    }

    // ---- server to client ----

    fn response(&mut self, packet: Packet, payload: &[u8], end_ns: u64, out: &mut Vec<Exchange>) {
        match self.phase {
            Phase::Start if packet.seq == 0 => self.greeting(payload),
            // Authentication ends with OK, or with ERR (and the connection closes); auth
            // switch, more-data and public-key packets come before.
            Phase::Auth if matches!(payload.first(), Some(0x00 | 0xff)) => {
                self.phase = Phase::Command
            }
            Phase::Command => self.command_response(packet, payload, end_ns, out),
            _ => {}
        }
    }

    fn greeting(&mut self, payload: &[u8]) {
        let mut c = Cursor::new(payload, 0);
        if c.u8() != Some(0x0a) {
            self.phase = Phase::Stopped;
            return;
        }
        let Some(version) = c.nul_terminated() else {
            self.phase = Phase::Stopped;
            return;
        };
        if version.windows(7).any(|w| w == b"MariaDB") {
            self.system = "mariadb";
        }
        // connection id, auth data part 1, filler
        let lower = c.skip(4 + 8 + 1).and_then(|()| c.u16());
        // character set, status flags
        let upper = c.skip(1 + 2).and_then(|()| c.u16());
        let Some(lower) = lower else {
            self.phase = Phase::Stopped;
            return;
        };
        self.server_caps = Some(u32::from(lower) | u32::from(upper.unwrap_or(0)) << 16);
        self.phase = Phase::Greeted;
    }

    fn command_response(
        &mut self,
        packet: Packet,
        payload: &[u8],
        end_ns: u64,
        out: &mut Vec<Exchange>,
    ) {
        if self.response_lost {
            return;
        }
        let first = payload.first().copied();
        if let Some(seq) = self.optional_eof_seq.take()
            && packet.seq == seq
            && first == Some(0xfe)
            && packet.len < 9
        {
            return;
        }
        let deprecate_eof = self.deprecate_eof();
        let session_track = self.session_track();
        let Some(front) = self
            .pending
            .front_mut()
            .filter(|p| p.request_start_ns <= packet.start_ns)
        else {
            // No command is waiting for this (its request was not seen, or came after it).
            return;
        };
        if front.next_seq.is_some_and(|seq| seq != packet.seq) {
            self.lose_response();
            return;
        }
        front.next_seq = front.next_seq.map(|_| packet.last_seq.wrapping_add(1));
        front.response_start_ns.get_or_insert(packet.start_ns);
        // Bytes we needed were not captured (rows are only counted, so do not matter).
        let short = packet.truncated && packet.len <= RESPONSE_CAP as u64;
        let mut schema = None;
        let step = step(
            front,
            first,
            payload,
            packet.len,
            deprecate_eof,
            session_track,
            &mut schema,
        );
        if short && !matches!(step, Step::Row) {
            front.partial = true;
        }
        if let Some(schema) = schema {
            self.namespace = Some(schema);
        }
        match step {
            Step::Continue | Step::Row => {}
            Step::Lost => self.lose_response(),
            Step::Done { optional_eof } => {
                if optional_eof {
                    self.optional_eof_seq = Some(packet.last_seq.wrapping_add(1));
                }
                if let Some(pending) = self.pending.pop_front() {
                    self.complete(pending, end_ns, out);
                }
            }
        }
    }

    /// A response was fully read.
    fn complete(&mut self, pending: Pending, end_ns: u64, out: &mut Vec<Exchange>) {
        if pending.error.is_none()
            && let Some(db) = &pending.use_db
        {
            self.namespace = Some(db.clone());
        }
        if let (Report::Prepare(statement), Some(id)) = (&pending.report, pending.statement_id) {
            self.remember_statement(id, statement.clone());
        }
        self.emit(pending, Some(end_ns), out);
    }

    /// The server's stream is no longer understood.
    fn lose_response(&mut self) {
        self.response_lost = true;
        if let Some(front) = self.pending.front_mut() {
            front.partial = true;
            // Rows were not all seen.
            front.counted_rows = false;
        }
    }

    /// The client moved on: whatever it waited for has ended, as far as we can tell.
    fn finish_lost_responses(&mut self, out: &mut Vec<Exchange>) {
        let end_ns = self.last_response_ns;
        while let Some(mut pending) = self.pending.pop_front() {
            pending.partial = true;
            let end = pending.response_start_ns.map(|_| end_ns);
            self.emit(pending, end, out);
        }
        self.response_lost = false;
        self.response_resync = true;
        self.optional_eof_seq = None;
    }

    fn emit(&mut self, pending: Pending, response_end_ns: Option<u64>, out: &mut Vec<Exchange>) {
        let (statement, operation) = match &pending.report {
            Report::Silent => return,
            Report::Prepare(_) if pending.error.is_none() => return,
            Report::Query(s) | Report::Prepare(s) => (Some(s), None),
            Report::Execute(s) => (s.as_ref(), None),
            Report::InitDb => (None, Some("USE")),
            Report::Ping => (None, Some("PING")),
        };
        let unknown_statement = matches!(pending.report, Report::Execute(None));
        let (status_code, error_message) = match pending.error {
            Some((code, message)) => (Some(code.to_string()), Some(message)),
            None => (None, None),
        };
        let response = pending.response_start_ns.zip(response_end_ns);
        let rows = (pending.counted_rows && status_code.is_none()).then_some(pending.rows);
        out.push(Exchange {
            request_start_ns: pending.request_start_ns,
            request_end_ns: pending.request_end_ns,
            response_start_ns: response.map(|(start, _)| start),
            response_end_ns: response.map(|(_, end)| end),
            detail: ExchangeDetail::Db(DbExchange {
                system: self.system,
                operation: operation
                    .map(str::to_owned)
                    .or_else(|| statement.and_then(|s| s.operation.clone())),
                collection: statement.and_then(|s| s.collection.clone()),
                namespace: self.namespace.clone(),
                query_without_values: None,
                query_text: statement.map(|s| s.text.clone()).filter(|t| !t.is_empty()),
                status_code,
                error_message,
                rows,
                partial: pending.partial
                    || unknown_statement
                    || statement.is_some_and(|s| s.partial),
            }),
        });
    }
}

/// What one response packet did to the command it answers.
enum Step {
    Continue,
    /// A result-set row (counted).
    Row,
    /// The response is complete; `optional_eof`: an EOF may trail it, which is not a response.
    Done {
        optional_eof: bool,
    },
    /// The packet makes no sense here.
    Lost,
}

fn step(
    p: &mut Pending,
    first: Option<u8>,
    payload: &[u8],
    len: u64,
    deprecate_eof: Option<bool>,
    session_track: bool,
    schema: &mut Option<String>,
) -> Step {
    let done = Step::Done {
        optional_eof: false,
    };
    let is_eof = first == Some(0xfe) && len < 9;
    let is_err = first == Some(0xff);
    if is_err && Cursor::new(payload, 1).u16() == Some(0xffff) {
        // MariaDB progress report: not an answer.
        return Step::Continue;
    }
    match p.expect {
        Expect::Simple => {
            if is_err {
                p.error = Some(parse_err(payload));
            } else if first == Some(0x00) {
                ok_status(payload, session_track, schema);
            }
            done
        }
        Expect::Auth => match first {
            Some(0x00) => done,
            Some(0xff) => {
                p.error = Some(parse_err(payload));
                done
            }
            _ => Step::Continue,
        },
        Expect::FieldList => {
            if is_err {
                p.error = Some(parse_err(payload));
                done
            } else if first == Some(0xfe) && len < MAX_PHYSICAL as u64 {
                done
            } else {
                Step::Continue
            }
        }
        Expect::Rows => {
            if is_err {
                p.error = Some(parse_err(payload));
                done
            } else if first == Some(0xfe) && len < MAX_PHYSICAL as u64 {
                done
            } else {
                p.rows += 1;
                p.counted_rows = true;
                Step::Row
            }
        }
        Expect::Prepare {
            defs_left,
            final_eof,
        } => {
            if defs_left > 0 || final_eof {
                // Inside the definitions.
                if is_eof {
                    return if defs_left == 0 { done } else { Step::Continue };
                }
                if defs_left == 0 {
                    return Step::Lost;
                }
                let left = defs_left - 1;
                p.expect = Expect::Prepare {
                    defs_left: left,
                    final_eof,
                };
                return match (left, final_eof, deprecate_eof) {
                    (0, false, None) => Step::Done { optional_eof: true },
                    (0, false, Some(_)) => done,
                    _ => Step::Continue,
                };
            }
            match first {
                Some(0x00) => {
                    let mut c = Cursor::new(payload, 1);
                    let (Some(id), Some(columns), Some(params)) = (c.u32(), c.u16(), c.u16())
                    else {
                        p.partial = true;
                        return done;
                    };
                    p.statement_id = Some(id);
                    let defs = u32::from(columns) + u32::from(params);
                    if defs == 0 {
                        return done;
                    }
                    p.expect = Expect::Prepare {
                        defs_left: defs,
                        final_eof: deprecate_eof == Some(false),
                    };
                    Step::Continue
                }
                Some(0xff) => {
                    p.error = Some(parse_err(payload));
                    done
                }
                _ => Step::Lost,
            }
        }
        Expect::Result(phase) => result_step(
            p,
            phase,
            first,
            payload,
            len,
            deprecate_eof,
            session_track,
            schema,
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn result_step(
    p: &mut Pending,
    phase: ResultPhase,
    first: Option<u8>,
    payload: &[u8],
    len: u64,
    deprecate_eof: Option<bool>,
    session_track: bool,
    schema: &mut Option<String>,
) -> Step {
    let done = Step::Done {
        optional_eof: false,
    };
    let set = |p: &mut Pending, phase| p.expect = Expect::Result(phase);
    // After a terminator: another result follows, or the response is complete.
    let finish = |p: &mut Pending, status: Option<u16>| {
        if status.is_some_and(|s| s & SERVER_MORE_RESULTS_EXISTS != 0) {
            p.expect = Expect::Result(ResultPhase::Start);
            Step::Continue
        } else {
            Step::Done {
                optional_eof: false,
            }
        }
    };
    match phase {
        ResultPhase::Start | ResultPhase::LocalInfile => match first {
            Some(0x00) => {
                let (affected, status) = ok_status(payload, session_track, schema);
                p.rows = p.rows.saturating_add(affected.unwrap_or(0));
                p.counted_rows |= affected.is_some();
                finish(p, status)
            }
            Some(0xff) => {
                p.error = Some(parse_err(payload));
                done
            }
            Some(0xfb) if phase == ResultPhase::Start => {
                // The client now sends the file; the server's sequence continues after it.
                set(p, ResultPhase::LocalInfile);
                p.next_seq = None;
                Step::Continue
            }
            Some(_) if phase == ResultPhase::Start => {
                let mut c = Cursor::new(payload, 0);
                let Some(columns) = c.lenenc().filter(|&n| n > 0) else {
                    return Step::Lost;
                };
                p.counted_rows = true;
                // MariaDB metadata caching: a 0 flag means no column definitions follow.
                if c.u8() == Some(0) {
                    set(p, ResultPhase::AfterColumns);
                } else {
                    set(p, ResultPhase::Columns(columns));
                }
                Step::Continue
            }
            _ => Step::Continue,
        },
        ResultPhase::Columns(left) => {
            if first == Some(0xff) {
                p.error = Some(parse_err(payload));
                return done;
            }
            if left <= 1 {
                set(p, ResultPhase::AfterColumns);
            } else {
                set(p, ResultPhase::Columns(left - 1));
            }
            Step::Continue
        }
        ResultPhase::AfterColumns | ResultPhase::Rows => {
            if first == Some(0xfe) && len < MAX_PHYSICAL as u64 {
                // An EOF (five bytes) or, with CLIENT_DEPRECATE_EOF, an OK with an 0xfe header.
                let eof_format = match deprecate_eof {
                    Some(d) => !d,
                    None => len <= 5,
                };
                let status = if eof_format {
                    Cursor::new(payload, 3).u16()
                } else {
                    ok_status(payload, session_track, schema).1
                };
                if phase == ResultPhase::AfterColumns && eof_format {
                    // Between column definitions and rows. A cursor was opened if the
                    // status says so: its rows come with COM_STMT_FETCH.
                    if status.is_some_and(|s| s & 0x0040 != 0) {
                        return finish(p, status);
                    }
                    set(p, ResultPhase::Rows);
                    return Step::Continue;
                }
                return finish(p, status);
            }
            if first == Some(0xff) {
                p.error = Some(parse_err(payload));
                return done;
            }
            set(p, ResultPhase::Rows);
            p.rows = p.rows.saturating_add(1);
            Step::Row
        }
    }
}

/// Affected rows and status flags of an OK packet (header 0x00 or 0xfe); a schema change
/// reported through session tracking goes to `schema`.
fn ok_status(
    payload: &[u8],
    session_track: bool,
    schema: &mut Option<String>,
) -> (Option<u64>, Option<u16>) {
    let mut c = Cursor::new(payload, 1);
    let affected = c.lenenc();
    let _last_insert_id = c.lenenc();
    let status = c.u16();
    if let Some(status) = status
        && session_track
        && c.skip(2).is_some()
        && c.lenenc_bytes().is_some()
        && status & SERVER_SESSION_STATE_CHANGED != 0
        && let Some(changes) = c.lenenc_bytes()
    {
        let mut changes = Cursor::new(changes, 0);
        while let (Some(kind), Some(data)) = (changes.u8(), changes.lenenc_bytes()) {
            if kind == SESSION_TRACK_SCHEMA
                && let Some(name) = Cursor::new(data, 0).lenenc_bytes()
            {
                *schema = Some(bounded_lossy(name, 256).0);
            }
        }
    }
    (affected.filter(|_| status.is_some()), status)
}

/// Error number and message of an ERR packet.
fn parse_err(payload: &[u8]) -> (u16, String) {
    let mut c = Cursor::new(payload, 1);
    let code = c.u16().unwrap_or(0);
    if c.bytes.get(c.pos) == Some(&b'#') {
        // '#' and the five-character SQLSTATE.
        let _ = c.skip(6);
    }
    (code, bounded_lossy(c.rest(), MAX_ERROR_LEN).0)
}

/// Skips the parameters MySQL 8 clients may send ahead of the SQL of a `COM_QUERY`.
fn skip_query_attributes(c: &mut Cursor<'_>, count: u64) -> Option<()> {
    let count = usize::try_from(count).ok().filter(|&n| n <= 4096)?;
    let bitmap = c.take(count.div_ceil(8))?;
    let bound = c.u8()?;
    if bound != 1 {
        // Without types the values cannot be skipped.
        return None;
    }
    let mut types = Vec::with_capacity(count);
    for _ in 0..count {
        let t = c.u8()?;
        let _flags = c.u8()?;
        let _name = c.lenenc_bytes()?;
        types.push(t);
    }
    for (i, t) in types.into_iter().enumerate() {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            continue;
        }
        match t {
            0x06 => {}
            0x01 => c.skip(1)?,
            0x02 | 0x0d => c.skip(2)?,
            0x03 | 0x04 | 0x09 => c.skip(4)?,
            0x05 | 0x08 => c.skip(8)?,
            0x07 | 0x0a | 0x0b | 0x0c => {
                let n = c.u8()?;
                c.skip(usize::from(n))?;
            }
            _ => {
                c.lenenc_bytes()?;
            }
        }
    }
    Some(())
}

/// The database a `COM_CHANGE_USER` switches to.
fn change_user_database(body: &[u8], caps: u32) -> Option<String> {
    let mut c = Cursor::new(body, 0);
    c.nul_terminated()?;
    if caps == 0 || caps & CLIENT_SECURE_CONNECTION != 0 {
        let n = c.u8()?;
        c.skip(usize::from(n))?;
    } else {
        c.nul_terminated()?;
    }
    let db = c.nul_terminated()?;
    (!db.is_empty()).then(|| bounded_lossy(db, 256).0)
}

/// The database of a `USE db` statement.
fn use_statement_target(text: &str) -> Option<String> {
    let text = text.trim_start();
    let (keyword, rest) = text.split_at_checked(3)?;
    if !keyword.eq_ignore_ascii_case("use") || !rest.starts_with(|c: char| c.is_whitespace()) {
        return None;
    }
    let rest = rest.trim().trim_end_matches(';').trim_end();
    let name = match rest.strip_prefix('`') {
        Some(quoted) => quoted.strip_suffix('`')?.replace("``", "`"),
        None if !rest.is_empty() && !rest.contains(char::is_whitespace) => rest.to_owned(),
        None => return None,
    };
    (!name.is_empty()).then_some(name)
}

/// At most `max` bytes of `bytes` as text (invalid UTF-8 replaced, never a split character);
/// whether it was cut.
fn bounded_lossy(bytes: &[u8], max: usize) -> (String, bool) {
    let mut cut = bytes.len() > max;
    let mut bytes = &bytes[..bytes.len().min(max)];
    if cut {
        // Do not leave half a character at the end.
        if let Err(e) = std::str::from_utf8(bytes)
            && e.error_len().is_none()
        {
            bytes = &bytes[..e.valid_up_to()];
        }
    }
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if text.len() > max {
        // Replacement characters are longer than the bytes they replace.
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        cut = true;
    }
    (text, cut)
}

//! PostgreSQL frontend/backend protocol 3.x over one TCP connection, seen from the client.
//!
//! [`Flow::Request`] carries frontend messages, [`Flow::Response`] backend messages; each has a
//! [`Reader`] that frames them. The session queues what every frontend message expects from the
//! server, in order (the server answers strictly in order, also when requests are pipelined),
//! and lets backend messages consume that queue:
//!
//! - Simple query `Q`: one exchange per message, whatever number of statements it holds
//!   (operation and collection come from the first). It ends at ReadyForQuery `Z`, which is its
//!   `response_end_ns`; `rows` is the sum of the CommandComplete counts (or the DataRows, when
//!   no tag carries a count); an ErrorResponse gives `status_code` (SQLSTATE) and message.
//! - Extended query: one exchange per Execute `E`. Its text comes from the statement the bound
//!   portal was created from (named statements are remembered per connection, so a statement
//!   prepared once and executed many times yields its text every time). `request_start_ns` is
//!   the first byte of the Parse/Bind/Describe that led up to the Execute within its batch,
//!   `response_end_ns` the last byte of the CommandComplete (or EmptyQueryResponse,
//!   PortalSuspended, ErrorResponse) that ends it — not the ReadyForQuery after Sync, which
//!   may follow a whole pipeline.
//! - After an ErrorResponse in extended mode the server discards messages up to the next Sync.
//!   The error goes to the first Execute of the batch not yet answered (the failing Parse or
//!   Bind belongs to it). The batch's later Executes were never run: they are dropped, no
//!   exchange. A failing Parse or Bind without an Execute after it in its batch (a prepare
//!   round trip) gets an exchange of its own carrying the error.
//! - COPY is one exchange (the Query or Execute); CopyData from the client extends its request
//!   end. Startup, authentication, FunctionCall, notices, notifications and parameter status
//!   messages produce no exchanges. After the server accepts SSL or GSS encryption the session
//!   goes quiet for good.
//!
//! Capture loss: a gap inside a body is skipped by count. A header lost in a gap loses the
//! framing of that direction:
//! - requests: a Bind left without its Execute is assumed executed (partial), and a hole is
//!   queued that absorbs responses up to the next ReadyForQuery (the lost bytes most likely
//!   ended with a Sync; a hole still first in line when the server has gone idle and the
//!   client has asked more since held none, and is dropped). Framing resumes at a chunk that
//!   plausibly starts with messages.
//! - responses: everything queued at that moment is finished as partial when the response
//!   stream is picked up again — at a chunk that plausibly starts with messages (timed by the
//!   last chunk skipped), or at a chunk that ends with ReadyForQuery (the CommandComplete or
//!   ErrorResponse right before it, if found, still gives rows or the error). If the client
//!   has sent nothing since the loss, a plausible chunk continues the answers in progress
//!   instead. For clients that pipeline across such a loss the pairing after it is a guess.
//!
//! Detection accepts, from the client, a startup packet (protocol 3.x with a plausible
//! parameter list), an SSL or GSS encryption request, or — for connections older than the
//! agent — a Query or Parse whose text starts with an SQL command keyword; from the server,
//! only an authentication request as the first message.

mod reader;
#[cfg(test)]
mod replay_tests;
#[cfg(test)]
mod robustness_tests;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use self::reader::{Event, Input, MAX_QUERY_TEXT, MAX_STARTUP_LEN, Message, Reader};
use super::{Chunk, DbExchange, Exchange, ExchangeDetail, Flow, Protocol, Session, sql};

/// Executes and queries waiting for their responses; beyond this they are reported unanswered.
const MAX_QUEUED_OPS: usize = 256;
/// Queue entries of any kind (acknowledgements included).
const MAX_QUEUED_ENTRIES: usize = 1024;
/// Named prepared statements remembered per connection.
const MAX_STATEMENTS: usize = 1024;
/// Portals remembered per connection (the unnamed one included).
const MAX_PORTALS: usize = 64;
const MAX_ERROR_MESSAGE: usize = 1024;
const MAX_NAMESPACE: usize = 256;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

pub struct Postgres;

impl Protocol for Postgres {
    fn name(&self) -> &'static str {
        "postgresql"
    }

    fn detect(&self, flow: Flow, first: &[u8]) -> bool {
        match flow {
            Flow::Request => detect_request(first),
            Flow::Response => detect_response(first),
        }
    }

    fn new_session(&self) -> Box<dyn Session> {
        Box::new(PostgresSession::new())
    }
}

/// A statement's text, bounded, with what `sql::summarize` read from it.
#[derive(Debug)]
struct Statement {
    text: String,
    operation: Option<String>,
    collection: Option<String>,
    /// Bytes of the text were not captured.
    damaged: bool,
}

impl Statement {
    fn new(raw: &[u8], damaged: bool) -> Arc<Statement> {
        let text = bounded_text(raw, MAX_QUERY_TEXT);
        let (operation, collection) = sql::summarize(&text);
        Arc::new(Statement {
            text,
            operation,
            collection,
            damaged,
        })
    }
}

/// One operation that will become an exchange.
#[derive(Debug)]
struct Op {
    request_start_ns: u64,
    request_end_ns: u64,
    /// Set when the response began before the op was finished abnormally (capture loss).
    response_start_ns: Option<u64>,
    statement: Option<Arc<Statement>>,
    /// Sum of the counts CommandComplete tags gave.
    tag_rows: Option<u64>,
    data_rows: u64,
    /// Some DataRows went uncounted (capture loss): only a tag may say how many rows.
    rows_lost: bool,
    status_code: Option<String>,
    error_message: Option<String>,
    partial: bool,
}

impl Op {
    fn new(start_ns: u64, end_ns: u64, statement: Option<Arc<Statement>>) -> Op {
        Op {
            request_start_ns: start_ns,
            request_end_ns: end_ns.max(start_ns),
            response_start_ns: None,
            statement,
            tag_rows: None,
            data_rows: 0,
            rows_lost: false,
            status_code: None,
            error_message: None,
            partial: false,
        }
    }

    fn add_tag_rows(&mut self, rows: Option<u64>) {
        if let Some(rows) = rows {
            self.tag_rows = Some(self.tag_rows.unwrap_or(0).saturating_add(rows));
        }
    }

    fn set_error(&mut self, error: ErrorFields) {
        if self.status_code.is_none() {
            self.status_code = Some(error.code);
            self.error_message = error.message;
        }
    }
}

/// What a frontend message waits for from the server.
#[derive(Debug)]
enum Entry {
    /// ParseComplete. The statement is kept for an error that no Execute will carry.
    Parse {
        statement: Option<Arc<Statement>>,
        start_ns: u64,
        end_ns: u64,
    },
    /// BindComplete.
    Bind {
        statement: Option<Arc<Statement>>,
        start_ns: u64,
        end_ns: u64,
    },
    /// RowDescription or NoData (after a ParameterDescription for statements).
    Describe,
    /// CloseComplete.
    Close,
    /// DataRows, then CommandComplete, EmptyQueryResponse, PortalSuspended or ErrorResponse.
    Execute(Box<Op>),
    /// Anything, up to ReadyForQuery.
    Query(Box<Op>),
    /// FunctionCallResponse, then ReadyForQuery.
    Function,
    /// ReadyForQuery.
    Sync,
    /// Requests we could not frame; assumed to end with a Sync.
    Hole,
}

impl Entry {
    /// Ends with ReadyForQuery.
    fn is_closer(&self) -> bool {
        matches!(
            self,
            Entry::Query(_) | Entry::Function | Entry::Sync | Entry::Hole
        )
    }

    fn is_op(&self) -> bool {
        matches!(self, Entry::Execute(_) | Entry::Query(_))
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
struct ErrorFields {
    code: String,
    message: Option<String>,
}

/// What the end of a chunk that ends with ReadyForQuery told about the messages before it.
#[derive(Debug, Default)]
struct Tail {
    rows: Option<u64>,
    error: Option<ErrorFields>,
}

/// A portal's name and the statement it was bound from.
type Portal = (Box<[u8]>, Option<Arc<Statement>>);

/// Decoder state for one PostgreSQL connection.
pub struct PostgresSession {
    requests: Reader,
    responses: Reader,
    /// A request chunk has been seen (the first one tells whether startup is ahead).
    started: bool,
    /// SSL or GSS encryption was accepted: nothing more can be read.
    encrypted: bool,
    /// An SSL (`b'S'`) or GSS (`b'G'`) request awaits its one-byte answer.
    negotiating: Option<u8>,
    namespace: Option<String>,
    statements: HashMap<Box<[u8]>, (Arc<Statement>, u64)>,
    statement_seq: u64,
    /// Portal name → the statement it was bound from; oldest first.
    portals: VecDeque<Portal>,
    queue: VecDeque<Entry>,
    queued_ops: usize,
    /// Request side: first byte of the messages leading up to the next Execute.
    unit_start_ns: Option<u64>,
    /// Response side: first byte of response messages not yet attributed to an operation.
    window_start_ns: Option<u64>,
    /// Last byte of the last response message read.
    last_response_ns: Option<u64>,
    /// Type of the last response message read (0: none yet).
    last_response_tag: u8,
    /// After a response loss: how many entries at the queue's front predate it.
    old_entries: usize,
    /// After a response loss: the last byte of the latest response chunk seen.
    lost_last_ns: Option<u64>,
}

impl Default for PostgresSession {
    fn default() -> Self {
        Self::new()
    }
}

impl PostgresSession {
    pub fn new() -> Self {
        PostgresSession {
            requests: Reader::new(Flow::Request),
            responses: Reader::new(Flow::Response),
            started: false,
            encrypted: false,
            negotiating: None,
            namespace: None,
            statements: HashMap::new(),
            statement_seq: 0,
            portals: VecDeque::new(),
            queue: VecDeque::new(),
            queued_ops: 0,
            unit_start_ns: None,
            window_start_ns: None,
            last_response_ns: None,
            last_response_tag: 0,
            old_entries: 0,
            lost_last_ns: None,
        }
    }

    fn reader(&mut self, flow: Flow) -> &mut Reader {
        match flow {
            Flow::Request => &mut self.requests,
            Flow::Response => &mut self.responses,
        }
    }

    fn pump(&mut self, flow: Flow, input: &mut Input<'_>, out: &mut Vec<Exchange>) {
        while !self.encrypted {
            let Some(event) = self.reader(flow).next_event(input) else {
                break;
            };
            match event {
                Event::Message(message) => {
                    let body = self.reader(flow).take_body();
                    match flow {
                        Flow::Request => self.request_message(message, &body, out),
                        Flow::Response => self.response_message(message, &body, out),
                    }
                    self.reader(flow).put_body(body);
                }
                Event::Byte { byte, .. } => self.negotiation_answer(byte),
                Event::Lost => self.framing_lost(flow, out),
            }
        }
    }

    // ---- frontend messages ----

    fn request_message(&mut self, m: Message, body: &[u8], out: &mut Vec<Exchange>) {
        match m.tag {
            0 => self.untyped_request(body),
            b'Q' => {
                let statement = Statement::new(until_nul(body), m.damaged);
                self.unit_start_ns = None;
                let op = Op::new(m.start_ns, m.end_ns, Some(statement));
                self.push(Entry::Query(Box::new(op)), out);
            }
            b'P' => {
                let statement = split_cstr(body).map(|(name, rest)| {
                    let statement = Statement::new(until_nul(rest), m.damaged);
                    self.store_statement(name, statement.clone());
                    statement
                });
                self.unit_start_ns.get_or_insert(m.start_ns);
                self.push(
                    Entry::Parse {
                        statement,
                        start_ns: m.start_ns,
                        end_ns: m.end_ns,
                    },
                    out,
                );
            }
            b'B' => {
                let names =
                    split_cstr(body).and_then(|(portal, rest)| Some((portal, split_cstr(rest)?.0)));
                let statement = names.and_then(|(portal, name)| {
                    let statement = self.statements.get(name).map(|(s, _)| s.clone());
                    self.bind_portal(portal, statement.clone());
                    statement
                });
                self.unit_start_ns.get_or_insert(m.start_ns);
                self.push(
                    Entry::Bind {
                        statement,
                        start_ns: m.start_ns,
                        end_ns: m.end_ns,
                    },
                    out,
                );
            }
            b'D' => {
                self.unit_start_ns.get_or_insert(m.start_ns);
                self.push(Entry::Describe, out);
            }
            b'E' => {
                let statement = split_cstr(body).and_then(|(portal, _)| self.portal(portal));
                let start_ns = self.unit_start_ns.take().unwrap_or(m.start_ns);
                let mut op = Op::new(start_ns, m.end_ns, statement);
                op.partial |= m.damaged;
                self.push(Entry::Execute(Box::new(op)), out);
            }
            b'C' => {
                if let Some((&kind, rest)) = body.split_first()
                    && let Some((name, _)) = split_cstr(rest)
                {
                    match kind {
                        b'S' => {
                            self.statements.remove(name);
                        }
                        b'P' => self.portals.retain(|(n, _)| &**n != name),
                        _ => {}
                    }
                }
                self.push(Entry::Close, out);
            }
            b'S' => {
                self.unit_start_ns = None;
                self.push(Entry::Sync, out);
            }
            b'F' => {
                self.unit_start_ns = None;
                self.push(Entry::Function, out);
            }
            // CopyData, CopyDone, CopyFail: the COPY operation's request goes on.
            b'd' | b'c' | b'f' => {
                if let Some(Entry::Execute(op) | Entry::Query(op)) =
                    self.queue.iter_mut().rev().find(|e| e.is_op())
                {
                    op.request_end_ns = op.request_end_ns.max(m.end_ns);
                }
            }
            // Flush, password/SASL/GSS responses, Terminate.
            _ => {}
        }
    }

    fn untyped_request(&mut self, body: &[u8]) {
        let Some(code) = be_u32(body) else {
            return;
        };
        match code {
            SSL_REQUEST | GSSENC_REQUEST => {
                // The answer is a single byte; startup (untyped again) follows a refusal.
                self.negotiating = Some(if code == SSL_REQUEST { b'S' } else { b'G' });
                self.responses.expect_single_byte();
            }
            CANCEL_REQUEST => self.requests.set_untyped(false),
            _ if code >> 16 == 3 => {
                self.requests.set_untyped(false);
                self.namespace = startup_namespace(&body[4..]);
            }
            _ => self.requests.set_untyped(false),
        }
    }

    fn negotiation_answer(&mut self, byte: u8) {
        match self.negotiating.take() {
            Some(accepted) if byte == accepted => self.encrypted = true,
            _ => {}
        }
    }

    fn store_statement(&mut self, name: &[u8], statement: Arc<Statement>) {
        self.statement_seq += 1;
        if !self.statements.contains_key(name)
            && self.statements.len() >= MAX_STATEMENTS
            && let Some(oldest) = self
                .statements
                .iter()
                .min_by_key(|(_, (_, seq))| *seq)
                .map(|(name, _)| name.clone())
        {
            self.statements.remove(&oldest);
        }
        self.statements
            .insert(name.into(), (statement, self.statement_seq));
    }

    fn bind_portal(&mut self, name: &[u8], statement: Option<Arc<Statement>>) {
        self.portals.retain(|(n, _)| &**n != name);
        if self.portals.len() >= MAX_PORTALS {
            self.portals.pop_front();
        }
        self.portals.push_back((name.into(), statement));
    }

    fn portal(&self, name: &[u8]) -> Option<Arc<Statement>> {
        self.portals
            .iter()
            .find(|(n, _)| &**n == name)
            .and_then(|(_, s)| s.clone())
    }

    fn push(&mut self, entry: Entry, out: &mut Vec<Exchange>) {
        if self.queue.len() >= MAX_QUEUED_ENTRIES
            || (entry.is_op() && self.queued_ops >= MAX_QUEUED_OPS)
        {
            // Responses are not keeping up with what we see of requests (or are not seen at
            // all): report what is queued as unanswered and skip responses to the next
            // ReadyForQuery.
            self.finish_old(None, None, out);
            while let Some(entry) = self.pop_front() {
                if let Entry::Execute(op) | Entry::Query(op) = entry {
                    self.emit(*op, None, out);
                }
            }
            self.window_start_ns = None;
            self.queue.push_back(Entry::Hole);
        }
        if entry.is_op() {
            self.queued_ops += 1;
        }
        self.queue.push_back(entry);
    }

    fn pop_front(&mut self) -> Option<Entry> {
        let entry = self.queue.pop_front()?;
        if entry.is_op() {
            self.queued_ops -= 1;
        }
        self.old_entries = self.old_entries.saturating_sub(1);
        Some(entry)
    }

    // ---- backend messages ----

    fn response_message(&mut self, m: Message, body: &[u8], out: &mut Vec<Exchange>) {
        self.last_response_ns = Some(m.end_ns);
        self.last_response_tag = m.tag;
        if !self.queue.is_empty() {
            self.window_start_ns.get_or_insert(m.start_ns);
        }
        match m.tag {
            b'Z' => self.ready_for_query(m.end_ns, out),
            b'C' => self.completion(m.end_ns, Completion::Command(command_rows(body)), out),
            b'I' => self.completion(m.end_ns, Completion::Empty, out),
            b's' => self.completion(m.end_ns, Completion::Suspended, out),
            b'E' => self.error_response(m.end_ns, parse_error(body), out),
            b'D' => {
                if let Some(Entry::Execute(op) | Entry::Query(op)) = self.queue.front_mut() {
                    op.data_rows += 1;
                }
            }
            b'1' => self.acknowledge(|e| matches!(e, Entry::Parse { .. })),
            b'2' => self.acknowledge(|e| matches!(e, Entry::Bind { .. })),
            b'3' => self.acknowledge(|e| matches!(e, Entry::Close)),
            b'T' | b'n' => self.acknowledge(|e| matches!(e, Entry::Describe)),
            // ParameterDescription, copy responses, notices, notifications, parameter
            // status, authentication, key data, function results: nothing to pair.
            _ => {}
        }
    }

    fn acknowledge(&mut self, expected: impl Fn(&Entry) -> bool) {
        if self.queue.front().is_some_and(expected) {
            self.pop_front();
        }
    }

    /// A message that ends an Execute (or, inside a simple query, one of its statements).
    fn completion(&mut self, end_ns: u64, completion: Completion, out: &mut Vec<Exchange>) {
        loop {
            match self.queue.front_mut() {
                Some(Entry::Query(op)) => {
                    if let Completion::Command(rows) = completion {
                        op.add_tag_rows(rows);
                    }
                    return;
                }
                Some(Entry::Execute(_)) => {
                    if let Some(Entry::Execute(mut op)) = self.pop_front() {
                        match completion {
                            Completion::Command(rows) => op.add_tag_rows(rows),
                            Completion::Suspended => op.tag_rows = Some(op.data_rows),
                            Completion::Empty => {}
                        }
                        self.finish(*op, end_ns, out);
                    }
                    return;
                }
                // Their acknowledgements went missing; the Execute must be next.
                Some(Entry::Parse { .. } | Entry::Bind { .. } | Entry::Describe | Entry::Close) => {
                    self.pop_front();
                }
                _ => return,
            }
        }
    }

    fn error_response(&mut self, end_ns: u64, error: ErrorFields, out: &mut Vec<Exchange>) {
        match self.queue.front_mut() {
            Some(Entry::Query(op)) => {
                op.set_error(error);
                return;
            }
            // Asynchronous (e.g. FATAL on shutdown), a failed commit at Sync, or absorbed.
            None | Some(Entry::Sync | Entry::Function | Entry::Hole) => return,
            _ => {}
        }
        // Extended protocol: the message at the front failed.
        let execute = self
            .queue
            .iter()
            .take_while(|e| !e.is_closer())
            .position(|e| matches!(e, Entry::Execute(_)));
        match execute {
            Some(at) => {
                for _ in 0..at {
                    self.pop_front();
                }
                if let Some(Entry::Execute(mut op)) = self.pop_front() {
                    op.set_error(error);
                    self.finish(*op, end_ns, out);
                }
            }
            None => {
                if let Some(
                    Entry::Parse {
                        statement: Some(statement),
                        start_ns,
                        end_ns: request_end_ns,
                    }
                    | Entry::Bind {
                        statement: Some(statement),
                        start_ns,
                        end_ns: request_end_ns,
                    },
                ) = self.pop_front()
                {
                    let mut op = Op::new(start_ns, request_end_ns, Some(statement));
                    op.set_error(error);
                    self.finish(op, end_ns, out);
                }
            }
        }
        // The server skips everything up to the next Sync: those Executes never ran.
        while self.queue.front().is_some_and(|e| !e.is_closer()) {
            self.pop_front();
        }
    }

    fn ready_for_query(&mut self, end_ns: u64, out: &mut Vec<Exchange>) {
        let Some(at) = self.queue.iter().position(Entry::is_closer) else {
            self.window_start_ns = None;
            return;
        };
        for _ in 0..at {
            // An Execute that got no completion of its own: something went missing.
            if let Some(Entry::Execute(mut op)) = self.pop_front() {
                op.partial = true;
                self.finish(*op, end_ns, out);
            }
        }
        if let Some(Entry::Query(op)) = self.pop_front() {
            self.finish(*op, end_ns, out);
        }
        self.window_start_ns = None;
    }

    /// The op's response ended at `end_ns`; it began with the first response byte not yet
    /// attributed to an earlier op.
    fn finish(&mut self, op: Op, end_ns: u64, out: &mut Vec<Exchange>) {
        let start_ns = op
            .response_start_ns
            .or(self.window_start_ns.take())
            .unwrap_or(end_ns);
        self.emit(op, Some((start_ns, end_ns)), out);
    }

    fn emit(&self, op: Op, response: Option<(u64, u64)>, out: &mut Vec<Exchange>) {
        let response = response.map(|(start, end)| {
            let end = end.max(op.request_start_ns);
            (start.clamp(op.request_start_ns, end), end)
        });
        let statement = op.statement.as_deref();
        let counted = op.data_rows > 0 && !op.rows_lost;
        let rows = op.tag_rows.or(counted.then_some(op.data_rows));
        out.push(Exchange {
            request_start_ns: op.request_start_ns,
            request_end_ns: op.request_end_ns,
            response_start_ns: response.map(|(start, _)| start),
            response_end_ns: response.map(|(_, end)| end),
            detail: ExchangeDetail::Db(DbExchange {
                system: "postgresql",
                operation: statement.and_then(|s| s.operation.clone()),
                collection: statement.and_then(|s| s.collection.clone()),
                namespace: self.namespace.clone(),
                query_without_values: None,
                query_text: statement.map(|s| s.text.clone()),
                status_code: op.status_code,
                error_message: op.error_message,
                rows,
                partial: op.partial || statement.is_none_or(|s| s.damaged),
            }),
        });
    }

    // ---- capture loss ----

    fn framing_lost(&mut self, flow: Flow, out: &mut Vec<Exchange>) {
        match flow {
            Flow::Request => {
                // A Bind whose Execute and Sync were in the lost bytes (a big Bind and the rest
                // of its batch in one write) was almost certainly executed.
                if let Some(Entry::Bind {
                    statement,
                    start_ns,
                    ..
                }) = self.queue.back()
                {
                    let statement = statement.clone();
                    let start_ns = self.unit_start_ns.unwrap_or(*start_ns);
                    let mut op = Op::new(start_ns, self.requests.chunk_last_ns(), statement);
                    op.partial = true;
                    self.push(Entry::Execute(Box::new(op)), out);
                }
                self.unit_start_ns = None;
                if !matches!(self.queue.back(), Some(Entry::Hole)) {
                    self.push(Entry::Hole, out);
                }
            }
            Flow::Response => {
                let window = self.window_start_ns.take();
                if let Some(Entry::Execute(op) | Entry::Query(op)) =
                    self.queue.iter_mut().find(|e| e.is_op())
                {
                    op.response_start_ns = op.response_start_ns.or(window);
                }
                self.old_entries = self.queue.len();
                self.lost_last_ns = Some(self.responses.chunk_last_ns());
            }
        }
    }

    /// Finishes the entries that were queued when responses were lost, as partial, with the
    /// response ending at `end_ns`; the last op gets what `tail` says.
    fn finish_old(&mut self, end_ns: Option<u64>, tail: Option<Tail>, out: &mut Vec<Exchange>) {
        let mut held: Option<Box<Op>> = None;
        let mut count = self.old_entries;
        while count > 0 {
            count -= 1;
            let Some(entry) = self.pop_front() else {
                break;
            };
            if let Entry::Execute(op) | Entry::Query(op) = entry
                && let Some(previous) = held.replace(op)
            {
                self.emit_lost(*previous, end_ns, out);
            }
        }
        self.old_entries = 0;
        if let Some(mut op) = held {
            if let Some(tail) = tail {
                op.add_tag_rows(tail.rows);
                if let Some(error) = tail.error {
                    op.set_error(error);
                }
            }
            self.emit_lost(*op, end_ns, out);
        }
    }

    fn emit_lost(&mut self, mut op: Op, end_ns: Option<u64>, out: &mut Vec<Exchange>) {
        op.partial = true;
        op.rows_lost = true;
        let response = end_ns.map(|end| (op.response_start_ns.unwrap_or(end), end));
        self.emit(op, response, out);
    }

    /// Whether requests were queued since responses were lost: then the client (if it waits
    /// for answers, as most do) has received everything it was waiting for at the loss.
    fn client_moved_on(&self) -> bool {
        self.queue.len() > self.old_entries
    }

    /// The op whose answer was being read when responses were lost: its rows are uncertain.
    fn mark_front_op_damaged(&mut self) {
        if let Some(Entry::Execute(op) | Entry::Query(op)) =
            self.queue.iter_mut().find(|e| e.is_op())
        {
            op.partial = true;
            op.rows_lost = true;
        }
    }

    /// The response stream resumes at a message boundary at the start of a chunk.
    fn responses_resumed(&mut self, out: &mut Vec<Exchange>) {
        if self.old_entries == 0 || self.client_moved_on() {
            self.finish_old(self.lost_last_ns, None, out);
        } else {
            // Nothing was asked since: this continues the answers to what is queued.
            self.mark_front_op_damaged();
            self.old_entries = 0;
        }
    }

    /// The response framing is lost and this chunk does not start plausibly: if it ends with
    /// ReadyForQuery the stream is at a boundary after it.
    fn resync_at_ready(&mut self, data: &[u8], last_ns: u64, out: &mut Vec<Exchange>) -> bool {
        let Some((tail, before)) = ready_tail(data) else {
            return false;
        };
        self.responses.restart();
        if self.old_entries > 0 && !self.client_moved_on() {
            self.finish_old(Some(last_ns), Some(tail), out);
            return true;
        }
        // What was waiting at the loss is done; the tail ends the answer to what was asked
        // since, whose beginning was lost.
        self.finish_old(self.lost_last_ns, None, out);
        self.mark_front_op_damaged();
        let message = |tag, len| Message {
            tag,
            len,
            damaged: false,
            start_ns: last_ns,
            end_ns: last_ns,
        };
        if let Some((tag, body)) = before {
            let len = body.len() as u32;
            self.response_message(message(tag, len), body, out);
        }
        self.response_message(message(b'Z', 1), b"I", out);
        true
    }
}

#[derive(Clone, Copy, Debug)]
enum Completion {
    Command(Option<u64>),
    Empty,
    Suspended,
}

impl Session for PostgresSession {
    fn feed(&mut self, flow: Flow, chunk: Chunk<'_>, out: &mut Vec<Exchange>) {
        if self.encrypted {
            return;
        }
        if flow == Flow::Request && !self.started {
            self.started = true;
            // Typed messages begin with a letter; a zero byte is the startup packet's length.
            if chunk.data.first() == Some(&0) {
                self.requests.set_untyped(true);
            }
        }
        self.reader(flow)
            .begin_chunk(chunk.first_byte_ns, chunk.last_byte_ns);
        if self.reader(flow).is_lost() {
            if self.reader(flow).resync(chunk.data) {
                if flow == Flow::Response {
                    self.responses_resumed(out);
                }
            } else {
                // Even when a ReadyForQuery at its end resyncs the responses, what came before
                // it in this chunk went unread.
                self.reader(flow)
                    .skip_chunk(chunk.data.len(), chunk.missing as u64);
                if flow == Flow::Response {
                    if chunk.missing == 0
                        && self.resync_at_ready(chunk.data, chunk.last_byte_ns, out)
                    {
                        return;
                    }
                    self.lost_last_ns = Some(chunk.last_byte_ns);
                }
                return;
            }
        }
        // Lost requests were assumed to end with a Sync. When the server has gone idle (its
        // last message was ReadyForQuery) and the client has asked more since, that hole's
        // answers are all in: a hole still queued had no Sync in it.
        if flow == Flow::Response
            && self.responses.at_boundary()
            && matches!(self.last_response_tag, 0 | b'Z')
            && matches!(self.queue.front(), Some(Entry::Hole))
            && self.queue.len() > 1
        {
            self.pop_front();
        }
        let mut input = Input {
            data: chunk.data,
            gap: chunk.missing as u64,
        };
        self.pump(flow, &mut input, out);
    }

    fn close(&mut self, _at_ns: u64, out: &mut Vec<Exchange>) {
        if !self.encrypted {
            let end_ns = if self.responses.is_lost() {
                self.lost_last_ns
            } else {
                self.last_response_ns
            };
            self.finish_old(end_ns, None, out);
            // The op being answered when the connection ended keeps what was seen.
            let mut window = self.window_start_ns.take();
            while let Some(entry) = self.pop_front() {
                if let Entry::Execute(mut op) | Entry::Query(mut op) = entry {
                    let response = window.take().zip(end_ns);
                    op.partial |= response.is_some();
                    self.emit(*op, response, out);
                }
            }
        }
        *self = Self::new();
    }

    fn take_resync_skips(&mut self) -> u64 {
        self.requests.take_skips() + self.responses.take_skips()
    }
}

// ---- message bodies ----

fn be_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// The bytes before the first NUL (all of them if there is none: a kept prefix ends early).
fn until_nul(bytes: &[u8]) -> &[u8] {
    bytes
        .iter()
        .position(|&b| b == 0)
        .map_or(bytes, |end| &bytes[..end])
}

/// A NUL-terminated string and what follows it; `None` if the NUL is not in `bytes`.
fn split_cstr(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().position(|&b| b == 0)?;
    Some((&bytes[..end], &bytes[end + 1..]))
}

/// Lossily decoded, at most `max` bytes, cut at a character boundary.
fn bounded_text(raw: &[u8], max: usize) -> String {
    let mut end = raw.len().min(max);
    if end < raw.len() {
        // Do not split a UTF-8 sequence (at most three continuation bytes to back over).
        let mut back = 0;
        while back < 3 && end > 0 && raw[end] & 0xc0 == 0x80 {
            end -= 1;
            back += 1;
        }
    }
    let mut text = String::from_utf8_lossy(&raw[..end]).into_owned();
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// `database` from the startup parameters (PostgreSQL defaults it to `user`).
fn startup_namespace(params: &[u8]) -> Option<String> {
    let mut user = None;
    let mut rest = params;
    while let Some((key, after)) = split_cstr(rest) {
        if key.is_empty() {
            break;
        }
        let (value, after) = split_cstr(after).unwrap_or((until_nul(after), &[]));
        match key {
            b"database" if !value.is_empty() => return Some(bounded_text(value, MAX_NAMESPACE)),
            b"user" => user = Some(value),
            _ => {}
        }
        rest = after;
    }
    user.filter(|u| !u.is_empty())
        .map(|u| bounded_text(u, MAX_NAMESPACE))
}

/// The row count a CommandComplete tag carries (`SELECT 5`, `INSERT 0 1`, `UPDATE 3`, …).
fn command_rows(body: &[u8]) -> Option<u64> {
    let tag = std::str::from_utf8(until_nul(body)).ok()?;
    let mut words = tag.split(' ');
    let command = words.next()?;
    if !matches!(
        command,
        "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "MOVE" | "FETCH" | "COPY"
    ) {
        return None;
    }
    words.next_back()?.parse().ok()
}

/// The SQLSTATE (`C`) and message (`M`) fields of an ErrorResponse. Without a code the
/// severity stands in, so that an error is never reported as success.
fn parse_error(body: &[u8]) -> ErrorFields {
    let mut code = None;
    let mut severity = None;
    let mut message = None;
    let mut rest = body;
    while let Some((&field, after)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let (value, after) = split_cstr(after).unwrap_or((after, &[]));
        match field {
            b'C' => code = Some(bounded_text(value, 16)),
            b'V' => severity = Some(bounded_text(value, 16)),
            b'S' if severity.is_none() => severity = Some(bounded_text(value, 16)),
            b'M' => message = Some(bounded_text(value, MAX_ERROR_MESSAGE)),
            _ => {}
        }
        rest = after;
    }
    ErrorFields {
        code: code.or(severity).unwrap_or_else(|| "ERROR".to_owned()),
        message,
    }
}

/// A message's type and body.
type TailMessage<'a> = (u8, &'a [u8]);

/// If `data` ends with a ReadyForQuery: what came right before it (a CommandComplete or
/// ErrorResponse ending exactly there, if one can be found) as a [`Tail`] and as message.
fn ready_tail(data: &[u8]) -> Option<(Tail, Option<TailMessage<'_>>)> {
    let z = data.len().checked_sub(6)?;
    if data[z..z + 5] != *b"Z\0\0\0\x05" || !matches!(data[z + 5], b'I' | b'T' | b'E') {
        return None;
    }
    let lowest = z.saturating_sub(2048);
    for p in (lowest..z.saturating_sub(5)).rev() {
        let tag = data[p];
        if tag != b'C' && tag != b'E' {
            continue;
        }
        let Some(len) = be_u32(&data[p + 1..]) else {
            continue;
        };
        if p as u64 + 1 + u64::from(len) != z as u64
            || !reader::valid_length(Flow::Response, tag, len)
        {
            continue;
        }
        let body = &data[p + 5..z];
        let tail = match tag {
            b'C' if body.last() == Some(&0)
                && body[..body.len() - 1]
                    .iter()
                    .all(|b| b.is_ascii_graphic() || *b == b' ') =>
            {
                Tail {
                    rows: command_rows(body),
                    error: None,
                }
            }
            b'E' if body.ends_with(&[0, 0]) && body[0].is_ascii_alphabetic() => Tail {
                rows: None,
                error: Some(parse_error(body)),
            },
            _ => continue,
        };
        return Some((tail, Some((tag, body))));
    }
    Some((Tail::default(), None))
}

// ---- detection ----

fn detect_request(first: &[u8]) -> bool {
    let (Some(&tag), Some(len)) = (first.first(), first.get(1..).and_then(be_u32)) else {
        return false;
    };
    if tag == 0 {
        let (Some(len), Some(code)) = (be_u32(first), first.get(4..).and_then(be_u32)) else {
            return false;
        };
        return match code {
            SSL_REQUEST | GSSENC_REQUEST => len == 8,
            _ if code >> 16 == 3 && code & 0xffff < 16 => {
                (9..=MAX_STARTUP_LEN).contains(&len)
                    && startup_plausible(&first[8..first.len().min(len as usize)], len)
            }
            _ => false,
        };
    }
    // A connection that predates the agent: a simple query or a Parse.
    if !(6..=1 << 20).contains(&len) {
        return false;
    }
    let end = (1 + len as usize).min(first.len());
    let body = &first[5..end];
    let complete = (len as usize) < first.len();
    match tag {
        b'Q' => sql_plausible(body, complete),
        b'P' => {
            let Some((name, rest)) = split_cstr(body) else {
                return false;
            };
            name.len() <= 64 && name.iter().all(u8::is_ascii_graphic) && sql_plausible(rest, false)
        }
        _ => false,
    }
}

/// The startup parameters begin with a NUL-terminated lower-case name (`user`, `database`…)
/// and, where all of the packet was captured, end with two NULs.
fn startup_plausible(params: &[u8], len: u32) -> bool {
    let Some((key, _)) = split_cstr(params) else {
        return false;
    };
    let key_ok = (1..=64).contains(&key.len())
        && key
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'.');
    let whole = params.len() + 8 == len as usize;
    key_ok && (!whole || params.ends_with(&[0, 0]))
}

/// Printable text that starts (after blanks and comments) with an SQL command keyword and,
/// if `complete`, ends with its one NUL.
fn sql_plausible(text: &[u8], complete: bool) -> bool {
    let probe = &text[..text.len().min(512)];
    let nul = probe.iter().position(|&b| b == 0);
    let printable = &probe[..nul.unwrap_or(probe.len())];
    if !printable
        .iter()
        .all(|&b| b >= 0x20 || matches!(b, b'\t' | b'\n' | b'\r'))
        || printable.contains(&0x7f)
    {
        return false;
    }
    if complete && text.len() <= probe.len() && nul != text.len().checked_sub(1) {
        return false;
    }
    let mut rest = printable;
    loop {
        let trimmed = rest.trim_ascii_start();
        if let Some(after) = trimmed.strip_prefix(b"--") {
            let line_end = after.iter().position(|&b| b == b'\n');
            rest = line_end.map_or(&[][..], |e| &after[e..]);
        } else if let Some(after) = trimmed.strip_prefix(b"/*") {
            let Some(end) = after.windows(2).position(|w| w == b"*/") else {
                return false;
            };
            rest = &after[end + 2..];
        } else if let Some(after) = trimmed.strip_prefix(b"(") {
            rest = after;
        } else {
            rest = trimmed;
            break;
        }
    }
    let word_len = rest
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    let word = &rest[..word_len];
    COMMAND_KEYWORDS
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k.as_bytes()))
}

const COMMAND_KEYWORDS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "WITH",
    "VALUES",
    "TABLE",
    "MERGE",
    "BEGIN",
    "START",
    "COMMIT",
    "ROLLBACK",
    "END",
    "ABORT",
    "SAVEPOINT",
    "RELEASE",
    "SET",
    "SHOW",
    "RESET",
    "CREATE",
    "DROP",
    "ALTER",
    "TRUNCATE",
    "COPY",
    "CALL",
    "DO",
    "EXPLAIN",
    "ANALYZE",
    "VACUUM",
    "LISTEN",
    "UNLISTEN",
    "NOTIFY",
    "PREPARE",
    "EXECUTE",
    "DEALLOCATE",
    "DECLARE",
    "FETCH",
    "MOVE",
    "CLOSE",
    "LOCK",
    "GRANT",
    "REVOKE",
    "COMMENT",
    "DISCARD",
    "REFRESH",
    "REINDEX",
    "CLUSTER",
    "CHECKPOINT",
];

fn detect_response(first: &[u8]) -> bool {
    let (Some(&b'R'), Some(len), Some(code)) = (
        first.first(),
        first.get(1..).and_then(be_u32),
        first.get(5..).and_then(be_u32),
    ) else {
        return false;
    };
    match code {
        // Ok, Kerberos, cleartext, GSS, SSPI.
        0 | 2 | 3 | 7 | 9 => len == 8,
        // MD5 with its salt.
        5 => len == 12,
        // SASL: the mechanism names.
        10 => (12..=1024).contains(&len) && first.get(9..15).is_none_or(|m| m == b"SCRAM-"),
        _ => false,
    }
}

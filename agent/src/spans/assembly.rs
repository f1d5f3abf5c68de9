//! Trace assembly: which span is whose parent, so that one request is one trace.
//!
//! Ids are decided when a request *starts* (its head has been read or written), not when it
//! ends, so a span can be exported the moment it ends with its final trace id and parent:
//! parents always start before their children.
//!
//! - A server request continues an incoming `traceparent` when it carries one.
//! - Otherwise, when the client end of its connection is a traced process on this host, the
//!   server span is the child of that client span (matched by the mirrored 4-tuple; on a
//!   keep-alive connection, by order: the client request in flight on that connection).
//! - A client request made by a process while it serves a request is that server span's child:
//!   1. a request in flight on the same thread wins (thread-per-request servers: exact);
//!   2. else, if the process serves exactly one request right now, that one;
//!   3. else (worker pools: the request arrived on one thread, the call leaves from another)
//!      the thread's last attribution if that request is still in flight, else the request
//!      the process started most recently before the call. This is a heuristic: with many
//!      overlapping requests handed to a shared pool it can pick a sibling request.
//!
//!   With no server request in flight, the client span starts a trace of its own.

use std::collections::BTreeMap;

use agent_common::{ConnTuple, Role};
use foldhash::HashMap;
use serde::Serialize;

use super::{
    model::{SpanId, TraceId},
    trace_context::{new_span_id, new_trace_id, parse_traceparent},
};
use crate::process_counts::ProcessCounts;

/// Bound on requests in flight across all processes; past it the oldest are forgotten.
const MAX_IN_FLIGHT: usize = 65536;
/// A server request that started as a root this recently may still be claimed by its client:
/// the server's read can be reported a moment before the client's write returns.
const LATE_CALLER_WINDOW_NS: u64 = 50_000_000;
/// Requests in flight longer than this are forgotten (their spans, if they ever end, still
/// get the ids decided at their start).
const MAX_IN_FLIGHT_NS: u64 = 300 * 1_000_000_000;

/// The ids a span is exported with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// All zero for a root span.
    pub parent_span_id: SpanId,
    pub parent_is_remote: bool,
    pub trace_flags: u8,
    pub trace_state: Option<String>,
    /// The parent was a guess among several requests in flight (worker pools): a later
    /// wake-up may correct it (see `hold`).
    pub parent_guessed: bool,
}

/// Identifies one request: the process, its connection, and when its first byte was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestKey {
    pub tgid: u32,
    pub sock: u64,
    pub start_ns: u64,
}

/// A connection seen from one end: (local address, local port, remote address, remote port).
type Endpoints = ([u8; 16], u16, [u8; 16], u16);

struct InFlight {
    ctx: SpanContext,
    role: Role,
    tid: u32,
    /// Its key in `serving_conn` (server) or `calling` (client).
    ends: Endpoints,
}

/// Requests in flight on one connection, oldest first: one on a keep-alive connection, a few
/// when pipelined. An emptied list stays in its map, capacity and all, until the next sweep
/// ([`TraceAssembler::sweep_idle_connections`]): a keep-alive connection then costs no
/// allocation per request.
#[derive(Default)]
struct ConnRequests(Vec<(u64, RequestKey)>);

impl ConnRequests {
    fn insert(&mut self, start_ns: u64, key: RequestKey) {
        match self.0.binary_search_by_key(&start_ns, |(s, _)| *s) {
            Ok(i) => self.0[i].1 = key,
            Err(i) => self.0.insert(i, (start_ns, key)),
        }
    }

    fn remove(&mut self, start_ns: u64) {
        if let Ok(i) = self.0.binary_search_by_key(&start_ns, |(s, _)| *s) {
            self.0.remove(i);
        }
    }

    fn latest(&self) -> Option<&RequestKey> {
        self.0.last().map(|(_, k)| k)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct AssemblyStats {
    /// Server spans that continued an incoming traceparent.
    pub server_continued_traceparent: u64,
    /// Server spans linked to a traced client span on this host.
    pub server_linked_to_local_client: u64,
    /// Of those, linked after the fact because the server's read was reported first.
    pub server_linked_late: u64,
    /// Client spans given a parent: by thread, as the only request in flight, by heuristic.
    pub client_parent_same_thread: u64,
    pub client_parent_only_request: u64,
    pub client_parent_heuristic: u64,
    /// Spans that started a trace of their own.
    pub roots: u64,
    /// In-flight entries forgotten to bound memory.
    pub evicted: u64,
}

#[derive(Default)]
pub struct TraceAssembler {
    in_flight: HashMap<RequestKey, InFlight>,
    /// Server requests in flight per process, by start time.
    serving: HashMap<u32, BTreeMap<(u64, u64), RequestKey>>,
    /// Client requests in flight per connection, as the server end will see it (mirrored).
    calling: HashMap<Endpoints, ConnRequests>,
    /// Server requests in flight per connection, as the server sees it.
    serving_conn: HashMap<Endpoints, ConnRequests>,
    /// Which server request a thread's last call was attributed to.
    thread_affinity: HashMap<u32, RequestKey>,
    /// Requests in flight per process: most processes that exec or exit had none, and then
    /// nothing has to be searched.
    per_process: ProcessCounts,
    pub stats: AssemblyStats,
}

fn endpoints(t: &ConnTuple) -> Endpoints {
    (t.local_addr, t.local_port, t.remote_addr, t.remote_port)
}

fn mirrored(t: &ConnTuple) -> Endpoints {
    (t.remote_addr, t.remote_port, t.local_addr, t.local_port)
}

impl TraceAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// A request's head was seen: decide its ids now.
    pub fn on_request_start(
        &mut self,
        key: RequestKey,
        role: Role,
        tuple: &ConnTuple,
        tid: u32,
        traceparent: Option<&str>,
        tracestate: Option<&str>,
    ) {
        if self.in_flight.contains_key(&key) {
            return;
        }
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.evict_oldest_share();
        }
        if self.serving_conn.len() + self.calling.len() >= 2 * MAX_IN_FLIGHT {
            // Many short connections between sweeps: their emptied lists go now.
            self.sweep_idle_connections();
        }
        let ctx = match role {
            Role::Server => self.server_context(tuple, traceparent, tracestate),
            _ => self.client_context(key, tid),
        };
        match role {
            Role::Server => {
                self.serving
                    .entry(key.tgid)
                    .or_default()
                    .insert((key.start_ns, key.sock), key);
                self.serving_conn
                    .entry(endpoints(tuple))
                    .or_default()
                    .insert(key.start_ns, key);
            }
            _ => {
                self.calling
                    .entry(mirrored(tuple))
                    .or_default()
                    .insert(key.start_ns, key);
            }
        }
        let ends = if role == Role::Server {
            endpoints(tuple)
        } else {
            self.claim_early_server(tuple, key.start_ns, &ctx);
            mirrored(tuple)
        };
        self.per_process.add(key.tgid);
        self.in_flight.insert(
            key,
            InFlight {
                ctx,
                role,
                tid,
                ends,
            },
        );
    }

    /// The server end of this client's connection may already have reported the request (its
    /// read returned before the client's write did): if it made itself a root moments ago,
    /// make it this call's child, and move what it already started into this trace.
    fn claim_early_server(
        &mut self,
        client_tuple: &ConnTuple,
        start_ns: u64,
        caller: &SpanContext,
    ) {
        let Some(latest) = self
            .serving_conn
            .get(&mirrored(client_tuple))
            .and_then(ConnRequests::latest)
            .copied()
        else {
            return;
        };
        let Some(server) = self.in_flight.get_mut(&latest) else {
            return;
        };
        let fresh_root = server.ctx.parent_span_id == [0; 8]
            && !server.ctx.parent_is_remote
            && latest.start_ns.abs_diff(start_ns) <= LATE_CALLER_WINDOW_NS;
        if !fresh_root {
            return;
        }
        let orphan_trace = server.ctx.trace_id;
        server.ctx.parent_span_id = caller.span_id;
        for entry in self.in_flight.values_mut() {
            if entry.ctx.trace_id == orphan_trace {
                entry.ctx.trace_id = caller.trace_id;
            }
        }
        self.stats.roots = self.stats.roots.saturating_sub(1);
        self.stats.server_linked_to_local_client += 1;
        self.stats.server_linked_late += 1;
    }

    /// A request ended (its exchange is complete): its ids, decided at its start — or now, for
    /// protocols that do not report starts (databases).
    pub fn on_request_end(
        &mut self,
        key: RequestKey,
        role: Role,
        tuple: &ConnTuple,
        tid: u32,
    ) -> SpanContext {
        match self.in_flight.remove(&key) {
            Some(entry) => {
                self.unindex(key, entry.role, entry.ends);
                entry.ctx
            }
            None => match role {
                Role::Server => self.server_context(tuple, None, None),
                _ => self.client_context(key, tid),
            },
        }
    }

    /// Forget requests in flight for too long (their process died, or never answered).
    pub fn evict_stale(&mut self, now_ns: u64) {
        let stale: Vec<RequestKey> = self
            .in_flight
            .keys()
            .filter(|k| now_ns.saturating_sub(k.start_ns) > MAX_IN_FLIGHT_NS)
            .copied()
            .collect();
        for key in stale {
            self.forget(key);
        }
        self.thread_affinity
            .retain(|_, key| self.in_flight.contains_key(key));
        self.sweep_idle_connections();
    }

    /// Drop the per-connection lists left empty (see [`ConnRequests`]).
    fn sweep_idle_connections(&mut self) {
        self.serving_conn.retain(|_, m| !m.is_empty());
        self.calling.retain(|_, m| !m.is_empty());
    }

    /// The process is gone: forget what it had in flight.
    pub fn on_process_exit(&mut self, tgid: u32) {
        if !self.per_process.has(tgid) {
            return;
        }
        let keys: Vec<RequestKey> = self
            .in_flight
            .keys()
            .filter(|k| k.tgid == tgid)
            .copied()
            .collect();
        for key in keys {
            self.forget(key);
        }
    }

    fn forget(&mut self, key: RequestKey) {
        if let Some(entry) = self.in_flight.remove(&key) {
            self.stats.evicted += 1;
            self.unindex(key, entry.role, entry.ends);
        }
    }

    /// The table is full: forget the oldest sixteenth in one pass, so that a flood of requests
    /// that never end costs one scan per few thousand requests, not one per request.
    fn evict_oldest_share(&mut self) {
        let mut keys: Vec<RequestKey> = self.in_flight.keys().copied().collect();
        let n = (keys.len() / 16).max(1);
        if n < keys.len() {
            keys.select_nth_unstable_by_key(n, |k| k.start_ns);
        }
        for key in keys.into_iter().take(n) {
            self.forget(key);
        }
    }

    fn unindex(&mut self, key: RequestKey, role: Role, ends: Endpoints) {
        self.per_process.remove(key.tgid);
        match role {
            Role::Server => {
                if let Some(m) = self.serving.get_mut(&key.tgid) {
                    m.remove(&(key.start_ns, key.sock));
                    if m.is_empty() {
                        self.serving.remove(&key.tgid);
                    }
                }
                if let Some(m) = self.serving_conn.get_mut(&ends) {
                    m.remove(key.start_ns);
                }
            }
            _ => {
                if let Some(m) = self.calling.get_mut(&ends) {
                    m.remove(key.start_ns);
                }
            }
        }
    }

    fn server_context(
        &mut self,
        tuple: &ConnTuple,
        traceparent: Option<&str>,
        tracestate: Option<&str>,
    ) -> SpanContext {
        if let Some(tp) = traceparent.and_then(parse_traceparent) {
            self.stats.server_continued_traceparent += 1;
            return SpanContext {
                trace_id: tp.trace_id,
                span_id: new_span_id(),
                parent_span_id: tp.parent_id,
                parent_is_remote: true,
                trace_flags: tp.flags,
                trace_state: tracestate.map(str::to_owned),
                parent_guessed: false,
            };
        }
        // The traced client on the other end of this very connection: its request in flight
        // there is the one this server is reading (the latest one, on keep-alive).
        let caller = self
            .calling
            .get(&endpoints(tuple))
            .and_then(ConnRequests::latest)
            .and_then(|k| self.in_flight.get(k));
        if let Some(caller) = caller {
            self.stats.server_linked_to_local_client += 1;
            return SpanContext {
                trace_id: caller.ctx.trace_id,
                span_id: new_span_id(),
                parent_span_id: caller.ctx.span_id,
                parent_is_remote: false,
                trace_flags: caller.ctx.trace_flags,
                trace_state: caller.ctx.trace_state.clone(),
                parent_guessed: false,
            };
        }
        self.root()
    }

    fn client_context(&mut self, key: RequestKey, tid: u32) -> SpanContext {
        let Some((parent_key, guessed)) = self.parent_for_call(key, tid) else {
            return self.root();
        };
        self.thread_affinity.insert(tid, parent_key);
        let parent = &self.in_flight[&parent_key].ctx;
        SpanContext {
            trace_id: parent.trace_id,
            span_id: new_span_id(),
            parent_span_id: parent.span_id,
            parent_is_remote: false,
            trace_flags: parent.trace_flags,
            trace_state: parent.trace_state.clone(),
            parent_guessed: guessed,
        }
    }

    /// The request in flight on this thread of this process, if any (the latest).
    pub fn serving_on_thread(&self, tgid: u32, tid: u32) -> Option<SpanContext> {
        self.serving
            .get(&tgid)?
            .values()
            .rev()
            .filter_map(|k| self.in_flight.get(k))
            .find(|e| e.tid == tid)
            .map(|e| e.ctx.clone())
    }

    /// The server request (of the same process) a call made at `key.start_ns` by thread `tid`
    /// belongs to.
    fn parent_for_call(&mut self, key: RequestKey, tid: u32) -> Option<(RequestKey, bool)> {
        let serving = self.serving.get(&key.tgid)?;
        let candidates: Vec<RequestKey> = serving
            .range(..=(key.start_ns, u64::MAX))
            .map(|(_, k)| *k)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        if let Some(same_thread) = candidates
            .iter()
            .rev()
            .find(|k| self.in_flight.get(k).is_some_and(|e| e.tid == tid))
        {
            self.stats.client_parent_same_thread += 1;
            return Some((*same_thread, false));
        }
        if candidates.len() == 1 {
            self.stats.client_parent_only_request += 1;
            return Some((candidates[0], false));
        }
        self.stats.client_parent_heuristic += 1;
        if let Some(previous) = self.thread_affinity.get(&tid)
            && candidates.contains(previous)
        {
            return Some((*previous, true));
        }
        candidates.last().map(|k| (*k, true))
    }

    fn root(&mut self) -> SpanContext {
        self.stats.roots += 1;
        SpanContext {
            trace_id: new_trace_id(),
            span_id: new_span_id(),
            parent_span_id: [0; 8],
            parent_is_remote: false,
            trace_flags: 1,
            trace_state: None,
            parent_guessed: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(local_port: u16, remote_port: u16) -> ConnTuple {
        let mut t = ConnTuple::UNKNOWN;
        t.family = agent_common::AF_INET;
        t.local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        t.remote_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        t.local_port = local_port;
        t.remote_port = remote_port;
        t
    }

    fn key(tgid: u32, sock: u64, start_ns: u64) -> RequestKey {
        RequestKey {
            tgid,
            sock,
            start_ns,
        }
    }

    #[test]
    fn chain_across_processes_is_one_trace() {
        let mut a = TraceAssembler::new();
        // gateway (pid 1) serves an outside request on thread 10...
        let inbound = tuple(8000, 40000);
        a.on_request_start(key(1, 100, 1_000), Role::Server, &inbound, 10, None, None);
        // ...and calls the user service (pid 2) from the same thread.
        let out = tuple(50000, 9000);
        a.on_request_start(key(1, 101, 2_000), Role::Client, &out, 10, None, None);
        // user service reads that request on its end of the connection.
        let user_in = tuple(9000, 50000);
        a.on_request_start(key(2, 200, 2_100), Role::Server, &user_in, 20, None, None);

        let user = a.on_request_end(key(2, 200, 2_100), Role::Server, &user_in, 20);
        let call = a.on_request_end(key(1, 101, 2_000), Role::Client, &out, 10);
        let root = a.on_request_end(key(1, 100, 1_000), Role::Server, &inbound, 10);

        assert_eq!(root.parent_span_id, [0; 8]);
        assert_eq!(call.trace_id, root.trace_id);
        assert_eq!(call.parent_span_id, root.span_id);
        assert_eq!(user.trace_id, root.trace_id);
        assert_eq!(user.parent_span_id, call.span_id);
        assert_eq!(a.in_flight(), 0);
        assert_eq!(a.stats.server_linked_to_local_client, 1);
        assert_eq!(a.stats.client_parent_same_thread, 1);
    }

    #[test]
    fn server_reported_before_its_client_is_claimed() {
        let mut a = TraceAssembler::new();
        let inbound = tuple(8000, 40000);
        a.on_request_start(key(1, 100, 1_000), Role::Server, &inbound, 10, None, None);
        // The user service's read is reported before the gateway's write.
        let user_in = tuple(9000, 50000);
        a.on_request_start(key(2, 200, 2_100), Role::Server, &user_in, 20, None, None);
        let out = tuple(50000, 9000);
        a.on_request_start(key(1, 101, 2_000), Role::Client, &out, 10, None, None);
        let user = a.on_request_end(key(2, 200, 2_100), Role::Server, &user_in, 20);
        let call = a.on_request_end(key(1, 101, 2_000), Role::Client, &out, 10);
        let root = a.on_request_end(key(1, 100, 1_000), Role::Server, &inbound, 10);
        assert_eq!(user.parent_span_id, call.span_id);
        assert_eq!(user.trace_id, root.trace_id);
        assert_eq!(a.stats.server_linked_late, 1);
    }

    #[test]
    fn traceparent_wins_and_database_calls_find_their_request_at_end() {
        let mut a = TraceAssembler::new();
        let inbound = tuple(8000, 40000);
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        a.on_request_start(
            key(1, 100, 1_000),
            Role::Server,
            &inbound,
            10,
            Some(tp),
            None,
        );
        // A database call reports no start: its parent is decided when it ends.
        let db = a.on_request_end(key(1, 300, 1_500), Role::Client, &tuple(50001, 5432), 10);
        let server = a.on_request_end(key(1, 100, 1_000), Role::Server, &inbound, 10);
        assert_eq!(hex(&server.trace_id), "0af7651916cd43dd8448eb211c80319c");
        assert!(server.parent_is_remote);
        assert_eq!(db.trace_id, server.trace_id);
        assert_eq!(db.parent_span_id, server.span_id);
    }

    #[test]
    fn worker_thread_calls_attach_to_the_only_request_or_the_latest() {
        let mut a = TraceAssembler::new();
        a.on_request_start(
            key(1, 100, 1_000),
            Role::Server,
            &tuple(8000, 40000),
            10,
            None,
            None,
        );
        // A pool thread (11) calls out while one request is served.
        let c1 = a.on_request_end(key(1, 101, 1_200), Role::Client, &tuple(50000, 9000), 11);
        // A second request arrives; the same pool thread calls again: sticks to its request.
        a.on_request_start(
            key(1, 102, 1_300),
            Role::Server,
            &tuple(8000, 40001),
            12,
            None,
            None,
        );
        let c2 = a.on_request_end(key(1, 103, 1_400), Role::Client, &tuple(50002, 9000), 11);
        let first = a.on_request_end(key(1, 100, 1_000), Role::Server, &tuple(8000, 40000), 10);
        assert_eq!(c1.parent_span_id, first.span_id);
        assert_eq!(c2.parent_span_id, first.span_id);
        assert_eq!(a.stats.client_parent_only_request, 1);
        assert_eq!(a.stats.client_parent_heuristic, 1);
    }

    #[test]
    fn memory_is_bounded() {
        let mut a = TraceAssembler::new();
        for i in 0..(MAX_IN_FLIGHT as u64 + 10) {
            a.on_request_start(key(1, i, i), Role::Server, &tuple(8000, 1), 1, None, None);
        }
        // Full once: the oldest sixteenth went in one pass.
        let share = MAX_IN_FLIGHT / 16;
        assert_eq!(a.stats.evicted, share as u64);
        assert_eq!(a.in_flight(), MAX_IN_FLIGHT + 10 - share);
        let oldest_left = a.in_flight.keys().map(|k| k.start_ns).min();
        assert_eq!(oldest_left, Some(share as u64));
        a.evict_stale(u64::MAX);
        assert_eq!(a.in_flight(), 0);
        assert!(a.per_process.is_empty());
    }

    #[test]
    fn process_exit_forgets_only_that_process() {
        let mut a = TraceAssembler::new();
        a.on_request_start(key(1, 10, 1), Role::Server, &tuple(8000, 1), 1, None, None);
        a.on_request_start(key(2, 20, 2), Role::Server, &tuple(8000, 2), 2, None, None);
        a.on_process_exit(3);
        assert_eq!(a.in_flight(), 2);
        a.on_process_exit(1);
        assert_eq!(a.in_flight(), 1);
        assert_eq!(a.per_process.count(2), 1);
        assert!(!a.per_process.has(1));
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}

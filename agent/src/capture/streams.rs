//! Per-connection byte streams: kernel data events are routed to the connection they belong
//! to, its protocol is detected from the first bytes, and its decoder is fed in order.

use std::collections::hash_map::Entry;

use agent_common::{ConnTuple, Direction, Role};
use foldhash::HashMap;
use serde::Serialize;

use super::{events::DataEvent, procnet, self_traffic::SelfTraffic};
use crate::process_counts::ProcessCounts;
use crate::protocols::{
    self, Chunk, Exchange, Flow, PrefixNeed, Protocol, RequestStarted, Session,
};

/// How many chunks may go by without a recognised protocol before a connection is ignored.
const DETECTION_CHUNKS: u8 = 4;
/// Connections idle for this long are closed (their decoder flushed) to bound memory.
const IDLE_TIMEOUT_NS: u64 = 300 * 1_000_000_000;

/// What a span needs to know about the connection an exchange travelled on.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionMeta {
    pub tgid: u32,
    /// The kernel socket: with `tgid`, identifies the connection.
    pub sock: u64,
    pub fd: i32,
    pub role: Role,
    pub tuple: ConnTuple,
    pub protocol: &'static str,
    /// The bytes are TLS plaintext (from the OpenSSL probes).
    pub tls: bool,
}

enum DecodeState {
    Detecting {
        chunks_seen: u8,
    },
    Decoding(Box<dyn Session>),
    /// Not a protocol we decode (or encrypted), or the agent's own export traffic: ignored
    /// until it closes.
    Unsupported,
}

struct Connection {
    meta: ConnectionMeta,
    state: DecodeState,
    last_seen_ns: u64,
    /// The response prefix last asked of the kernel (`None`: the configured one).
    response_prefix: Option<PrefixNeed>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct StreamStats {
    pub connections_open: usize,
    pub connections_seen: u64,
    pub connections_unsupported: u64,
    pub connections_dropped_table_full: u64,
    /// Connections whose other end is the agent itself (a local collector receiving exports).
    pub connections_agent_own: u64,
    /// Data records read from the kernel; at exit, at least the kernel's `data_events`.
    pub data_events_read: u64,
    pub exchanges: u64,
    /// Stretches of bytes a decoder skipped after losing the framing (see
    /// `Session::take_resync_skips`): requests inside them got no span.
    pub resync_skips: u64,
}

pub struct Connections {
    self_traffic: SelfTraffic,
    /// Keyed by process, socket and whether the stream is TLS plaintext: the ciphertext of a
    /// TLS connection (its handshake) and its plaintext are separate streams.
    table: HashMap<(u32, u64, bool), Connection>,
    /// Connections per process: most processes that exit had none, and then nothing has to be
    /// searched.
    per_process: ProcessCounts,
    max_connections: usize,
    stats: StreamStats,
    /// Reused for every chunk, so that decoding allocates only what it outputs.
    scratch: Scratch,
    /// Capture prefixes decoders changed their minds about, for the kernel's socket table.
    capture_changes: Vec<CaptureChange>,
}

/// How much the kernel should copy of the syscalls moving one way on a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureChange {
    pub sock: u64,
    pub direction: Direction,
    /// `None`: the configured prefix.
    pub need: Option<PrefixNeed>,
}

#[derive(Default)]
struct Scratch {
    exchanges: Vec<Exchange>,
    started: Vec<RequestStarted>,
}

/// What decoding a chunk produced, in order. `tid` is the thread whose syscall produced it.
#[derive(Debug)]
// Both variants are frequent and live only briefly in a reused Vec: boxing the larger one
// would cost an allocation per exchange for nothing.
#[allow(clippy::large_enum_variant)]
pub enum StreamOutput {
    /// A request's head was read (server) or written (client).
    Started {
        meta: ConnectionMeta,
        tid: u32,
        started: RequestStarted,
    },
    /// A request met its response (or the connection's end).
    Finished {
        meta: ConnectionMeta,
        tid: u32,
        exchange: Exchange,
    },
}

pub type Finished = StreamOutput;

impl Connections {
    pub fn new(max_connections: usize, self_traffic: SelfTraffic) -> Self {
        Self {
            self_traffic,
            table: HashMap::default(),
            per_process: ProcessCounts::default(),
            max_connections,
            stats: StreamStats::default(),
            scratch: Scratch::default(),
            capture_changes: Vec::new(),
        }
    }

    /// Changes to capture prefixes since the last call (see `Session::response_prefix_needed`).
    pub fn take_capture_changes(&mut self) -> std::vec::Drain<'_, CaptureChange> {
        self.capture_changes.drain(..)
    }

    pub fn stats(&self) -> StreamStats {
        StreamStats {
            connections_open: self.table.len(),
            ..self.stats.clone()
        }
    }

    pub fn on_data(&mut self, ev: &DataEvent<'_>, out: &mut Vec<Finished>) {
        self.stats.data_events_read += 1;
        let full = self.table.len() >= self.max_connections;
        let conn = match self.table.entry((ev.tgid, ev.sock, ev.tls)) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(_) if full => {
                self.stats.connections_dropped_table_full += 1;
                return;
            }
            Entry::Vacant(slot) => {
                self.stats.connections_seen += 1;
                let mut conn = Connection::new(ev);
                if self.self_traffic.is_agent_peer(&conn.meta.tuple) {
                    self.stats.connections_agent_own += 1;
                    conn.state = DecodeState::Unsupported;
                }
                self.per_process.add(ev.tgid);
                slot.insert(conn)
            }
        };
        conn.last_seen_ns = ev.exit_ns;
        let before = out.len();
        if conn.feed(ev, &mut self.scratch, out) {
            self.stats.connections_unsupported += 1;
        }
        if let Some(change) = conn.capture_change() {
            self.capture_changes.push(change);
        }
        self.stats.resync_skips += conn.take_resync_skips();
        self.stats.exchanges += out[before..]
            .iter()
            .filter(|o| matches!(o, StreamOutput::Finished { .. }))
            .count() as u64;
    }

    pub fn on_close(&mut self, tgid: u32, sock: u64, at_ns: u64, out: &mut Vec<Finished>) {
        for tls in [false, true] {
            self.end(&(tgid, sock, tls), at_ns, out);
        }
    }

    /// The process is gone: every one of its connections ends.
    pub fn on_process_exit(&mut self, tgid: u32, at_ns: u64, out: &mut Vec<Finished>) {
        if !self.per_process.has(tgid) {
            return;
        }
        let keys: Vec<_> = self
            .table
            .keys()
            .filter(|(t, _, _)| *t == tgid)
            .copied()
            .collect();
        for key in keys {
            self.end(&key, at_ns, out);
        }
    }

    /// Re-read the agent's own sockets (periodically, so that a new export connection is known
    /// before its peer's first bytes arrive).
    pub fn refresh_own_sockets(&mut self) {
        self.self_traffic.refresh();
    }

    /// Close connections idle since long before `now_ns`.
    pub fn evict_idle(&mut self, now_ns: u64, out: &mut Vec<Finished>) {
        let stale: Vec<_> = self
            .table
            .iter()
            .filter(|(_, c)| now_ns.saturating_sub(c.last_seen_ns) > IDLE_TIMEOUT_NS)
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            self.end(&key, now_ns, out);
        }
    }

    /// The connection ends: forget it and flush its decoder.
    fn end(&mut self, key: &(u32, u64, bool), at_ns: u64, out: &mut Vec<Finished>) {
        let Some(mut conn) = self.table.remove(key) else {
            return;
        };
        self.per_process.remove(key.0);
        // Asked before the close, which may reset the decoder.
        self.stats.resync_skips += conn.take_resync_skips();
        self.stats.exchanges += conn.finish(at_ns, &mut self.scratch.exchanges, out) as u64;
    }

    /// The agent is stopping: flush every decoder.
    pub fn close_all(&mut self, now_ns: u64, out: &mut Vec<Finished>) {
        self.per_process.clear();
        for (_, mut conn) in self.table.drain() {
            self.stats.resync_skips += conn.take_resync_skips();
            self.stats.exchanges += conn.finish(now_ns, &mut self.scratch.exchanges, out) as u64;
        }
    }
}

impl Connection {
    fn new(ev: &DataEvent<'_>) -> Self {
        let (tuple, role) = if ev.tuple.family != 0 {
            (ev.tuple, ev.role)
        } else {
            // The kernel never saw the handshake (the connection predates the agent): ask
            // /proc for the addresses and guess the role from the listening ports.
            match procnet::resolve(ev.tgid, ev.fd) {
                Some(t) => (t, Role::from_u8(t.role)),
                None => (ev.tuple, ev.role),
            }
        };
        Self {
            meta: ConnectionMeta {
                tgid: ev.tgid,
                sock: ev.sock,
                fd: ev.fd,
                role,
                tuple,
                protocol: "",
                tls: ev.tls,
            },
            state: DecodeState::Detecting { chunks_seen: 0 },
            last_seen_ns: ev.exit_ns,
            response_prefix: None,
        }
    }

    /// The decoder now wants a different prefix of its responses than last asked.
    fn capture_change(&mut self) -> Option<CaptureChange> {
        let DecodeState::Decoding(session) = &self.state else {
            return None;
        };
        let wanted = session.response_prefix_needed();
        if wanted == self.response_prefix {
            return None;
        }
        let direction = [Direction::Ingress, Direction::Egress]
            .into_iter()
            .find(|&d| flow_of(self.meta.role, d) == Some(Flow::Response))?;
        self.response_prefix = wanted;
        Some(CaptureChange {
            sock: self.meta.sock,
            direction,
            need: wanted,
        })
    }

    /// Feed one event; returns true when the connection was just found undecodable (it stays
    /// in the table so its later chunks are ignored cheaply).
    fn feed(&mut self, ev: &DataEvent<'_>, scratch: &mut Scratch, out: &mut Vec<Finished>) -> bool {
        if let DecodeState::Detecting { chunks_seen } = &mut self.state {
            if ev.payload.is_empty() {
                return false;
            }
            *chunks_seen += 1;
            match detect(self.meta.role, ev.direction, ev.payload) {
                Some((protocol, role)) => {
                    self.meta.role = role;
                    self.meta.protocol = protocol.name();
                    self.state = DecodeState::Decoding(protocol.new_session());
                }
                None if *chunks_seen >= DETECTION_CHUNKS => {
                    self.state = DecodeState::Unsupported;
                    return true;
                }
                None => return false,
            }
        }
        let DecodeState::Decoding(session) = &mut self.state else {
            return false;
        };
        let Some(flow) = flow_of(self.meta.role, ev.direction) else {
            return false;
        };
        let chunk = Chunk {
            data: ev.payload,
            missing: (ev.total_len as usize).saturating_sub(ev.payload.len()),
            first_byte_ns: match ev.direction {
                Direction::Ingress => ev.exit_ns,
                Direction::Egress => ev.enter_ns,
            },
            last_byte_ns: ev.exit_ns,
        };
        session.feed(flow, chunk, &mut scratch.exchanges);
        session.take_started(&mut scratch.started);
        let (meta, tid) = (self.meta, ev.tid);
        out.extend(
            scratch
                .started
                .drain(..)
                .map(|started| StreamOutput::Started { meta, tid, started }),
        );
        out.extend(
            scratch
                .exchanges
                .drain(..)
                .map(|exchange| StreamOutput::Finished {
                    meta,
                    tid,
                    exchange,
                }),
        );
        false
    }

    fn take_resync_skips(&mut self) -> u64 {
        match &mut self.state {
            DecodeState::Decoding(session) => session.take_resync_skips(),
            _ => 0,
        }
    }

    /// Flush the decoder; returns how many exchanges it produced.
    fn finish(
        &mut self,
        at_ns: u64,
        exchanges: &mut Vec<Exchange>,
        out: &mut Vec<Finished>,
    ) -> usize {
        let DecodeState::Decoding(session) = &mut self.state else {
            return 0;
        };
        session.close(at_ns, exchanges);
        let n = exchanges.len();
        let meta = self.meta;
        out.extend(exchanges.drain(..).map(|exchange| StreamOutput::Finished {
            meta,
            tid: 0,
            exchange,
        }));
        n
    }
}

/// Which protocol flow the process's bytes belong to, given its role.
fn flow_of(role: Role, direction: Direction) -> Option<Flow> {
    match (role, direction) {
        (Role::Server, Direction::Ingress) | (Role::Client, Direction::Egress) => {
            Some(Flow::Request)
        }
        (Role::Server, Direction::Egress) | (Role::Client, Direction::Ingress) => {
            Some(Flow::Response)
        }
        (Role::Unknown, _) => None,
    }
}

/// Detect the protocol from a connection's first bytes. The payload also settles the role when
/// the kernel could not tell it: whoever receives a request is the server.
fn detect(
    role: Role,
    direction: Direction,
    payload: &[u8],
) -> Option<(&'static dyn Protocol, Role)> {
    if let Some(flow) = flow_of(role, direction)
        && let Some(p) = protocols::detect(flow, payload)
    {
        return Some((p, role));
    }
    if let Some(p) = protocols::detect(Flow::Request, payload) {
        let role = match direction {
            Direction::Ingress => Role::Server,
            Direction::Egress => Role::Client,
        };
        return Some((p, role));
    }
    None
}

#[cfg(test)]
mod tests {
    use agent_common::AF_INET;

    use super::*;

    fn event(role: Role, direction: Direction, payload: &[u8], total_len: usize) -> DataEvent<'_> {
        DataEvent {
            tgid: 4242,
            tid: 4242,
            fd: 7,
            sock: 0xabc0,
            direction,
            enter_ns: 1,
            exit_ns: 2,
            total_len: total_len as u32,
            tuple: ConnTuple {
                family: AF_INET,
                local_port: 8080,
                remote_port: 50000,
                role: role as u8,
                _pad: 0,
                local_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                remote_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            },
            role,
            tls: false,
            payload,
        }
    }

    #[test]
    fn a_narrowed_response_prefix_is_asked_once_for_the_response_direction() {
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 4000\r\n\r\nbody";
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for (role, asks, answers) in [
            (Role::Server, Direction::Ingress, Direction::Egress),
            (Role::Client, Direction::Egress, Direction::Ingress),
        ] {
            let mut connections = Connections::new(16, SelfTraffic::default());
            let mut out = Vec::new();
            let mut changes = Vec::new();
            for _ in 0..6 {
                connections.on_data(&event(role, asks, request, request.len()), &mut out);
                connections.on_data(
                    &event(role, answers, response, response.len() + 3996),
                    &mut out,
                );
                changes.extend(connections.take_capture_changes());
            }
            let narrowed = CaptureChange {
                sock: 0xabc0,
                direction: answers,
                need: Some(PrefixNeed {
                    bytes: 512,
                    whole_buffers: response.len() as u16 - 4,
                }),
            };
            assert_eq!(changes, [narrowed], "{role:?}");
            connections.on_data(&event(role, asks, request, request.len()), &mut out);
            connections.on_data(&event(role, answers, chunked, chunked.len()), &mut out);
            let restored: Vec<_> = connections.take_capture_changes().collect();
            assert_eq!(
                restored,
                [CaptureChange {
                    need: None,
                    ..narrowed
                }],
                "{role:?}"
            );
            assert_eq!(
                out.iter()
                    .filter(|o| matches!(o, StreamOutput::Finished { .. }))
                    .count(),
                7
            );
        }
    }
}

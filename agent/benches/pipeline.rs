//! The agent's own CPU per span, without a kernel or a network: ring records as the kernel
//! writes them for nginx serving a 4 KiB page to wrk, through decoding, the HTTP/1 decoder and
//! span building (`capture`), then OTLP encoding (`encode`), on one thread. As in the kernel,
//! a connection's first response is copied up to the capture prefix and the later ones only as
//! far as their head, once the decoder has narrowed the copy.
//!
//! Spans are built and encoded a batch at a time, so memory is reused as in the agent (holding
//! all of them first put the kernel's page zeroing into the numbers).
//!
//! `cargo bench -p periscope --bench pipeline`. On a loaded host the agent's CPU per span swings
//! by a quarter from run to run; this replay repeats to within a few percent, so it shows what a
//! change to either stage is worth. It is a diagnostic: throughput targets are measured by
//! `cargo xtask bench` against real programs.

use std::time::{Duration, Instant};

use agent_common::{AF_INET, ConnTuple, DataEventHeader, Direction, EventKind, Role};
use periscope::capture::events::{KernelEvent, decode};
use periscope::capture::self_traffic::SelfTraffic;
use periscope::capture::streams::{Connections, Finished, StreamOutput};
use periscope::export::otlp::encode::{RequestEncoder, group_by_resource};
use periscope::spans::model::SpanRecord;
use periscope::spans::{SpanFactory, SpanOptions};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONNECTIONS: u32 = 32;
const EXCHANGES: usize = 100_000;
/// The agent's default capture prefix.
const CAPTURED: usize = 2048;
const BODY: usize = 4096;
const EXPORT_BATCH: usize = 512;
const ROUNDS: usize = 7;

const REQUEST: &[u8] = b"GET /static.html HTTP/1.1\r\nHost: 127.0.0.1:18080\r\n\r\n";
const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\
Date: Tue, 24 Nov 2026 08:00:00 GMT\r\nContent-Type: text/html\r\nContent-Length: 4096\r\n\
Last-Modified: Mon, 23 Nov 2026 10:00:00 GMT\r\nConnection: keep-alive\r\n\
ETag: \"6560a1b0-1000\"\r\nAccept-Ranges: bytes\r\n\r\n";

fn main() {
    let records = nginx_records();
    let mut capture = Vec::new();
    let mut export = Vec::new();
    let mut bytes_per_span = 0;
    for _ in 0..ROUNDS {
        let round = replay(&records);
        assert_eq!(round.spans, EXCHANGES, "every exchange became a span");
        assert!(round.bytes > EXCHANGES * 100, "spans were encoded");
        bytes_per_span = round.bytes / EXCHANGES;
        capture.push(round.capture.as_nanos() as f64 / EXCHANGES as f64);
        export.push(round.export.as_nanos() as f64 / EXCHANGES as f64);
    }
    let (capture, export) = (median(capture), median(export));
    println!(
        "pipeline: {EXCHANGES} nginx exchanges (4 KiB page, response heads captured), median of \
         {ROUNDS} rounds\n  capture (decode, HTTP/1, span building) {capture:.0} ns/span\n  \
         encode (OTLP protobuf, batches of {EXPORT_BATCH}) {export:.0} ns/span, \
         {bytes_per_span} bytes/span\n  total \
         {:.0} ns/span",
        capture + export
    );
}

/// One pass over the records.
struct Round {
    spans: usize,
    bytes: usize,
    capture: Duration,
    export: Duration,
}

/// The records through both stages, a batch at a time, each stage timed on its own. As in the
/// agent, a batch is encoded and dropped before the next is built, so memory is reused rather
/// than fresh pages faulted in.
fn replay(records: &[Vec<u8>]) -> Round {
    let mut capture = Capture::new();
    let mut encoder = RequestEncoder::default();
    let mut out = Vec::new();
    let mut round = Round {
        spans: 0,
        bytes: 0,
        capture: Duration::ZERO,
        export: Duration::ZERO,
    };
    let mut spans = Vec::with_capacity(EXPORT_BATCH + 256);
    for chunk in records.chunks(EXPORT_BATCH * 2) {
        let started = Instant::now();
        capture.records(chunk, &mut spans);
        round.capture += started.elapsed();
        round.spans += spans.len();
        let started = Instant::now();
        let groups = group_by_resource(std::mem::take(&mut spans));
        encoder.encode(&groups, &mut out);
        drop(groups);
        round.export += started.elapsed();
        round.bytes += out.len();
        spans = Vec::with_capacity(EXPORT_BATCH + 256);
    }
    round
}

/// Records of a keep-alive load spread over a few connections: each request read, then its
/// response written, as one `recv` and one `writev` each.
fn nginx_records() -> Vec<Vec<u8>> {
    let tgid = std::process::id();
    let mut response = RESPONSE_HEAD.to_vec();
    response.resize(RESPONSE_HEAD.len() + BODY, b'x');
    let mut records = Vec::with_capacity(EXCHANGES * 2);
    let mut now = 1_000_000_000u64;
    for i in 0..EXCHANGES {
        let conn = i as u32 % CONNECTIONS;
        let tuple = ConnTuple {
            family: AF_INET,
            local_port: 18080,
            remote_port: 40000 + conn as u16,
            role: Role::Server as u8,
            _pad: 0,
            local_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        let narrowed = i >= CONNECTIONS as usize;
        for (direction, bytes, captured) in [
            (Direction::Ingress, REQUEST, REQUEST.len()),
            (
                Direction::Egress,
                &response[..],
                if narrowed {
                    RESPONSE_HEAD.len()
                } else {
                    CAPTURED
                },
            ),
        ] {
            now += 10_000;
            records.push(record(tgid, conn, tuple, direction, now, bytes, captured));
        }
    }
    records
}

fn record(
    tgid: u32,
    conn: u32,
    tuple: ConnTuple,
    direction: Direction,
    at_ns: u64,
    bytes: &[u8],
    captured: usize,
) -> Vec<u8> {
    let captured = captured.min(bytes.len());
    let header = DataEventHeader {
        kind: EventKind::Data as u8,
        direction: direction as u8,
        syscall: 0,
        flags: 0,
        fd: 10 + conn as i32,
        pid_tgid: (u64::from(tgid) << 32) | u64::from(tgid),
        sock: 0xffff_8880_0000_0000 + u64::from(conn) * 0x1000,
        enter_ns: at_ns,
        exit_ns: at_ns,
        total_len: bytes.len() as u32,
        captured_len: captured as u32,
        tuple,
    };
    // SAFETY: a `#[repr(C)]` record without implicit padding, viewed as its bytes, exactly as
    // the kernel writes it into the ring.
    let head = unsafe {
        std::slice::from_raw_parts(
            (&raw const header).cast::<u8>(),
            size_of::<DataEventHeader>(),
        )
    };
    let mut out = head.to_vec();
    out.extend_from_slice(&bytes[..captured]);
    out
}

/// What the capture thread does with the records: `run::run` and `run::submit`, minus the
/// hold (spans have no children to wait for here).
struct Capture {
    connections: Connections,
    factory: SpanFactory,
    finished: Vec<Finished>,
}

impl Capture {
    fn new() -> Capture {
        Capture {
            connections: Connections::new(1024, SelfTraffic::default()),
            factory: SpanFactory::new(SpanOptions::default()),
            finished: Vec::new(),
        }
    }

    fn records(&mut self, records: &[Vec<u8>], spans: &mut Vec<SpanRecord>) {
        for bytes in records {
            if let Some(KernelEvent::Data(ev)) = decode(bytes) {
                self.factory.note_process(ev.tgid);
                self.connections.on_data(&ev, &mut self.finished);
            }
            if self.finished.len() >= 256 {
                self.submit(spans);
            }
        }
        self.submit(spans);
    }

    fn submit(&mut self, spans: &mut Vec<SpanRecord>) {
        for output in self.finished.drain(..) {
            match output {
                StreamOutput::Started { meta, tid, started } => {
                    self.factory.on_request_start(&meta, tid, &started)
                }
                StreamOutput::Finished {
                    meta,
                    tid,
                    exchange,
                } => spans.extend(
                    self.factory
                        .build(&meta, tid, exchange)
                        .map(|(span, _)| span),
                ),
            }
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

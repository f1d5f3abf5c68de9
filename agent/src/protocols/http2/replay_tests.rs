//! Replays recorded HTTP/2 and gRPC conversations from `protocols/testdata/h2_*.conv` and
//! `grpc_*.conv` and compares the exchanges with the golden `*.expected` file beside each.
//! `PERISCOPE_BLESS=1` rewrites the goldens (review the diff before committing it).
//!
//! Conversation format (that of the other protocols' recordings), one syscall per line:
//! `> FIRST_NS LAST_NS [+MISSING] DATA` (client to server) or `< …` (server to client), where
//! DATA is the captured bytes with `\r`, `\n`, `\t`, `\\` and `\xHH` escapes and `+MISSING`
//! counts the bytes moved but not captured; `close AT_NS` ends the connection; `#` comments.
//!
//! Each lossless conversation is also replayed cut into one-byte syscalls, which must decode
//! the same.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::*;

fn testdata_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/protocols/testdata")
}

fn unescape(text: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b != b'\\' {
            bytes.push(b);
            continue;
        }
        let (&code, tail) = rest.split_first().expect("escape at end of line");
        rest = tail;
        match code {
            b'r' => bytes.push(b'\r'),
            b'n' => bytes.push(b'\n'),
            b't' => bytes.push(b'\t'),
            b'\\' => bytes.push(b'\\'),
            b'x' => {
                let hex = std::str::from_utf8(&rest[..2]).expect("hex escape");
                bytes.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                rest = &rest[2..];
            }
            other => panic!("unknown escape \\{}", char::from(other)),
        }
    }
    bytes
}

enum Line {
    Chunk {
        flow: Flow,
        data: Vec<u8>,
        missing: usize,
        first_byte_ns: u64,
        last_byte_ns: u64,
    },
    Close(u64),
}

fn parse(script: &str) -> Vec<Line> {
    let mut lines = Vec::new();
    for (number, line) in script.lines().enumerate() {
        let context = || format!("line {}: {line}", number + 1);
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(at) = line.strip_prefix("close ") {
            let at = at
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{}", context()));
            lines.push(Line::Close(at));
            continue;
        }
        let mut fields = line.splitn(4, ' ');
        let flow = match fields.next() {
            Some(">") => Flow::Request,
            Some("<") => Flow::Response,
            _ => panic!("bad direction, {}", context()),
        };
        let mut number_field = || -> u64 {
            let field = fields.next().unwrap_or_default();
            field
                .parse()
                .unwrap_or_else(|_| panic!("bad number {field:?}, {}", context()))
        };
        let (first_byte_ns, last_byte_ns) = (number_field(), number_field());
        let rest = fields.next().unwrap_or_default();
        let (missing, data) = match rest.strip_prefix('+') {
            Some(counted) => {
                let (count, data) = counted.split_once(' ').unwrap_or((counted, ""));
                let count = count
                    .parse()
                    .unwrap_or_else(|_| panic!("bad missing, {}", context()));
                (count, data)
            }
            None => (0, rest),
        };
        lines.push(Line::Chunk {
            flow,
            data: unescape(data),
            missing,
            first_byte_ns,
            last_byte_ns,
        });
    }
    lines
}

/// Replays `lines`; the first chunk must be detected as HTTP/2.
fn replay(lines: &[Line]) -> (Vec<Exchange>, Vec<RequestStarted>) {
    let mut session: Option<Box<dyn Session>> = None;
    let mut out = Vec::new();
    let mut started = Vec::new();
    for line in lines {
        match line {
            Line::Close(at) => {
                if let Some(session) = &mut session {
                    Session::close(&mut **session, *at, &mut out);
                }
            }
            Line::Chunk {
                flow,
                data,
                missing,
                first_byte_ns,
                last_byte_ns,
            } => {
                let session = session.get_or_insert_with(|| {
                    assert!(
                        super::super::detect(*flow, data).is_some_and(|p| p.name() == "http2"),
                        "first chunk not detected as HTTP/2"
                    );
                    Http2.new_session()
                });
                let chunk = Chunk {
                    data,
                    missing: *missing,
                    first_byte_ns: *first_byte_ns,
                    last_byte_ns: *last_byte_ns,
                };
                session.feed(*flow, chunk, &mut out);
                session.take_started(&mut started);
            }
        }
    }
    (out, started)
}

fn render(exchanges: &[Exchange], started: &[RequestStarted]) -> String {
    fn opt<T: std::fmt::Debug>(value: &Option<T>) -> String {
        value
            .as_ref()
            .map_or_else(|| "-".to_owned(), |v| format!("{v:?}"))
    }
    let mut text = String::new();
    for (i, exchange) in exchanges.iter().enumerate() {
        let ExchangeDetail::Http(h) = &exchange.detail else {
            panic!("not an HTTP exchange")
        };
        let response = match (exchange.response_start_ns, exchange.response_end_ns) {
            (Some(start), Some(end)) => format!("{start}..{end}"),
            _ => "-".to_owned(),
        };
        let was_started = started
            .iter()
            .any(|s| s.request_start_ns == exchange.request_start_ns);
        let _ = writeln!(
            text,
            "#{} request {}..{} response {response}{}",
            i + 1,
            exchange.request_start_ns,
            exchange.request_end_ns,
            if was_started {
                ""
            } else {
                " (never reported started)"
            }
        );
        let _ = writeln!(
            text,
            "  {} {:?} HTTP/{} -> {}",
            h.method,
            h.target,
            h.version,
            opt(&h.status)
        );
        let _ = writeln!(text, "  host: {}", opt(&h.host));
        let _ = writeln!(text, "  user_agent: {}", opt(&h.user_agent));
        let _ = writeln!(text, "  traceparent: {}", opt(&h.traceparent));
        let _ = writeln!(text, "  tracestate: {}", opt(&h.tracestate));
        let _ = writeln!(text, "  content_type: {}", opt(&h.content_type));
        let _ = writeln!(
            text,
            "  grpc: status {} message {}",
            opt(&h.grpc_status),
            opt(&h.grpc_message)
        );
        let _ = writeln!(
            text,
            "  body: request {}, response {}",
            opt(&h.request_body_len),
            opt(&h.response_body_len)
        );
        let _ = writeln!(text, "  reset: {} partial: {}", opt(&h.reset), h.partial);
    }
    text
}

fn split_bytewise(lines: &[Line]) -> Vec<Line> {
    let mut out = Vec::new();
    let mut flows_seen = Vec::new();
    for line in lines {
        match line {
            Line::Close(at) => out.push(Line::Close(*at)),
            Line::Chunk {
                flow,
                data,
                first_byte_ns,
                last_byte_ns,
                ..
            } => {
                // A flow's first chunk is kept whole: on a connection joined late it is where
                // frames are recognised.
                let first = if flows_seen.contains(flow) {
                    1
                } else {
                    flows_seen.push(*flow);
                    data.len()
                };
                let (head, tail) = data.split_at(first.min(data.len()));
                out.push(Line::Chunk {
                    flow: *flow,
                    data: head.to_vec(),
                    missing: 0,
                    first_byte_ns: *first_byte_ns,
                    last_byte_ns: *last_byte_ns,
                });
                for &b in tail {
                    out.push(Line::Chunk {
                        flow: *flow,
                        data: vec![b],
                        missing: 0,
                        first_byte_ns: *first_byte_ns,
                        last_byte_ns: *last_byte_ns,
                    });
                }
            }
        }
    }
    out
}

#[test]
fn recorded_conversations_match_golden_results() {
    let dir = testdata_dir();
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "conv")
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("h2_") || n.starts_with("grpc_"))
        })
        .collect();
    scripts.sort();
    assert!(
        scripts.len() >= 4,
        "HTTP/2 conversations missing in {}",
        dir.display()
    );

    let bless = std::env::var_os("PERISCOPE_BLESS").is_some();
    let mut mismatches = Vec::new();
    for script in &scripts {
        let lines = parse(&std::fs::read_to_string(script).expect("read conversation"));
        let (exchanges, started) = replay(&lines);
        let got = render(&exchanges, &started);
        let golden = script.with_extension("expected");
        if bless {
            std::fs::write(&golden, &got).expect("write golden");
        } else {
            let expected = std::fs::read_to_string(&golden).unwrap_or_default();
            if got != expected {
                mismatches.push(format!(
                    "{}:\n--- expected\n{expected}--- got\n{got}",
                    script.display()
                ));
            }
        }
        let lossless = lines
            .iter()
            .all(|l| !matches!(l, Line::Chunk { missing, .. } if *missing > 0));
        if lossless {
            let details = |e: &[Exchange]| e.iter().map(|x| x.detail.clone()).collect::<Vec<_>>();
            let bytewise = replay(&split_bytewise(&lines)).0;
            if details(&exchanges) != details(&bytewise) {
                mismatches.push(format!(
                    "{}: byte-wise replay differs:\n{:#?}\n{:#?}",
                    script.display(),
                    details(&exchanges),
                    details(&bytewise)
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

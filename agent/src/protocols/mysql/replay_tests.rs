//! Replays recorded MySQL/MariaDB conversations from `protocols/testdata/mysql_*.conv` and
//! compares the exchanges with the golden `*.expected` file beside each. `PERISCOPE_BLESS=1`
//! rewrites the goldens (review the diff before committing it). The Redis replay test uses
//! the same machinery.
//!
//! Conversation format, one syscall per line (the format of the HTTP/1 conversations, in
//! files of another extension so that each protocol replays only its own):
//! `> FIRST_NS LAST_NS [+MISSING] DATA` (client to server) or `< …` (server to client), where
//! DATA is the captured bytes with `\r`, `\n`, `\t`, `\\` and `\xHH` escapes and `+MISSING`
//! counts the bytes moved but not captured; `close AT_NS` ends the connection; `#` comments.

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

/// One line of a conversation.
pub(crate) enum Line {
    Chunk {
        flow: Flow,
        data: Vec<u8>,
        missing: usize,
        first_byte_ns: u64,
        last_byte_ns: u64,
    },
    Close(u64),
}

pub(crate) fn parse(script: &str) -> Vec<Line> {
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

pub(crate) fn replay(protocol: &dyn Protocol, lines: &[Line]) -> Vec<Exchange> {
    let mut session = protocol.new_session();
    let mut out = Vec::new();
    for line in lines {
        match line {
            Line::Close(at) => session.close(*at, &mut out),
            Line::Chunk {
                flow,
                data,
                missing,
                first_byte_ns,
                last_byte_ns,
            } => {
                let chunk = Chunk {
                    data,
                    missing: *missing,
                    first_byte_ns: *first_byte_ns,
                    last_byte_ns: *last_byte_ns,
                };
                session.feed(*flow, chunk, &mut out);
            }
        }
    }
    out
}

pub(crate) fn render(exchanges: &[Exchange]) -> String {
    fn opt<T: std::fmt::Debug>(value: &Option<T>) -> String {
        value
            .as_ref()
            .map_or_else(|| "-".to_owned(), |v| format!("{v:?}"))
    }
    let mut text = String::new();
    for (i, exchange) in exchanges.iter().enumerate() {
        let ExchangeDetail::Db(db) = &exchange.detail else {
            panic!("not a database exchange: {exchange:?}");
        };
        let response = match (exchange.response_start_ns, exchange.response_end_ns) {
            (Some(start), Some(end)) => format!("{start}..{end}"),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            text,
            "#{} request {}..{} response {response}",
            i + 1,
            exchange.request_start_ns,
            exchange.request_end_ns
        );
        let _ = writeln!(
            text,
            "  {} {} {} ns={}",
            db.system,
            opt(&db.operation),
            opt(&db.collection),
            opt(&db.namespace)
        );
        let _ = writeln!(text, "  query: {}", opt(&db.query_text));
        let _ = writeln!(
            text,
            "  status: {} {}",
            opt(&db.status_code),
            opt(&db.error_message)
        );
        let _ = writeln!(text, "  rows: {} partial: {}", opt(&db.rows), db.partial);
    }
    text
}

/// Replays every `{prefix}*.conv` with `protocol` and compares with the goldens.
pub(crate) fn check_conversations(prefix: &str, protocol: &dyn Protocol, at_least: usize) {
    let dir = testdata_dir();
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "conv")
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    scripts.sort();
    assert!(
        scripts.len() >= at_least,
        "{prefix} conversations missing in {}",
        dir.display()
    );

    let bless = std::env::var_os("PERISCOPE_BLESS").is_some();
    let mut mismatches = Vec::new();
    for script in &scripts {
        let lines = parse(&std::fs::read_to_string(script).expect("read conversation"));
        // Every registered detector agrees on the conversation's first chunk.
        if let Some(Line::Chunk { flow, data, .. }) = lines.first() {
            let detected = crate::protocols::detect(*flow, data).map(|p| p.name());
            if detected != Some(protocol.name()) {
                mismatches.push(format!("{}: detected as {detected:?}", script.display()));
            }
        }
        let got = render(&replay(protocol, &lines));
        let golden = script.with_extension("expected");
        if bless {
            std::fs::write(&golden, &got).expect("write golden");
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if got != expected {
            mismatches.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{got}",
                script.display()
            ));
        }
        // The same bytes cut into one-byte syscalls (timing aside) decode the same, as long
        // as nothing was lost to uncaptured bytes.
        let lossless = lines
            .iter()
            .all(|l| !matches!(l, Line::Chunk { missing, .. } if *missing > 0));
        if lossless {
            let bytewise = split_bytewise(&lines);
            let details = |e: &[Exchange]| e.iter().map(|x| x.detail.clone()).collect::<Vec<_>>();
            let a = details(&replay(protocol, &lines));
            let b = details(&replay(protocol, &bytewise));
            if a != b {
                mismatches.push(format!(
                    "{}: byte-wise replay differs:\n{a:#?}\n{b:#?}",
                    script.display()
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

fn split_bytewise(lines: &[Line]) -> Vec<Line> {
    let mut out = Vec::new();
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
                for &b in data {
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
fn recorded_mysql_conversations_match_golden_results() {
    check_conversations("mysql_", &Mysql, 5);
}

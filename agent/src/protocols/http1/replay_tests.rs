//! Replays recorded conversations from `protocols/testdata/*.txt` and compares the exchanges
//! with the golden `*.expected` file beside each. `PERISCOPE_BLESS=1` rewrites the goldens
//! (review the diff before committing it).
//!
//! Conversation format, one syscall per line:
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

fn replay(script: &str) -> Vec<Exchange> {
    let mut session = Http1.new_session();
    let mut out = Vec::new();
    for (number, line) in script.lines().enumerate() {
        let context = || format!("line {}: {line}", number + 1);
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(at) = line.strip_prefix("close ") {
            session.close(
                at.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{}", context())),
                &mut out,
            );
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
                (
                    count
                        .parse()
                        .unwrap_or_else(|_| panic!("bad missing, {}", context())),
                    data,
                )
            }
            None => (0, rest),
        };
        let data = unescape(data);
        let chunk = Chunk {
            data: &data,
            missing,
            first_byte_ns,
            last_byte_ns,
        };
        session.feed(flow, chunk, &mut out);
    }
    out
}

fn render(exchanges: &[Exchange]) -> String {
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
        let _ = writeln!(
            text,
            "#{} request {}..{} response {response}",
            i + 1,
            exchange.request_start_ns,
            exchange.request_end_ns
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
        let _ = writeln!(
            text,
            "  body: request {}, response {}",
            opt(&h.request_body_len),
            opt(&h.response_body_len)
        );
        let _ = writeln!(text, "  partial: {}", h.partial);
    }
    text
}

#[test]
fn recorded_conversations_match_golden_results() {
    let dir = testdata_dir();
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    scripts.sort();
    assert!(
        scripts.len() >= 3,
        "conversations missing in {}",
        dir.display()
    );

    let bless = std::env::var_os("PERISCOPE_BLESS").is_some();
    let mut mismatches = Vec::new();
    for script in &scripts {
        let got = render(&replay(
            &std::fs::read_to_string(script).expect("read conversation"),
        ));
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
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

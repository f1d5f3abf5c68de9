//! Test support shared by every protocol's tests: scripted conversations fed to a session
//! (`Step`, `run`), accessors for exchange details, and the replay of recorded conversations
//! from `protocols/testdata/` against the golden `*.expected` file beside each.
//! `PERISCOPE_BLESS=1` rewrites the goldens (review the diff before committing it).
//!
//! Conversation format, one syscall per line:
//! `> FIRST_NS LAST_NS [+MISSING] DATA` (client to server) or `< …` (server to client), where
//! DATA is the captured bytes with `\r`, `\n`, `\t`, `\\` and `\xHH` escapes and `+MISSING`
//! counts the bytes moved but not captured; `close AT_NS` ends the connection; `#` comments.
//! HTTP/1 conversations are `*.txt`, the others `*.conv` named after their protocol, so that
//! each protocol replays only its own.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{
    Chunk, DbExchange, Exchange, ExchangeDetail, Flow, HttpExchange, Protocol, RequestStarted,
    Session,
};

// ---- scripted conversations ----

/// One syscall's worth of bytes in a test conversation.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub flow: Flow,
    pub data: Vec<u8>,
    pub missing: usize,
}

pub(crate) fn req(data: impl AsRef<[u8]>) -> Step {
    Step {
        flow: Flow::Request,
        data: data.as_ref().to_vec(),
        missing: 0,
    }
}

pub(crate) fn resp(data: impl AsRef<[u8]>) -> Step {
    Step {
        flow: Flow::Response,
        data: data.as_ref().to_vec(),
        missing: 0,
    }
}

pub(crate) fn with_gap(mut step: Step, missing: usize) -> Step {
    step.missing = missing;
    step
}

/// Step `k` happens in [1000(k+1), 1000(k+1) + 500]; the connection closes after the last.
pub(crate) fn step_times(k: usize) -> (u64, u64) {
    let base = 1000 * (k as u64 + 1);
    (base, base + 500)
}

/// A chunk of `data`, captured whole, between `first_byte_ns` and `last_byte_ns`.
pub(crate) fn chunk(data: &[u8], first_byte_ns: u64, last_byte_ns: u64) -> Chunk<'_> {
    Chunk {
        data,
        missing: 0,
        first_byte_ns,
        last_byte_ns,
    }
}

/// What a replay produced.
pub(crate) struct Replayed {
    pub exchanges: Vec<Exchange>,
    pub started: Vec<RequestStarted>,
    /// Stretches skipped after losing the framing (`Session::take_resync_skips`).
    pub skips: u64,
}

/// Feeds `steps` to a new session of `protocol` (timed by [`step_times`]) and closes it.
pub(crate) fn replay_steps(protocol: &dyn Protocol, steps: &[Step]) -> Replayed {
    let mut session = protocol.new_session();
    let mut out = Vec::new();
    let mut started = Vec::new();
    let mut skips = 0;
    for (k, step) in steps.iter().enumerate() {
        let (first_byte_ns, last_byte_ns) = step_times(k);
        let chunk = Chunk {
            data: &step.data,
            missing: step.missing,
            first_byte_ns,
            last_byte_ns,
        };
        session.feed(step.flow, chunk, &mut out);
        session.take_started(&mut started);
        skips += session.take_resync_skips();
    }
    session.close(step_times(steps.len()).0, &mut out);
    Replayed {
        exchanges: out,
        started,
        skips: skips + session.take_resync_skips(),
    }
}

/// [`replay_steps`]: the exchanges and the requests reported started.
pub(crate) fn run_with_started(
    protocol: &dyn Protocol,
    steps: &[Step],
) -> (Vec<Exchange>, Vec<RequestStarted>) {
    let replayed = replay_steps(protocol, steps);
    (replayed.exchanges, replayed.started)
}

/// Stretches a session of `protocol` skipped over `steps`.
pub(crate) fn skips(protocol: &dyn Protocol, steps: &[Step]) -> u64 {
    replay_steps(protocol, steps).skips
}

/// [`run_with_started`] without the started requests.
pub(crate) fn run(protocol: &dyn Protocol, steps: &[Step]) -> Vec<Exchange> {
    run_with_started(protocol, steps).0
}

/// `steps` with every byte its own step (gaps dropped).
pub(crate) fn bytewise(steps: &[Step]) -> Vec<Step> {
    steps
        .iter()
        .flat_map(|s| {
            s.data.iter().map(|&b| Step {
                flow: s.flow,
                data: vec![b],
                missing: 0,
            })
        })
        .collect()
}

/// Splits step `index` into pieces at `cuts`, keeping the other steps whole; its gap, if
/// any, follows the last piece.
pub(crate) fn split_step(steps: &[Step], index: usize, cuts: &[usize]) -> Vec<Step> {
    let mut result = steps[..index].to_vec();
    let step = &steps[index];
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&step.data.len())) {
        result.push(Step {
            flow: step.flow,
            data: step.data[from..cut].to_vec(),
            missing: 0,
        });
        from = cut;
    }
    if let Some(last) = result.last_mut() {
        last.missing = step.missing;
    }
    result.extend_from_slice(&steps[index + 1..]);
    result
}

/// Asserts that `run` decodes `steps` to the same details when they come one byte per
/// chunk and when any one step is cut in two anywhere; returns the details.
pub(crate) fn assert_splits_decode_the_same(
    steps: &[Step],
    run: impl Fn(&[Step]) -> Vec<Exchange>,
) -> Vec<ExchangeDetail> {
    let whole = details(&run(steps));
    assert_eq!(details(&run(&bytewise(steps))), whole, "one byte per chunk");
    for (index, step) in steps.iter().enumerate() {
        for cut in 1..step.data.len() {
            let got = details(&run(&split_step(steps, index, &[cut])));
            assert_eq!(got, whole, "step {index} cut at {cut}");
        }
    }
    whole
}

/// The details of `exchanges`, timing aside.
pub(crate) fn details(exchanges: &[Exchange]) -> Vec<ExchangeDetail> {
    exchanges.iter().map(|e| e.detail.clone()).collect()
}

pub(crate) fn http(exchange: &Exchange) -> &HttpExchange {
    let ExchangeDetail::Http(http) = &exchange.detail else {
        panic!("not an HTTP exchange")
    };
    http
}

pub(crate) fn db(exchange: &Exchange) -> &DbExchange {
    match &exchange.detail {
        ExchangeDetail::Db(db) => db,
        other => panic!("not a database exchange: {other:?}"),
    }
}

/// (method, target, status) of every HTTP exchange.
pub(crate) fn http_summary(exchanges: &[Exchange]) -> Vec<(String, String, Option<u16>)> {
    exchanges
        .iter()
        .map(http)
        .map(|h| (h.method.to_string(), h.target.clone(), h.status))
        .collect()
}

pub(crate) fn triple(
    method: &str,
    target: &str,
    status: Option<u16>,
) -> (String, String, Option<u16>) {
    (method.to_owned(), target.to_owned(), status)
}

// ---- recorded conversations ----

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

/// Feeds `lines` to `session`; returns the exchanges and the requests reported started.
pub(crate) fn replay_into(
    session: &mut dyn Session,
    lines: &[Line],
) -> (Vec<Exchange>, Vec<RequestStarted>) {
    let mut out = Vec::new();
    let mut started = Vec::new();
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
                session.take_started(&mut started);
            }
        }
    }
    (out, started)
}

/// Replays `lines` with a new session of `protocol`.
pub(crate) fn replay(protocol: &dyn Protocol, lines: &[Line]) -> Vec<Exchange> {
    replay_into(&mut *protocol.new_session(), lines).0
}

/// The same conversation cut into one-byte syscalls (timing aside), except, when
/// `keep_first_whole`, each flow's first chunk (where a connection joined late is recognised).
pub(crate) fn split_bytewise(lines: &[Line], keep_first_whole: bool) -> Vec<Line> {
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
                let first = if !keep_first_whole || flows_seen.contains(flow) {
                    1
                } else {
                    flows_seen.push(*flow);
                    data.len()
                };
                let (head, tail) = data.split_at(first.min(data.len()));
                // A flow's whole first chunk stays one syscall even when empty.
                let pieces = (keep_first_whole || !head.is_empty())
                    .then_some(head)
                    .into_iter()
                    .chain(tail.chunks(1));
                for piece in pieces {
                    out.push(Line::Chunk {
                        flow: *flow,
                        data: piece.to_vec(),
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

/// When nothing in `lines` was lost to uncaptured bytes, replays them cut by
/// [`split_bytewise`] and reports how the decoded details differ, if they do.
pub(crate) fn bytewise_difference(
    lines: &[Line],
    keep_first_whole: bool,
    replay: impl Fn(&[Line]) -> Vec<Exchange>,
) -> Option<String> {
    let lossless = lines
        .iter()
        .all(|l| !matches!(l, Line::Chunk { missing, .. } if *missing > 0));
    if !lossless {
        return None;
    }
    let a = details(&replay(lines));
    let b = details(&replay(&split_bytewise(lines, keep_first_whole)));
    (a != b).then(|| format!("byte-wise replay differs:\n{a:#?}\n{b:#?}"))
}

/// The recorded conversations `testdata/{prefix}*.{extension}` for one of `prefixes`, sorted;
/// there must be at least `at_least`.
pub(crate) fn conversations(extension: &str, prefixes: &[&str], at_least: usize) -> Vec<PathBuf> {
    let dir = testdata_dir();
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == extension)
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| prefixes.iter().any(|p| n.starts_with(p)))
        })
        .collect();
    scripts.sort();
    assert!(
        scripts.len() >= at_least,
        "{prefixes:?} conversations missing in {}",
        dir.display()
    );
    scripts
}

/// For each conversation, `render` turns its lines into text (pushing any other problem it
/// finds onto its second argument), compared with (or, blessing, written to) the golden.
pub(crate) fn check_goldens(
    scripts: &[PathBuf],
    mut render: impl FnMut(&[Line], &mut Vec<String>) -> String,
) {
    let bless = std::env::var_os("PERISCOPE_BLESS").is_some();
    let mut mismatches = Vec::new();
    for script in scripts {
        let lines = parse(&std::fs::read_to_string(script).expect("read conversation"));
        let mut problems = Vec::new();
        let got = render(&lines, &mut problems);
        mismatches.extend(
            problems
                .into_iter()
                .map(|p| format!("{}: {p}", script.display())),
        );
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

/// `Some(v)` as `v`'s debug form, `None` as `-`.
pub(crate) fn opt<T: std::fmt::Debug>(value: &Option<T>) -> String {
    value
        .as_ref()
        .map_or_else(|| "-".to_owned(), |v| format!("{v:?}"))
}

/// The `#N request A..B response C..D` line heading every rendered exchange.
pub(crate) fn heading(number: usize, exchange: &Exchange) -> String {
    let response = match (exchange.response_start_ns, exchange.response_end_ns) {
        (Some(start), Some(end)) => format!("{start}..{end}"),
        _ => "-".to_owned(),
    };
    format!(
        "#{number} request {}..{} response {response}",
        exchange.request_start_ns, exchange.request_end_ns
    )
}

/// The golden lines every HTTP exchange starts with: request line, status and headers.
pub(crate) fn write_http_head(text: &mut String, h: &HttpExchange) {
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
}

/// The golden line of an HTTP exchange's body lengths.
pub(crate) fn write_http_bodies(text: &mut String, h: &HttpExchange) {
    let _ = writeln!(
        text,
        "  body: request {}, response {}",
        opt(&h.request_body_len),
        opt(&h.response_body_len)
    );
}

/// The golden text of database exchanges.
pub(crate) fn render_db(exchanges: &[Exchange]) -> String {
    let mut text = String::new();
    for (i, exchange) in exchanges.iter().enumerate() {
        let db = db(exchange);
        let _ = writeln!(text, "{}", heading(i + 1, exchange));
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

/// Replays every `{prefix}*.conv` with `protocol` (a database protocol) and compares with the
/// goldens; the first chunk of each must be detected as `protocol`, and the same bytes cut
/// into one-byte syscalls must decode the same.
pub(crate) fn check_conversations(prefix: &str, protocol: &dyn Protocol, at_least: usize) {
    check_goldens(
        &conversations("conv", &[prefix], at_least),
        |lines, problems| {
            // Every registered detector agrees on the conversation's first chunk.
            if let Some(Line::Chunk { flow, data, .. }) = lines.first() {
                let detected = super::detect(*flow, data).map(|p| p.name());
                if detected != Some(protocol.name()) {
                    problems.push(format!("detected as {detected:?}"));
                }
            }
            problems.extend(bytewise_difference(lines, false, |l| replay(protocol, l)));
            render_db(&replay(protocol, lines))
        },
    );
}

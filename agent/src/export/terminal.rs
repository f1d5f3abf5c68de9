//! Terminal output: one JSON object per span, or each trace drawn as a tree once it is complete.
//!
//! A trace counts as complete when no span has arrived for it for `quiet_period` (checked on
//! every export call, the pipeline's idle ticks included) and on flush/shutdown.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::SpanExporter;
use crate::spans::model::{AttrValue, SpanId, SpanKind, SpanRecord, SpanStatus, TraceId};

/// Traces waiting to be drawn, at most; past it the oldest is drawn early.
pub const DEFAULT_MAX_TRACES: usize = 1024;
/// Spans kept for one trace, at most; later ones are counted and left out.
pub const DEFAULT_MAX_SPANS_PER_TRACE: usize = 512;
/// A trace that keeps getting spans is drawn anyway after this long.
const MAX_TRACE_AGE: Duration = Duration::from_secs(60);
/// Longest label drawn before it is shortened with `…`.
const MAX_LABEL_CHARS: usize = 72;
/// Trace ids remembered after drawing, to flag spans that arrive late.
const RECENTLY_PRINTED: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerminalFormat {
    Tree,
    Json,
}

struct Pending {
    spans: Vec<SpanRecord>,
    first_seen: Instant,
    last_seen: Instant,
    cut: usize,
}

pub struct TerminalExporter {
    format: TerminalFormat,
    out: Box<dyn Write + Send>,
    quiet_period: Duration,
    max_traces: usize,
    max_spans_per_trace: usize,
    pending: HashMap<TraceId, Pending>,
    printed_order: VecDeque<TraceId>,
    printed: HashSet<TraceId>,
}

impl TerminalExporter {
    pub fn new(
        format: TerminalFormat,
        out: Box<dyn Write + Send>,
        quiet_period: Duration,
    ) -> TerminalExporter {
        TerminalExporter {
            format,
            out,
            quiet_period,
            max_traces: DEFAULT_MAX_TRACES,
            max_spans_per_trace: DEFAULT_MAX_SPANS_PER_TRACE,
            pending: HashMap::new(),
            printed_order: VecDeque::new(),
            printed: HashSet::new(),
        }
    }

    /// Change the memory bounds of the tree view.
    pub fn with_limits(mut self, max_traces: usize, max_spans_per_trace: usize) -> Self {
        self.max_traces = max_traces.max(1);
        self.max_spans_per_trace = max_spans_per_trace.max(1);
        self
    }

    fn add_to_tree(&mut self, span: SpanRecord, now: Instant) -> std::io::Result<()> {
        if !self.pending.contains_key(&span.trace_id) && self.pending.len() >= self.max_traces {
            // Too many traces in flight: draw the oldest now rather than hold more.
            if let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.first_seen)
                .map(|(id, _)| *id)
            {
                self.print_trace(oldest, Some("drawn early: too many traces in flight"))?;
            }
        }
        let max_spans = self.max_spans_per_trace;
        let p = self
            .pending
            .entry(span.trace_id)
            .or_insert_with(|| Pending {
                spans: Vec::new(),
                first_seen: now,
                last_seen: now,
                cut: 0,
            });
        p.last_seen = now;
        if p.spans.len() >= max_spans {
            p.cut += 1;
        } else {
            p.spans.push(span);
        }
        Ok(())
    }

    fn print_trace(&mut self, id: TraceId, note: Option<&str>) -> std::io::Result<()> {
        let Some(p) = self.pending.remove(&id) else {
            return Ok(());
        };
        let late = self.printed.contains(&id);
        let mut notes: Vec<String> = Vec::new();
        if late {
            notes.push("late spans of a trace already shown".into());
        }
        if p.cut > 0 {
            notes.push(format!(
                "{} more spans not shown: limit {} per trace",
                p.cut, self.max_spans_per_trace
            ));
        }
        if let Some(n) = note {
            notes.push(n.into());
        }
        let text = render_trace(&p.spans, &notes);
        self.out.write_all(text.as_bytes())?;
        if self.printed.insert(id) {
            self.printed_order.push_back(id);
            if self.printed_order.len() > RECENTLY_PRINTED
                && let Some(old) = self.printed_order.pop_front()
            {
                self.printed.remove(&old);
            }
        }
        Ok(())
    }

    /// Draw every trace that has gone quiet (or all of them), oldest first.
    fn print_ready(&mut self, now: Instant, all: bool) -> std::io::Result<()> {
        let mut ready: Vec<(Instant, TraceId)> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                all || now.duration_since(p.last_seen) >= self.quiet_period
                    || now.duration_since(p.first_seen) >= MAX_TRACE_AGE
            })
            .map(|(id, p)| (p.first_seen, *id))
            .collect();
        ready.sort();
        for (_, id) in ready {
            self.print_trace(id, None)?;
        }
        Ok(())
    }

    fn export_at(&mut self, batch: Vec<SpanRecord>, now: Instant) -> anyhow::Result<()> {
        match self.format {
            TerminalFormat::Json => {
                for span in &batch {
                    let line = serde_json::to_string(&JsonSpan::from(span))?;
                    self.out.write_all(line.as_bytes())?;
                    self.out.write_all(b"\n")?;
                }
            }
            TerminalFormat::Tree => {
                for span in batch {
                    self.add_to_tree(span, now)?;
                }
                self.print_ready(now, false)?;
            }
        }
        self.out.flush()?;
        Ok(())
    }
}

impl SpanExporter for TerminalExporter {
    fn export(&mut self, batch: Vec<SpanRecord>) -> anyhow::Result<()> {
        self.export_at(batch, Instant::now())
    }

    fn flush(&mut self, _timeout: Duration) -> anyhow::Result<()> {
        self.print_ready(Instant::now(), true)?;
        self.out.flush()?;
        Ok(())
    }

    fn shutdown(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.flush(timeout)
    }
}

// ---------------------------------------------------------------------------------------------
// JSON lines

#[derive(Serialize)]
struct JsonSpan<'a> {
    trace_id: String,
    span_id: String,
    parent_span_id: Option<String>,
    name: &'a str,
    kind: &'static str,
    service: &'a str,
    pid: u32,
    start_unix_nano: u64,
    duration_ms: f64,
    attributes: serde_json::Map<String, serde_json::Value>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_message: Option<&'a str>,
}

impl<'a> From<&'a SpanRecord> for JsonSpan<'a> {
    fn from(s: &'a SpanRecord) -> Self {
        let attributes = s
            .attributes
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    AttrValue::Int(x) => serde_json::Value::from(*x),
                    AttrValue::Bool(x) => serde_json::Value::from(*x),
                    text => serde_json::Value::from(text.as_str().unwrap_or_default()),
                };
                ((*k).to_owned(), v)
            })
            .collect();
        let (status, status_message) = match &s.status {
            SpanStatus::Unset => ("unset", None),
            SpanStatus::Error { message } => ("error", Some(message.as_str())),
        };
        JsonSpan {
            trace_id: hex(&s.trace_id),
            span_id: hex(&s.span_id),
            parent_span_id: (!s.is_root()).then(|| hex(&s.parent_span_id)),
            name: &s.name,
            kind: kind_name(s.kind),
            service: &s.resource.service_name,
            pid: s.resource.pid,
            start_unix_nano: s
                .start
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            duration_ms: duration(s).as_nanos() as f64 / 1e6,
            attributes,
            status,
            status_message,
        }
    }
}

fn kind_name(k: SpanKind) -> &'static str {
    match k {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Trees

fn duration(s: &SpanRecord) -> Duration {
    s.end.duration_since(s.start).unwrap_or_default()
}

/// Nanoseconds since the epoch (negative before it), for interval arithmetic.
fn ns(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// `412 µs`, `53.1 ms`, `12.35 s`.
pub fn format_duration(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{} µs", d.as_micros())
    } else if d < Duration::from_secs(10) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

fn label(s: &SpanRecord) -> String {
    let service = &s.resource.service_name;
    let text = match s.kind {
        SpanKind::Server => format!("{service}  {}", s.name),
        SpanKind::Client => {
            let peer = ["server.address", "db.system.name", "db.system"]
                .iter()
                .find_map(|k| {
                    s.attribute(k)
                        .and_then(AttrValue::as_str)
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| "?".into());
            format!("{service} → {peer}  {}", s.name)
        }
    };
    shorten(&text, MAX_LABEL_CHARS)
}

fn error_marker(s: &SpanRecord) -> Option<String> {
    let SpanStatus::Error { message } = &s.status else {
        return None;
    };
    if let Some(AttrValue::Int(code)) = s.attribute("http.response.status_code") {
        return Some(format!("✗ {code}"));
    }
    if let Some(AttrValue::Int(code)) = s.attribute("rpc.grpc.status_code") {
        return Some(format!("✗ grpc {code}"));
    }
    let message = message.trim();
    if message.is_empty() {
        Some("✗".into())
    } else {
        Some(format!("✗ {}", shorten(message, 40)))
    }
}

/// How long `s` spent outside all of its children (children clipped to its own interval).
fn self_time(spans: &[SpanRecord], s: usize, children: &[usize]) -> i128 {
    let (lo, hi) = (ns(spans[s].start), ns(spans[s].end));
    if hi <= lo {
        return 0;
    }
    let mut iv: Vec<(i128, i128)> = children
        .iter()
        .map(|&c| (ns(spans[c].start).max(lo), ns(spans[c].end).min(hi)))
        .filter(|(a, b)| b > a)
        .collect();
    iv.sort();
    let mut covered = 0i128;
    let mut cur: Option<(i128, i128)> = None;
    for (a, b) in iv {
        match cur {
            Some((ca, cb)) if a <= cb => cur = Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                covered += cb - ca;
                cur = Some((a, b));
            }
            None => cur = Some((a, b)),
        }
    }
    if let Some((ca, cb)) = cur {
        covered += cb - ca;
    }
    (hi - lo) - covered
}

/// The spans on the critical path under `s`: `s`, then the child that finished last, then the
/// child that finished last before that one started, and so on, each followed down.
fn critical_path(
    spans: &[SpanRecord],
    s: usize,
    children: &HashMap<usize, Vec<usize>>,
    path: &mut Vec<usize>,
    seen: &mut HashSet<usize>,
) {
    if !seen.insert(s) {
        return;
    }
    path.push(s);
    let Some(kids) = children.get(&s) else {
        return;
    };
    let end = ns(spans[s].end);
    let mut by_end: Vec<usize> = kids.clone();
    by_end.sort_by_key(|&c| std::cmp::Reverse(ns(spans[c].end).min(end)));
    let mut bound = end;
    for c in by_end {
        if ns(spans[c].end).min(end) <= bound {
            critical_path(spans, c, children, path, seen);
            bound = ns(spans[c].start);
        }
    }
}

struct Line {
    prefix: String,
    label: String,
    duration: String,
    markers: Vec<String>,
}

/// Draw one trace: a header, then every span as a tree line with its duration right-aligned.
/// `notes` are appended to the header in parentheses.
pub fn render_trace(spans: &[SpanRecord], notes: &[String]) -> String {
    if spans.is_empty() {
        return String::new();
    }
    // Index the first span with each id; later duplicates still render, as roots if need be.
    let mut by_id: HashMap<SpanId, usize> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        by_id.entry(s.span_id).or_insert(i);
    }
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots: Vec<usize> = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match by_id.get(&s.parent_span_id) {
            Some(&p) if !s.is_root() && p != i => children.entry(p).or_default().push(i),
            _ => roots.push(i),
        }
    }
    let order = |v: &mut Vec<usize>| {
        v.sort_by_key(|&i| (ns(spans[i].start), std::cmp::Reverse(ns(spans[i].end)), i));
    };
    order(&mut roots);
    for v in children.values_mut() {
        order(v);
    }

    // The bottleneck: along the longest root's critical path, the span with the most self time.
    let mut bottleneck = None;
    if spans.len() >= 2
        && let Some(&main) = roots
            .iter()
            .max_by_key(|&&i| (duration(&spans[i]), std::cmp::Reverse(i)))
    {
        let mut path = Vec::new();
        critical_path(spans, main, &children, &mut path, &mut HashSet::new());
        bottleneck = path
            .iter()
            .map(|&i| {
                let kids = children.get(&i).map(Vec::as_slice).unwrap_or(&[]);
                (self_time(spans, i, kids), i)
            })
            .max_by_key(|&(t, i)| (t, std::cmp::Reverse(i)))
            .map(|(_, i)| i);
    }

    // Spans caught in a parent cycle are reached from no root: they become roots too.
    let mut tops = roots;
    let mut reached = vec![false; spans.len()];
    let mark = |from: usize, reached: &mut Vec<bool>| {
        let mut stack = vec![from];
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut reached[i], true) {
                continue;
            }
            if let Some(kids) = children.get(&i) {
                stack.extend(kids.iter().copied().filter(|&c| !reached[c]));
            }
        }
    };
    for &r in &tops {
        mark(r, &mut reached);
    }
    while let Some(i) = (0..spans.len()).find(|&i| !reached[i]) {
        tops.push(i);
        mark(i, &mut reached);
    }

    let mut lines: Vec<Line> = Vec::new();
    let mut visited = vec![false; spans.len()];
    for (n, &root) in tops.iter().enumerate() {
        if !visited[root] {
            let last = n + 1 == tops.len();
            draw(
                spans,
                root,
                "",
                last,
                &children,
                bottleneck,
                &mut visited,
                &mut lines,
            );
        }
    }

    let start = spans.iter().map(|s| ns(s.start)).min().unwrap_or(0);
    let end = spans.iter().map(|s| ns(s.end)).max().unwrap_or(0);
    let total = Duration::from_nanos((end - start).max(0) as u64);
    let mut out = format!(
        "[trace {}…  total {}  {} span{}",
        &hex(&spans[0].trace_id)[..8],
        format_duration(total),
        spans.len(),
        if spans.len() == 1 { "" } else { "s" }
    );
    for n in notes {
        let _ = write!(out, "  ({n})");
    }
    out.push_str("]\n");

    let width = |s: &str| s.chars().count();
    let col = lines
        .iter()
        .map(|l| width(&l.prefix) + width(&l.label))
        .max()
        .unwrap_or(0)
        + 2;
    let dur_w = lines.iter().map(|l| width(&l.duration)).max().unwrap_or(0);
    for l in &lines {
        let used = width(&l.prefix) + width(&l.label);
        let _ = write!(
            out,
            "{}{}{}{:>dur_w$}",
            l.prefix,
            l.label,
            " ".repeat(col - used),
            l.duration
        );
        for m in &l.markers {
            let _ = write!(out, "  {m}");
        }
        out.push('\n');
    }
    out.push('\n');
    out
}

#[allow(clippy::too_many_arguments)]
fn draw(
    spans: &[SpanRecord],
    i: usize,
    indent: &str,
    last: bool,
    children: &HashMap<usize, Vec<usize>>,
    bottleneck: Option<usize>,
    visited: &mut [bool],
    lines: &mut Vec<Line>,
) {
    visited[i] = true;
    let s = &spans[i];
    let mut markers = Vec::new();
    if let Some(m) = error_marker(s) {
        markers.push(m);
    }
    if bottleneck == Some(i) {
        markers.push("← bottleneck".into());
    }
    lines.push(Line {
        prefix: format!("{indent}{}", if last { "└── " } else { "├── " }),
        label: label(s),
        duration: format_duration(duration(s)),
        markers,
    });
    let child_indent = format!("{indent}{}", if last { "    " } else { "│   " });
    let kids: Vec<usize> = children
        .get(&i)
        .map(|v| v.iter().copied().filter(|&c| !visited[c]).collect())
        .unwrap_or_default();
    for (n, &c) in kids.iter().enumerate() {
        if visited[c] {
            continue;
        }
        draw(
            spans,
            c,
            &child_indent,
            n + 1 == kids.len(),
            children,
            bottleneck,
            visited,
            lines,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::spans::model::ProcessResource;

    fn res(name: &str) -> Arc<ProcessResource> {
        Arc::new(ProcessResource {
            service_name: name.into(),
            pid: 42,
            attributes: vec![("service.name".into(), AttrValue::from(name))],
        })
    }

    const T0: u64 = 1_700_000_000_000;

    #[allow(clippy::too_many_arguments)]
    fn span(
        service: &str,
        id: u8,
        parent: u8,
        kind: SpanKind,
        name: &str,
        start_us: u64,
        dur_us: u64,
        attrs: Vec<(&'static str, AttrValue)>,
    ) -> SpanRecord {
        let start = UNIX_EPOCH + Duration::from_millis(T0) + Duration::from_micros(start_us);
        SpanRecord {
            trace_id: [
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36,
            ],
            span_id: [id; 8],
            parent_span_id: [parent; 8],
            parent_is_remote: false,
            trace_flags: 1,
            trace_state: None,
            name: name.into(),
            kind,
            start,
            end: start + Duration::from_micros(dur_us),
            attributes: attrs,
            status: SpanStatus::Unset,
            resource: res(service),
        }
    }

    fn checkout_trace() -> Vec<SpanRecord> {
        use SpanKind::*;
        let addr = |a: &str| vec![("server.address", AttrValue::from(a))];
        let mut pay_client = span(
            "gateway",
            4,
            1,
            Client,
            "POST /pay",
            60_000,
            630_000,
            addr("payments"),
        );
        pay_client.status = SpanStatus::Error { message: "".into() };
        pay_client
            .attributes
            .push(("http.response.status_code", AttrValue::Int(500)));
        vec![
            // Deliberately out of order.
            span(
                "payments",
                5,
                4,
                Server,
                "POST /pay",
                61_000,
                628_000,
                vec![],
            ),
            span("gateway", 1, 0, Server, "GET /checkout", 0, 692_000, vec![]),
            span(
                "gateway",
                2,
                1,
                Client,
                "GET /check",
                2_000,
                53_100,
                addr("auth"),
            ),
            span("auth", 3, 2, Server, "GET /check", 3_000, 51_000, vec![]),
            pay_client,
            span(
                "payments",
                6,
                5,
                Client,
                "INSERT payments",
                70_000,
                400,
                vec![("db.system.name", AttrValue::from("postgresql"))],
            ),
        ]
    }

    #[test]
    fn renders_a_trace_tree() {
        let got = render_trace(&checkout_trace(), &[]);
        let want = "\
[trace 4bf92f35…  total 692.0 ms  6 spans]
└── gateway  GET /checkout                              692.0 ms
    ├── gateway → auth  GET /check                       53.1 ms
    │   └── auth  GET /check                             51.0 ms
    └── gateway → payments  POST /pay                   630.0 ms  ✗ 500
        └── payments  POST /pay                         628.0 ms  ← bottleneck
            └── payments → postgresql  INSERT payments    400 µs

";
        assert_eq!(got, want, "\n{got}");
    }

    #[test]
    fn single_span_has_no_bottleneck() {
        let spans = vec![span(
            "api",
            1,
            0,
            SpanKind::Server,
            "GET /",
            0,
            1_500,
            vec![],
        )];
        let got = render_trace(&spans, &[]);
        assert_eq!(
            got,
            "[trace 4bf92f35…  total 1.5 ms  1 span]\n└── api  GET /  1.5 ms\n\n"
        );
    }

    #[test]
    fn orphans_become_extra_roots_and_notes_show() {
        use SpanKind::*;
        let spans = vec![
            span("a", 1, 0, Server, "GET /a", 0, 10_000, vec![]),
            span("b", 2, 9, Server, "GET /b", 1_000, 2_000, vec![]),
            span("b", 3, 2, Client, "GET /c", 1_500, 1_000, vec![]),
        ];
        let got = render_trace(
            &spans,
            &["1 more spans not shown: limit 3 per trace".into()],
        );
        let want = "\
[trace 4bf92f35…  total 10.0 ms  3 spans  (1 more spans not shown: limit 3 per trace)]
├── a  GET /a          10.0 ms  ← bottleneck
└── b  GET /b           2.0 ms
    └── b → ?  GET /c   1.0 ms

";
        assert_eq!(got, want, "\n{got}");
    }

    #[test]
    fn bottleneck_follows_the_critical_path() {
        use SpanKind::*;
        // Root 0..100 ms; a long early child (0..60 ms, mostly waiting on its own child) and
        // a late child that ends the trace (60..100 ms, all self time).
        let spans = vec![
            span("r", 1, 0, Server, "root", 0, 100_000, vec![]),
            span("r", 2, 1, Client, "early", 0, 60_000, vec![]),
            span("x", 3, 2, Server, "early", 1_000, 58_000, vec![]),
            span("r", 4, 1, Client, "late", 60_000, 40_000, vec![]),
        ];
        let got = render_trace(&spans, &[]);
        let line = got.lines().find(|l| l.contains("bottleneck")).unwrap();
        assert!(line.contains("x  early"), "{got}");
        let spans2 = vec![
            span("r", 1, 0, Server, "root", 0, 100_000, vec![]),
            span("r", 2, 1, Client, "early", 0, 30_000, vec![]),
            span("r", 4, 1, Client, "late", 30_000, 70_000, vec![]),
        ];
        let got = render_trace(&spans2, &[]);
        let line = got.lines().find(|l| l.contains("bottleneck")).unwrap();
        assert!(line.contains("late"), "{got}");
    }

    #[test]
    fn parent_cycles_do_not_hang() {
        use SpanKind::*;
        let spans = vec![
            span("a", 1, 2, Server, "x", 0, 10, vec![]),
            span("a", 2, 1, Server, "y", 0, 10, vec![]),
        ];
        let got = render_trace(&spans, &[]);
        assert_eq!(got.lines().count(), 4, "{got}");
    }

    #[test]
    fn durations_format() {
        assert_eq!(format_duration(Duration::from_micros(412)), "412 µs");
        assert_eq!(format_duration(Duration::from_micros(53_140)), "53.1 ms");
        assert_eq!(format_duration(Duration::from_millis(12_345)), "12.35 s");
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn tree_waits_for_quiet_period_then_prints() {
        let buf = Buf::default();
        let mut e = TerminalExporter::new(
            TerminalFormat::Tree,
            Box::new(buf.clone()),
            Duration::from_millis(500),
        );
        let t = Instant::now();
        let spans = checkout_trace();
        e.export_at(spans[..3].to_vec(), t).unwrap();
        e.export_at(vec![], t + Duration::from_millis(300)).unwrap();
        e.export_at(spans[3..].to_vec(), t + Duration::from_millis(400))
            .unwrap();
        e.export_at(vec![], t + Duration::from_millis(800)).unwrap();
        assert_eq!(buf.text(), "", "printed before the trace went quiet");
        e.export_at(vec![], t + Duration::from_millis(900)).unwrap();
        assert_eq!(buf.text(), render_trace(&spans, &[]));
    }

    #[test]
    fn flush_prints_everything_and_late_spans_are_flagged() {
        let buf = Buf::default();
        let mut e = TerminalExporter::new(
            TerminalFormat::Tree,
            Box::new(buf.clone()),
            Duration::from_secs(3600),
        );
        let spans = checkout_trace();
        e.export(spans[..5].to_vec()).unwrap();
        assert_eq!(buf.text(), "");
        e.flush(Duration::from_secs(1)).unwrap();
        assert!(buf.text().starts_with("[trace 4bf92f35…"));
        e.export(spans[5..].to_vec()).unwrap();
        e.shutdown(Duration::from_secs(1)).unwrap();
        let text = buf.text();
        assert_eq!(text.matches("[trace").count(), 2, "{text}");
        assert!(
            text.contains("(late spans of a trace already shown)"),
            "{text}"
        );
    }

    #[test]
    fn memory_is_bounded() {
        let buf = Buf::default();
        let mut e = TerminalExporter::new(
            TerminalFormat::Tree,
            Box::new(buf.clone()),
            Duration::from_secs(3600),
        )
        .with_limits(2, 3);
        let mut spans = Vec::new();
        for i in 0..5u8 {
            let mut s = span("a", i + 1, 0, SpanKind::Server, "GET /", 0, 10, vec![]);
            s.trace_id = [1; 16];
            spans.push(s);
        }
        e.export(spans).unwrap();
        assert_eq!(e.pending[&[1; 16]].spans.len(), 3);
        for t in 2..5u8 {
            let mut s = span("a", 1, 0, SpanKind::Server, "GET /", 0, 10, vec![]);
            s.trace_id = [t; 16];
            e.export(vec![s]).unwrap();
        }
        assert!(e.pending.len() <= 2);
        let text = buf.text();
        assert!(
            text.contains("2 more spans not shown: limit 3 per trace"),
            "{text}"
        );
        assert!(
            text.contains("drawn early: too many traces in flight"),
            "{text}"
        );
    }

    #[test]
    fn json_lines() {
        let buf = Buf::default();
        let mut e =
            TerminalExporter::new(TerminalFormat::Json, Box::new(buf.clone()), Duration::ZERO);
        let spans = checkout_trace();
        e.export(vec![spans[1].clone(), spans[4].clone()]).unwrap();
        let text = buf.text();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        let root = &lines[0];
        assert_eq!(root["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(root["span_id"], "0101010101010101");
        assert!(root["parent_span_id"].is_null());
        assert_eq!(root["name"], "GET /checkout");
        assert_eq!(root["kind"], "server");
        assert_eq!(root["service"], "gateway");
        assert_eq!(root["start_unix_nano"], T0 * 1_000_000);
        assert_eq!(root["duration_ms"], 692.0);
        assert_eq!(root["status"], "unset");
        assert!(root.get("status_message").is_none());
        let client = &lines[1];
        assert_eq!(client["parent_span_id"], "0101010101010101");
        assert_eq!(client["kind"], "client");
        assert_eq!(client["attributes"]["server.address"], "payments");
        assert_eq!(client["attributes"]["http.response.status_code"], 500);
        assert_eq!(client["status"], "error");
    }
}

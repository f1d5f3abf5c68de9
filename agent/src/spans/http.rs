//! HTTP/1 exchanges as spans, with OpenTelemetry HTTP semantic-convention attributes.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use agent_common::{ConnTuple, Role};

use super::{
    address::AddressNames,
    model::{AttrValue, SpanKind, SpanStatus},
};
use crate::protocols::{HttpExchange, KNOWN_METHODS};

/// The protocol-specific part of a span: everything but ids, times and resource.
pub struct SpanShape {
    pub name: String,
    pub kind: SpanKind,
    pub attributes: Vec<(&'static str, AttrValue)>,
    pub status: SpanStatus,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct HttpOptions {
    /// Keep query strings as sent instead of redacting their values.
    pub keep_query_strings: bool,
}

pub fn http_span(
    ex: HttpExchange,
    role: Role,
    tuple: &ConnTuple,
    scheme: &'static str,
    opts: HttpOptions,
    names: &mut AddressNames,
) -> SpanShape {
    if ex
        .content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/grpc"))
    {
        return grpc_span(ex, role, tuple, names);
    }
    let HttpExchange {
        method,
        target,
        version,
        host,
        user_agent,
        status,
        ..
    } = ex;
    let (path, query) = split_target(&target);
    let query = query.map(|q| {
        if opts.keep_query_strings {
            q.to_owned()
        } else {
            redact_query(q)
        }
    });
    let kind = if role == Role::Client {
        SpanKind::Client
    } else {
        SpanKind::Server
    };
    let name = joined(&method, ' ', path);
    let remote = names.of(tuple.family, &tuple.remote_addr);
    let (host_header, host_port) = host.map(into_host_port).unwrap_or((None, None));
    let host_header = host_header.map(AttrValue::Str);
    // Everything that borrows the target is worked out before the target moves into `url.path`.
    let (server, port, full) = match kind {
        SpanKind::Server => (
            host_header.or_else(|| {
                names
                    .of(tuple.family, &tuple.local_addr)
                    .map(AttrValue::Shared)
            }),
            host_port.or((tuple.local_port != 0).then_some(tuple.local_port)),
            None,
        ),
        SpanKind::Client => {
            let server = host_header.or_else(|| remote.clone().map(AttrValue::Shared));
            let port = host_port.or((tuple.remote_port != 0).then_some(tuple.remote_port));
            let full = server
                .as_ref()
                .and_then(AttrValue::as_str)
                .map(|s| full_url(scheme, s, port, path, query.as_deref()));
            (server, port, full)
        }
    };
    // Usually the target is just the path: then it becomes the attribute as it is.
    let path = if path.len() == target.len() {
        target
    } else {
        path.to_owned()
    };

    let mut attrs: Vec<(&'static str, AttrValue)> = Vec::with_capacity(12);
    let method_attr = match method {
        Cow::Borrowed(known) => AttrValue::Static(known),
        Cow::Owned(text) => known_text(text, &KNOWN_METHODS),
    };
    attrs.push(("http.request.method", method_attr));
    attrs.push(("url.path", AttrValue::Str(path)));
    if let Some(q) = query {
        attrs.push(("url.query", AttrValue::Str(q)));
    }
    attrs.push(("url.scheme", AttrValue::Static(scheme)));
    // `network.protocol.name` is left out: the conventions ask for it only when it is not
    // "http".
    if !version.is_empty() {
        attrs.push(("network.protocol.version", AttrValue::Static(version)));
    }
    if let Some(status) = status {
        attrs.push(("http.response.status_code", AttrValue::Int(status as i64)));
    }
    if let Some(s) = server {
        attrs.push(("server.address", s));
    }
    match kind {
        SpanKind::Server => {
            if let Some(p) = port {
                attrs.push(("server.port", AttrValue::Int(p as i64)));
            }
            // `client.port` is opt-in on HTTP server spans (an ephemeral port nobody queries);
            // `network.peer.port` still carries it.
            if let Some(r) = &remote {
                attrs.push(("client.address", AttrValue::Shared(r.clone())));
            }
        }
        SpanKind::Client => {
            if let Some(full) = full {
                attrs.push(("url.full", AttrValue::Str(full)));
            }
            if let Some(p) = port {
                attrs.push(("server.port", AttrValue::Int(p as i64)));
            }
        }
    }
    push_peer_and_agent(&mut attrs, remote, tuple.remote_port, user_agent);

    let status = match status {
        Some(code) if code >= 500 || (code >= 400 && kind == SpanKind::Client) => {
            attrs.push(("error.type", AttrValue::Str(code.to_string())));
            SpanStatus::Error {
                message: String::new(),
            }
        }
        None => {
            attrs.push(("error.type", AttrValue::Static("no_response")));
            SpanStatus::Error {
                message: "connection ended before a response".to_owned(),
            }
        }
        _ => SpanStatus::Unset,
    };
    SpanShape {
        name,
        kind,
        attributes: attrs,
        status,
    }
}

/// `{a}{sep}{b}` in one allocation of the right size (`format!` grows its string step by step).
pub(super) fn joined(a: &str, sep: char, b: &str) -> String {
    let mut s = String::with_capacity(a.len() + sep.len_utf8() + b.len());
    s.push_str(a);
    s.push(sep);
    s.push_str(b);
    s
}

/// `text` as one of the fixed `known` texts when it is one (nothing to copy downstream), else as
/// it is.
fn known_text(text: String, known: &[&'static str]) -> AttrValue {
    match known.iter().find(|k| **k == text) {
        Some(k) => AttrValue::Static(k),
        None => AttrValue::Str(text),
    }
}

/// `url.full`: the port is left out when it is the scheme's default.
fn full_url(
    scheme: &str,
    host: &str,
    port: Option<u16>,
    path: &str,
    query: Option<&str>,
) -> String {
    // "://", brackets, ":" and up to five digits, then "?".
    let len = scheme.len() + host.len() + 11 + path.len() + query.map_or(0, |q| q.len() + 1);
    let mut url = String::with_capacity(len);
    url.push_str(scheme);
    url.push_str("://");
    // An IPv6 address is bracketed in a URL (RFC 3986), so that its colons are not a port's.
    if host.contains(':') {
        url.push('[');
        url.push_str(host);
        url.push(']');
    } else {
        url.push_str(host);
    }
    if let Some(p) = port.filter(|&p| p != default_port(scheme)) {
        let _ = write!(url, ":{p}");
    }
    url.push_str(path);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// gRPC status codes by number, as named in the gRPC specification.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Codes that mean the server failed (rather than the caller asking for something wrong): a
/// SERVER span is an error only for these, as the RPC semantic conventions say.
const GRPC_SERVER_FAULTS: [i64; 6] = [2, 4, 12, 13, 14, 15];

/// A gRPC call over HTTP/2: `rpc.*` attributes, named `package.Service/Method`.
fn grpc_span(
    ex: HttpExchange,
    role: Role,
    tuple: &ConnTuple,
    names: &mut AddressNames,
) -> SpanShape {
    let kind = if role == Role::Client {
        SpanKind::Client
    } else {
        SpanKind::Server
    };
    let path = ex.target.split('?').next().unwrap_or_default();
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path.trim_start_matches('/'), ""));
    let mut attrs: Vec<(&'static str, AttrValue)> = Vec::with_capacity(12);
    attrs.push(("rpc.system.name", AttrValue::Static("grpc")));
    attrs.push(("rpc.service", AttrValue::from(service)));
    attrs.push(("rpc.method", AttrValue::from(method)));
    attrs.push(("network.protocol.name", AttrValue::Static("http")));
    attrs.push(("network.protocol.version", AttrValue::Static("2")));
    let remote = names.of(tuple.family, &tuple.remote_addr);
    let (host, host_port) = ex.host.map(into_host_port).unwrap_or((None, None));
    match kind {
        SpanKind::Client => {
            let server = host
                .map(AttrValue::Str)
                .or_else(|| remote.clone().map(AttrValue::Shared));
            if let Some(s) = server {
                attrs.push(("server.address", s));
            }
            let port = host_port.or((tuple.remote_port != 0).then_some(tuple.remote_port));
            if let Some(p) = port {
                attrs.push(("server.port", AttrValue::Int(p as i64)));
            }
        }
        SpanKind::Server => {
            if tuple.local_port != 0 {
                attrs.push(("server.port", AttrValue::Int(tuple.local_port as i64)));
            }
            if let Some(r) = &remote {
                attrs.push(("client.address", AttrValue::Shared(r.clone())));
                attrs.push(("client.port", AttrValue::Int(tuple.remote_port as i64)));
            }
        }
    }
    push_peer_and_agent(&mut attrs, remote, tuple.remote_port, ex.user_agent);
    let code_name = ex.grpc_status.map(|c| {
        GRPC_CODES
            .get(c as usize)
            .map(|n| (*n).to_owned())
            .unwrap_or_else(|| c.to_string())
    });
    if let Some(name) = &code_name {
        attrs.push(("rpc.response.status_code", AttrValue::Str(name.clone())));
    }
    let failed = match (ex.grpc_status, kind) {
        (Some(0), _) => false,
        (Some(code), SpanKind::Client) => code != 0,
        (Some(code), SpanKind::Server) => GRPC_SERVER_FAULTS.contains(&code),
        // No status at all: reset, cut short, or the connection ended.
        (None, _) => true,
    };
    let status = if failed {
        let error_type = code_name
            .or(ex.reset)
            .unwrap_or_else(|| "no_response".to_owned());
        attrs.push(("error.type", AttrValue::Str(error_type)));
        SpanStatus::Error {
            message: ex.grpc_message.unwrap_or_default(),
        }
    } else {
        SpanStatus::Unset
    };
    let name = if method.is_empty() {
        service.to_owned()
    } else {
        joined(service, '/', method)
    };
    SpanShape {
        name,
        kind,
        attributes: attrs,
        status,
    }
}

/// `network.peer.*` (the other end of the connection) and `user_agent.original`.
fn push_peer_and_agent(
    attrs: &mut Vec<(&'static str, AttrValue)>,
    remote: Option<Arc<str>>,
    remote_port: u16,
    user_agent: Option<String>,
) {
    if let Some(r) = remote {
        attrs.push(("network.peer.address", AttrValue::Shared(r)));
        attrs.push(("network.peer.port", AttrValue::Int(remote_port as i64)));
    }
    if let Some(ua) = user_agent {
        attrs.push(("user_agent.original", AttrValue::Str(ua)));
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

/// `/a/b?x=1` → (`/a/b`, Some(`x=1`)); an absolute-form target keeps only its path.
fn split_target(target: &str) -> (&str, Option<&str>) {
    let target = match target.find("://") {
        Some(i) => {
            let rest = &target[i + 3..];
            rest.find('/').map(|p| &rest[p..]).unwrap_or("/")
        }
        None => target,
    };
    let target = target.split('#').next().unwrap_or(target);
    match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    }
}

/// Keep the parameter names, hide the values: `q=shoes&page=2` → `q=REDACTED&page=REDACTED`.
pub fn redact_query(query: &str) -> String {
    const HIDDEN: &str = "=REDACTED";
    // No parameter grows by more than `HIDDEN`: the string never needs to grow.
    let params = query.bytes().filter(|&b| b == b'&').count() + 1;
    let mut out = String::with_capacity(query.len() + params * HIDDEN.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((k, _)) => {
                out.push_str(k);
                out.push_str(HIDDEN);
            }
            None => out.push_str(pair),
        }
    }
    out
}

/// `example.com:8080` → (example.com, 8080); `[::1]:80` → (::1, 80).
/// [`split_host_port`] of an owned header value, keeping its allocation for the host name.
fn into_host_port(mut header: String) -> (Option<String>, Option<u16>) {
    let (name, port) = split_host_port(&header);
    let Some(name) = name else {
        return (None, port);
    };
    // `name` lies inside `header`.
    let start = name.as_ptr() as usize - header.as_ptr() as usize;
    let end = start + name.len();
    header.truncate(end);
    header.drain(..start);
    (Some(header), port)
}

fn split_host_port(host: &str) -> (Option<&str>, Option<u16>) {
    let host = host.trim();
    if host.is_empty() {
        return (None, None);
    }
    if let Some(rest) = host.strip_prefix('[')
        && let Some((h, tail)) = rest.split_once(']')
    {
        let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
        return (Some(h), port);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (Some(h), Some(port)),
            Err(_) => (Some(host), None),
        },
        _ => (Some(host), None),
    }
}

#[cfg(test)]
mod tests {
    use agent_common::AF_INET;

    use super::*;

    fn tuple() -> ConnTuple {
        let mut t = ConnTuple::UNKNOWN;
        t.family = AF_INET;
        t.local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        t.remote_addr[..4].copy_from_slice(&[127, 0, 0, 2]);
        t.local_port = 8080;
        t.remote_port = 51000;
        t
    }

    /// A span built the way the factory does, on the test tuple over plain HTTP.
    fn span_with(ex: HttpExchange, role: Role, opts: HttpOptions) -> SpanShape {
        http_span(
            ex,
            role,
            &tuple(),
            "http",
            opts,
            &mut AddressNames::default(),
        )
    }

    fn span_of(ex: HttpExchange, role: Role) -> SpanShape {
        span_with(ex, role, HttpOptions::default())
    }

    fn get<'a>(s: &'a SpanShape, k: &str) -> Option<&'a AttrValue> {
        s.attributes.iter().find(|(a, _)| *a == k).map(|(_, v)| v)
    }

    #[test]
    fn an_ipv6_host_is_bracketed_in_the_url_only() {
        let ex = HttpExchange {
            method: "GET".into(),
            target: "/items".into(),
            version: "1.1",
            host: Some("[::1]:8080".into()),
            status: Some(200),
            ..Default::default()
        };
        let s = span_of(ex, Role::Client);
        assert_eq!(
            get(&s, "server.address").and_then(AttrValue::as_str),
            Some("::1")
        );
        assert_eq!(
            get(&s, "url.full").and_then(AttrValue::as_str),
            Some("http://[::1]:8080/items")
        );
        assert_eq!(
            full_url("https", "fe80::1", Some(443), "/", None),
            "https://[fe80::1]/"
        );
    }

    #[test]
    fn server_span_attributes_and_redaction() {
        let ex = HttpExchange {
            method: "GET".into(),
            target: "/items/7?q=shoes&page=2".into(),
            version: "1.1",
            host: Some("shop.local:8080".into()),
            user_agent: Some("curl/8".into()),
            status: Some(503),
            ..Default::default()
        };
        let s = span_of(ex, Role::Server);
        assert_eq!(s.name, "GET /items/7");
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(
            get(&s, "url.query"),
            Some(&AttrValue::from("q=REDACTED&page=REDACTED"))
        );
        assert_eq!(
            get(&s, "server.address"),
            Some(&AttrValue::from("shop.local"))
        );
        assert_eq!(get(&s, "server.port"), Some(&AttrValue::Int(8080)));
        assert_eq!(
            get(&s, "client.address"),
            Some(&AttrValue::from("127.0.0.2"))
        );
        assert_eq!(
            get(&s, "http.response.status_code"),
            Some(&AttrValue::Int(503))
        );
        assert!(matches!(s.status, SpanStatus::Error { .. }));
        // Opt-in, and "only when not http": left out.
        assert_eq!(get(&s, "client.port"), None);
        assert_eq!(get(&s, "network.protocol.name"), None);
    }

    #[test]
    fn client_span_builds_full_url_and_flags_4xx() {
        let ex = HttpExchange {
            method: "POST".into(),
            target: "/api?token=secret".into(),
            version: "1.1",
            host: Some("api.internal:9000".into()),
            status: Some(404),
            ..Default::default()
        };
        let s = span_of(ex.clone(), Role::Client);
        assert_eq!(
            get(&s, "url.full"),
            Some(&AttrValue::from(
                "http://api.internal:9000/api?token=REDACTED"
            ))
        );
        assert!(matches!(s.status, SpanStatus::Error { .. }));
        let kept = span_with(
            ex,
            Role::Client,
            HttpOptions {
                keep_query_strings: true,
            },
        );
        assert_eq!(
            get(&kept, "url.full"),
            Some(&AttrValue::from(
                "http://api.internal:9000/api?token=secret"
            ))
        );
    }

    #[test]
    fn grpc_calls_get_rpc_attributes_and_status() {
        let ex = HttpExchange {
            method: "POST".into(),
            target: "/helloworld.Greeter/SayHello".into(),
            version: "2",
            content_type: Some("application/grpc".into()),
            status: Some(200),
            grpc_status: Some(5),
            grpc_message: Some("no such greeter".into()),
            ..Default::default()
        };
        let client = span_of(ex.clone(), Role::Client);
        assert_eq!(client.name, "helloworld.Greeter/SayHello");
        assert_eq!(
            get(&client, "rpc.system.name"),
            Some(&AttrValue::from("grpc"))
        );
        assert_eq!(
            get(&client, "rpc.service"),
            Some(&AttrValue::from("helloworld.Greeter"))
        );
        assert_eq!(
            get(&client, "rpc.method"),
            Some(&AttrValue::from("SayHello"))
        );
        assert_eq!(
            get(&client, "rpc.response.status_code"),
            Some(&AttrValue::from("NOT_FOUND"))
        );
        assert!(matches!(client.status, SpanStatus::Error { .. }));
        // NOT_FOUND is the caller's problem, not a server failure.
        let server = span_of(ex.clone(), Role::Server);
        assert!(matches!(server.status, SpanStatus::Unset));
        let internal = HttpExchange {
            grpc_status: Some(13),
            ..ex
        };
        let server = span_of(internal, Role::Server);
        assert!(matches!(server.status, SpanStatus::Error { .. }));
    }

    #[test]
    fn host_and_target_forms() {
        assert_eq!(split_host_port("[::1]:80"), (Some("::1"), Some(80)));
        assert_eq!(split_host_port("h"), (Some("h"), None));
        let owned = |h: &str| into_host_port(h.to_owned());
        assert_eq!(owned(" [::1]:80 "), (Some("::1".to_owned()), Some(80)));
        assert_eq!(
            owned("example.com:8080"),
            (Some("example.com".to_owned()), Some(8080))
        );
        assert_eq!(owned("example.com"), (Some("example.com".to_owned()), None));
        assert_eq!(owned("  "), (None, None));
        assert_eq!(split_target("http://x:1/p?q"), ("/p", Some("q")));
        assert_eq!(split_target("*"), ("*", None));
    }
}

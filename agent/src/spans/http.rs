//! HTTP/1 exchanges as spans, with OpenTelemetry HTTP semantic-convention attributes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent_common::{AF_INET, AF_INET6, ConnTuple, Role};

use super::model::{AttrValue, SpanKind, SpanStatus};
use crate::protocols::HttpExchange;

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
    ex: &HttpExchange,
    role: Role,
    tuple: &ConnTuple,
    scheme: &'static str,
    opts: HttpOptions,
) -> SpanShape {
    if ex
        .content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/grpc"))
    {
        return grpc_span(ex, role, tuple);
    }
    let (path, query) = split_target(&ex.target);
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
    let mut attrs: Vec<(&'static str, AttrValue)> = Vec::with_capacity(14);
    attrs.push(("http.request.method", AttrValue::from(ex.method.as_str())));
    attrs.push(("url.path", AttrValue::from(path)));
    if let Some(q) = &query {
        attrs.push(("url.query", AttrValue::from(q.as_str())));
    }
    attrs.push(("url.scheme", AttrValue::from(scheme)));
    attrs.push(("network.protocol.name", AttrValue::from("http")));
    if !ex.version.is_empty() {
        attrs.push((
            "network.protocol.version",
            AttrValue::from(ex.version.as_str()),
        ));
    }
    if let Some(status) = ex.status {
        attrs.push(("http.response.status_code", AttrValue::Int(status as i64)));
    }
    let local = address(tuple.family, &tuple.local_addr);
    let remote = address(tuple.family, &tuple.remote_addr);
    let (host_header, host_port) = ex
        .host
        .as_deref()
        .map(split_host_port)
        .unwrap_or((None, None));
    match kind {
        SpanKind::Server => {
            let server = host_header.clone().or_else(|| local.map(|a| a.to_string()));
            if let Some(s) = server {
                attrs.push(("server.address", AttrValue::Str(s)));
            }
            let port = host_port.or((tuple.local_port != 0).then_some(tuple.local_port));
            if let Some(p) = port {
                attrs.push(("server.port", AttrValue::Int(p as i64)));
            }
            if let Some(r) = remote {
                attrs.push(("client.address", AttrValue::Str(r.to_string())));
                attrs.push(("client.port", AttrValue::Int(tuple.remote_port as i64)));
            }
        }
        SpanKind::Client => {
            let server = host_header
                .clone()
                .or_else(|| remote.map(|a| a.to_string()));
            let port = host_port.or((tuple.remote_port != 0).then_some(tuple.remote_port));
            if let Some(s) = &server {
                attrs.push(("server.address", AttrValue::Str(s.clone())));
                let authority = match port {
                    Some(p) if p != default_port(scheme) => format!("{s}:{p}"),
                    _ => s.clone(),
                };
                let full = match &query {
                    Some(q) => format!("{scheme}://{authority}{path}?{q}"),
                    None => format!("{scheme}://{authority}{path}"),
                };
                attrs.push(("url.full", AttrValue::Str(full)));
            }
            if let Some(p) = port {
                attrs.push(("server.port", AttrValue::Int(p as i64)));
            }
        }
    }
    push_peer_and_agent(&mut attrs, remote, tuple.remote_port, ex);

    let status = match ex.status {
        Some(code) if code >= 500 || (code >= 400 && kind == SpanKind::Client) => {
            attrs.push(("error.type", AttrValue::Str(code.to_string())));
            SpanStatus::Error {
                message: String::new(),
            }
        }
        None => {
            attrs.push(("error.type", AttrValue::from("no_response")));
            SpanStatus::Error {
                message: "connection ended before a response".to_owned(),
            }
        }
        _ => SpanStatus::Unset,
    };
    SpanShape {
        name: format!("{} {}", ex.method, path),
        kind,
        attributes: attrs,
        status,
    }
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
fn grpc_span(ex: &HttpExchange, role: Role, tuple: &ConnTuple) -> SpanShape {
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
    attrs.push(("rpc.system.name", AttrValue::from("grpc")));
    attrs.push(("rpc.service", AttrValue::from(service)));
    attrs.push(("rpc.method", AttrValue::from(method)));
    attrs.push(("network.protocol.name", AttrValue::from("http")));
    attrs.push(("network.protocol.version", AttrValue::from("2")));
    let remote = address(tuple.family, &tuple.remote_addr);
    let (host, host_port) = ex
        .host
        .as_deref()
        .map(split_host_port)
        .unwrap_or((None, None));
    match kind {
        SpanKind::Client => {
            if let Some(s) = host.or_else(|| remote.map(|a| a.to_string())) {
                attrs.push(("server.address", AttrValue::Str(s)));
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
            if let Some(r) = remote {
                attrs.push(("client.address", AttrValue::Str(r.to_string())));
                attrs.push(("client.port", AttrValue::Int(tuple.remote_port as i64)));
            }
        }
    }
    push_peer_and_agent(&mut attrs, remote, tuple.remote_port, ex);
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
            .clone()
            .or_else(|| ex.reset.clone())
            .unwrap_or_else(|| "no_response".to_owned());
        attrs.push(("error.type", AttrValue::Str(error_type)));
        SpanStatus::Error {
            message: ex.grpc_message.clone().unwrap_or_default(),
        }
    } else {
        SpanStatus::Unset
    };
    let name = if method.is_empty() {
        service.to_owned()
    } else {
        format!("{service}/{method}")
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
    remote: Option<IpAddr>,
    remote_port: u16,
    ex: &HttpExchange,
) {
    if let Some(r) = remote {
        attrs.push(("network.peer.address", AttrValue::Str(r.to_string())));
        attrs.push(("network.peer.port", AttrValue::Int(remote_port as i64)));
    }
    if let Some(ua) = &ex.user_agent {
        attrs.push(("user_agent.original", AttrValue::from(ua.as_str())));
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
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) => format!("{k}=REDACTED"),
            None => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `example.com:8080` → (example.com, 8080); `[::1]:80` → (::1, 80).
fn split_host_port(host: &str) -> (Option<String>, Option<u16>) {
    let host = host.trim();
    if host.is_empty() {
        return (None, None);
    }
    if let Some(rest) = host.strip_prefix('[')
        && let Some((h, tail)) = rest.split_once(']')
    {
        let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
        return (Some(h.to_owned()), port);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (Some(h.to_owned()), Some(port)),
            Err(_) => (Some(host.to_owned()), None),
        },
        _ => (Some(host.to_owned()), None),
    }
}

pub fn address(family: u16, bytes: &[u8; 16]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        AF_INET6 => {
            let v6 = Ipv6Addr::from(*bytes);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
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

    fn get<'a>(s: &'a SpanShape, k: &str) -> Option<&'a AttrValue> {
        s.attributes.iter().find(|(a, _)| *a == k).map(|(_, v)| v)
    }

    #[test]
    fn server_span_attributes_and_redaction() {
        let ex = HttpExchange {
            method: "GET".into(),
            target: "/items/7?q=shoes&page=2".into(),
            version: "1.1".into(),
            host: Some("shop.local:8080".into()),
            user_agent: Some("curl/8".into()),
            status: Some(503),
            ..Default::default()
        };
        let s = http_span(&ex, Role::Server, &tuple(), "http", HttpOptions::default());
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
    }

    #[test]
    fn client_span_builds_full_url_and_flags_4xx() {
        let ex = HttpExchange {
            method: "POST".into(),
            target: "/api?token=secret".into(),
            version: "1.1".into(),
            host: Some("api.internal:9000".into()),
            status: Some(404),
            ..Default::default()
        };
        let s = http_span(&ex, Role::Client, &tuple(), "http", HttpOptions::default());
        assert_eq!(
            get(&s, "url.full"),
            Some(&AttrValue::from(
                "http://api.internal:9000/api?token=REDACTED"
            ))
        );
        assert!(matches!(s.status, SpanStatus::Error { .. }));
        let kept = http_span(
            &ex,
            Role::Client,
            &tuple(),
            "http",
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
            version: "2".into(),
            content_type: Some("application/grpc".into()),
            status: Some(200),
            grpc_status: Some(5),
            grpc_message: Some("no such greeter".into()),
            ..Default::default()
        };
        let client = http_span(&ex, Role::Client, &tuple(), "http", HttpOptions::default());
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
        let server = http_span(&ex, Role::Server, &tuple(), "http", HttpOptions::default());
        assert!(matches!(server.status, SpanStatus::Unset));
        let internal = HttpExchange {
            grpc_status: Some(13),
            ..ex
        };
        let server = http_span(
            &internal,
            Role::Server,
            &tuple(),
            "http",
            HttpOptions::default(),
        );
        assert!(matches!(server.status, SpanStatus::Error { .. }));
    }

    #[test]
    fn host_and_target_forms() {
        assert_eq!(split_host_port("[::1]:80"), (Some("::1".into()), Some(80)));
        assert_eq!(split_host_port("h"), (Some("h".into()), None));
        assert_eq!(split_target("http://x:1/p?q"), ("/p", Some("q")));
        assert_eq!(split_target("*"), ("*", None));
    }
}

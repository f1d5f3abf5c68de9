//! Where OTLP goes: command-line flags and the standard `OTEL_EXPORTER_OTLP_*` environment
//! variables resolved into one exact destination, with errors that name the flag or variable.

use std::time::Duration;

pub const ENV_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const ENV_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const ENV_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub const ENV_TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
pub const ENV_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
pub const ENV_TRACES_HEADERS: &str = "OTEL_EXPORTER_OTLP_TRACES_HEADERS";
pub const ENV_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
pub const ENV_TRACES_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";

/// Names used in error messages for values that came from the command line.
pub const FLAG_ENDPOINT: &str = "--otlp-endpoint";
pub const FLAG_TRACES_ENDPOINT: &str = "--otlp-traces-endpoint";
pub const FLAG_PROTOCOL: &str = "--otlp-protocol";
pub const FLAG_HEADERS: &str = "--otlp-headers";
pub const FLAG_TIMEOUT: &str = "--otlp-timeout";

/// The OTLP specification's default export timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

const TRACES_PATH: &str = "/v1/traces";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The spelling used by `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }

    /// Parse a protocol name; `source` names the flag or variable for the error message.
    pub fn parse(value: &str, source: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            "http/json" => Err(format!(
                "{source}: protocol 'http/json' is not supported; use 'grpc' or 'http/protobuf'"
            )),
            _ => Err(format!(
                "{source}: unknown protocol '{value}'; expected 'grpc' or 'http/protobuf'"
            )),
        }
    }
}

impl std::fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// OTLP settings given on the command line; `None` means the flag was not given.
#[derive(Clone, Debug, Default)]
pub struct OtlpOptions {
    /// Base endpoint; for http/protobuf `/v1/traces` is appended.
    pub endpoint: Option<String>,
    /// Exact traces endpoint, used as-is.
    pub traces_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    pub protocol: Option<String>,
    /// `key=value,key2=value2`, values percent-encoded.
    pub headers: Option<String>,
    pub timeout: Option<Duration>,
}

/// Where and how to send, fully resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpSettings {
    pub protocol: OtlpProtocol,
    /// The exact URL to send to (for http/protobuf it includes the `/v1/traces` path).
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
}

impl OtlpSettings {
    /// Combine flags and environment (flags win; a signal-specific variable beats the generic
    /// one). `Ok(None)` when no endpoint is configured anywhere. Errors name the flag or
    /// variable and the offending value.
    pub fn resolve(
        flags: &OtlpOptions,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<OtlpSettings>, String> {
        // Empty variables count as unset, as the OpenTelemetry specification asks.
        let env_var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let flag = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());

        let protocol = match flag(&flags.protocol)
            .map(|v| (v, FLAG_PROTOCOL))
            .or_else(|| env_var(ENV_TRACES_PROTOCOL).map(|v| (v, ENV_TRACES_PROTOCOL)))
            .or_else(|| env_var(ENV_PROTOCOL).map(|v| (v, ENV_PROTOCOL)))
        {
            Some((value, source)) => OtlpProtocol::parse(&value, source)?,
            None => OtlpProtocol::HttpProtobuf,
        };

        // (value, where it came from, whether it is the exact traces URL)
        let endpoint = flag(&flags.traces_endpoint)
            .map(|v| (v, FLAG_TRACES_ENDPOINT, true))
            .or_else(|| flag(&flags.endpoint).map(|v| (v, FLAG_ENDPOINT, false)))
            .or_else(|| env_var(ENV_TRACES_ENDPOINT).map(|v| (v, ENV_TRACES_ENDPOINT, true)))
            .or_else(|| env_var(ENV_ENDPOINT).map(|v| (v, ENV_ENDPOINT, false)));
        let Some((endpoint, source, exact)) = endpoint else {
            return Ok(None);
        };
        let endpoint = endpoint.trim();
        validate_url(endpoint, source)?;
        let url = if exact || protocol == OtlpProtocol::Grpc {
            endpoint.to_owned()
        } else {
            format!("{}{TRACES_PATH}", endpoint.trim_end_matches('/'))
        };

        let headers = match flag(&flags.headers)
            .map(|v| (v, FLAG_HEADERS))
            .or_else(|| env_var(ENV_TRACES_HEADERS).map(|v| (v, ENV_TRACES_HEADERS)))
            .or_else(|| env_var(ENV_HEADERS).map(|v| (v, ENV_HEADERS)))
        {
            Some((value, source)) => parse_headers(&value, source)?,
            None => Vec::new(),
        };

        let timeout = match flags.timeout {
            Some(t) if t.is_zero() => {
                return Err(format!(
                    "{FLAG_TIMEOUT}: the timeout must be greater than zero"
                ));
            }
            Some(t) => t,
            None => match env_var(ENV_TRACES_TIMEOUT)
                .map(|v| (v, ENV_TRACES_TIMEOUT))
                .or_else(|| env_var(ENV_TIMEOUT).map(|v| (v, ENV_TIMEOUT)))
            {
                Some((value, source)) => parse_timeout_ms(&value, source)?,
                None => DEFAULT_TIMEOUT,
            },
        };

        Ok(Some(OtlpSettings {
            protocol,
            url,
            headers,
            timeout,
        }))
    }
}

fn validate_url(url: &str, source: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            format!(
                "{source}: invalid endpoint '{url}': expected a URL starting with http:// or https://, like http://localhost:4318"
            )
        })?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("{source}: invalid endpoint '{url}': no host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{source}: invalid endpoint '{url}': contains whitespace"
        ));
    }
    if let Some((_, port)) = authority.rsplit_once(':')
        && !port.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(format!(
            "{source}: invalid endpoint '{url}': bad port '{port}'"
        ));
    }
    Ok(())
}

fn parse_timeout_ms(value: &str, source: &str) -> Result<Duration, String> {
    match value.trim().parse::<u64>() {
        Ok(0) => Err(format!(
            "{source}: invalid timeout '{value}': must be a positive number of milliseconds"
        )),
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(_) => Err(format!(
            "{source}: invalid timeout '{value}': expected a whole number of milliseconds"
        )),
    }
}

/// `key=value,key2=value2` with percent-encoded values (W3C baggage style, as the
/// OpenTelemetry specification describes for `OTEL_EXPORTER_OTLP_HEADERS`).
fn parse_headers(value: &str, source: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((key, raw)) = item.split_once('=') else {
            return Err(format!(
                "{source}: invalid header '{item}': expected key=value"
            ));
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(is_token_byte) {
            return Err(format!("{source}: invalid header name '{key}' in '{item}'"));
        }
        let decoded = percent_decode(raw.trim()).ok_or_else(|| {
            format!("{source}: invalid percent-encoding in the value of header '{key}'")
        })?;
        if !decoded
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        {
            return Err(format!(
                "{source}: the value of header '{key}' must be printable ASCII after percent-decoding"
            ));
        }
        let key = key.to_ascii_lowercase();
        // A repeated key: the last one wins.
        out.retain(|(k, _)| *k != key);
        out.push((key, decoded));
    }
    Ok(out)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn resolve_with(
        flags: &OtlpOptions,
        vars: &[(&str, &str)],
    ) -> Result<Option<OtlpSettings>, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        OtlpSettings::resolve(flags, &|name| map.get(name).cloned())
    }

    fn env_only(vars: &[(&str, &str)]) -> Result<Option<OtlpSettings>, String> {
        resolve_with(&OtlpOptions::default(), vars)
    }

    #[test]
    fn nothing_configured_is_none() {
        assert_eq!(env_only(&[]).unwrap(), None);
        // Other settings without an endpoint still mean "no OTLP".
        assert_eq!(
            env_only(&[(ENV_PROTOCOL, "grpc"), (ENV_HEADERS, "a=b")]).unwrap(),
            None
        );
        // Empty values count as unset.
        assert_eq!(env_only(&[(ENV_ENDPOINT, "")]).unwrap(), None);
    }

    #[test]
    fn generic_endpoint_defaults_to_http_protobuf_with_path() {
        let s = env_only(&[(ENV_ENDPOINT, "http://collector:4318")])
            .unwrap()
            .unwrap();
        assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(s.url, "http://collector:4318/v1/traces");
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        assert!(s.headers.is_empty());
    }

    #[test]
    fn generic_endpoint_trailing_slash_and_base_path() {
        let s = env_only(&[(ENV_ENDPOINT, "http://collector:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(s.url, "http://collector:4318/v1/traces");
        let s = env_only(&[(ENV_ENDPOINT, "http://gw/otel/")])
            .unwrap()
            .unwrap();
        assert_eq!(s.url, "http://gw/otel/v1/traces");
    }

    #[test]
    fn traces_endpoint_is_used_as_is_and_beats_generic() {
        let s = env_only(&[
            (ENV_ENDPOINT, "http://generic:4318"),
            (ENV_TRACES_ENDPOINT, "http://specific:9999/custom"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.url, "http://specific:9999/custom");
    }

    #[test]
    fn grpc_endpoint_gets_no_path() {
        let s = env_only(&[
            (ENV_ENDPOINT, "http://collector:4317"),
            (ENV_PROTOCOL, "grpc"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.protocol, OtlpProtocol::Grpc);
        assert_eq!(s.url, "http://collector:4317");
    }

    #[test]
    fn traces_protocol_beats_generic_protocol() {
        let s = env_only(&[
            (ENV_ENDPOINT, "http://c:4317"),
            (ENV_PROTOCOL, "http/protobuf"),
            (ENV_TRACES_PROTOCOL, "grpc"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.protocol, OtlpProtocol::Grpc);
    }

    #[test]
    fn http_json_is_a_clear_error() {
        let e =
            env_only(&[(ENV_ENDPOINT, "http://c:4318"), (ENV_PROTOCOL, "http/json")]).unwrap_err();
        assert!(e.contains(ENV_PROTOCOL), "{e}");
        assert!(e.contains("http/json"), "{e}");
        assert!(e.contains("not supported"), "{e}");
    }

    #[test]
    fn unknown_protocol_names_variable_and_value() {
        let e = env_only(&[
            (ENV_ENDPOINT, "http://c:4318"),
            (ENV_TRACES_PROTOCOL, "carrier-pigeon"),
        ])
        .unwrap_err();
        assert!(
            e.contains(ENV_TRACES_PROTOCOL) && e.contains("carrier-pigeon"),
            "{e}"
        );
        let flags = OtlpOptions {
            endpoint: Some("http://c:4318".into()),
            protocol: Some("udp".into()),
            ..Default::default()
        };
        let e = resolve_with(&flags, &[]).unwrap_err();
        assert!(e.contains(FLAG_PROTOCOL) && e.contains("udp"), "{e}");
    }

    #[test]
    fn protocol_is_case_insensitive() {
        let s = env_only(&[(ENV_ENDPOINT, "http://c:4317"), (ENV_PROTOCOL, " GRPC ")])
            .unwrap()
            .unwrap();
        assert_eq!(s.protocol, OtlpProtocol::Grpc);
    }

    #[test]
    fn flags_beat_env() {
        let flags = OtlpOptions {
            endpoint: Some("http://flag:4317".into()),
            traces_endpoint: None,
            protocol: Some("grpc".into()),
            headers: Some("x-flag=1".into()),
            timeout: Some(Duration::from_millis(1500)),
        };
        let s = resolve_with(
            &flags,
            &[
                (ENV_ENDPOINT, "http://env:4318"),
                (ENV_TRACES_ENDPOINT, "http://env-traces:4318/v1/traces"),
                (ENV_PROTOCOL, "http/protobuf"),
                (ENV_HEADERS, "x-env=1"),
                (ENV_TIMEOUT, "99"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.url, "http://flag:4317");
        assert_eq!(s.protocol, OtlpProtocol::Grpc);
        assert_eq!(s.headers, vec![("x-flag".to_owned(), "1".to_owned())]);
        assert_eq!(s.timeout, Duration::from_millis(1500));
    }

    #[test]
    fn traces_endpoint_flag_beats_endpoint_flag() {
        let flags = OtlpOptions {
            endpoint: Some("http://a:4318".into()),
            traces_endpoint: Some("http://b:4318/x".into()),
            ..Default::default()
        };
        let s = resolve_with(&flags, &[]).unwrap().unwrap();
        assert_eq!(s.url, "http://b:4318/x");
        let flags = OtlpOptions {
            endpoint: Some("http://a:4318".into()),
            ..Default::default()
        };
        let s = resolve_with(&flags, &[]).unwrap().unwrap();
        assert_eq!(s.url, "http://a:4318/v1/traces");
    }

    #[test]
    fn flag_protocol_applies_to_env_endpoint() {
        let flags = OtlpOptions {
            protocol: Some("grpc".into()),
            ..Default::default()
        };
        let s = resolve_with(&flags, &[(ENV_ENDPOINT, "http://c:4317")])
            .unwrap()
            .unwrap();
        assert_eq!(s.url, "http://c:4317");
        assert_eq!(s.protocol, OtlpProtocol::Grpc);
    }

    #[test]
    fn headers_are_parsed_and_percent_decoded() {
        let s = env_only(&[
            (ENV_ENDPOINT, "http://c:4318"),
            (
                ENV_HEADERS,
                " Authorization=Basic%20dXNlcjpwYXNz , x-tenant = acme ,,x-eq=a%3Db",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            s.headers,
            vec![
                ("authorization".to_owned(), "Basic dXNlcjpwYXNz".to_owned()),
                ("x-tenant".to_owned(), "acme".to_owned()),
                ("x-eq".to_owned(), "a=b".to_owned()),
            ]
        );
    }

    #[test]
    fn header_value_may_contain_equals_sign() {
        let s = env_only(&[(ENV_ENDPOINT, "http://c:4318"), (ENV_HEADERS, "k=a=b")])
            .unwrap()
            .unwrap();
        assert_eq!(s.headers, vec![("k".to_owned(), "a=b".to_owned())]);
    }

    #[test]
    fn traces_headers_beat_generic_headers() {
        let s = env_only(&[
            (ENV_ENDPOINT, "http://c:4318"),
            (ENV_HEADERS, "a=1"),
            (ENV_TRACES_HEADERS, "b=2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.headers, vec![("b".to_owned(), "2".to_owned())]);
    }

    #[test]
    fn repeated_header_last_wins() {
        let s = env_only(&[(ENV_ENDPOINT, "http://c:4318"), (ENV_HEADERS, "a=1,A=2")])
            .unwrap()
            .unwrap();
        assert_eq!(s.headers, vec![("a".to_owned(), "2".to_owned())]);
    }

    #[test]
    fn bad_headers_are_errors() {
        for (bad, needle) in [
            ("novalue", "novalue"),
            ("=v", "''"),
            ("bad key=v", "bad key"),
            ("k=%zz", "percent"),
            ("k=%4", "percent"),
            ("k=caf%C3%A9", "ASCII"),
        ] {
            let e = env_only(&[(ENV_ENDPOINT, "http://c:4318"), (ENV_HEADERS, bad)]).unwrap_err();
            assert!(e.contains(ENV_HEADERS), "{bad}: {e}");
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn timeout_from_env_in_milliseconds() {
        let s = env_only(&[(ENV_ENDPOINT, "http://c:4318"), (ENV_TIMEOUT, "2500")])
            .unwrap()
            .unwrap();
        assert_eq!(s.timeout, Duration::from_millis(2500));
        let s = env_only(&[
            (ENV_ENDPOINT, "http://c:4318"),
            (ENV_TIMEOUT, "2500"),
            (ENV_TRACES_TIMEOUT, "700"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.timeout, Duration::from_millis(700));
    }

    #[test]
    fn bad_timeouts_are_errors() {
        for bad in ["soon", "-5", "1.5", "0"] {
            let e = env_only(&[(ENV_ENDPOINT, "http://c:4318"), (ENV_TIMEOUT, bad)]).unwrap_err();
            assert!(e.contains(ENV_TIMEOUT) && e.contains(bad), "{bad}: {e}");
        }
        let flags = OtlpOptions {
            endpoint: Some("http://c:4318".into()),
            timeout: Some(Duration::ZERO),
            ..Default::default()
        };
        let e = resolve_with(&flags, &[]).unwrap_err();
        assert!(e.contains(FLAG_TIMEOUT), "{e}");
    }

    #[test]
    fn bad_endpoints_are_errors() {
        for bad in [
            "collector:4318",
            "ftp://c",
            "http://",
            "http://c:port",
            "http://c :1",
        ] {
            let e = env_only(&[(ENV_ENDPOINT, bad)]).unwrap_err();
            assert!(e.contains(ENV_ENDPOINT) && e.contains(bad), "{bad}: {e}");
        }
        let flags = OtlpOptions {
            traces_endpoint: Some("localhost".into()),
            ..Default::default()
        };
        let e = resolve_with(&flags, &[]).unwrap_err();
        assert!(
            e.contains(FLAG_TRACES_ENDPOINT) && e.contains("localhost"),
            "{e}"
        );
    }

    #[test]
    fn ipv6_endpoint_is_accepted() {
        let s = env_only(&[(ENV_ENDPOINT, "http://[::1]:4318")])
            .unwrap()
            .unwrap();
        assert_eq!(s.url, "http://[::1]:4318/v1/traces");
        let s = env_only(&[(ENV_ENDPOINT, "http://[::1]")])
            .unwrap()
            .unwrap();
        assert_eq!(s.url, "http://[::1]/v1/traces");
    }
}

//! Database operations as CLIENT spans, with OpenTelemetry database semantic conventions.

use agent_common::ConnTuple;

use super::{
    address::AddressNames,
    http::{SpanShape, joined},
    model::{AttrValue, SpanKind, SpanStatus},
};
use crate::protocols::{DbExchange, sql};

#[derive(Clone, Copy, Debug, Default)]
pub struct DbOptions {
    /// Keep literal values in `db.query.text` instead of replacing them with `?`.
    pub keep_literals: bool,
}

pub fn db_span(
    ex: DbExchange,
    tuple: &ConnTuple,
    opts: DbOptions,
    names: &mut AddressNames,
) -> SpanShape {
    // `{operation} {collection}`, else the operation, else the system.
    let name = match (&ex.operation, &ex.collection) {
        (Some(op), Some(c)) => joined(op, ' ', c),
        (Some(op), None) => op.clone(),
        _ => ex.system.to_owned(),
    };
    let mut attrs: Vec<(&'static str, AttrValue)> = Vec::with_capacity(10);
    attrs.push(("db.system.name", AttrValue::Static(ex.system)));
    if let Some(op) = ex.operation {
        attrs.push(("db.operation.name", AttrValue::Str(op)));
    }
    if let Some(c) = ex.collection {
        attrs.push(("db.collection.name", AttrValue::Str(c)));
    }
    if let Some(ns) = ex.namespace {
        attrs.push(("db.namespace", AttrValue::Str(ns)));
    }
    if let Some(text) = ex.query_text {
        let shown = if opts.keep_literals {
            text
        } else if let Some(without) = ex.query_without_values {
            without
        } else {
            sql::sanitize(&text)
        };
        attrs.push(("db.query.text", AttrValue::Str(shown)));
    }
    if let Some(remote) = names.of(tuple.family, &tuple.remote_addr) {
        attrs.push(("server.address", AttrValue::Shared(remote.clone())));
        attrs.push(("server.port", AttrValue::Int(tuple.remote_port as i64)));
        attrs.push(("network.peer.address", AttrValue::Shared(remote)));
        attrs.push((
            "network.peer.port",
            AttrValue::Int(tuple.remote_port as i64),
        ));
    }
    if let Some(rows) = ex.rows {
        attrs.push(("db.response.returned_rows", AttrValue::Int(rows as i64)));
    }
    let status = match ex.status_code {
        Some(code) => {
            attrs.push(("db.response.status_code", AttrValue::Str(code.clone())));
            attrs.push(("error.type", AttrValue::Str(code)));
            SpanStatus::Error {
                message: ex.error_message.unwrap_or_default(),
            }
        }
        None => SpanStatus::Unset,
    };
    SpanShape {
        name,
        kind: SpanKind::Client,
        attributes: attrs,
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_arguments_hidden_and_errors_flagged() {
        let ex = DbExchange {
            system: "redis",
            operation: Some("SET".into()),
            query_text: Some("SET user:1 secret".into()),
            query_without_values: Some("SET ? ?".into()),
            status_code: Some("WRONGTYPE".into()),
            error_message: Some("WRONGTYPE Operation against a key".into()),
            ..Default::default()
        };
        let s = db_span(
            ex,
            &ConnTuple::UNKNOWN,
            DbOptions::default(),
            &mut AddressNames::default(),
        );
        assert_eq!(s.name, "SET");
        assert_eq!(s.kind, SpanKind::Client);
        let text = s
            .attributes
            .iter()
            .find(|(k, _)| *k == "db.query.text")
            .unwrap();
        assert_eq!(text.1, AttrValue::from("SET ? ?"));
        assert!(matches!(s.status, SpanStatus::Error { .. }));
    }
}

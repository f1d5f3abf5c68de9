//! Spans: exchanges become OpenTelemetry spans with semantic-convention attributes, resources
//! and trace context.

pub mod clock;
pub mod db;
pub mod http;
pub mod model;
pub mod resource;
pub mod trace_context;

use agent_common::Role;

use self::{
    clock::Clock,
    db::{DbOptions, db_span},
    http::{HttpOptions, http_span},
    model::{SpanKind, SpanRecord},
    resource::ResourceCache,
    trace_context::{new_span_id, new_trace_id, parse_traceparent},
};
use crate::{
    capture::streams::ConnectionMeta,
    protocols::{Exchange, ExchangeDetail},
};

#[derive(Clone, Copy, Debug, Default)]
pub struct SpanOptions {
    pub http: HttpOptions,
    pub db: DbOptions,
}

/// Turns finished exchanges into span records.
pub struct SpanFactory {
    clock: Clock,
    resources: ResourceCache,
    opts: SpanOptions,
    pub created: u64,
}

impl SpanFactory {
    pub fn new(opts: SpanOptions) -> Self {
        Self {
            clock: Clock::new(),
            resources: ResourceCache::new(),
            opts,
            created: 0,
        }
    }

    /// A process produced traffic: make sure its resource is known before it can exit.
    pub fn note_process(&mut self, tgid: u32) {
        self.resources.get(tgid);
    }

    /// The process exec'd or exited: its resource must be read again next time.
    pub fn forget_process(&mut self, tgid: u32) {
        self.resources.forget(tgid);
    }

    /// The span for an exchange; `None` for a database's own view of its clients (their
    /// CLIENT spans already tell the story).
    pub fn build(&mut self, meta: &ConnectionMeta, ex: &Exchange) -> Option<SpanRecord> {
        if matches!(ex.detail, ExchangeDetail::Db(_)) && meta.role == Role::Server {
            return None;
        }
        let (shape, incoming) = match &ex.detail {
            ExchangeDetail::Http(http) => (
                http_span(http, meta.role, &meta.tuple, "http", self.opts.http),
                http.traceparent.as_deref().and_then(parse_traceparent),
            ),
            ExchangeDetail::Db(db) => (db_span(db, &meta.tuple, self.opts.db), None),
        };
        // Only a server continues the caller's trace; a client's outgoing traceparent would be
        // its own child's context, which the trace-assembly stage links.
        let parent = incoming.filter(|_| shape.kind == SpanKind::Server);
        let (trace_id, parent_span_id, flags, remote) = match &parent {
            Some(tp) => (tp.trace_id, tp.parent_id, tp.flags, true),
            None => (new_trace_id(), [0; 8], 1, false),
        };
        let trace_state = match (&parent, &ex.detail) {
            (Some(_), ExchangeDetail::Http(h)) => h.tracestate.clone(),
            _ => None,
        };
        let end_ns = ex
            .response_end_ns
            .unwrap_or(ex.request_end_ns)
            .max(ex.request_start_ns);
        self.created += 1;
        Some(SpanRecord {
            trace_id,
            span_id: new_span_id(),
            parent_span_id,
            parent_is_remote: remote,
            trace_flags: flags,
            trace_state,
            name: shape.name,
            kind: shape.kind,
            start: self.clock.to_system_time(ex.request_start_ns),
            end: self.clock.to_system_time(end_ns),
            attributes: shape.attributes,
            status: shape.status,
            resource: self.resources.get(meta.tgid),
        })
    }
}

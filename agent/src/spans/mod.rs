//! Spans: exchanges become OpenTelemetry spans with semantic-convention attributes, resources
//! and trace context.

pub mod address;
pub mod assembly;
pub mod clock;
pub mod db;
pub mod hold;
pub mod http;
pub mod model;
pub mod resource;
pub mod trace_context;

use agent_common::Role;

use self::{
    address::AddressNames,
    assembly::{AssemblyStats, RequestKey, TraceAssembler},
    clock::Clock,
    db::{DbOptions, db_span},
    http::{HttpOptions, http_span},
    model::{SpanKind, SpanRecord},
    resource::ResourceCache,
};
use crate::{
    capture::streams::ConnectionMeta,
    protocols::{Exchange, ExchangeDetail, RequestStarted},
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
    assembler: TraceAssembler,
    names: AddressNames,
    opts: SpanOptions,
    pub created: u64,
}

impl SpanFactory {
    pub fn new(opts: SpanOptions) -> Self {
        Self {
            clock: Clock::new(),
            resources: ResourceCache::new(),
            assembler: TraceAssembler::new(),
            names: AddressNames::default(),
            opts,
            created: 0,
        }
    }

    /// A process produced traffic: make sure its resource is known before it can exit.
    pub fn note_process(&mut self, tgid: u32) {
        self.resources.note(tgid);
    }

    /// The process exited: what it had in flight is gone.
    pub fn forget_process(&mut self, tgid: u32) {
        self.resources.forget(tgid);
        self.assembler.on_process_exit(tgid);
    }

    /// The process exec'd `comm`: its resource must be read again next time (with `comm` as the
    /// name of last resort), and what the old program had in flight is gone.
    pub fn on_exec(&mut self, tgid: u32, comm: Option<String>) {
        self.resources.on_exec(tgid, comm);
        self.assembler.on_process_exit(tgid);
    }

    pub fn assembly_stats(&self) -> AssemblyStats {
        self.assembler.stats.clone()
    }

    /// Periodic clean-up of requests that never ended.
    pub fn evict_stale(&mut self, now_ns: u64) {
        self.assembler.evict_stale(now_ns);
    }

    /// The request being served on `wakee` in this process, for a worker's wake-up.
    pub fn serving_on_thread(&self, tgid: u32, wakee: u32) -> Option<assembly::SpanContext> {
        self.assembler.serving_on_thread(tgid, wakee)
    }

    /// A request's head was seen: its span's ids are decided now (see [`assembly`]).
    pub fn on_request_start(&mut self, meta: &ConnectionMeta, tid: u32, started: &RequestStarted) {
        let key = RequestKey {
            tgid: meta.tgid,
            sock: meta.sock,
            start_ns: started.request_start_ns,
        };
        self.assembler.on_request_start(
            key,
            meta.role,
            &meta.tuple,
            tid,
            started.traceparent.as_deref(),
            started.tracestate.as_deref(),
        );
    }

    /// The span for an exchange; `None` for a database's own view of its clients (their
    /// CLIENT spans already tell the story).
    /// The span, and whether its parent was a guess that a wake-up of `tid` may correct.
    pub fn build(
        &mut self,
        meta: &ConnectionMeta,
        tid: u32,
        ex: Exchange,
    ) -> Option<(SpanRecord, bool)> {
        if matches!(ex.detail, ExchangeDetail::Db(_)) && meta.role == Role::Server {
            return None;
        }
        let shape = match ex.detail {
            ExchangeDetail::Http(http) => {
                let scheme = if meta.tls { "https" } else { "http" };
                http_span(
                    http,
                    meta.role,
                    &meta.tuple,
                    scheme,
                    self.opts.http,
                    &mut self.names,
                )
            }
            ExchangeDetail::Db(db) => db_span(db, &meta.tuple, self.opts.db, &mut self.names),
        };
        let key = RequestKey {
            tgid: meta.tgid,
            sock: meta.sock,
            start_ns: ex.request_start_ns,
        };
        let role = match shape.kind {
            SpanKind::Server => Role::Server,
            SpanKind::Client => Role::Client,
        };
        let ctx = self.assembler.on_request_end(key, role, &meta.tuple, tid);
        let end_ns = ex
            .response_end_ns
            .unwrap_or(ex.request_end_ns)
            .max(ex.request_start_ns);
        self.created += 1;
        let guessed = ctx.parent_guessed;
        Some((
            SpanRecord {
                trace_id: ctx.trace_id,
                span_id: ctx.span_id,
                parent_span_id: ctx.parent_span_id,
                parent_is_remote: ctx.parent_is_remote,
                trace_flags: ctx.trace_flags,
                trace_state: ctx.trace_state,
                name: shape.name,
                kind: shape.kind,
                start: self.clock.to_system_time(ex.request_start_ns),
                end: self.clock.to_system_time(end_ns),
                attributes: shape.attributes,
                status: shape.status,
                resource: self.resources.get(meta.tgid),
            },
            guessed,
        ))
    }
}

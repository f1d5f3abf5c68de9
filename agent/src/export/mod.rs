//! Exporters: where finished spans go. All of them sit behind [`SpanExporter`]; the pipeline in
//! front of them ([`pipeline`]) batches spans through a bounded queue and counts what it drops.

pub mod otlp;
pub mod pipeline;
pub mod terminal;

use std::time::Duration;

use crate::spans::model::SpanRecord;

/// A destination for finished spans. Implementations may block (they run on their own task or
/// thread) but must honour the timeouts they are given.
pub trait SpanExporter: Send {
    /// Hand over one batch. An error means the batch is lost; the caller counts it.
    fn export(&mut self, batch: Vec<SpanRecord>) -> anyhow::Result<()>;
    /// Push out anything buffered, giving up after `timeout`.
    fn flush(&mut self, timeout: Duration) -> anyhow::Result<()>;
    /// Flush and release resources, giving up after `timeout`.
    fn shutdown(&mut self, timeout: Duration) -> anyhow::Result<()>;
}

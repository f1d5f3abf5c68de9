//! Periscope: eBPF zero-code auto-instrumentation.
//!
//! The pipeline, one folder a stage:
//! - [`capture`]: kernel programs and their events, turned into per-connection byte streams;
//! - [`protocols`]: byte streams into request/response exchanges;
//! - [`spans`]: exchanges into OpenTelemetry spans with their trace context;
//! - [`export`]: spans out, over OTLP or to the terminal.
//!
//! [`run`] wires the stages together; [`check`] reports what the host allows.

pub mod capture;
pub mod check;
pub mod config;
pub mod cpu_priority;
pub mod export;
pub mod process_counts;
pub mod protocols;
pub mod run;
pub mod spans;

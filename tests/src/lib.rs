//! Test support for Periscope's end-to-end tests and benchmark: a real OTLP receiver
//! ([`receiver`]) and process/port helpers ([`procs`]).

pub mod procs;
pub mod receiver;
mod span_count;

pub use receiver::{OtlpReceiver, ReceivedSpan, Transport};

#[cfg(test)]
mod exporter_roundtrip;

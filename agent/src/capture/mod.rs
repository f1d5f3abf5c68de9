//! Capture: kernel programs, their events, and per-connection byte streams.
//!
//! - [`probes`] loads and attaches the kernel programs and reads their loss counters;
//! - [`syscalls`] gives the kernel programs this architecture's syscall numbers and registers;
//! - [`tracefs`] finds tracepoints and their layouts, [`kernel_btf`] the kernel's socket fields;
//! - [`events`] decodes ring-buffer records;
//! - [`processes`] keeps the kernel's process selection up to date;
//! - [`procnet`] answers from /proc what the kernel did not see (connections older than us);
//! - [`self_traffic`] keeps the agent's own export traffic out of the spans;
//! - [`tls`] attaches the OpenSSL uprobes to every libssl in use, where [`openssl_entries`]
//!   says they cost least;
//! - [`streams`] routes bytes to per-connection protocol decoders.

pub mod events;
pub mod kernel_btf;
pub mod openssl_entries;
pub mod probes;
pub mod processes;
pub mod procnet;
pub mod ring_backlog;
pub mod self_traffic;
pub mod streams;
pub mod syscalls;
pub mod tls;
pub mod tracefs;

//! Capture: kernel programs, their events, and per-connection byte streams.

//! Export pipeline (stub).

//! Terminal trees (stub).

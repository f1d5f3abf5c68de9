//! OTLP exporter (stub).

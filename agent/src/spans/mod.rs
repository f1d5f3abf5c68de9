//! Spans: exchanges become OpenTelemetry spans with semantic-convention attributes, resources
//! and trace context.

pub mod model;

//! The agent's own span record: what the span builders produce and the exporters consume.

use std::sync::Arc;
use std::time::SystemTime;

/// W3C trace id (16 bytes) and span id (8 bytes).
pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
}

#[derive(Clone, Debug)]
pub enum AttrValue {
    Str(String),
    /// A fixed text (a scheme, a protocol name): nothing to allocate or copy, here or in the
    /// exporter.
    Static(&'static str),
    /// A text many spans share (a peer's address): cloned by reference count.
    Shared(Arc<str>),
    Int(i64),
    Bool(bool),
}

impl AttrValue {
    /// The text, for the three text forms.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            Self::Static(s) => Some(s),
            Self::Shared(s) => Some(s),
            Self::Int(_) | Self::Bool(_) => None,
        }
    }
}

/// Texts are equal by content, whichever form holds them.
impl PartialEq for AttrValue {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Int(a), Self::Int(b)) => a == b,
            (Self::Bool(a), Self::Bool(b)) => a == b,
            _ => self.as_str().is_some() && self.as_str() == other.as_str(),
        }
    }
}

impl From<&str> for AttrValue {
    fn from(v: &str) -> Self {
        Self::Str(v.to_owned())
    }
}
impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        Self::Str(v)
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum SpanStatus {
    Unset,
    Error { message: String },
}

/// The resource a span belongs to: one per traced process.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessResource {
    pub service_name: String,
    pub pid: u32,
    /// Every resource attribute, `service.name` included, in export order.
    pub attributes: Vec<(String, AttrValue)>,
}

#[derive(Clone, Debug)]
pub struct SpanRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// All zero when this span is a root.
    pub parent_span_id: SpanId,
    /// The parent came from outside this host (an incoming `traceparent`).
    pub parent_is_remote: bool,
    /// W3C trace flags (bit 0: sampled).
    pub trace_flags: u8,
    pub trace_state: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, AttrValue)>,
    pub status: SpanStatus,
    pub resource: Arc<ProcessResource>,
}

impl SpanRecord {
    pub fn attribute(&self, key: &str) -> Option<&AttrValue> {
        self.attributes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    pub fn is_root(&self) -> bool {
        self.parent_span_id == [0; 8]
    }
}

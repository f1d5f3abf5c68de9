//! HTTP/1.x (stub until written).
use super::*;
pub struct Http1;
impl Protocol for Http1 {
    fn name(&self) -> &'static str { "http1" }
    fn detect(&self, _flow: Flow, _first: &[u8]) -> bool { false }
    fn new_session(&self) -> Box<dyn Session> { unimplemented!() }
}

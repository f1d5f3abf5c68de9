//! The fuzz targets' common driver (`agent/fuzz`): arbitrary bytes read as a sequence of
//! chunks fed to a session, then the close, with the invariants every session keeps checked
//! on whatever comes out. Built only with the `fuzzing` feature.
//!
//! Input layout, repeated: a control byte, a length byte, then that many data bytes.
//! Control bits: 0 = flow (request/response); 1..=3 = how many bytes go uncaptured (mostly
//! none, sometimes a few, a thousand or [`Driver::huge_gap`]); 4 = multiply the length by 64
//! (to reach size bounds quickly), or, with [`Driver::canned`], have each data byte pick a
//! well-formed message instead; 5..=7 = the "few" of uncaptured bytes.

use super::{Chunk, Exchange, ExchangeDetail, Flow, Protocol, RequestStarted};

/// Feeds `data` (see the module documentation) to a session of `protocol` and checks the
/// common invariants.
pub fn drive(protocol: &dyn Protocol, data: &[u8]) {
    Driver::new(protocol).run(data);
}

type CheckExchange<'a> = &'a dyn Fn(&Exchange);
type Canned<'a> = &'a dyn Fn(Flow, u8) -> Vec<u8>;
type CheckRaw<'a> = &'a dyn Fn(&[u8]);

/// [`drive`] with protocol-specific parts.
pub struct Driver<'a> {
    protocol: &'a dyn Protocol,
    huge_gap: usize,
    opening: Option<&'a [u8]>,
    canned: Option<Canned<'a>>,
    raw: Option<CheckRaw<'a>>,
    check: Option<CheckExchange<'a>>,
}

impl<'a> Driver<'a> {
    pub fn new(protocol: &'a dyn Protocol) -> Self {
        Self {
            protocol,
            huge_gap: 1 << 20,
            opening: None,
            canned: None,
            raw: None,
            check: None,
        }
    }

    /// The largest count of uncaptured bytes (default a megabyte).
    pub fn huge_gap(mut self, bytes: usize) -> Self {
        self.huge_gap = bytes;
        self
    }

    /// The input starts with one more byte: when its bit 0 is set, `request` is fed first
    /// (a connection seen from its start rather than joined late).
    pub fn opening(mut self, request: &'a [u8]) -> Self {
        self.opening = Some(request);
        self
    }

    /// Control bit 4 makes each data byte pick the message `canned(flow, byte)` instead of
    /// multiplying the length.
    pub fn canned(mut self, canned: Canned<'a>) -> Self {
        self.canned = Some(canned);
        self
    }

    /// Called with each chunk's data bytes as read from the input.
    pub fn raw(mut self, raw: CheckRaw<'a>) -> Self {
        self.raw = Some(raw);
        self
    }

    /// Protocol-specific invariants, checked on every exchange after the common ones.
    pub fn check(mut self, check: CheckExchange<'a>) -> Self {
        self.check = Some(check);
        self
    }

    pub fn run(&self, input: &[u8]) {
        let mut rest = input;
        let mut session = self.protocol.new_session();
        let mut out = Vec::new();
        let mut started = Vec::new();
        let mut now = 0u64;
        if let Some(opening) = self.opening {
            let Some((&start, tail)) = rest.split_first() else {
                return;
            };
            rest = tail;
            if start & 1 == 1 {
                let chunk = Chunk {
                    data: opening,
                    missing: 0,
                    first_byte_ns: now,
                    last_byte_ns: now + 5,
                };
                session.feed(Flow::Request, chunk, &mut out);
            }
        }
        while let [control, len, tail @ ..] = rest {
            let flow = if control & 1 == 0 {
                Flow::Request
            } else {
                Flow::Response
            };
            let missing = match (control >> 1) & 7 {
                0..=3 => 0,
                4 | 5 => usize::from(control >> 5) + 1,
                6 => 1000,
                _ => self.huge_gap,
            };
            let bit4 = control & 0x10 != 0;
            let len = usize::from(*len) * if bit4 && self.canned.is_none() { 64 } else { 1 };
            let (raw, tail) = tail.split_at(len.min(tail.len()));
            rest = tail;
            let data = match self.canned {
                Some(canned) if bit4 => raw.iter().flat_map(|&pick| canned(flow, pick)).collect(),
                _ => raw.to_vec(),
            };
            let _ = self.protocol.detect(flow, &data);
            if let Some(check_raw) = self.raw {
                check_raw(raw);
            }
            now += 10;
            let chunk = Chunk {
                data: &data,
                missing,
                first_byte_ns: now,
                last_byte_ns: now + 5,
            };
            session.feed(flow, chunk, &mut out);
            session.take_started(&mut started);
            self.check_all(&out, &started);
            out.clear();
            started.clear();
        }
        session.close(now + 100, &mut out);
        self.check_all(&out, &started);
    }

    fn check_all(&self, exchanges: &[Exchange], started: &[RequestStarted]) {
        assert!(started.len() <= 256);
        for s in started {
            for value in [&s.traceparent, &s.tracestate] {
                assert!(value.as_ref().is_none_or(|v| v.len() <= 512));
            }
        }
        for exchange in exchanges {
            check_common(exchange);
            if let Some(check) = self.check {
                check(exchange);
            }
        }
    }
}

/// What every protocol's exchanges keep to.
fn check_common(exchange: &Exchange) {
    assert!(exchange.request_start_ns <= exchange.request_end_ns);
    assert_eq!(
        exchange.response_start_ns.is_some(),
        exchange.response_end_ns.is_some()
    );
    if let (Some(start), Some(end)) = (exchange.response_start_ns, exchange.response_end_ns) {
        assert!(start <= end);
    }
    match &exchange.detail {
        ExchangeDetail::Http(http) => {
            assert!(!http.method.is_empty() && http.method.len() <= 24);
            assert!(http.target.len() <= 2048);
            for value in [
                &http.host,
                &http.user_agent,
                &http.traceparent,
                &http.tracestate,
            ] {
                assert!(value.as_ref().is_none_or(|v| v.len() <= 512));
            }
            assert_eq!(http.status.is_some(), exchange.response_start_ns.is_some());
        }
        ExchangeDetail::Db(db) => {
            if let Some(start) = exchange.response_start_ns {
                assert!(exchange.request_start_ns <= start);
            }
            assert!(db.namespace.as_ref().is_none_or(|n| n.len() <= 256));
        }
    }
}

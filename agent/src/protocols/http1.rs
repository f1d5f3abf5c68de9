//! HTTP/1.0 and HTTP/1.1 over one TCP connection.
//!
//! Each direction has a [`Reader`] that cuts its byte stream into messages; the session pairs
//! requests with responses in order (HTTP/1.x answers requests first in, first out, also when
//! they are pipelined) and emits one [`Exchange`] per final response.
//!
//! Capture is lossy in two ways the decoder is built around:
//! - a syscall may move more bytes than were copied (`Chunk::missing`). Inside a known-length
//!   body that gap is simply skipped; where it hides framing (a header block, a chunk-size
//!   line) the message is marked partial and the reader resynchronises on the next chunk
//!   that starts with a start line (syscall boundaries are where senders begin messages).
//! - bytes may not be seen at all (`sendfile` bodies). See [`Http1Session::feed`].

mod head;
mod reader;
#[cfg(test)]
mod replay_tests;
mod response_need;
#[cfg(test)]
mod robustness_tests;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use self::head::{ContentLength, Head, StartLine, TransferEncoding};
use self::reader::{Event, Framing, Input, Reader};
use self::response_need::ResponseNeed;
use super::{
    Chunk, Exchange, ExchangeDetail, Flow, HttpExchange, PrefixNeed, Protocol, RequestStarted,
    Session,
};

/// Requests queued without a response; beyond this the oldest is emitted unanswered.
const MAX_PENDING_REQUESTS: usize = 64;

pub struct Http1;

impl Protocol for Http1 {
    fn name(&self) -> &'static str {
        "http1"
    }

    fn detect(&self, flow: Flow, first: &[u8]) -> bool {
        head::detect(flow, first)
    }

    fn new_session(&self) -> Box<dyn Session> {
        Box::new(Http1Session::new())
    }
}

/// Decoder state for one HTTP/1.x connection.
pub struct Http1Session {
    requests: Reader,
    responses: Reader,
    /// Requests whose head was seen and whose final response has not ended yet, oldest first.
    pending: VecDeque<PendingRequest>,
    next_request_id: u64,
    /// The request whose body `requests` is reading.
    request_in_body: Option<u64>,
    /// What the response being read is.
    response: ResponseRole,
    /// After 101 Switching Protocols or a CONNECT tunnel the bytes are no longer HTTP/1.x.
    switched_protocols: bool,
    /// Request heads read since the last `take_started`.
    started: Vec<RequestStarted>,
    response_need: ResponseNeed,
}

struct PendingRequest {
    id: u64,
    request_start_ns: u64,
    request_end_ns: u64,
    response_start_ns: Option<u64>,
    http: HttpExchange,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResponseRole {
    None,
    /// 1xx other than 101: the request still waits for its final response.
    Interim,
    /// A final response, to this request (`None` if we never saw the request).
    Final {
        request: Option<u64>,
        switches_protocols: bool,
    },
}

impl Default for Http1Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Http1Session {
    pub fn new() -> Self {
        Http1Session {
            requests: Reader::new(Flow::Request),
            responses: Reader::new(Flow::Response),
            pending: VecDeque::new(),
            next_request_id: 0,
            request_in_body: None,
            response: ResponseRole::None,
            switched_protocols: false,
            started: Vec::new(),
            response_need: ResponseNeed::default(),
        }
    }

    fn reader(&mut self, flow: Flow) -> &mut Reader {
        match flow {
            Flow::Request => &mut self.requests,
            Flow::Response => &mut self.responses,
        }
    }

    /// Runs one flow's reader over `input`, handling every event it reports.
    fn pump(&mut self, flow: Flow, input: &mut Input<'_>, out: &mut Vec<Exchange>) {
        while !self.switched_protocols {
            let Some(event) = self.reader(flow).next_event(input) else {
                break;
            };
            match (flow, event) {
                (Flow::Request, Event::Head { head, start_ns, .. }) => {
                    self.request_head(head, start_ns, out)
                }
                (Flow::Request, Event::End { partial, body_len }) => {
                    self.request_end(partial, body_len)
                }
                (
                    Flow::Response,
                    Event::Head {
                        head,
                        start_ns,
                        chunk_head_len,
                    },
                ) => self.response_head(head, start_ns, chunk_head_len),
                (Flow::Response, Event::End { partial, body_len }) => {
                    self.response_end(partial, body_len, out)
                }
            }
        }
    }

    fn request_head(&mut self, head: Head, start_ns: u64, out: &mut Vec<Exchange>) {
        let StartLine::Request {
            method,
            target,
            version,
        } = head.start
        else {
            self.requests.set_framing(Framing::Lost);
            return;
        };
        let framing = if head.partial {
            Framing::Lost
        } else {
            match (head.transfer_encoding, head.content_length) {
                (TransferEncoding::ChunkedLast, _) => Framing::Chunked,
                // A request body in another coding has no length we could know (RFC 9112 §6.3).
                (TransferEncoding::Other, _) | (_, ContentLength::Invalid) => Framing::Lost,
                (TransferEncoding::Absent, ContentLength::Valid(n)) => Framing::Length(n),
                (TransferEncoding::Absent, ContentLength::Absent) => Framing::NoBody,
            }
        };
        if self.pending.len() >= MAX_PENDING_REQUESTS {
            // Responses are evidently not being seen; let the oldest go unanswered.
            if let Some(mut oldest) = self.pending.pop_front() {
                if let ResponseRole::Final { request, .. } = &mut self.response
                    && *request == Some(oldest.id)
                {
                    *request = None;
                }
                // Its response may have begun: keep what was seen of it.
                let response_end_ns = oldest
                    .response_start_ns
                    .map(|_| self.responses.chunk_last_ns());
                oldest.http.partial |= response_end_ns.is_some();
                out.push(oldest.into_exchange(response_end_ns));
            }
        }
        let id = self.next_request_id;
        self.next_request_id += 1;
        if self.started.len() < MAX_PENDING_REQUESTS {
            self.started.push(RequestStarted {
                request_start_ns: start_ns,
                traceparent: head.traceparent.clone(),
                tracestate: head.tracestate.clone(),
            });
        }
        self.pending.push_back(PendingRequest {
            id,
            request_start_ns: start_ns,
            request_end_ns: self.requests.chunk_last_ns(),
            response_start_ns: None,
            http: HttpExchange {
                method,
                target,
                version,
                host: head.host,
                user_agent: head.user_agent,
                traceparent: head.traceparent,
                tracestate: head.tracestate,
                request_body_len: match framing {
                    Framing::NoBody => Some(0),
                    Framing::Length(n) => Some(n),
                    _ => None,
                },
                partial: head.partial,
                ..HttpExchange::default()
            },
        });
        self.request_in_body = Some(id);
        self.requests.set_framing(framing);
    }

    fn request_end(&mut self, partial: bool, body_len: Option<u64>) {
        let end_ns = self.requests.chunk_last_ns();
        let Some(id) = self.request_in_body.take() else {
            return;
        };
        // The request may already be gone if its response came first (e.g. 413 mid-upload).
        if let Some(request) = self.pending.iter_mut().rev().find(|p| p.id == id) {
            request.request_end_ns = end_ns;
            request.http.request_body_len = body_len.or(request.http.request_body_len);
            request.http.partial |= partial;
        }
    }

    fn response_head(&mut self, head: Head, start_ns: u64, chunk_head_len: Option<usize>) {
        let StartLine::Response { status } = head.start else {
            self.response_need.give_up();
            self.responses.set_framing(Framing::Lost);
            return;
        };
        // 101 ends the exchange (and HTTP/1.x on this connection); other 1xx are interim.
        if (100..200).contains(&status) && status != 101 {
            self.response = ResponseRole::Interim;
            let framing = if head.partial {
                Framing::Lost
            } else {
                Framing::NoBody
            };
            self.response_need.observe(chunk_head_len, framing);
            self.responses.set_framing(framing);
            return;
        }
        let request = self.pending.front_mut();
        let method = request.as_ref().map_or("", |r| &r.http.method[..]);
        let is_head = method == "HEAD";
        let opens_tunnel = method == "CONNECT" && (200..300).contains(&status);
        let switches_protocols = status == 101 || opens_tunnel;
        let framing = if head.partial {
            Framing::Lost
        } else if is_head || switches_protocols || status == 204 || status == 304 {
            Framing::NoBody
        } else {
            match (head.transfer_encoding, head.content_length) {
                (TransferEncoding::ChunkedLast, _) => Framing::Chunked,
                (TransferEncoding::Other, _) => Framing::UntilClose,
                (TransferEncoding::Absent, ContentLength::Valid(n)) => Framing::Length(n),
                (TransferEncoding::Absent, ContentLength::Invalid) => Framing::Lost,
                (TransferEncoding::Absent, ContentLength::Absent) => Framing::UntilClose,
            }
        };
        self.response = ResponseRole::Final {
            request: request.as_ref().map(|r| r.id),
            switches_protocols,
        };
        if let Some(request) = request {
            request.response_start_ns = Some(start_ns);
            request.http.status = Some(status);
            request.http.partial |= head.partial;
        }
        self.response_need.observe(chunk_head_len, framing);
        self.responses.set_framing(framing);
    }

    fn response_end(&mut self, partial: bool, body_len: Option<u64>, out: &mut Vec<Exchange>) {
        let end_ns = self.responses.chunk_last_ns();
        let role = std::mem::replace(&mut self.response, ResponseRole::None);
        let ResponseRole::Final {
            request,
            switches_protocols,
        } = role
        else {
            return;
        };
        if let Some(id) = request
            && self.pending.front().is_some_and(|p| p.id == id)
            && let Some(mut answered) = self.pending.pop_front()
        {
            answered.http.response_body_len = body_len;
            answered.http.partial |= partial;
            out.push(answered.into_exchange(Some(end_ns)));
        }
        if switches_protocols {
            self.switched_protocols = true;
            self.requests.go_opaque();
            self.responses.go_opaque();
        }
    }

    /// Whether a request is queued that the response being read does not answer.
    fn request_awaits_next_response(&self) -> bool {
        let current = match self.response {
            ResponseRole::Final { request, .. } => request,
            _ => None,
        };
        self.pending.iter().any(|p| Some(p.id) != current)
    }
}

impl Session for Http1Session {
    fn feed(&mut self, flow: Flow, chunk: Chunk<'_>, out: &mut Vec<Exchange>) {
        if self.switched_protocols {
            return;
        }
        // A new chunk is where a lost stream can be picked up again. A message given up here
        // ended, as far as we know, with the previous chunk: its timing is still current.
        if self.reader(flow).abandon_head_if_restarted(chunk.data) {
            self.pump(flow, &mut Input::empty(), out);
        }
        // Bodies sent with sendfile may be invisible to the capture, or show up only as
        // uncaptured bytes in another order than expected. So when we are still skipping a
        // body and the chunk clearly starts the next message, believe the chunk: end the
        // current message as partial and read the new one. For responses this needs another
        // request to be waiting, without which a new response cannot be legitimate.
        let may_cut = match flow {
            Flow::Request => true,
            Flow::Response => self.request_awaits_next_response(),
        };
        if may_cut
            && self.reader(flow).is_in_body()
            && head::chunk_starts_message(flow, chunk.data, false)
        {
            self.reader(flow).cut_body();
            self.pump(flow, &mut Input::empty(), out);
        }
        self.reader(flow).resync_at(chunk.data);
        self.reader(flow)
            .begin_chunk(chunk.first_byte_ns, chunk.last_byte_ns, chunk.data.len());

        let mut input = Input {
            data: chunk.data,
            gap: chunk.missing as u64,
            eof: false,
        };
        self.pump(flow, &mut input, out);
    }

    fn take_resync_skips(&mut self) -> u64 {
        self.requests.take_skips() + self.responses.take_skips()
    }

    fn response_prefix_needed(&self) -> Option<PrefixNeed> {
        if self.switched_protocols {
            return None;
        }
        self.response_need.prefix()
    }

    /// End times come from the last chunk seen of each message: the close carries no bytes.
    fn close(&mut self, _at_ns: u64, out: &mut Vec<Exchange>) {
        // Requests first, so that a request cut by the close is queued before responses end.
        self.pump(Flow::Request, &mut Input::end_of_stream(), out);
        self.pump(Flow::Response, &mut Input::end_of_stream(), out);
        out.extend(self.pending.drain(..).map(|p| p.into_exchange(None)));
        *self = Self::new();
    }

    fn take_started(&mut self, out: &mut Vec<RequestStarted>) {
        out.append(&mut self.started);
    }
}

impl PendingRequest {
    /// `response_end_ns`: when the response ended, if it did (it began at `response_start_ns`).
    fn into_exchange(self, response_end_ns: Option<u64>) -> Exchange {
        let response = self.response_start_ns.zip(response_end_ns);
        Exchange {
            request_start_ns: self.request_start_ns,
            request_end_ns: self.request_end_ns,
            response_start_ns: response.map(|(start, _)| start),
            response_end_ns: response.map(|(_, end)| end),
            detail: ExchangeDetail::Http(self.http),
        }
    }
}

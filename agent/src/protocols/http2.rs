//! HTTP/2 over one connection: cleartext with prior knowledge (h2c), or the plaintext of TLS.
//!
//! Each direction has a [`FrameReader`](frame::FrameReader) that cuts its bytes into frames
//! and an HPACK decoder (its own dynamic table). Streams are tracked by id, however they
//! interleave, and each client-initiated stream becomes one [`Exchange`]: request HEADERS
//! (+CONTINUATION), DATA and trailers one way; interim 1xx HEADERS (ignored), the final
//! HEADERS, DATA and trailers the other. gRPC is HTTP/2 with `content-type:
//! application/grpc…`: a call, unary or streaming, is one exchange, with `grpc-status` and the
//! percent-decoded `grpc-message` from the trailers (or from the response HEADERS of a
//! trailers-only response).
//!
//! An exchange is emitted when both directions ended their half of the stream (END_STREAM),
//! when the stream is reset (RST_STREAM, `reset` = the error code's name; a reset that comes
//! after the response was complete just ends the exchange), when a server's GOAWAY says the
//! stream was never processed (its id is above the last-stream-id: `reset` = "GOAWAY" and the
//! code's name), when more than `MAX_STREAMS` streams are open (the oldest goes, partial), or
//! at close (streams whose response had begun are partial; unanswered ones are emitted
//! without response).
//!
//! Not reported: streams the server initiates (PUSH_PROMISE's header block is decoded only to
//! keep the HPACK state; pushed responses are ignored), streams whose request HEADERS were not
//! seen or whose `:method` could not be decoded, and HTTP/1.1 `Upgrade: h2c` connections
//! (they begin as HTTP/1.1, which the HTTP/1 decoder owns).
//!
//! # Lossy capture
//!
//! Uncaptured bytes (`Chunk::missing`) inside a payload are skipped by count: inside DATA
//! they cost nothing (the body length stays exact unless the pad-length byte was lost).
//! Inside a header block, the fields wholly captured before the gap are still decoded, the
//! stream is marked partial, and the HPACK state of that direction is lost. If a gap covers a
//! frame header, the framing is lost: every open stream is marked partial, the HPACK state of
//! that direction is lost, and the reader waits for a chunk that starts with plausible frame
//! headers (senders begin syscalls at frame boundaries). That is the "clean point": framing
//! resumes there; HPACK resumes at once but without the dynamic table (see below).
//!
//! # Joining late, and decoding without HPACK state
//!
//! A connection that was open before the agent is recognised from a chunk that starts with
//! plausible frames including a HEADERS frame whose block names request pseudo-headers
//! (client to server) or `:status` (server to client) by their static-table index, or, from
//! the server, a SETTINGS frame ([`Http2::detect`]). Such a session has no HPACK state for either
//! direction (nor for a direction whose state was lost to a gap). What can still be decoded:
//! - framing, stream ids, END_STREAM, RST_STREAM, GOAWAY, body lengths: everything;
//! - header fields encoded as literals or as static-table references (`:method GET/POST`,
//!   `:status 200/204/206/304/400/404/500`, `:scheme`, `:path /`), and the fields the
//!   encoder newly adds to its dynamic table from then on and later references: these are
//!   exact;
//! - not: fields that reference dynamic-table entries added before the agent joined (or
//!   before the loss). Typically `:authority`, `user-agent`, `content-type` and a repeated
//!   `:path` are such references on a long-lived connection. They come out as `None`, with
//!   `partial` set; a wrong value is never reported (see `headers` for how).
//!
//! Everything is bounded: header blocks (32 KiB kept), stored values (512 bytes, `:path`
//! 2048), HPACK tables (64 KiB), tracked streams (`MAX_STREAMS`), and requests reported as
//! started between two `take_started` calls.

mod frame;
mod headers;
mod huffman;
#[cfg(test)]
mod replay_tests;
#[cfg(test)]
mod robustness_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use self::frame::{
    BlockClass, CONTINUATION, DATA, DEFAULT_MAX_FRAME_LEN, Event, FLAG_ACK, FLAG_END_HEADERS,
    FLAG_END_STREAM, FLAG_PADDED, Frame, FrameReader, GOAWAY, HEADERS, MAX_HEADER_BLOCK, PREFACE,
    PREFACE_MIN, PUSH_PROMISE, RST_STREAM, SETTINGS,
};
use self::headers::{Fields, HeaderDecoder};
use super::{
    Chunk, Exchange, ExchangeDetail, Flow, HttpExchange, Protocol, RequestStarted, Session,
};

/// Streams tracked at once; beyond this the oldest is emitted, partial.
const MAX_STREAMS: usize = 256;
/// Started requests kept between two `take_started` calls.
const MAX_STARTED: usize = 256;

const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

pub struct Http2;

impl Protocol for Http2 {
    fn name(&self) -> &'static str {
        "http2"
    }

    fn detect(&self, flow: Flow, first: &[u8]) -> bool {
        (flow == Flow::Request && starts_with_preface(first)) || joined_mid_stream(flow, first)
    }

    fn new_session(&self) -> Box<dyn Session> {
        Box::new(Http2Session::new())
    }
}

/// The client preface, or (for a short chunk) at least its first line.
fn starts_with_preface(data: &[u8]) -> bool {
    if data.len() >= PREFACE.len() {
        data.starts_with(PREFACE)
    } else {
        data.len() >= PREFACE_MIN && PREFACE.starts_with(data)
    }
}

/// Whether `data` is, conservatively, the start of a syscall's worth of frames on an
/// established connection in `flow`: plausible frame headers all the way, and a HEADERS frame
/// whose block references request pseudo-headers (client) or `:status` (server) in the static
/// table, with no HEADERS frame of the other kind, or (server only) a SETTINGS frame first.
fn joined_mid_stream(flow: Flow, data: &[u8]) -> bool {
    if !frame::starts_with_frames(data, DEFAULT_MAX_FRAME_LEN) {
        return false;
    }
    let (wanted, unwanted) = match flow {
        Flow::Request => (BlockClass::Request, BlockClass::Response),
        Flow::Response => (BlockClass::Response, BlockClass::Request),
    };
    let mut seen_wanted = false;
    let mut first = true;
    let consistent = frame::for_each_frame(data, |header, payload| {
        let was_first = std::mem::replace(&mut first, false);
        if flow == Flow::Response
            && was_first
            && header.kind == SETTINGS
            && !header.has(FLAG_ACK)
            && settings_are_sane(payload)
        {
            seen_wanted = true;
        }
        if header.kind == HEADERS
            && let Some(fragment) = frame::block_fragment(header, payload)
        {
            let class = frame::classify_block(fragment);
            seen_wanted |= class == wanted;
            return class != unwanted;
        }
        true
    });
    consistent && seen_wanted
}

/// Every setting in a SETTINGS payload has a known id and a legal value (RFC 9113 §6.5.2).
fn settings_are_sane(payload: &[u8]) -> bool {
    payload.chunks(6).all(|s| {
        let Ok(s) = <[u8; 6]>::try_from(s) else {
            return true; // cut by the capture
        };
        let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
        match u16::from_be_bytes([s[0], s[1]]) {
            0x1 | 0x3 | 0x6 => true,
            0x2 | 0x8 => value <= 1,
            0x4 => value <= 0x7fff_ffff,
            0x5 => (DEFAULT_MAX_FRAME_LEN..=frame::MAX_FRAME_LEN).contains(&value),
            0x9 => value <= 1,
            _ => false,
        }
    })
}

/// One direction of the connection.
struct Side {
    reader: FrameReader,
    hpack: HeaderDecoder,
    /// A header block whose CONTINUATION frames are still coming.
    block: Option<PendingBlock>,
}

struct PendingBlock {
    stream: u32,
    push_promise: bool,
    end_stream: bool,
    fragment: Vec<u8>,
    /// Bytes of the block are missing from `fragment`: it is a prefix of the block.
    cut: bool,
    start_ns: u64,
}

/// A client-initiated stream whose request HEADERS were decoded.
struct Stream {
    request_start_ns: u64,
    request_end_ns: u64,
    /// Set with the final response HEADERS.
    response_start_ns: Option<u64>,
    /// End of the latest frame of the response (or of a reset the server sent).
    response_last_ns: u64,
    request_ended: bool,
    /// The final response HEADERS were seen (or were lost: then `status` stays `None`).
    response_head: bool,
    response_ended: bool,
    request_body: u64,
    response_body: u64,
    http: HttpExchange,
}

/// Decoder state for one HTTP/2 connection.
pub struct Http2Session {
    /// Indexed by [`side`]: client to server, server to client.
    sides: [Side; 2],
    streams: BTreeMap<u32, Stream>,
    /// The highest client stream id whose HEADERS opened a stream: lower ids that are not open
    /// are finished, and later frames for them are ignored.
    last_client_stream: u32,
    /// The client preface was seen: the connection was followed from its start.
    saw_preface: bool,
    started: Vec<RequestStarted>,
    /// Scratch space for the reader's events.
    events: Vec<Event>,
}

fn side(flow: Flow) -> usize {
    match flow {
        Flow::Request => 0,
        Flow::Response => 1,
    }
}

fn other(flow: Flow) -> Flow {
    match flow {
        Flow::Request => Flow::Response,
        Flow::Response => Flow::Request,
    }
}

impl Default for Http2Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Http2Session {
    pub fn new() -> Self {
        let side = || Side {
            reader: FrameReader::new(),
            hpack: HeaderDecoder::new(),
            block: None,
        };
        Http2Session {
            sides: [side(), side()],
            streams: BTreeMap::new(),
            last_client_stream: 0,
            saw_preface: false,
            started: Vec::new(),
            events: Vec::new(),
        }
    }

    fn side(&mut self, flow: Flow) -> &mut Side {
        &mut self.sides[side(flow)]
    }

    /// Decides how a direction begins, at its first chunk.
    fn start(&mut self, flow: Flow, data: &[u8]) {
        let preface = flow == Flow::Request
            && !data.is_empty()
            && PREFACE.starts_with(&data[..data.len().min(PREFACE.len())]);
        if preface {
            self.saw_preface = true;
        }
        // The server's first bytes follow the client preface, if we saw it.
        let from_start = preface || (flow == Flow::Response && self.saw_preface);
        let aligned = from_start || frame::starts_with_frames(data, DEFAULT_MAX_FRAME_LEN);
        let side = self.side(flow);
        side.reader.start(preface, aligned);
        if !from_start {
            side.hpack = HeaderDecoder::joined_late();
        }
    }

    fn on_event(&mut self, flow: Flow, event: Event, out: &mut Vec<Exchange>) {
        match event {
            Event::Lost => {
                let side = self.side(flow);
                side.hpack.lose();
                if let Some(block) = side.block.take() {
                    self.abandon_block(flow, block);
                }
                for stream in self.streams.values_mut() {
                    stream.http.partial = true;
                }
            }
            Event::Frame(frame) => self.on_frame(flow, frame, out),
        }
    }

    fn on_frame(&mut self, flow: Flow, frame: Frame, out: &mut Vec<Exchange>) {
        let header = frame.header;
        // Only CONTINUATION frames of the same stream may follow an unfinished header block.
        if let Some(block) = self.side(flow).block.take() {
            if header.kind == CONTINUATION && header.stream == block.stream {
                self.extend_block(flow, block, Some(&frame.payload), &frame, out);
                return;
            }
            self.side(flow).hpack.lose();
            self.abandon_block(flow, block);
        }
        match header.kind {
            DATA => self.on_data(flow, &frame, out),
            HEADERS | PUSH_PROMISE => {
                let block = PendingBlock {
                    stream: header.stream,
                    push_promise: header.kind == PUSH_PROMISE,
                    end_stream: header.kind == HEADERS && header.has(FLAG_END_STREAM),
                    fragment: Vec::new(),
                    cut: false,
                    start_ns: frame.start_ns,
                };
                let fragment = frame::block_fragment(&header, &frame.payload);
                self.extend_block(flow, block, fragment, &frame, out);
            }
            RST_STREAM => {
                if let Ok(code) = <[u8; 4]>::try_from(frame.payload.as_slice()) {
                    let code = u32::from_be_bytes(code);
                    self.on_reset(flow, header.stream, error_name(code), frame.end_ns, out);
                } else {
                    self.on_reset(flow, header.stream, "UNKNOWN".into(), frame.end_ns, out);
                }
            }
            SETTINGS if !header.has(FLAG_ACK) => self.on_settings(flow, &frame.payload),
            GOAWAY => self.on_goaway(flow, &frame, out),
            // A CONTINUATION without its HEADERS (lost to a gap): already accounted for.
            // PRIORITY, PING, WINDOW_UPDATE and unknown types do not concern exchanges.
            _ => {}
        }
    }

    /// Adds a frame's fragment to a header block (`None`: the frame's fields contradict its
    /// length), and decodes the block if it is complete.
    fn extend_block(
        &mut self,
        flow: Flow,
        mut block: PendingBlock,
        fragment: Option<&[u8]>,
        frame: &Frame,
        out: &mut Vec<Exchange>,
    ) {
        if !block.cut {
            let fragment = fragment.unwrap_or_default();
            let room = MAX_HEADER_BLOCK - block.fragment.len();
            block
                .fragment
                .extend_from_slice(&fragment[..fragment.len().min(room)]);
            block.cut = !frame.is_whole() || fragment.len() > room;
        }
        block.cut |= fragment.is_none();
        if frame.header.has(FLAG_END_HEADERS) {
            self.finish_block(flow, block, frame.end_ns, out);
        } else {
            self.side(flow).block = Some(block);
        }
    }

    /// A header block ended before it was complete (its CONTINUATION was lost, or the peer is
    /// broken). Its fields are not believed; the HPACK state is already marked lost.
    fn abandon_block(&mut self, flow: Flow, block: PendingBlock) {
        if !block.push_promise
            && let Some(stream) = self.streams.get_mut(&block.stream)
        {
            stream.http.partial = true;
            if flow == Flow::Response && !stream.response_head {
                stream.response_head = true;
            }
        }
    }

    fn finish_block(
        &mut self,
        flow: Flow,
        block: PendingBlock,
        end_ns: u64,
        out: &mut Vec<Exchange>,
    ) {
        let fields = self.side(flow).hpack.decode(&block.fragment, !block.cut);
        if block.push_promise {
            return;
        }
        match flow {
            Flow::Request => self.request_headers(&block, fields, end_ns, out),
            Flow::Response => self.response_headers(&block, fields, end_ns, out),
        }
    }

    fn request_headers(
        &mut self,
        block: &PendingBlock,
        fields: Fields,
        end_ns: u64,
        out: &mut Vec<Exchange>,
    ) {
        let id = block.stream;
        if let Some(stream) = self.streams.get_mut(&id) {
            // Trailers.
            stream.http.partial |= fields.unknown;
            stream.request_end_ns = end_ns;
            if block.end_stream {
                self.request_ended(id, end_ns, out);
            }
            return;
        }
        // Client streams have odd ids that only grow; anything else is not a new request.
        if id.is_multiple_of(2) || id <= self.last_client_stream {
            return;
        }
        self.last_client_stream = id;
        let Some(method) = fields.method else {
            return;
        };
        if self.streams.len() >= MAX_STREAMS
            && let Some((_, mut oldest)) = self.streams.pop_first()
        {
            oldest.http.partial = true;
            out.push(oldest.into_exchange());
        }
        if self.started.len() < MAX_STARTED {
            self.started.push(RequestStarted {
                request_start_ns: block.start_ns,
                traceparent: fields.traceparent.clone(),
                tracestate: fields.tracestate.clone(),
            });
        }
        let stream = Stream {
            request_start_ns: block.start_ns,
            request_end_ns: end_ns,
            response_start_ns: None,
            response_last_ns: end_ns,
            request_ended: false,
            response_head: false,
            response_ended: false,
            request_body: 0,
            response_body: 0,
            http: HttpExchange {
                method: method.into(),
                target: fields.path.unwrap_or_default(),
                version: "2",
                host: fields.authority.or(fields.host),
                user_agent: fields.user_agent,
                traceparent: fields.traceparent,
                tracestate: fields.tracestate,
                content_type: fields.content_type,
                partial: fields.unknown,
                ..HttpExchange::default()
            },
        };
        self.streams.insert(id, stream);
        if block.end_stream {
            self.request_ended(id, end_ns, out);
        }
    }

    fn response_headers(
        &mut self,
        block: &PendingBlock,
        fields: Fields,
        end_ns: u64,
        out: &mut Vec<Exchange>,
    ) {
        let id = block.stream;
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        stream.http.partial |= fields.unknown;
        stream.response_last_ns = end_ns;
        if !stream.response_head {
            if let Some(status) = fields.status {
                if status < 200 && !block.end_stream {
                    return; // interim
                }
                stream.http.status = Some(status);
                stream.response_start_ns = Some(block.start_ns);
            } else {
                stream.http.partial = true;
            }
            stream.response_head = true;
            // The request's content-type may be unknown (HPACK state lost): gRPC is still
            // recognised by the response's.
            if stream.http.content_type.is_none()
                && let Some(content_type) = &fields.content_type
                && content_type.starts_with("application/grpc")
            {
                stream.http.content_type = Some(content_type.clone());
            }
        }
        // gRPC status: from the trailers, or from the HEADERS of a trailers-only response.
        let grpc = stream
            .http
            .content_type
            .as_deref()
            .is_none_or(|t| t.starts_with("application/grpc"));
        if grpc {
            if fields.grpc_status.is_some() {
                stream.http.grpc_status = fields.grpc_status;
            }
            if fields.grpc_message.is_some() {
                stream.http.grpc_message = fields.grpc_message;
            }
        }
        if block.end_stream {
            self.response_ended(id, end_ns, out);
        }
    }

    fn on_data(&mut self, flow: Flow, frame: &Frame, out: &mut Vec<Exchange>) {
        let header = &frame.header;
        let Some(stream) = self.streams.get_mut(&header.stream) else {
            return;
        };
        let mut body = u64::from(header.len);
        if header.has(FLAG_PADDED) {
            match frame.payload.first() {
                Some(&pad) if u64::from(pad) < body => body -= 1 + u64::from(pad),
                Some(_) => body = 0, // malformed: padding longer than the frame
                None => {
                    // The pad length went uncaptured: count the frame as if unpadded.
                    body = body.saturating_sub(1);
                    stream.http.partial = true;
                }
            }
        }
        match flow {
            Flow::Request => {
                stream.request_body += body;
                stream.request_end_ns = frame.end_ns;
            }
            Flow::Response => {
                stream.response_body += body;
                stream.response_last_ns = frame.end_ns;
            }
        }
        if header.has(FLAG_END_STREAM) {
            match flow {
                Flow::Request => self.request_ended(header.stream, frame.end_ns, out),
                Flow::Response => self.response_ended(header.stream, frame.end_ns, out),
            }
        }
    }

    fn request_ended(&mut self, id: u32, end_ns: u64, out: &mut Vec<Exchange>) {
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.request_ended = true;
            stream.request_end_ns = end_ns;
            if stream.response_ended {
                self.emit(id, out);
            }
        }
    }

    fn response_ended(&mut self, id: u32, end_ns: u64, out: &mut Vec<Exchange>) {
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.response_ended = true;
            stream.response_head = true;
            stream.response_last_ns = end_ns;
            if stream.request_ended {
                self.emit(id, out);
            }
        }
    }

    fn on_reset(
        &mut self,
        flow: Flow,
        id: u32,
        code: String,
        end_ns: u64,
        out: &mut Vec<Exchange>,
    ) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        match flow {
            Flow::Request => {
                if !stream.request_ended {
                    stream.request_end_ns = end_ns;
                }
            }
            Flow::Response => stream.response_last_ns = end_ns,
        }
        if !stream.response_ended {
            stream.http.reset = Some(code);
        }
        self.emit(id, out);
    }

    fn on_settings(&mut self, flow: Flow, payload: &[u8]) {
        // What one side says bounds what the other side sends.
        let peer = self.side(other(flow));
        for setting in payload.chunks_exact(6) {
            let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
            match u16::from_be_bytes([setting[0], setting[1]]) {
                SETTINGS_HEADER_TABLE_SIZE => peer.hpack.set_table_limit(value),
                SETTINGS_MAX_FRAME_SIZE => peer.reader.set_max_frame_len(value),
                _ => {}
            }
        }
    }

    fn on_goaway(&mut self, flow: Flow, frame: &Frame, out: &mut Vec<Exchange>) {
        // A client's GOAWAY concerns server-initiated streams, which are not tracked.
        if flow != Flow::Response {
            return;
        }
        let Some(fields) = frame.payload.get(..8) else {
            return;
        };
        let last = u32::from_be_bytes([fields[0], fields[1], fields[2], fields[3]]) & 0x7fff_ffff;
        let code = u32::from_be_bytes([fields[4], fields[5], fields[6], fields[7]]);
        let cut: Vec<u32> = self
            .streams
            .range(last.saturating_add(1)..)
            .map(|(id, _)| *id)
            .collect();
        for id in cut {
            if let Some(stream) = self.streams.get_mut(&id) {
                stream.http.reset = Some(format!("GOAWAY {}", error_name(code)));
                stream.response_last_ns = frame.end_ns;
            }
            self.emit(id, out);
        }
    }

    fn emit(&mut self, id: u32, out: &mut Vec<Exchange>) {
        if let Some(stream) = self.streams.remove(&id) {
            out.push(stream.into_exchange());
        }
    }
}

impl Session for Http2Session {
    fn feed(&mut self, flow: Flow, chunk: Chunk<'_>, out: &mut Vec<Exchange>) {
        if self.side(flow).reader.at_start() {
            if chunk.data.is_empty() {
                return; // nothing to tell where the stream is
            }
            self.start(flow, chunk.data);
        }
        let mut events = std::mem::take(&mut self.events);
        self.side(flow).reader.feed(
            chunk.data,
            chunk.missing,
            chunk.first_byte_ns,
            chunk.last_byte_ns,
            &mut events,
        );
        for event in events.drain(..) {
            self.on_event(flow, event, out);
        }
        self.events = events;
    }

    fn close(&mut self, _at_ns: u64, out: &mut Vec<Exchange>) {
        let streams = std::mem::take(&mut self.streams);
        for (_, mut stream) in streams {
            // A response that had begun was cut; an unanswered request is just unanswered.
            stream.http.partial |= stream.response_head || !stream.request_ended;
            out.push(stream.into_exchange());
        }
        *self = Self::new();
    }

    fn take_started(&mut self, out: &mut Vec<RequestStarted>) {
        out.append(&mut self.started);
    }

    fn take_resync_skips(&mut self) -> u64 {
        self.sides.iter_mut().map(|s| s.reader.take_skips()).sum()
    }
}

impl Stream {
    fn into_exchange(mut self) -> Exchange {
        let response = self
            .response_start_ns
            .map(|start| (start, self.response_last_ns.max(start)));
        self.http.request_body_len = Some(self.request_body);
        self.http.response_body_len = response.map(|_| self.response_body);
        Exchange {
            request_start_ns: self.request_start_ns,
            request_end_ns: self.request_end_ns.max(self.request_start_ns),
            response_start_ns: response.map(|(start, _)| start),
            response_end_ns: response.map(|(_, end)| end),
            detail: ExchangeDetail::Http(self.http),
        }
    }
}

/// The name of an HTTP/2 error code (RFC 9113 §7), or its hex value.
fn error_name(code: u32) -> String {
    let name = match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => return format!("0x{code:x}"),
    };
    name.to_owned()
}

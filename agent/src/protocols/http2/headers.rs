//! HPACK decoding (RFC 7541) for one direction of a connection, and the few header fields
//! spans need.
//!
//! HPACK comes from `loona-hpack` (integers, the static and dynamic tables, eviction, table
//! size updates and their bound), except for Huffman strings, which `huffman` decodes before
//! the crate sees the block (the crate's Huffman decoder is too slow for an agent; see
//! there). Among the crates.io HPACK decoders it is the maintained one: the fork of `hpack`
//! (unmaintained since 2016) kept by the `loona` HTTP/2 server (`fluke-hpack` is its former
//! name). It decodes a block from a byte slice with a callback (indexed fields are not
//! copied), supports dynamic table size updates with a maximum the caller sets, and reports
//! malformed input as errors, not panics. `httlib-hpack` was rejected: it indexes past the
//! end of truncated input (a panic) and drains its input `Vec` from the front for every
//! field. The `h2` crate's decoder is not public.
//!
//! # Decoding without the encoder's dynamic table
//!
//! When the agent joined a connection late, or bytes of a header block were lost, the entries
//! the encoder has in its dynamic table are unknown. The decoder then starts over with a table
//! filled with placeholders: as many 32-octet entries (empty name and value, the smallest
//! entry there is) as the table size holds. Entries the encoder adds from then on are
//! decoded and indexed exactly as the encoder does, and push placeholders out just as they
//! push the unknown old entries out of the encoder's table, which, having larger entries,
//! never holds more of them than there are placeholders. So an index resolves either to a
//! real entry, or to a placeholder, which marks that field as unknown. Nothing is ever
//! decoded from the wrong entry, as long as the encoder's table is no larger than the size
//! assumed (SETTINGS_HEADER_TABLE_SIZE as last seen, 4096 by default); if it is larger,
//! references beyond the placeholders fail, and the block is reported as not decoded.

use std::borrow::Cow;

use loona_hpack::Decoder;

use super::huffman;

/// SETTINGS_HEADER_TABLE_SIZE before the decoder's side says otherwise.
pub(super) const DEFAULT_TABLE_SIZE: usize = 4096;
/// The largest dynamic table a decoder keeps, whatever the peer allows (memory bound).
pub(super) const MAX_TABLE_SIZE: usize = 64 * 1024;
/// Stored header values are cut to this many bytes.
pub(super) const MAX_VALUE: usize = 512;
/// Stored `:path` values are cut to this many bytes.
pub(super) const MAX_TARGET: usize = 2048;
/// Longer `:method` values are not believed.
pub(super) const MAX_METHOD: usize = 24;
/// The HPACK size of a placeholder entry (empty name and value).
const PLACEHOLDER_SIZE: usize = 32;
/// A literal field with incremental indexing, new (empty) name, empty value.
const PLACEHOLDER_FIELD: [u8; 3] = [0x40, 0x00, 0x00];

/// The fields of one header block that spans use. Values are lossily decoded and bounded.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Fields {
    pub method: Option<String>,
    pub path: Option<String>,
    pub authority: Option<String>,
    pub host: Option<String>,
    pub status: Option<u16>,
    pub user_agent: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub content_type: Option<String>,
    pub grpc_status: Option<i64>,
    pub grpc_message: Option<String>,
    /// Some field could not be read: the block was cut, failed to decode, referenced a
    /// dynamic-table entry we do not know, or a field we need had an unusable value.
    pub unknown: bool,
}

impl Fields {
    fn take(&mut self, name: &[u8], value: &[u8]) {
        fn set(slot: &mut Option<String>, value: &[u8], limit: usize) {
            if slot.is_none() {
                *slot = Some(bounded(value, limit));
            }
        }
        match name {
            b":method" if value.is_empty() || value.len() > MAX_METHOD => self.unknown = true,
            b":method" => set(&mut self.method, value, MAX_METHOD),
            b":path" => set(&mut self.path, value, MAX_TARGET),
            b":authority" => set(&mut self.authority, value, MAX_VALUE),
            b"host" => set(&mut self.host, value, MAX_VALUE),
            b":status" => match parse_status(value) {
                Some(status) if self.status.is_none() => self.status = Some(status),
                Some(_) => {}
                None => self.unknown = true,
            },
            b"user-agent" => set(&mut self.user_agent, value, MAX_VALUE),
            b"traceparent" => set(&mut self.traceparent, value, MAX_VALUE),
            b"tracestate" => set(&mut self.tracestate, value, MAX_VALUE),
            b"content-type" => set(&mut self.content_type, value, MAX_VALUE),
            b"grpc-status" => match parse_grpc_status(value) {
                Some(code) if self.grpc_status.is_none() => self.grpc_status = Some(code),
                Some(_) => {}
                None => self.unknown = true,
            },
            b"grpc-message" if self.grpc_message.is_none() => {
                self.grpc_message = Some(bounded(&percent_decode(value), MAX_VALUE));
            }
            _ => {}
        }
    }
}

/// An HPACK decoder for one direction, able to lose and rebuild its state.
pub(super) struct HeaderDecoder {
    decoder: Decoder<'static>,
    /// The largest table size the encoder may switch to: the SETTINGS_HEADER_TABLE_SIZE its
    /// peer (our side) advertised, capped at `MAX_TABLE_SIZE`.
    allowed: usize,
    /// The table size assumed when the state is rebuilt.
    assumed: usize,
    /// The dynamic table no longer matches the encoder's: rebuild it before the next block.
    lost: bool,
}

impl HeaderDecoder {
    /// A decoder that follows the encoder from the connection's start.
    pub fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(DEFAULT_TABLE_SIZE);
        decoder.set_max_table_size(DEFAULT_TABLE_SIZE);
        HeaderDecoder {
            decoder,
            allowed: DEFAULT_TABLE_SIZE,
            assumed: DEFAULT_TABLE_SIZE,
            lost: false,
        }
    }

    /// A decoder that joins the encoder mid-connection: the settings are unknown, so any
    /// table size update up to the cap is accepted.
    pub fn joined_late() -> Self {
        let mut decoder = Self::new();
        decoder.allowed = MAX_TABLE_SIZE;
        decoder.lost = true;
        decoder
    }

    /// The decoder's side advertised SETTINGS_HEADER_TABLE_SIZE = `size`.
    pub fn set_table_limit(&mut self, size: u32) {
        let size = (size as usize).min(MAX_TABLE_SIZE);
        self.allowed = size;
        self.assumed = size;
        // The table shrinks when the encoder acknowledges this with a size update.
        self.decoder.set_max_allowed_table_size(size);
    }

    /// Bytes of a header block went by undecoded: the dynamic table can no longer be trusted.
    pub fn lose(&mut self) {
        self.lost = true;
    }

    /// Decodes a header block, or the captured prefix of one (`whole` false: the state is
    /// lost afterwards, but the fields that were wholly captured are right).
    pub fn decode(&mut self, block: &[u8], whole: bool) -> Fields {
        if self.lost {
            self.rebuild();
        }
        let mut fields = Fields::default();
        // Huffman strings are decoded here, fast (see `huffman`); the crate sees raw ones.
        let mut plain = Vec::with_capacity(block.len() + block.len() / 2);
        let spelled_out = huffman::spell_out(block, &mut plain);
        let result = self.decoder.decode_with_cb(&plain, |name, value| {
            // Placeholders have empty names, as no real field has.
            if name.is_empty() {
                fields.unknown = true;
            } else {
                fields.take(&name, &value);
            }
        });
        if result.is_err() || !whole || !spelled_out {
            fields.unknown = true;
            self.lost = true;
        }
        fields
    }

    /// Starts over with a table of placeholders (see the module docs).
    fn rebuild(&mut self) {
        let size = self.assumed.min(self.allowed);
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(self.allowed);
        decoder.set_max_table_size(size);
        let fill = PLACEHOLDER_FIELD.repeat(size / PLACEHOLDER_SIZE);
        let _ = decoder.decode_with_cb(&fill, |_: Cow<'_, [u8]>, _: Cow<'_, [u8]>| {});
        self.decoder = decoder;
        self.lost = false;
    }
}

/// Lossily decodes at most `limit` bytes of `value` into a string of at most `limit` bytes.
pub(super) fn bounded(value: &[u8], limit: usize) -> String {
    let mut text = String::from_utf8_lossy(&value[..value.len().min(limit)]).into_owned();
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn parse_status(value: &[u8]) -> Option<u16> {
    match value {
        [a @ b'1'..=b'9', b @ b'0'..=b'9', c @ b'0'..=b'9'] => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

fn parse_grpc_status(value: &[u8]) -> Option<i64> {
    if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Undoes the percent-encoding of `grpc-message` (gRPC over HTTP/2, "Responses"); malformed
/// escapes stay as they are. Only the first `MAX_VALUE * 3` bytes are looked at.
pub(super) fn percent_decode(value: &[u8]) -> Vec<u8> {
    let value = &value[..value.len().min(MAX_VALUE * 3)];
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let byte = value[i];
        if byte == b'%'
            && let Some(hex) = value.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(decoded) = u8::from_str_radix(hex, 16)
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            out.push(decoded);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    out
}

//! Cuts one direction of a MySQL connection into packets.
//!
//! A packet is a 3-byte little-endian payload length, a 1-byte sequence id and the payload.
//! A payload of exactly 0xffffff bytes continues in the next packet; the reader joins such
//! runs into one logical packet. Only a bounded prefix of each payload is kept; the rest,
//! captured or not, is skipped by count.

use crate::protocols::skips::SkipCounter;

/// A physical packet of this length is continued by the next one.
pub(super) const MAX_PHYSICAL: usize = 0xff_ffff;

/// The rest of one syscall's bytes: `data` captured, then `gap` bytes that were not.
pub(super) struct Input<'a> {
    pub data: &'a [u8],
    pub gap: usize,
}

/// A complete logical packet; its payload prefix is [`PacketReader::payload`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Packet {
    /// Sequence id of the first physical packet.
    pub seq: u8,
    /// Sequence id of the last physical packet (differs only for continued packets).
    pub last_seq: u8,
    /// Length of the whole logical payload.
    pub len: u64,
    /// `first_byte_ns` of the chunk holding the packet's first header byte.
    pub start_ns: u64,
    /// Bytes the reader would have kept were not captured.
    pub truncated: bool,
}

pub(super) struct PacketReader {
    /// How many payload bytes of a logical packet are kept.
    cap: usize,
    header: [u8; 4],
    header_len: usize,
    /// Payload bytes of the current physical packet still to come (valid once the header is in).
    remaining: usize,
    in_payload: bool,
    /// The current physical packet has the maximum length: another one follows.
    continues: bool,
    packet: Packet,
    buf: Vec<u8>,
    /// A header fell into uncaptured bytes: packet boundaries are unknown.
    lost: bool,
    chunk_first_ns: u64,
    chunk_last_ns: u64,
    skips: SkipCounter,
}

impl PacketReader {
    pub fn new(cap: usize) -> Self {
        PacketReader {
            cap,
            header: [0; 4],
            header_len: 0,
            remaining: 0,
            in_payload: false,
            continues: false,
            packet: Packet {
                seq: 0,
                last_seq: 0,
                len: 0,
                start_ns: 0,
                truncated: false,
            },
            buf: Vec::new(),
            lost: false,
            chunk_first_ns: 0,
            chunk_last_ns: 0,
            skips: SkipCounter::default(),
        }
    }

    pub fn begin_chunk(&mut self, first_ns: u64, last_ns: u64) {
        self.chunk_first_ns = first_ns;
        self.chunk_last_ns = last_ns;
    }

    pub fn chunk_last_ns(&self) -> u64 {
        self.chunk_last_ns
    }

    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// Give up on the current framing: everything up to the next [`Self::restart`] is skipped.
    pub fn lose(&mut self) {
        self.lost = true;
    }

    /// Assume a packet starts at the next byte.
    pub fn restart(&mut self) {
        self.skips.stretch_over();
        self.lost = false;
        self.header_len = 0;
        self.remaining = 0;
        self.in_payload = false;
        self.continues = false;
        self.buf.clear();
    }

    /// Stretches of bytes skipped while the framing was lost, since the last call.
    pub fn take_skips(&mut self) -> u64 {
        self.skips.take()
    }

    /// The kept prefix of the packet last returned by [`Self::next`].
    pub fn payload(&self) -> &[u8] {
        &self.buf
    }

    /// Reads on until a logical packet is complete; `None` once `input` is used up.
    pub fn next(&mut self, input: &mut Input<'_>) -> Option<Packet> {
        loop {
            if self.lost {
                self.skips.skipping(input.data.len(), input.gap as u64);
                input.data = &[];
                input.gap = 0;
                return None;
            }
            if !self.in_payload {
                if self.header_len < 4 {
                    if input.data.is_empty() {
                        if input.gap > 0 {
                            // The next header is somewhere we cannot see.
                            self.lost = true;
                            continue;
                        }
                        return None;
                    }
                    if self.header_len == 0 && !self.continues {
                        self.packet = Packet {
                            seq: 0,
                            last_seq: 0,
                            len: 0,
                            start_ns: self.chunk_first_ns,
                            truncated: false,
                        };
                        self.buf.clear();
                    }
                    let take = (4 - self.header_len).min(input.data.len());
                    self.header[self.header_len..self.header_len + take]
                        .copy_from_slice(&input.data[..take]);
                    self.header_len += take;
                    input.data = &input.data[take..];
                    continue;
                }
                let len = usize::from(self.header[0])
                    | usize::from(self.header[1]) << 8
                    | usize::from(self.header[2]) << 16;
                let seq = self.header[3];
                if !self.continues {
                    self.packet.seq = seq;
                }
                self.packet.last_seq = seq;
                self.packet.len = self.packet.len.saturating_add(len as u64);
                self.remaining = len;
                self.continues = len == MAX_PHYSICAL;
                self.in_payload = true;
            }
            if self.remaining > 0 {
                if !input.data.is_empty() {
                    let n = self.remaining.min(input.data.len());
                    let keep = n.min(self.cap.saturating_sub(self.buf.len()));
                    self.buf.extend_from_slice(&input.data[..keep]);
                    input.data = &input.data[n..];
                    self.remaining -= n;
                } else if input.gap > 0 {
                    let n = self.remaining.min(input.gap);
                    if self.buf.len() < self.cap {
                        self.packet.truncated = true;
                    }
                    input.gap -= n;
                    self.remaining -= n;
                } else {
                    return None;
                }
                if self.remaining > 0 {
                    continue;
                }
            }
            self.in_payload = false;
            self.header_len = 0;
            if self.continues {
                continue;
            }
            return Some(self.packet);
        }
    }
}

/// Little-endian readers over a payload prefix; `None` past its end.
pub(super) struct Cursor<'a> {
    pub bytes: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8], pos: usize) -> Self {
        Cursor { bytes, pos }
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    pub fn u8(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    pub fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }

    pub fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    /// A length-encoded integer. 0xfb (NULL) and 0xff are not integers.
    pub fn lenenc(&mut self) -> Option<u64> {
        let first = self.u8()?;
        let width = match first {
            0..=0xfa => return Some(u64::from(first)),
            0xfc => 2,
            0xfd => 3,
            0xfe => 8,
            _ => return None,
        };
        let b = self.take(width)?;
        Some(b.iter().rev().fold(0, |acc, &x| acc << 8 | u64::from(x)))
    }

    pub fn lenenc_bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.lenenc()?).ok()?;
        self.take(n)
    }

    /// Bytes up to a NUL (consumed, not returned); `None` if there is no NUL.
    pub fn nul_terminated(&mut self) -> Option<&'a [u8]> {
        let rest = self.bytes.get(self.pos..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        self.pos += end + 1;
        Some(&rest[..end])
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        self.pos = self.bytes.len();
        rest
    }
}

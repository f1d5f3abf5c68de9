//! How much of each response syscall the decoder needs, learned from a connection's responses.
//!
//! A response whose body is framed by its length is decoded from its head alone: the body is
//! skipped by count, captured or not. Once a connection's responses have each begun a syscall
//! with a head well inside a small prefix, copying more than that prefix of its response
//! syscalls buys nothing, and the copy (with its ring space) is most of what capturing a large
//! response costs the traced program. Anything else on the connection (a chunked or
//! close-delimited body, a head not at the start of a syscall, a head that did not fit) ends
//! the learning for good, and the prefix goes back to the configured one.

use super::reader::Framing;
use crate::protocols::PrefixNeed;

/// Responses that must look alike before the prefix is narrowed.
const RESPONSES_BEFORE_NARROWING: u32 = 4;
/// Room for heads longer than those seen so far (a longer date, cookie or ETag).
const HEAD_GROWTH: usize = 2;
const MIN_PREFIX: usize = 512;
/// Beyond this the saving is small and the configured prefix (2 KiB by default) is as good.
const MAX_PREFIX: usize = 4096;

#[derive(Debug, Default)]
pub(super) struct ResponseNeed {
    /// Responses seen so far that a prefix would have served.
    fitting: u32,
    longest_head: usize,
    given_up: bool,
}

impl ResponseNeed {
    /// A response head was read: `chunk_head_len` as the reader reports it (`Some` when the head
    /// began and ended in one chunk, starting at its first byte), framed as `framing`.
    pub fn observe(&mut self, chunk_head_len: Option<usize>, framing: Framing) {
        match (chunk_head_len, framing) {
            (Some(len), Framing::NoBody | Framing::Length(_)) => {
                self.fitting += 1;
                self.longest_head = self.longest_head.max(len);
            }
            _ => self.give_up(),
        }
    }

    pub fn give_up(&mut self) {
        self.given_up = true;
    }

    /// The prefix of each response syscall the decoder needs, once it knows it needs no more:
    /// in a vectored write, also no buffer past the one where the longest head seen would end.
    pub fn prefix(&self) -> Option<PrefixNeed> {
        if self.given_up || self.fitting < RESPONSES_BEFORE_NARROWING {
            return None;
        }
        let prefix = (self.longest_head * HEAD_GROWTH)
            .next_power_of_two()
            .max(MIN_PREFIX);
        (prefix <= MAX_PREFIX).then_some(PrefixNeed {
            bytes: prefix as u16,
            whole_buffers: self.longest_head as u16,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrows_after_enough_length_framed_responses_at_chunk_starts() {
        let mut need = ResponseNeed::default();
        for _ in 0..RESPONSES_BEFORE_NARROWING - 1 {
            need.observe(Some(240), Framing::Length(4096));
            assert_eq!(
                need.prefix().map(|p| p.bytes),
                None,
                "too few responses to go by"
            );
        }
        need.observe(Some(180), Framing::NoBody);
        assert_eq!(
            need.prefix(),
            Some(PrefixNeed {
                bytes: 512,
                whole_buffers: 240
            })
        );
        need.observe(Some(700), Framing::Length(0));
        assert_eq!(
            need.prefix().map(|p| p.bytes),
            Some(2048),
            "twice the longest head, to a power of two"
        );
    }

    #[test]
    fn anything_a_prefix_could_cut_gives_up_for_good() {
        let cases: [(Option<usize>, Framing); 5] = [
            (Some(200), Framing::Chunked),
            (Some(200), Framing::UntilClose),
            (Some(200), Framing::Lost),
            // Not at a chunk start (pipelined), or spread over chunks.
            (None, Framing::Length(10)),
            // A head so long that no small prefix holds it.
            (Some(3000), Framing::Length(10)),
        ];
        for (len, framing) in cases {
            let mut need = ResponseNeed::default();
            for _ in 0..RESPONSES_BEFORE_NARROWING {
                need.observe(Some(200), Framing::Length(10));
            }
            assert_eq!(need.prefix().map(|p| p.bytes), Some(512));
            need.observe(len, framing);
            assert_eq!(need.prefix().map(|p| p.bytes), None, "{len:?} {framing:?}");
            for _ in 0..10 {
                need.observe(Some(200), Framing::Length(10));
            }
            assert_eq!(
                need.prefix().map(|p| p.bytes),
                None,
                "given up for good: {len:?} {framing:?}"
            );
        }
    }
}

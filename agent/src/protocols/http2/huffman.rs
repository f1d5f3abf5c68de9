//! HPACK's Huffman code (RFC 7541 §5.2 and Appendix B), and a pass that spells out the
//! Huffman-coded strings of a header block before it reaches the HPACK decoder.
//!
//! Why: `loona-hpack` builds its Huffman tables (hash maps) anew for every string it decodes
//! and then walks them bit by bit with two hash lookups per bit: tens of microseconds per
//! string, and nginx, curl, Go and most encoders Huffman-code nearly every literal (a
//! `traceparent` is a new literal in every request). The code is canonical (codes of one
//! length are consecutive, in symbol order), so it decodes from the code lengths alone with
//! three small arrays built at compile time, in a few nanoseconds per bit. The rewritten block
//! means the same fields and the same dynamic-table effects (the table holds decoded strings),
//! so the HPACK decoder is otherwise left to the crate.

/// Code length in bits of each symbol: bytes 0..=255, then EOS (RFC 7541 Appendix B).
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];
const EOS: u16 = 256;
const MAX_CODE_LEN: usize = 30;

/// The canonical code by length: the first code of each length, how many codes have it, and
/// where its symbols start in `symbols` (which lists symbols by length, then value).
struct Canonical {
    first_code: [u32; MAX_CODE_LEN + 1],
    count: [u16; MAX_CODE_LEN + 1],
    offset: [u16; MAX_CODE_LEN + 1],
    symbols: [u16; 257],
}

const CANONICAL: Canonical = build();

const fn build() -> Canonical {
    let mut table = Canonical {
        first_code: [0; MAX_CODE_LEN + 1],
        count: [0; MAX_CODE_LEN + 1],
        offset: [0; MAX_CODE_LEN + 1],
        symbols: [0; 257],
    };
    let mut symbol = 0;
    while symbol < 257 {
        table.count[CODE_LENGTHS[symbol] as usize] += 1;
        symbol += 1;
    }
    let (mut code, mut offset, mut len) = (0u32, 0u16, 1);
    while len <= MAX_CODE_LEN {
        table.first_code[len] = code;
        table.offset[len] = offset;
        code = (code + table.count[len] as u32) << 1;
        offset += table.count[len];
        len += 1;
    }
    let mut next = table.offset;
    let mut symbol = 0;
    while symbol < 257 {
        let len = CODE_LENGTHS[symbol] as usize;
        table.symbols[next[len] as usize] = symbol as u16;
        next[len] += 1;
        symbol += 1;
    }
    table
}

/// Decodes a Huffman-coded string into `out`. Fails on EOS inside the string, on padding
/// longer than 7 bits or not made of ones (RFC 7541 §5.2).
pub(super) fn decode(coded: &[u8], out: &mut Vec<u8>) -> Result<(), ()> {
    let table = &CANONICAL;
    let (mut code, mut len) = (0u32, 0usize);
    for &byte in coded {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            let rank = code.wrapping_sub(table.first_code[len]);
            if rank < u32::from(table.count[len]) {
                let symbol = table.symbols[usize::from(table.offset[len]) + rank as usize];
                if symbol == EOS {
                    return Err(());
                }
                out.push(symbol as u8);
                (code, len) = (0, 0);
            } else if len == MAX_CODE_LEN {
                return Err(());
            }
        }
    }
    // What is left must be a prefix of EOS (all ones), shorter than a byte.
    if len > 7 || code != (1 << len) - 1 {
        return Err(());
    }
    Ok(())
}

/// Huffman-codes `text` (tests only: encoders are not needed).
#[cfg(test)]
pub(super) fn encode(text: &[u8]) -> Vec<u8> {
    let table = &CANONICAL;
    let mut out = Vec::new();
    let (mut bits, mut pending) = (0u64, 0u32);
    for &byte in text {
        let len = usize::from(CODE_LENGTHS[usize::from(byte)]);
        let rank = table.symbols[usize::from(table.offset[len])..]
            .iter()
            .position(|&s| s == u16::from(byte))
            .unwrap_or_default();
        let code = table.first_code[len] + rank as u32;
        bits = (bits << len) | u64::from(code);
        pending += len as u32;
        while pending >= 8 {
            pending -= 8;
            out.push((bits >> pending) as u8);
        }
    }
    if pending > 0 {
        out.push(((bits << (8 - pending)) | ((1 << (8 - pending)) - 1)) as u8);
    }
    out
}

/// Rewrites the header block `block` into `out` with every Huffman-coded string literal
/// spelled out raw. Representations are walked as RFC 7541 §6 lays them out; a block cut
/// short is copied as it is from the cut (the decoder then fails where it would have). Returns
/// false if a Huffman string did not decode: `out` then ends before that field.
pub(super) fn spell_out(block: &[u8], out: &mut Vec<u8>) -> bool {
    let mut rest = block;
    while let Some(&first) = rest.first() {
        let (prefix, strings) = match first {
            0x80..=0xff => (7, 0),
            0x40..=0x7f => (6, 1),
            0x20..=0x3f => (5, 0),
            _ => (4, 1),
        };
        let Some((index, used)) = integer(rest, prefix) else {
            break;
        };
        let start = out.len();
        out.extend_from_slice(&rest[..used]);
        rest = &rest[used..];
        let strings = if strings == 1 && index == 0 {
            2
        } else {
            strings
        };
        for _ in 0..strings {
            let Some((len, used)) = integer(rest, 7) else {
                out.extend_from_slice(rest);
                return true;
            };
            let Some(coded) = rest.get(used..used.saturating_add(len as usize)) else {
                out.extend_from_slice(rest);
                return true;
            };
            if rest[0] & 0x80 == 0 {
                out.extend_from_slice(&rest[..used + coded.len()]);
            } else {
                let mut text = Vec::with_capacity(coded.len() * 8 / 5 + 1);
                if decode(coded, &mut text).is_err() {
                    out.truncate(start);
                    return false;
                }
                push_integer(out, text.len() as u32, 7, 0);
                out.extend_from_slice(&text);
            }
            rest = &rest[used + coded.len()..];
        }
    }
    out.extend_from_slice(rest);
    true
}

/// An HPACK integer with a `prefix`-bit prefix (RFC 7541 §5.1): its value and the bytes used.
/// Values beyond 2^28 are refused.
pub(super) fn integer(bytes: &[u8], prefix: u32) -> Option<(u32, usize)> {
    let mask = (1u32 << prefix) - 1;
    let mut value = u32::from(*bytes.first()?) & mask;
    if value < mask {
        return Some((value, 1));
    }
    for (i, &b) in bytes.iter().enumerate().skip(1).take(4) {
        value += u32::from(b & 0x7f) << (7 * (i - 1));
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn push_integer(out: &mut Vec<u8>, value: u32, prefix: u32, flags: u8) {
    let mask = (1u32 << prefix) - 1;
    if value < mask {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crate_decode(coded: &[u8]) -> Result<Vec<u8>, ()> {
        loona_hpack::huffman::HuffmanDecoder::new()
            .decode(coded)
            .map_err(|_| ())
    }

    #[test]
    fn decodes_the_rfc_examples() {
        let mut out = Vec::new();
        decode(
            &[
                0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
            ],
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"www.example.com");
        out.clear();
        decode(&[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf], &mut out).unwrap();
        assert_eq!(out, b"no-cache");
    }

    #[test]
    fn agrees_with_the_crate_on_every_byte_and_on_noise() {
        let all: Vec<u8> = (0..=255).collect();
        for text in [&all[..], b"", b"a", b"traceparent", &[0, 255, 10, 13, 200]] {
            let coded = encode(text);
            assert_eq!(crate_decode(&coded).as_deref(), Ok(text), "{text:?}");
            let mut out = Vec::new();
            assert_eq!(decode(&coded, &mut out), Ok(()));
            assert_eq!(out, text);
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for round in 0..3_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 9) as usize;
            let noise: Vec<u8> = (0..len)
                .map(|i| (seed >> (i * 7)) as u8 | if round % 3 == 0 { 0xe0 } else { 0 })
                .collect();
            let mut out = Vec::new();
            let ours = decode(&noise, &mut out).map(|()| out);
            assert_eq!(ours, crate_decode(&noise), "{noise:x?}");
        }
    }

    #[test]
    fn spelled_out_blocks_decode_to_the_same_fields() {
        // RFC 7541 C.4.1 and C.6.1 (Huffman), a size update, a literal with a long value.
        let long = vec![b'x'; 300];
        let mut block = vec![0x3f, 0xe1, 0x1f];
        block.extend_from_slice(&[
            0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
            0x90, 0xf4, 0xff, 0x48, 0x82, 0x64, 0x02,
        ]);
        let coded_name = encode(b"x-huffman-name");
        let coded_value = encode(&long);
        block.push(0x10);
        push_integer(&mut block, coded_name.len() as u32, 7, 0x80);
        block.extend_from_slice(&coded_name);
        push_integer(&mut block, coded_value.len() as u32, 7, 0x80);
        block.extend_from_slice(&coded_value);
        let mut plain = Vec::new();
        assert!(spell_out(&block, &mut plain));
        assert!(plain.len() > block.len());
        let fields = |b: &[u8]| loona_hpack::Decoder::new().decode(b).unwrap();
        assert_eq!(fields(&block), fields(&plain));
        // Cut anywhere, the prefix spells out to something that fails no earlier.
        for cut in 0..block.len() {
            let mut plain = Vec::new();
            assert!(spell_out(&block[..cut], &mut plain));
            let mut a = Vec::new();
            let mut b = Vec::new();
            let ra = loona_hpack::Decoder::new().decode_with_cb(&block[..cut], |n, v| {
                a.push((n.into_owned(), v.into_owned()))
            });
            let rb = loona_hpack::Decoder::new()
                .decode_with_cb(&plain, |n, v| b.push((n.into_owned(), v.into_owned())));
            assert_eq!((ra.is_ok(), a), (rb.is_ok(), b), "cut at {cut}");
        }
        // A bad Huffman string ends the rewrite before its field.
        let mut plain = Vec::new();
        assert!(!spell_out(
            &[0x82, 0x00, 0x81, 0xff, 0x81, 0x00],
            &mut plain
        ));
        assert_eq!(plain, [0x82]);
    }
}

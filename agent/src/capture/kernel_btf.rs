//! Where this kernel keeps the fields of `struct sock` the data path reads, from its BTF.
//!
//! The raw `sock` tracepoints hand the programs a bare `struct sock *`; the socket's family and
//! protocol are then read at offsets that depend on the kernel's version and configuration.
//! aya parses BTF but keeps its type lookup to itself, so this reads the little it needs: the
//! type section, walked once, for two structs and three members.

use std::path::Path;

use agent_common::SockOffsets;
use anyhow::{Context as _, bail, ensure};

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

/// Reads the offsets from a BTF file (`/sys/kernel/btf/vmlinux`).
pub fn sock_offsets(path: &Path) -> anyhow::Result<SockOffsets> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    sock_offsets_in(&data).with_context(|| format!("in {}", path.display()))
}

fn sock_offsets_in(data: &[u8]) -> anyhow::Result<SockOffsets> {
    let btf = Btf::parse(data)?;
    let sock = btf.struct_named("sock")?;
    let common = btf.member(&sock, "__sk_common")?;
    let sock_common = btf.struct_by_id(common.type_id)?;
    let family = btf.member(&sock_common, "skc_family")?;
    let protocol = btf.member(&sock, "sk_protocol")?;
    Ok(SockOffsets {
        family: field_offset(common.byte_offset()? + family.byte_offset()?)?,
        protocol: field_offset(protocol.byte_offset()?)?,
    })
}

fn field_offset(bytes: u32) -> anyhow::Result<u16> {
    u16::try_from(bytes).context("offset beyond 64 KiB")
}

struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
}

struct Struct<'a> {
    kind_flag: bool,
    members: &'a [u8],
}

struct Member {
    type_id: u32,
    /// Bits from the start of the struct, and the bitfield's width (0: not a bitfield).
    bit_offset: u32,
    bitfield_size: u32,
}

impl Member {
    /// The data path reads whole 16-bit fields: a bitfield or an unaligned member is refused.
    fn byte_offset(&self) -> anyhow::Result<u32> {
        ensure!(
            self.bitfield_size == 0 && self.bit_offset.is_multiple_of(8),
            "a bitfield or unaligned member (bit offset {}, width {})",
            self.bit_offset,
            self.bitfield_size
        );
        Ok(self.bit_offset / 8)
    }
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8]) -> anyhow::Result<Self> {
        ensure!(u16_at(data, 0) == Some(BTF_MAGIC), "not BTF (bad magic)");
        let header = |at| u32_at(data, at).context("BTF header cut short");
        let header_len = header(4)? as usize;
        let (type_off, type_len) = (header(8)? as usize, header(12)? as usize);
        let (str_off, str_len) = (header(16)? as usize, header(20)? as usize);
        let section = |off: usize, len: usize| {
            let start = header_len.checked_add(off)?;
            data.get(start..start.checked_add(len)?)
        };
        Ok(Btf {
            types: section(type_off, type_len).context("BTF type section out of bounds")?,
            strings: section(str_off, str_len).context("BTF string section out of bounds")?,
        })
    }

    fn name(&self, offset: u32) -> &'a [u8] {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// Every type in order (ids from 1): (name offset, kind, kind flag, type bytes after the
    /// 12-byte common part).
    fn types(&self) -> impl Iterator<Item = anyhow::Result<(u32, u32, bool, &'a [u8])>> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= self.types.len() {
                return None;
            }
            let item = (|| {
                let word = |i: usize| u32_at(self.types, at + 4 * i).context("BTF type cut short");
                let (name_off, info) = (word(0)?, word(1)?);
                let kind = (info >> 24) & 0x1f;
                let vlen = (info & 0xffff) as usize;
                let extra = match kind {
                    1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
                    3 => 12,                      // ARRAY
                    4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
                    6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
                    2 | 7..=12 | 16 | 18 => 0,    // PTR .. FUNC, FLOAT, TYPE_TAG
                    other => bail!("unknown BTF kind {other}"),
                };
                let body = self
                    .types
                    .get(at + 12..at + 12 + extra)
                    .context("BTF type cut short")?;
                at += 12 + extra;
                Ok((name_off, kind, info >> 31 == 1, body))
            })();
            if item.is_err() {
                // Nothing after a malformed type can be located.
                at = self.types.len();
            }
            Some(item)
        })
    }

    fn struct_named(&self, name: &str) -> anyhow::Result<Struct<'a>> {
        for item in self.types() {
            let (name_off, kind, kind_flag, members) = item?;
            if kind == KIND_STRUCT && self.name(name_off) == name.as_bytes() {
                return Ok(Struct { kind_flag, members });
            }
        }
        bail!("no struct {name} in the kernel's BTF")
    }

    fn struct_by_id(&self, id: u32) -> anyhow::Result<Struct<'a>> {
        let (_, kind, kind_flag, members) = self
            .types()
            .nth((id as usize).checked_sub(1).context("type id 0 is void")?)
            .context("type id beyond the BTF")??;
        ensure!(
            kind == KIND_STRUCT,
            "type {id} is not a struct (kind {kind})"
        );
        Ok(Struct { kind_flag, members })
    }

    fn member(&self, of: &Struct<'a>, name: &str) -> anyhow::Result<Member> {
        for m in of.members.chunks_exact(12) {
            let (name_off, type_id, offset) = (
                u32_at(m, 0).unwrap(),
                u32_at(m, 4).unwrap(),
                u32_at(m, 8).unwrap(),
            );
            if self.name(name_off) != name.as_bytes() {
                continue;
            }
            return Ok(if of.kind_flag {
                Member {
                    type_id,
                    bit_offset: offset & 0xff_ffff,
                    bitfield_size: offset >> 24,
                }
            } else {
                Member {
                    type_id,
                    bit_offset: offset,
                    bitfield_size: 0,
                }
            });
        }
        bail!("no member {name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One type of a test blob: name, kind, kind flag, size, the INT encoding word (INTs only),
    /// and members as (name, type id, offset word).
    type TestType<'a> = (
        &'a str,
        u32,
        bool,
        u32,
        Option<u32>,
        &'a [(&'a str, u32, u32)],
    );

    /// A BTF blob holding `types` (ids from 1).
    fn blob(types: &[TestType<'_>]) -> Vec<u8> {
        let mut strings = vec![0u8];
        let mut intern = |s: &str| {
            let at = strings.len() as u32;
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            at
        };
        let mut words = Vec::new();
        for &(name, kind, kind_flag, size, encoding, members) in types {
            let info = (u32::from(kind_flag) << 31) | (kind << 24) | members.len() as u32;
            words.extend([intern(name), info, size]);
            words.extend(encoding);
            for &(member, type_id, offset) in members {
                words.extend([intern(member), type_id, offset]);
            }
        }
        let type_bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut out = Vec::new();
        out.extend_from_slice(&BTF_MAGIC.to_ne_bytes());
        out.extend_from_slice(&[1, 0]);
        let header = [24, 0, type_bytes.len() as u32, type_bytes.len() as u32];
        for word in header.into_iter().chain([strings.len() as u32]) {
            out.extend_from_slice(&word.to_ne_bytes());
        }
        out.extend(type_bytes);
        out.extend(strings);
        out
    }

    #[test]
    fn finds_the_family_through_the_common_part_and_the_protocol() {
        let data = blob(&[
            ("unsigned short", 1, false, 2, Some(16), &[]),
            (
                "sock_common",
                KIND_STRUCT,
                false,
                136,
                None,
                &[("skc_hash", 1, 64), ("skc_family", 1, 128)],
            ),
            (
                "sock",
                KIND_STRUCT,
                false,
                784,
                None,
                &[("__sk_common", 2, 0), ("sk_protocol", 1, 4256)],
            ),
        ]);
        let offsets = sock_offsets_in(&data).unwrap();
        assert_eq!((offsets.family, offsets.protocol), (16, 532));
    }

    #[test]
    fn refuses_a_bitfield_protocol_and_garbage() {
        let data = blob(&[
            (
                "sock_common",
                KIND_STRUCT,
                false,
                136,
                None,
                &[("skc_family", 0, 128)],
            ),
            (
                "sock",
                KIND_STRUCT,
                true,
                784,
                None,
                &[("__sk_common", 1, 0), ("sk_protocol", 0, (8 << 24) | 4256)],
            ),
        ]);
        let err = sock_offsets_in(&data).unwrap_err();
        assert!(format!("{err:#}").contains("bitfield"), "{err:#}");
        assert!(sock_offsets_in(b"not btf at all").is_err());
        assert!(sock_offsets_in(&data[..30]).is_err());
    }

    #[test]
    fn this_kernel_has_both_fields() {
        let path = Path::new(super::super::probes::KERNEL_BTF);
        if !path.exists() {
            eprintln!("skipped: this kernel has no BTF at {}", path.display());
            return;
        }
        let offsets = sock_offsets(path).unwrap();
        // `struct sock_common` opens with two addresses, a hash and two ports.
        assert_eq!(offsets.family, 16);
        assert!(offsets.protocol > offsets.family, "{offsets:?}");
    }
}

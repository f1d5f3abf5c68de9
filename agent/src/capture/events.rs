//! Decoding ring-buffer records into typed events, without copying payloads.

use agent_common::{
    CloseEvent, ConnTuple, DATA_FLAG_TLS, DataEventHeader, Direction, EventKind, ProcessEvent,
    Role, WakeEvent,
};

#[derive(Debug)]
pub enum KernelEvent<'a> {
    Data(DataEvent<'a>),
    Close {
        tgid: u32,
        sock: u64,
        at_ns: u64,
    },
    Exec {
        tgid: u32,
        /// The new program's command name, if any.
        comm: Option<String>,
    },
    Exit {
        tgid: u32,
        at_ns: u64,
    },
    /// After reading a response on a client connection, `waker` woke `wakee`.
    Wake {
        tgid: u32,
        waker: u32,
        wakee: u32,
    },
}

#[derive(Debug)]
pub struct DataEvent<'a> {
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    pub sock: u64,
    pub direction: Direction,
    pub enter_ns: u64,
    pub exit_ns: u64,
    pub total_len: u32,
    pub tuple: ConnTuple,
    pub role: Role,
    /// TLS plaintext from the OpenSSL uprobes rather than bytes seen on the socket.
    pub tls: bool,
    pub payload: &'a [u8],
}

/// Decode one record; `None` for records this version does not know or that are cut short.
pub fn decode(bytes: &[u8]) -> Option<KernelEvent<'_>> {
    match EventKind::from_u8(*bytes.first()?)? {
        EventKind::Data => {
            let header: DataEventHeader = read_struct(bytes)?;
            let start = size_of::<DataEventHeader>();
            let end = start.checked_add(header.captured_len as usize)?;
            let direction = match header.direction {
                1 => Direction::Ingress,
                2 => Direction::Egress,
                _ => return None,
            };
            Some(KernelEvent::Data(DataEvent {
                tgid: (header.pid_tgid >> 32) as u32,
                tid: header.pid_tgid as u32,
                fd: header.fd,
                sock: header.sock,
                direction,
                enter_ns: header.enter_ns,
                exit_ns: header.exit_ns,
                total_len: header.total_len,
                role: Role::from_u8(header.tuple.role),
                tls: header.flags & DATA_FLAG_TLS != 0,
                tuple: header.tuple,
                payload: bytes.get(start..end)?,
            }))
        }
        EventKind::Close => {
            let e: CloseEvent = read_struct(bytes)?;
            Some(KernelEvent::Close {
                tgid: e.tgid,
                sock: e.sock,
                at_ns: e.timestamp_ns,
            })
        }
        EventKind::Exec => {
            let e: ProcessEvent = read_struct(bytes)?;
            Some(KernelEvent::Exec {
                tgid: e.tgid,
                comm: comm_text(&e.comm),
            })
        }
        EventKind::Exit => {
            let e: ProcessEvent = read_struct(bytes)?;
            Some(KernelEvent::Exit {
                tgid: e.tgid,
                at_ns: e.timestamp_ns,
            })
        }
        EventKind::Wake => {
            let e: WakeEvent = read_struct(bytes)?;
            Some(KernelEvent::Wake {
                tgid: e.tgid,
                waker: e.waker_tid,
                wakee: e.wakee_tid,
            })
        }
    }
}

/// A NUL-padded kernel command name as text (`None` when empty).
fn comm_text(comm: &[u8; 16]) -> Option<String> {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    (len > 0).then(|| String::from_utf8_lossy(&comm[..len]).into_owned())
}

/// Read a `#[repr(C)]` plain-integer struct from the front of `bytes`.
fn read_struct<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; T is one of the agent-common records, valid for any bit pattern;
    // read_unaligned because ring-buffer records are only 8-byte aligned.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a plain struct.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn decodes_data_with_payload_and_rejects_short_records() {
        let header = DataEventHeader {
            kind: EventKind::Data as u8,
            direction: Direction::Egress as u8,
            syscall: 2,
            flags: 0,
            fd: 7,
            pid_tgid: (42u64 << 32) | 43,
            sock: 0xdead,
            enter_ns: 1,
            exit_ns: 2,
            total_len: 10,
            captured_len: 3,
            tuple: ConnTuple::UNKNOWN,
        };
        let mut bytes = as_bytes(&header);
        bytes.extend_from_slice(b"abc");
        match decode(&bytes) {
            Some(KernelEvent::Data(d)) => {
                assert_eq!((d.tgid, d.tid, d.fd), (42, 43, 7));
                assert_eq!(d.payload, b"abc");
                assert_eq!(d.total_len, 10);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode(&[]).is_none());
        assert!(decode(&[99, 0, 0]).is_none());
    }
}

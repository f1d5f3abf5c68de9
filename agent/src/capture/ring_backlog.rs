//! How full the kernel ring buffer is, read from its consumer and producer positions.
//!
//! The ring's first two pages hold those positions; a second, read-only mapping of them lets
//! another thread watch the backlog while the capture thread consumes.

use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct RingBacklog {
    pages: NonNull<libc::c_void>,
    page_size: usize,
    capacity: u64,
}

// SAFETY: the mapping is read-only and read through atomics; it lives until `drop`.
unsafe impl Send for RingBacklog {}

impl RingBacklog {
    /// Map the position pages of the ring map `fd`, whose data area is `capacity` bytes.
    pub fn new(fd: RawFd, capacity: u64) -> io::Result<Self> {
        // SAFETY: no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // SAFETY: a fresh read-only shared mapping of the ring's first two pages (consumer
        // position, then producer position), which the kernel allows for any reader.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page_size,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            pages: NonNull::new(addr).ok_or_else(io::Error::last_os_error)?,
            page_size,
            capacity: capacity.max(1),
        })
    }

    /// Bytes written by the kernel and not yet consumed, as a share of the ring (0 to 1).
    pub fn fill(&self) -> f64 {
        let base = self.pages.as_ptr().cast::<u8>();
        // SAFETY: both positions are 8-byte aligned at the start of their page, inside the
        // mapping; the kernel and the consumer update them atomically.
        let (consumer, producer) = unsafe {
            (
                (*base.cast::<AtomicU64>()).load(Ordering::Acquire),
                (*base.add(self.page_size).cast::<AtomicU64>()).load(Ordering::Acquire),
            )
        };
        (producer.saturating_sub(consumer) as f64 / self.capacity as f64).min(1.0)
    }
}

impl Drop for RingBacklog {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.pages.as_ptr(), 2 * self.page_size) };
    }
}

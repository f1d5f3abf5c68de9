//! Fields of a tracepoint's record at offsets fixed at build time (and checked against the
//! kernel's tracefs format by userspace before load), loaded directly instead of through a
//! helper call each.

use aya_ebpf::{EbpfContext as _, programs::TracePointContext};

/// The field of type `T` at `offset` in the record.
#[inline(always)]
pub fn field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: the offsets in `agent_common`'s record modules lie inside the record; the
    // verifier checks every context load.
    // Volatile: one load of `T`'s width at exactly this offset, which the compiler may neither
    // split nor widen.
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(offset) as *const T) }
}

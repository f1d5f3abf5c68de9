//! Kernel timestamps (CLOCK_MONOTONIC, as `bpf_ktime_get_ns` returns) to wall-clock time.

use std::time::{Duration, SystemTime};

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall-clock time at monotonic zero.
    epoch: SystemTime,
}

impl Clock {
    pub fn new() -> Self {
        let mono = monotonic_now_ns();
        let now = SystemTime::now();
        Self {
            epoch: now - Duration::from_nanos(mono),
        }
    }

    pub fn to_system_time(&self, monotonic_ns: u64) -> SystemTime {
        self.epoch + Duration::from_nanos(monotonic_ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

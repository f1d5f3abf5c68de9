//! Process life cycle: new programs (exec) and exits for userspace's process table, and
//! inheritance of the selection by forked children.

use agent_common::{Counter, EventKind, ProcessEvent, WakeEvent};
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::TracePointContext,
};

use crate::maps::{
    EVENTS, SELECTED_COMMS, TRACED_PIDS, WAKE_ARMED, config, count, traced_pids_changed,
    wakeup_flags, wakeups_armed,
};

/// Exec records wake userspace at once: it must read the new program's identity from /proc
/// while the process lives (a short-lived client may be gone within milliseconds).
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// A new task that shares its creator's thread group: a thread, not a process.
const CLONE_THREAD: u64 = 0x10000;

/// `comm`: the program's command name for an exec (zeroes for an exit, where it is not used).
fn emit(kind: EventKind, tgid: u32, comm: [u8; 16]) {
    let event = ProcessEvent {
        kind: kind as u8,
        _pad: [0; 3],
        tgid,
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        comm,
    };
    let flags = if kind == EventKind::Exec {
        BPF_RB_FORCE_WAKEUP
    } else {
        wakeup_flags(size_of::<ProcessEvent>() as u32)
    };
    if EVENTS.output::<ProcessEvent>(&event, flags).is_err() {
        count(Counter::ControlEventsLost);
    }
}

/// `sched:sched_process_exec`: a program whose command name was selected is traced from its
/// first syscall; userspace hears of every exec and applies the full rules (paths, scripts).
pub fn try_exec(_ctx: &TracePointContext) -> Result<(), i64> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == config!(agent_tgid) {
        return Ok(());
    }
    // Read once: it selects the program here and names it in the record.
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    // SAFETY: presence test only.
    if config!(filter_pids) != 0
        && unsafe { SELECTED_COMMS.get(comm) }.is_some()
        && TRACED_PIDS.insert(tgid, 1, 0).is_ok()
    {
        traced_pids_changed();
    }
    emit(EventKind::Exec, tgid, comm);
    Ok(())
}

/// `sched:sched_process_exit`: fires per thread; only the group leader's exit ends the process.
pub fn try_exit(_ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid != pid_tgid as u32 {
        return Ok(());
    }
    if TRACED_PIDS.remove(tgid).is_ok() {
        traced_pids_changed();
    }
    if tgid != config!(agent_tgid) {
        emit(EventKind::Exit, tgid, [0; 16]);
    }
    Ok(())
}

/// `task:task_newtask`, in the parent's context: a child process of a selected process is
/// selected too (pre-fork servers such as nginx or gunicorn serve from children that never
/// exec). A new thread belongs to its process's selection already: entered in the table, its
/// id would stay there for good (only a process's exit clears it), and a server that starts a
/// thread per request would fill the table.
pub fn try_fork(ctx: &TracePointContext) -> Result<(), i64> {
    if config!(filter_pids) == 0 {
        return Ok(());
    }
    let flags_offset = config!(offsets.newtask_clone_flags) as usize;
    let clone_flags: u64 = unsafe { ctx.read_at(flags_offset) }.map_err(i64::from)?;
    if clone_flags & CLONE_THREAD != 0 {
        return Ok(());
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: presence test only.
    if unsafe { TRACED_PIDS.get(parent) }.is_none() {
        return Ok(());
    }
    let pid_offset = config!(offsets.newtask_pid) as usize;
    let child: i32 = unsafe { ctx.read_at(pid_offset) }.map_err(i64::from)?;
    if TRACED_PIDS.insert(child as u32, 1, 0).is_ok() {
        traced_pids_changed();
    }
    Ok(())
}

/// `sched:sched_wakeup`, in the waker's context: a thread that just read a response on a client
/// connection wakes another — report the pair once, so userspace can tell which request a
/// worker thread's call belonged to. Costs one map lookup per wake-up otherwise (none at all
/// until some thread was armed).
pub fn try_wakeup(ctx: &TracePointContext) -> Result<(), i64> {
    if !wakeups_armed() {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let waker = pid_tgid as u32;
    // SAFETY: presence test only.
    if unsafe { WAKE_ARMED.get(waker) }.is_none() {
        return Ok(());
    }
    let _ = WAKE_ARMED.remove(waker);
    let offset = config!(offsets.wakeup_pid) as usize;
    let wakee: i32 = unsafe { ctx.read_at(offset) }.map_err(i64::from)?;
    let event = WakeEvent {
        kind: EventKind::Wake as u8,
        _pad: [0; 3],
        tgid: (pid_tgid >> 32) as u32,
        waker_tid: waker,
        wakee_tid: wakee as u32,
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
    };
    if EVENTS
        .output::<WakeEvent>(&event, wakeup_flags(size_of::<WakeEvent>() as u32))
        .is_err()
    {
        count(Counter::ControlEventsLost);
    }
    Ok(())
}

//! A short, bounded wait before export, during which a guessed parent can still be corrected.
//!
//! A call made from a worker thread gets a guessed parent when it starts (see [`super::assembly`]).
//! When the worker finishes the call it usually wakes the thread that serves the request the
//! call belonged to (a future completing): the kernel reports that wake-up, and the call's span
//! — with everything below it, which ended before it — moves under the right request. Spans
//! leave the hold after the configured delay, or earlier when the hold is full (counted).

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use foldhash::HashMap;
use serde::Serialize;

use super::{
    assembly::SpanContext,
    model::{SpanId, SpanRecord, TraceId},
};

/// A guessed span waits this long at most for its worker's wake-up.
const WAKE_WINDOW: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, Default, Serialize)]
pub struct HoldStats {
    /// Spans exported before their delay because the hold was full.
    pub released_early: u64,
    /// Guessed parents replaced after the worker woke the request's thread.
    pub parents_corrected: u64,
    /// Guessed parents the wake-up confirmed.
    pub parents_confirmed: u64,
}

pub struct SpanHold {
    delay: Duration,
    capacity: usize,
    order: VecDeque<(Instant, SpanId)>,
    spans: HashMap<SpanId, SpanRecord>,
    /// Held spans by parent, to move a whole subtree.
    children: HashMap<SpanId, Vec<SpanId>>,
    /// Guessed client spans waiting for their thread's wake-up: (tgid, tid) → span.
    awaiting: HashMap<(u32, u32), (SpanId, Instant)>,
    pub stats: HoldStats,
}

impl SpanHold {
    pub fn new(delay: Duration, capacity: usize) -> Self {
        Self {
            delay,
            capacity: capacity.max(1),
            order: VecDeque::new(),
            spans: HashMap::default(),
            children: HashMap::default(),
            awaiting: HashMap::default(),
            stats: HoldStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Hold a finished span. `guessed_on` names the (process, thread) whose next wake-up may
    /// correct its parent.
    pub fn push(
        &mut self,
        span: SpanRecord,
        guessed_on: Option<(u32, u32)>,
        now: Instant,
        release: &mut impl FnMut(SpanRecord),
    ) {
        // A root, or a span whose parent came from outside, is never guessed and never inside a
        // subtree a correction moves: nothing for it to wait for. (Its children, once guessed
        // and corrected, take their new parent's ids, not anything from it.)
        let fixed = guessed_on.is_none() && (span.is_root() || span.parent_is_remote);
        if self.delay.is_zero() || fixed {
            release(span);
            return;
        }
        while self.spans.len() >= self.capacity {
            let Some((_, id)) = self.order.pop_front() else {
                break;
            };
            if let Some(old) = self.take(id) {
                self.stats.released_early += 1;
                release(old);
            }
        }
        let id = span.span_id;
        if let Some(key) = guessed_on {
            self.awaiting.insert(key, (id, now));
        }
        if !span.is_root() {
            self.children
                .entry(span.parent_span_id)
                .or_default()
                .push(id);
        }
        self.order.push_back((now + self.delay, id));
        self.spans.insert(id, span);
    }

    /// Thread `waker` of process `tgid` woke a thread serving the request `parent`.
    pub fn on_wake(&mut self, tgid: u32, waker: u32, parent: &SpanContext, now: Instant) {
        let Some((id, since)) = self.awaiting.remove(&(tgid, waker)) else {
            return;
        };
        if now.duration_since(since) > WAKE_WINDOW {
            return;
        }
        let Some(span) = self.spans.get_mut(&id) else {
            return;
        };
        if span.parent_span_id == parent.span_id {
            self.stats.parents_confirmed += 1;
            return;
        }
        let old_parent = span.parent_span_id;
        span.parent_span_id = parent.span_id;
        span.parent_is_remote = false;
        if let Some(siblings) = self.children.get_mut(&old_parent) {
            siblings.retain(|c| *c != id);
        }
        self.children.entry(parent.span_id).or_default().push(id);
        self.retrace(id, parent.trace_id);
        self.stats.parents_corrected += 1;
    }

    /// Move a held span and its held descendants into `trace`.
    fn retrace(&mut self, root: SpanId, trace: TraceId) {
        let mut stack = vec![root];
        let mut visited = 0usize;
        while let Some(id) = stack.pop() {
            visited += 1;
            if visited > self.capacity {
                break;
            }
            if let Some(span) = self.spans.get_mut(&id) {
                span.trace_id = trace;
            }
            if let Some(kids) = self.children.get(&id) {
                stack.extend(kids.iter().copied());
            }
        }
    }

    /// Export every span whose wait is over.
    pub fn release_due(&mut self, now: Instant, release: &mut impl FnMut(SpanRecord)) {
        while let Some((due, id)) = self.order.front().copied() {
            if due > now {
                break;
            }
            self.order.pop_front();
            if let Some(span) = self.take(id) {
                release(span);
            }
        }
        self.awaiting
            .retain(|_, (_, since)| now.duration_since(*since) <= WAKE_WINDOW);
    }

    /// Export everything (shutdown).
    pub fn release_all(&mut self, release: &mut impl FnMut(SpanRecord)) {
        while let Some((_, id)) = self.order.pop_front() {
            if let Some(span) = self.take(id) {
                release(span);
            }
        }
        self.awaiting.clear();
    }

    fn take(&mut self, id: SpanId) -> Option<SpanRecord> {
        let span = self.spans.remove(&id)?;
        // Roots are never anyone's child: no need to look.
        if !span.is_root()
            && let Some(kids) = self.children.get_mut(&span.parent_span_id)
        {
            kids.retain(|c| *c != id);
            if kids.is_empty() {
                self.children.remove(&span.parent_span_id);
            }
        }
        Some(span)
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::SystemTime};

    use super::*;
    use crate::spans::model::{ProcessResource, SpanKind, SpanStatus};

    fn span(trace: u8, id: u8, parent: u8) -> SpanRecord {
        SpanRecord {
            trace_id: [trace; 16],
            span_id: [id; 8],
            parent_span_id: [parent; 8],
            parent_is_remote: false,
            trace_flags: 1,
            trace_state: None,
            name: format!("s{id}"),
            kind: SpanKind::Client,
            start: SystemTime::UNIX_EPOCH,
            end: SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            status: SpanStatus::Unset,
            resource: Arc::new(ProcessResource {
                service_name: "t".into(),
                pid: 1,
                attributes: Vec::new(),
            }),
        }
    }

    fn ctx(trace: u8, id: u8) -> SpanContext {
        SpanContext {
            trace_id: [trace; 16],
            span_id: [id; 8],
            parent_span_id: [0; 8],
            parent_is_remote: false,
            trace_flags: 1,
            trace_state: None,
            parent_guessed: false,
        }
    }

    #[test]
    fn wake_moves_a_guessed_call_and_its_subtree() {
        let mut hold = SpanHold::new(Duration::from_millis(300), 100);
        let now = Instant::now();
        let out = std::cell::RefCell::new(Vec::new());
        let mut release = |s: SpanRecord| out.borrow_mut().push(s);
        // Downstream server span (id 3) under the call (id 2), which was guessed under request 1
        // of trace 9; the worker then wakes the thread serving request 5 of trace 7.
        hold.push(span(9, 3, 2), None, now, &mut release);
        hold.push(span(9, 2, 1), Some((100, 11)), now, &mut release);
        hold.on_wake(100, 11, &ctx(7, 5), now);
        hold.release_due(now + Duration::from_secs(1), &mut release);
        let out = out.borrow();
        assert_eq!(out.len(), 2);
        let call = out.iter().find(|s| s.span_id == [2; 8]).unwrap();
        let below = out.iter().find(|s| s.span_id == [3; 8]).unwrap();
        assert_eq!(call.parent_span_id, [5; 8]);
        assert_eq!(call.trace_id, [7; 16]);
        assert_eq!(below.trace_id, [7; 16]);
        assert_eq!(below.parent_span_id, [2; 8]);
        assert_eq!(hold.stats.parents_corrected, 1);
    }

    #[test]
    fn bounded_and_released_in_order() {
        let mut hold = SpanHold::new(Duration::from_millis(300), 2);
        let now = Instant::now();
        let out = std::cell::RefCell::new(Vec::new());
        let mut release = |s: SpanRecord| out.borrow_mut().push(s.span_id[0]);
        for id in 1..=3 {
            hold.push(span(1, id, 9), None, now, &mut release);
        }
        assert_eq!(*out.borrow(), vec![1], "the oldest leaves early when full");
        assert_eq!(hold.stats.released_early, 1);
        hold.release_due(now, &mut release);
        assert_eq!(out.borrow().len(), 1, "not due yet");
        hold.release_all(&mut release);
        assert_eq!(*out.borrow(), vec![1, 2, 3]);
        assert!(hold.is_empty());
    }

    #[test]
    fn roots_and_remote_children_leave_at_once() {
        let mut hold = SpanHold::new(Duration::from_millis(300), 100);
        let now = Instant::now();
        let out = std::cell::RefCell::new(Vec::new());
        let mut release = |s: SpanRecord| out.borrow_mut().push(s.span_id[0]);
        hold.push(span(1, 1, 0), None, now, &mut release);
        let mut remote = span(2, 2, 8);
        remote.parent_is_remote = true;
        hold.push(remote, None, now, &mut release);
        hold.push(span(1, 3, 1), None, now, &mut release);
        assert_eq!(*out.borrow(), vec![1, 2], "a local child still waits");
        assert_eq!(hold.len(), 1);
    }
}

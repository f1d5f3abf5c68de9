//! How many live items (connections, requests in flight) each process has. Every process exit
//! on the host reaches the agent; most of those processes had nothing, and with this count
//! their exit costs a lookup instead of a search of every table.

use foldhash::HashMap;

#[derive(Debug, Default)]
pub struct ProcessCounts {
    /// Only processes with at least one item are present.
    counts: HashMap<u32, u32>,
}

impl ProcessCounts {
    /// One more item for `tgid`.
    pub fn add(&mut self, tgid: u32) {
        *self.counts.entry(tgid).or_default() += 1;
    }

    /// One item of `tgid` is gone.
    pub fn remove(&mut self, tgid: u32) {
        if let Some(count) = self.counts.get_mut(&tgid) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&tgid);
            }
        }
    }

    /// Whether `tgid` has any item.
    pub fn has(&self, tgid: u32) -> bool {
        self.counts.contains_key(&tgid)
    }

    pub fn count(&self, tgid: u32) -> u32 {
        self.counts.get(&tgid).copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn clear(&mut self) {
        self.counts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_and_down_to_absent() {
        let mut c = ProcessCounts::default();
        c.add(7);
        c.add(7);
        c.add(8);
        assert_eq!((c.count(7), c.count(8)), (2, 1));
        c.remove(7);
        c.remove(8);
        c.remove(9);
        assert!(c.has(7) && !c.has(8) && !c.has(9));
        c.remove(7);
        assert!(c.is_empty());
    }
}

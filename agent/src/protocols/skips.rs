//! Counting what a decoder skips while it has lost the message framing.
//!
//! Bytes read while a decoder waits for a message to visibly start again are dropped unread,
//! and any request among them never becomes a span. How many messages they held cannot be
//! known, so each such stretch is counted once; the count reaches the stream statistics through
//! [`super::Session::take_resync_skips`].

/// Stretches of skipped bytes, counted once each.
#[derive(Debug, Default)]
pub(crate) struct SkipCounter {
    stretches: u64,
    /// Bytes were already skipped since the framing was last lost.
    in_stretch: bool,
}

impl SkipCounter {
    /// The decoder is about to drop `data_len` captured and `gap` uncaptured bytes unread.
    pub fn skipping(&mut self, data_len: usize, gap: u64) {
        if !self.in_stretch && (data_len > 0 || gap > 0) {
            self.in_stretch = true;
            self.stretches += 1;
        }
    }

    /// The framing was found again (or lost anew): what is skipped next is a new stretch.
    pub fn stretch_over(&mut self) {
        self.in_stretch = false;
    }

    /// Stretches counted since the last call.
    pub fn take(&mut self) -> u64 {
        std::mem::take(&mut self.stretches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stretch_counts_once_however_many_pieces_it_has() {
        let mut skips = SkipCounter::default();
        skips.skipping(0, 0);
        assert_eq!(skips.take(), 0, "nothing dropped, nothing counted");
        skips.skipping(10, 0);
        skips.skipping(0, 300);
        skips.skipping(5, 5);
        assert_eq!(skips.take(), 1);
        assert_eq!(skips.take(), 0, "taking resets the count");
        skips.skipping(1, 0);
        assert_eq!(skips.take(), 0, "still the same stretch");
        skips.stretch_over();
        skips.skipping(1, 0);
        skips.stretch_over();
        skips.skipping(0, 1);
        assert_eq!(skips.take(), 2);
    }
}

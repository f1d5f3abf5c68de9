//! The OTLP receiver the traced rounds export to: `periscope_tests::OtlpReceiver`, compiled in
//! with the `bench` feature only (see xtask/Cargo.toml). Without it, starting one fails.

use std::time::{Duration, Instant};

use anyhow::Result;

pub struct Receiver {
    #[cfg(feature = "bench")]
    inner: periscope_tests::OtlpReceiver,
}

#[cfg(feature = "bench")]
impl Receiver {
    /// A gRPC receiver; `keep_spans` false only counts them (cheaper under load).
    pub fn start_grpc(keep_spans: bool) -> Result<Self> {
        let inner = periscope_tests::OtlpReceiver::start(periscope_tests::Transport::Grpc)?;
        inner.set_keep_spans(keep_spans);
        Ok(Receiver { inner })
    }

    /// The spans received, when started with `keep_spans`.
    pub fn spans(&self) -> Vec<periscope_tests::ReceivedSpan> {
        self.inner.spans()
    }

    pub fn endpoint(&self) -> String {
        self.inner.endpoint()
    }

    pub fn span_count(&self) -> u64 {
        self.inner.span_count() as u64
    }
}

#[cfg(not(feature = "bench"))]
impl Receiver {
    pub fn start_grpc(_keep_spans: bool) -> Result<Self> {
        anyhow::bail!("xtask was built without the `bench` feature, which brings the OTLP receiver")
    }

    pub fn endpoint(&self) -> String {
        String::new()
    }

    pub fn span_count(&self) -> u64 {
        0
    }
}

impl Receiver {
    /// Waits (at most 10 s) until the span count has not moved for half a second: the agent
    /// flushed before exiting, but the last export may still be in the receiver's hands.
    /// Returns the final count.
    pub fn settle(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = self.span_count();
        let mut stable_since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.span_count();
            if now != last {
                last = now;
                stable_since = Instant::now();
            } else if stable_since.elapsed() >= Duration::from_millis(500) {
                break;
            }
        }
        last
    }
}

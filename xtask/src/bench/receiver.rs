//! The OTLP receiver the traced rounds export to: `periscope_tests::OtlpReceiver`, compiled in
//! with the `bench` feature only (see xtask/Cargo.toml). Without it, starting one fails.

use anyhow::Result;

pub struct Receiver {
    #[cfg(feature = "bench")]
    inner: periscope_tests::OtlpReceiver,
}

#[cfg(feature = "bench")]
impl Receiver {
    /// A gRPC receiver that counts spans without keeping them.
    pub fn start_grpc() -> Result<Self> {
        let inner = periscope_tests::OtlpReceiver::start(periscope_tests::Transport::Grpc)?;
        inner.set_keep_spans(false);
        Ok(Receiver { inner })
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
    pub fn start_grpc() -> Result<Self> {
        anyhow::bail!("xtask was built without the `bench` feature, which brings the OTLP receiver")
    }

    pub fn endpoint(&self) -> String {
        String::new()
    }

    pub fn span_count(&self) -> u64 {
        0
    }
}

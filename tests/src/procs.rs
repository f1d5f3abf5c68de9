//! Process and port helpers for the end-to-end tests.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::ops::{Deref, DerefMut};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// Wait until something accepts connections on `127.0.0.1:port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Owns a child process and makes sure it is gone when dropped: SIGTERM first, then SIGKILL
/// if it has not exited after a grace period.
pub struct ChildGuard {
    child: Option<Child>,
    grace: Duration,
}

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        Self {
            child: Some(child),
            grace: Duration::from_secs(3),
        }
    }

    /// Spawn `cmd` and guard it.
    pub fn spawn(cmd: &mut Command) -> anyhow::Result<Self> {
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
        Ok(Self::new(child))
    }

    /// How long `Drop` waits after SIGTERM before SIGKILL (3 s unless changed).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Still running (not exited and not reaped)?
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Send a signal (e.g. `libc::SIGINT`) to the child if it is still running.
    pub fn signal(&mut self, sig: libc::c_int) -> std::io::Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) with a pid we own (not yet reaped, so not reused).
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Wait for the child to exit on its own, up to `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; returns how the child ended.
    pub fn stop(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            return Err(std::io::Error::other("no child process"));
        };
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        self.signal(libc::SIGTERM)?;
        if let Some(status) = self.wait_timeout(grace)? {
            return Ok(status);
        }
        let child = self.child.as_mut().expect("checked above");
        let _ = child.kill();
        child.wait()
    }

    /// Give up ownership without stopping the child.
    pub fn into_inner(mut self) -> Child {
        self.child.take().expect("ChildGuard holds a child")
    }
}

impl Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.child.as_ref().expect("ChildGuard holds a child")
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("ChildGuard holds a child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop(self.grace);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let port = free_port();
        assert!(wait_for_port(port, Duration::from_millis(100)).is_err());
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        wait_for_port(port, Duration::from_secs(2)).unwrap();
        drop(l);
    }

    #[test]
    fn guard_terminates_then_kills() {
        // Ends on SIGTERM.
        let mut g = ChildGuard::spawn(Command::new("sleep").arg("30")).unwrap();
        assert!(g.is_running());
        let status = g.stop(Duration::from_secs(5)).unwrap();
        assert!(!status.success());
        // Ignores SIGTERM: needs SIGKILL.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap '' TERM; exec sleep 30"]);
        let g = ChildGuard::spawn(&mut cmd)
            .unwrap()
            .with_grace(Duration::from_millis(200));
        let pid = g.pid() as libc::pid_t;
        let t0 = Instant::now();
        drop(g);
        assert!(t0.elapsed() < Duration::from_secs(3));
        // SAFETY: signal 0 only checks whether the pid exists.
        assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "child still alive");
    }
}

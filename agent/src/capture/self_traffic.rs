//! The agent never traces its own export traffic. Its own process is excluded in the kernel;
//! this catches the other end: a collector on this host receiving our exports. Such a
//! connection's remote end is one of the agent's own sockets.

use std::{collections::HashSet, fs, mem, net::Ipv6Addr};

use agent_common::{AF_INET, AF_INET6, ConnTuple};

#[derive(Default)]
pub struct SelfTraffic {
    /// Local ports of the agent's TCP/IP sockets.
    ports: HashSet<u16>,
}

impl SelfTraffic {
    pub fn new() -> Self {
        let mut s = Self::default();
        s.refresh();
        s
    }

    /// Re-read the local ports of the agent's own sockets: `getsockname` on each of its fds,
    /// a few dozen syscalls, cheap enough to do on every unknown local peer.
    pub fn refresh(&mut self) {
        self.ports.clear();
        let Ok(dir) = fs::read_dir("/proc/self/fd") else {
            return;
        };
        for entry in dir.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(port) = local_port(fd) {
                self.ports.insert(port);
            }
        }
    }

    /// Whether this connection's far end is the agent (and so must not become spans).
    pub fn is_agent_peer(&mut self, tuple: &ConnTuple) -> bool {
        if tuple.family == 0 || !is_local(tuple) {
            return false;
        }
        if !self.ports.contains(&tuple.remote_port) {
            // A connection the agent opened since the last look.
            self.refresh();
        }
        self.ports.contains(&tuple.remote_port)
    }
}

/// The local port of an IPv4/IPv6 socket fd of this process.
fn local_port(fd: i32) -> Option<u16> {
    // SAFETY: sockaddr_storage is plain data; getsockname writes at most `len` bytes into it
    // and fails harmlessly on fds that are not sockets.
    unsafe {
        let mut addr: libc::sockaddr_storage = mem::zeroed();
        let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getsockname(fd, (&raw mut addr).cast(), &mut len) != 0 {
            return None;
        }
        match addr.ss_family as i32 {
            libc::AF_INET => {
                let a = &*(&raw const addr).cast::<libc::sockaddr_in>();
                Some(u16::from_be(a.sin_port))
            }
            libc::AF_INET6 => {
                let a = &*(&raw const addr).cast::<libc::sockaddr_in6>();
                Some(u16::from_be(a.sin6_port))
            }
            _ => None,
        }
    }
}

/// Both ends on this host: the remote address is loopback, or the local address itself.
fn is_local(tuple: &ConnTuple) -> bool {
    let v4_loopback = tuple.family == AF_INET && tuple.remote_addr[0] == 127;
    let v6_loopback = tuple.family == AF_INET6 && tuple.remote_addr == Ipv6Addr::LOCALHOST.octets();
    v4_loopback || v6_loopback || tuple.remote_addr == tuple.local_addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_listening_socket_is_recognised() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut own = SelfTraffic::new();
        let mut tuple = ConnTuple::UNKNOWN;
        tuple.family = AF_INET;
        tuple.local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        tuple.remote_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        tuple.remote_port = port;
        assert!(own.is_agent_peer(&tuple));
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other_port = other.local_addr().unwrap().port();
        drop(other);
        tuple.remote_port = other_port;
        assert!(!own.is_agent_peer(&tuple));
        tuple.remote_addr[..4].copy_from_slice(&[10, 9, 8, 7]);
        tuple.remote_port = port;
        assert!(
            !own.is_agent_peer(&tuple),
            "a remote host is never the agent"
        );
    }
}

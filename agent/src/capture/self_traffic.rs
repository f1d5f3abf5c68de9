//! The agent never traces its own export traffic. Its own process is excluded in the kernel;
//! this catches the other end: a collector on this host receiving our exports. Such a
//! connection's remote end is one of the agent's own sockets.

use std::{collections::HashSet, fs, time::Instant};

use agent_common::ConnTuple;

use super::procnet;

/// Refresh at most this often when an unknown local peer shows up.
const MIN_REFRESH_INTERVAL_MS: u128 = 100;

pub struct SelfTraffic {
    agent_tgid: u32,
    /// Local ports of the agent's TCP sockets.
    ports: HashSet<u16>,
    last_refresh: Option<Instant>,
    pub dropped: u64,
}

impl SelfTraffic {
    pub fn new(agent_tgid: u32) -> Self {
        let mut s = Self {
            agent_tgid,
            ports: HashSet::new(),
            last_refresh: None,
            dropped: 0,
        };
        s.refresh();
        s
    }

    /// Re-read the agent's own sockets.
    pub fn refresh(&mut self) {
        self.last_refresh = Some(Instant::now());
        let Ok(dir) = fs::read_dir(format!("/proc/{}/fd", self.agent_tgid)) else {
            return;
        };
        let inodes: HashSet<u64> = dir
            .flatten()
            .filter_map(|e| {
                let fd: i32 = e.file_name().to_str()?.parse().ok()?;
                procnet::socket_inode(self.agent_tgid, fd)
            })
            .collect();
        self.ports = procnet::local_ports_of(&inodes);
    }

    /// Whether this connection's far end is the agent (and so must not become a span).
    pub fn is_agent_peer(&mut self, tuple: &ConnTuple) -> bool {
        if tuple.family == 0 || !is_local(tuple) {
            return false;
        }
        let mut hit = self.ports.contains(&tuple.remote_port);
        let stale = self
            .last_refresh
            .is_none_or(|t| t.elapsed().as_millis() >= MIN_REFRESH_INTERVAL_MS);
        if !hit && stale {
            self.refresh();
            hit = self.ports.contains(&tuple.remote_port);
        }
        if hit {
            self.dropped += 1;
        }
        hit
    }
}

/// Both ends on this host: the remote address is one of ours (loopback, or equal to local).
fn is_local(tuple: &ConnTuple) -> bool {
    let v4_loopback = tuple.family == agent_common::AF_INET && tuple.remote_addr[0] == 127;
    let v6_loopback = tuple.family == agent_common::AF_INET6
        && tuple.remote_addr == std::net::Ipv6Addr::LOCALHOST.octets();
    v4_loopback || v6_loopback || tuple.remote_addr == tuple.local_addr
}

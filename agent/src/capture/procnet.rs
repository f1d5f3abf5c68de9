//! /proc views of sockets: the tuple of a connection that predates the agent, and which ports a
//! process listens on.

use std::{collections::HashSet, fs, net::Ipv6Addr};

use agent_common::{AF_INET, AF_INET6, ConnTuple, Role};

const TCP_LISTEN: u8 = 0x0A;

/// One row of /proc/net/tcp or tcp6.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketRow {
    pub family: u16,
    pub local_addr: [u8; 16],
    pub local_port: u16,
    pub remote_addr: [u8; 16],
    pub remote_port: u16,
    pub state: u8,
    pub inode: u64,
}

/// Parse the rows of a /proc/net/tcp{,6} text, skipping anything malformed.
pub fn parse_tcp_table(text: &str, family: u16) -> Vec<SocketRow> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (local_addr, local_port) = parse_endpoint(cols.get(1)?, family)?;
            let (remote_addr, remote_port) = parse_endpoint(cols.get(2)?, family)?;
            Some(SocketRow {
                family,
                local_addr,
                local_port,
                remote_addr,
                remote_port,
                state: u8::from_str_radix(cols.get(3)?, 16).ok()?,
                inode: cols.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// `0100007F:1F90` → 127.0.0.1, 8080. The kernel prints each 32-bit word in host byte order.
fn parse_endpoint(text: &str, family: u16) -> Option<([u8; 16], u16)> {
    let (addr_hex, port_hex) = text.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    let words = match family {
        AF_INET if addr_hex.len() == 8 => 1,
        AF_INET6 if addr_hex.len() == 32 => 4,
        _ => return None,
    };
    let mut addr = [0u8; 16];
    for w in 0..words {
        let word = u32::from_str_radix(&addr_hex[w * 8..w * 8 + 8], 16).ok()?;
        addr[w * 4..w * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    Some((addr, port))
}

fn all_rows() -> Vec<SocketRow> {
    let mut rows = Vec::new();
    for (path, family) in [("/proc/net/tcp", AF_INET), ("/proc/net/tcp6", AF_INET6)] {
        if let Ok(text) = fs::read_to_string(path) {
            rows.extend(parse_tcp_table(&text, family));
        }
    }
    rows
}

/// The socket inode behind a process's fd, if it is a socket.
pub fn socket_inode(tgid: u32, fd: i32) -> Option<u64> {
    let link = fs::read_link(format!("/proc/{tgid}/fd/{fd}")).ok()?;
    let link = link.to_str()?;
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Tuple and role of a connection the kernel never saw being set up. The role is a guess from
/// the listening ports: the end whose local port is listening is the server.
pub fn resolve(tgid: u32, fd: i32) -> Option<ConnTuple> {
    let inode = socket_inode(tgid, fd)?;
    let rows = all_rows();
    let row = rows.iter().find(|r| r.inode == inode)?;
    let listening: HashSet<u16> = rows
        .iter()
        .filter(|r| r.state == TCP_LISTEN)
        .map(|r| r.local_port)
        .collect();
    let role = if listening.contains(&row.local_port) {
        Role::Server
    } else {
        Role::Client
    };
    Some(tuple_of(row, role))
}

fn tuple_of(row: &SocketRow, role: Role) -> ConnTuple {
    let mut tuple = ConnTuple {
        family: row.family,
        local_port: row.local_port,
        remote_port: row.remote_port,
        role: role as u8,
        _pad: 0,
        local_addr: row.local_addr,
        remote_addr: row.remote_addr,
    };
    // IPv4-mapped IPv6 addresses are reported as IPv4, as the peer would see them.
    if row.family == AF_INET6 {
        let local = Ipv6Addr::from(row.local_addr);
        let remote = Ipv6Addr::from(row.remote_addr);
        if let (Some(l), Some(r)) = (local.to_ipv4_mapped(), remote.to_ipv4_mapped()) {
            tuple.family = AF_INET;
            tuple.local_addr = [0; 16];
            tuple.remote_addr = [0; 16];
            tuple.local_addr[..4].copy_from_slice(&l.octets());
            tuple.remote_addr[..4].copy_from_slice(&r.octets());
        }
    }
    tuple
}

/// Inodes of the sockets listening on any of `ports`.
pub fn listening_inodes(ports: &HashSet<u16>) -> HashSet<u64> {
    all_rows()
        .into_iter()
        .filter(|r| r.state == TCP_LISTEN && ports.contains(&r.local_port))
        .map(|r| r.inode)
        .collect()
}

/// Whether the process holds any of these socket inodes.
pub fn holds_any_socket(tgid: u32, inodes: &HashSet<u64>) -> bool {
    let Ok(dir) = fs::read_dir(format!("/proc/{tgid}/fd")) else {
        return false;
    };
    dir.flatten().any(|entry| {
        fs::read_link(entry.path())
            .ok()
            .and_then(|l| {
                let l = l.to_str()?.to_owned();
                l.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            })
            .is_some_and(|inode| inodes.contains(&inode))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipv4_and_ipv6_rows() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n\
           1: garbage\n";
        let rows = parse_tcp_table(v4, AF_INET);
        assert_eq!(rows.len(), 1);
        assert_eq!(&rows[0].local_addr[..4], &[127, 0, 0, 1]);
        assert_eq!(rows[0].local_port, 8080);
        assert_eq!(rows[0].state, TCP_LISTEN);
        assert_eq!(rows[0].inode, 12345);

        let v6 = "header\n   0: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000 0 0 777 1\n";
        let rows = parse_tcp_table(v6, AF_INET6);
        assert_eq!(rows.len(), 1);
        let tuple = tuple_of(&rows[0], Role::Server);
        assert_eq!(tuple.family, AF_INET);
        assert_eq!(&tuple.local_addr[..4], &[127, 0, 0, 1]);
        assert_eq!(tuple.remote_port, 0xD431);
    }
}

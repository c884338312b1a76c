//! Free localhost ports for the forwarded ssh and http.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};

/// Whether `port` can be bound on 127.0.0.1 right now.
pub fn is_free(port: u16) -> bool {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A port the kernel hands out as free on 127.0.0.1.
pub fn ephemeral() -> std::io::Result<u16> {
    let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

/// `preferred` when it is free, else the next free of the ten after it,
/// else any free port; never one of `taken`.
pub fn pick(preferred: Option<u16>, taken: &[u16]) -> std::io::Result<u16> {
    if let Some(p) = preferred {
        for candidate in p..p.saturating_add(10) {
            if candidate != 0 && !taken.contains(&candidate) && is_free(candidate) {
                return Ok(candidate);
            }
        }
    }
    loop {
        let p = ephemeral()?;
        if !taken.contains(&p) {
            return Ok(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_picks_another() {
        let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = busy.local_addr().expect("addr").port();
        let got = pick(Some(port), &[]).expect("a port");
        assert_ne!(got, port);
        assert!(is_free(got));
    }

    #[test]
    fn ports_already_given_out_are_skipped() {
        let a = pick(None, &[]).expect("a port");
        let b = pick(Some(a), &[a]).expect("a port");
        assert_ne!(a, b);
    }
}

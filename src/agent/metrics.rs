//! StatsD metrics of each run, through the `cadence` client: one UDP
//! packet per run (the metrics buffered, then flushed), so that a
//! collector sees a run's figures together.

use std::net::{ToSocketAddrs, UdpSocket};

use cadence::prelude::*;
use cadence::{BufferedUdpMetricSink, StatsdClient};

use crate::error::Error;

/// Where metrics go: nowhere without `--statsd`.
pub struct Metrics(Option<StatsdClient>);

/// One run's figures.
pub struct RunFigures {
    pub elapsed_ms: u64,
    pub changed: usize,
    pub failed: usize,
    pub checks_failed: usize,
}

impl Metrics {
    /// A client sending to `addr` (HOST:PORT), resolved once, now, so that
    /// a wrong address stops the agent at its start.
    pub fn connect(addr: Option<&str>) -> Result<Metrics, Error> {
        let Some(addr) = addr else {
            return Ok(Metrics(None));
        };
        let io = |context: String| move |source| Error::Io { context, source };
        let sock =
            UdpSocket::bind("127.0.0.1:0").map_err(io("binding a UDP socket for StatsD".into()))?;
        let to = addr
            .to_socket_addrs()
            .and_then(|mut all| {
                all.next().ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "could not resolve to any addresses",
                    )
                })
            })
            .map_err(io(format!("--statsd {addr}")))?;
        let sink = BufferedUdpMetricSink::from(to, sock)
            .map_err(|e| io(format!("--statsd {addr}"))(std::io::Error::other(e)))?;
        Ok(Metrics(Some(StatsdClient::from_sink("kiln.agent", sink))))
    }

    /// The bundle could not be fetched, or was refused.
    pub fn fetch_failed(&self) {
        self.send(|c| {
            let _ = c.count("fetch_failed", 1);
        });
    }

    /// The run stopped before converging.
    pub fn failed(&self) {
        self.send(|c| {
            let _ = c.gauge("failed", 1);
        });
    }

    /// A run that converged (or tried to).
    pub fn run(&self, f: &RunFigures) {
        self.send(|c| {
            let _ = c.time("run_time_ms", f.elapsed_ms);
            let _ = c.gauge("changed", f.changed as u64);
            let _ = c.gauge("failed", f.failed as u64);
            let _ = c.gauge("checks_failed", f.checks_failed as u64);
        });
    }

    /// Metrics are best effort: a collector that is down loses them.
    fn send(&self, emit: impl FnOnce(&StatsdClient)) {
        if let Some(c) = &self.0 {
            emit(c);
            let _ = c.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_run_is_one_packet_of_statsd_lines() {
        let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
        collector
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let addr = collector.local_addr().unwrap().to_string();
        let m = Metrics::connect(Some(&addr)).unwrap();
        m.run(&RunFigures {
            elapsed_ms: 12,
            changed: 3,
            failed: 0,
            checks_failed: 1,
        });
        let mut buf = [0u8; 2048];
        let n = collector.recv(&mut buf).unwrap();
        let lines: Vec<&str> = std::str::from_utf8(&buf[..n]).unwrap().lines().collect();
        assert_eq!(
            lines,
            [
                "kiln.agent.run_time_ms:12|ms",
                "kiln.agent.changed:3|g",
                "kiln.agent.failed:0|g",
                "kiln.agent.checks_failed:1|g"
            ]
        );
        m.fetch_failed();
        let n = collector.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap().trim_end(),
            "kiln.agent.fetch_failed:1|c"
        );
    }

    #[test]
    fn an_address_that_does_not_resolve_is_named() {
        let e = Metrics::connect(Some("no-port-here")).err().unwrap();
        assert!(e.to_string().starts_with("--statsd no-port-here: "), "{e}");
    }
}

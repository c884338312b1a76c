//! Automatic facts, exposed to policy under `node`.

use std::net::Ipv4Addr;

use serde::Serialize;

use super::target::Target;

#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    pub fqdn: String,
    pub hostname: String,
    pub platform: String,
    pub platform_version: String,
    /// The release's codename (`bookworm`, `trixie`): which
    /// `[releases.NAME]` of the whitelist and of cookbook attributes apply.
    pub codename: String,
    pub cpus: u64,
    pub memory_mb: u64,
    pub ipaddress: String,
}

impl Facts {
    /// Facts of `target`. The fqdn is `fqdn` when given, else the target's own name.
    pub fn gather(target: &Target, fqdn: Option<&str>) -> Self {
        let fqdn = fqdn
            .map(str::to_string)
            .or_else(|| {
                target
                    .fs()
                    .read_to_string("/etc/hostname")
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            })
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_else(|| "localhost".to_string());
        let hostname = fqdn.split('.').next().unwrap_or(&fqdn).to_string();
        let os = target
            .fs()
            .read_to_string("/etc/os-release")
            .or_else(|_| target.fs().read_to_string("/usr/lib/os-release"))
            .unwrap_or_default();
        Facts {
            hostname,
            fqdn,
            platform: os_field(&os, "ID").unwrap_or_else(|| "unknown".into()),
            platform_version: os_field(&os, "VERSION_ID").unwrap_or_default(),
            codename: os_field(&os, "VERSION_CODENAME").unwrap_or_default(),
            cpus: cpus(),
            memory_mb: memory_mb(),
            ipaddress: ipaddress().unwrap_or_else(|| "127.0.0.1".into()),
        }
    }
}

/// The Debian releases kiln knows, by codename, with os-release's VERSION_ID.
pub const DEBIAN_RELEASES: &[(&str, &str)] =
    &[("bookworm", "12"), ("trixie", "13"), ("forky", "14")];

impl Facts {
    /// These facts as on a target of release `codename` (for compiling a
    /// policy per release, as `kiln check` does).
    pub fn on_release(&self, codename: &str) -> Facts {
        let version = DEBIAN_RELEASES
            .iter()
            .find(|(c, _)| *c == codename)
            .map_or("", |(_, v)| v);
        Facts {
            platform: "debian".into(),
            platform_version: version.into(),
            codename: codename.into(),
            ..self.clone()
        }
    }
}

fn os_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix('=')?;
        Some(v.trim_matches('"').to_string())
    })
}

/// The processors this process may run on, as `nproc` counts them: one
/// system call, where the standard library's count also reads the
/// cgroup's quota files (a quota limits time, not the processors a node
/// has).
fn cpus() -> u64 {
    rustix::thread::sched_getaffinity(None).map_or(1, |set| u64::from(set.count().max(1)))
}

/// `MemTotal` of /proc/meminfo, in one system call.
fn memory_mb() -> u64 {
    let info = rustix::system::sysinfo();
    let bytes = info
        .totalram
        .saturating_mul(u64::from(info.mem_unit.max(1)));
    bytes >> 20
}

/// The machine's IPv4 address, as Ohai's `ipaddress` is: the one its
/// default route leaves from, else the first non-loopback address of an
/// interface. The route is the kernel's answer for a UDP socket connected
/// to a documentation address (RFC 5737), which no route but a default one
/// covers; a UDP connect sends nothing. Five system calls, where listing
/// the interfaces takes eleven and two netlink dumps.
fn ipaddress() -> Option<String> {
    let routed = || {
        let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
        s.connect((Ipv4Addr::new(198, 51, 100, 1), 9)).ok()?;
        match s.local_addr().ok()?.ip() {
            std::net::IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
            _ => None,
        }
    };
    routed()
        .or_else(|| interface_addresses().into_iter().next())
        .map(|ip| ip.to_string())
}

/// The non-loopback IPv4 addresses of the machine's interfaces, in order.
fn interface_addresses() -> Vec<Ipv4Addr> {
    let mut found = Vec::new();
    // SAFETY: getifaddrs fills a list that we only read, then free once.
    unsafe {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut head) != 0 {
            return found;
        }
        let mut cur = head;
        while !cur.is_null() {
            let ifa = &*cur;
            if !ifa.ifa_addr.is_null() && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() {
                    found.push(ip);
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(head);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_os_release_fields() {
        let os = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\nID=debian\n";
        assert_eq!(os_field(os, "ID").as_deref(), Some("debian"));
        assert_eq!(os_field(os, "VERSION_ID").as_deref(), Some("12"));
        let trixie = "VERSION_ID=\"13\"\nVERSION_CODENAME=trixie\nID=debian\n";
        assert_eq!(
            os_field(trixie, "VERSION_CODENAME").as_deref(),
            Some("trixie")
        );
    }

    #[test]
    fn the_address_is_one_of_the_machine_s_own() {
        let own = interface_addresses();
        match ipaddress() {
            Some(ip) => assert!(
                own.iter().any(|a| a.to_string() == ip),
                "{ip} not in {own:?}"
            ),
            None => assert!(own.is_empty()),
        }
    }

    #[test]
    fn hostname_is_first_label() {
        let f = Facts::gather(&Target::host(), Some("web01.example.com"));
        assert_eq!(f.hostname, "web01");
        assert!(f.cpus >= 1);
    }

    #[test]
    fn memory_and_processors_are_what_the_kernel_says_elsewhere() {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let kb: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        assert_eq!(memory_mb(), kb / 1024);
        // /proc/self/status lists the processors this process may use.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap();
        let allowed: u64 = list
            .trim()
            .split(',')
            .map(|r| match r.split_once('-') {
                Some((a, b)) => b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1,
                None => 1,
            })
            .sum();
        assert_eq!(cpus(), allowed);
    }
}

//! What the benches read about processes from `/proc` (through `procfs`):
//! CPU time, resident memory, and which process listens on a port (to
//! find the Kafka broker and the ClickHouse server the bench talks to,
//! which it did not start).

use procfs::process::{FDTarget, Process};

/// The CPU time (user + system) `pid` has used so far, in seconds.
pub(super) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = Process::new(i32::try_from(pid).ok()?).ok()?.stat().ok()?;
    Some((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// `pid`'s resident memory now, in KiB.
pub(super) fn rss_kib(pid: u32) -> Option<u64> {
    status(pid)?.vmrss
}

/// `pid`'s peak resident memory so far, in KiB.
pub(super) fn peak_rss_kib(pid: u32) -> Option<u64> {
    status(pid)?.vmhwm
}

/// Whether child `pid` has exited (a zombie, not yet waited for, or gone):
/// read from `/proc`, so the owner's `Child` still reaps it.
pub(super) fn has_exited(pid: u32) -> bool {
    let Some(process) = i32::try_from(pid).ok().and_then(|p| Process::new(p).ok()) else {
        return true;
    };
    process
        .stat()
        .map_or(true, |stat| matches!(stat.state, 'Z' | 'X'))
}

fn status(pid: u32) -> Option<procfs::process::Status> {
    Process::new(i32::try_from(pid).ok()?).ok()?.status().ok()
}

/// The process listening on TCP `port` (any address, IPv4 or IPv6), if
/// this user may read its descriptors.
pub(super) fn listener(port: u16) -> Option<u32> {
    let me = Process::myself().ok()?;
    let tables = [me.tcp().unwrap_or_default(), me.tcp6().unwrap_or_default()];
    let inodes: Vec<u64> = tables
        .iter()
        .flatten()
        .filter(|e| e.state == procfs::net::TcpState::Listen && e.local_address.port() == port)
        .map(|e| e.inode)
        .collect();
    if inodes.is_empty() {
        return None;
    }
    procfs::process::all_processes()
        .ok()?
        .flatten()
        .find(|process| {
            process.fd().is_ok_and(|mut fds| {
                fds.any(|fd| {
                    fd.is_ok_and(|fd| {
                        matches!(fd.target, FDTarget::Socket(inode) if inodes.contains(&inode))
                    })
                })
            })
        })
        .and_then(|process| u32::try_from(process.pid).ok())
}

/// The port of the first `host:port` of a broker list or of a URL's
/// authority (`http://127.0.0.1:8123` → 8123).
pub(super) fn port_of(address: &str) -> Option<u16> {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let authority = rest.split([',', '/']).next()?;
    authority.rsplit_once(':')?.1.parse().ok()
}

/// CPU seconds of a set of processes over a run.
pub(super) struct CpuMeter {
    processes: Vec<(String, u32, f64)>,
}

impl CpuMeter {
    /// Starts counting for each named process that exists.
    pub(super) fn start(processes: &[(&str, Option<u32>)]) -> Self {
        let processes = processes
            .iter()
            .filter_map(|(name, pid)| {
                let pid = (*pid)?;
                Some((name.to_string(), pid, cpu_seconds(pid)?))
            })
            .collect();
        CpuMeter { processes }
    }

    /// Each process's CPU seconds since `start` (a process that has gone
    /// is left out).
    pub(super) fn used(&self) -> Vec<(String, f64)> {
        self.processes
            .iter()
            .filter_map(|(name, pid, before)| Some((name.clone(), cpu_seconds(*pid)? - before)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_of_broker_lists_and_urls() {
        assert_eq!(port_of("127.0.0.1:9092"), Some(9092));
        assert_eq!(port_of("127.0.0.1:19092,127.0.0.1:19093"), Some(19092));
        assert_eq!(port_of("http://127.0.0.1:8123"), Some(8123));
        assert_eq!(port_of("http://localhost:8123/?database=x"), Some(8123));
        assert_eq!(port_of("http://localhost"), None);
    }

    #[test]
    fn this_process_is_found_listening_on_its_port_and_uses_cpu() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        assert_eq!(listener(port), Some(std::process::id()));
        // A clock tick of CPU at least, however fast the machine.
        let spinning = std::time::Instant::now();
        let mut spun = 0u64;
        while cpu_seconds(std::process::id()).unwrap() == 0.0
            && spinning.elapsed() < std::time::Duration::from_secs(10)
        {
            spun = std::hint::black_box(spun.wrapping_add(1));
        }
        assert!(cpu_seconds(std::process::id()).unwrap() > 0.0);
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        // The current RSS first: the peak read after it cannot be lower
        // (read the other way round, other test threads can grow the RSS
        // between the two reads, as in one suite run).
        let rss = rss_kib(std::process::id()).unwrap();
        assert!(peak_rss_kib(std::process::id()).unwrap() >= rss);
    }
}

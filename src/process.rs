//! The process's own figures under the names Prometheus' client libraries give them
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`, …), read
//! from `/proc/self` at each scrape, so the dashboards and alerts written for any Prometheus
//! target (descriptors near their limit, memory growth) work on pixguard unchanged. Linux only;
//! elsewhere there are none. And which build is running (`pixguard_build_info`), so a rollout's
//! progress shows per pod.

/// What `/proc/self/stat` says of the process.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    /// User plus system CPU time, in clock ticks.
    cpu_ticks: u64,
    threads: u64,
    /// When the process started, in clock ticks after boot.
    start_ticks: u64,
    virtual_bytes: u64,
    resident_pages: u64,
}

/// Field `n` (numbered from 1, as proc(5) does; 3 or above) of a `/proc/…/stat` line.
pub fn stat_field(line: &str, n: usize) -> Option<&str> {
    // "PID (COMM) STATE …": COMM may hold spaces and parentheses, so fields count from the last
    // ')'; the first after it (STATE) is field 3.
    line.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(n.checked_sub(3)?)
}

/// Reads the fields of a `/proc/PID/stat` line (proc(5)); `None` if it is not one.
fn parse_stat(line: &str) -> Option<Stat> {
    let field = |n: usize| -> Option<u64> { stat_field(line, n)?.parse().ok() };
    Some(Stat {
        cpu_ticks: field(14)? + field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

/// The system's boot time (`btime` of `/proc/stat`), in seconds since the epoch.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The commit the binary was built from: `PIXGUARD_COMMIT` in the build's environment (the images
/// get it from the deploy workflow, `.ci/run` from git), or `unknown`.
pub const COMMIT: &str = match option_env!("PIXGUARD_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// Appends `pixguard_build_info` and the `process_*` metrics to a Prometheus exposition.
pub fn prometheus(out: &mut String) {
    crate::histogram::write_samples(
        out,
        "pixguard_build_info",
        "The pixguard build serving: its version, the commit it was built from, and whether it was built with CUDA.",
        "gauge",
        &[(
            format!(
                "{{version=\"{}\",commit=\"{}\",cuda=\"{}\"}}",
                env!("CARGO_PKG_VERSION"),
                crate::histogram::label_value(COMMIT),
                cfg!(feature = "cuda")
            ),
            1,
        )],
    );
    #[cfg(target_os = "linux")]
    linux(out);
}

#[cfg(target_os = "linux")]
fn linux(out: &mut String) {
    use crate::histogram::write_samples;

    let Some(stat) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|l| parse_stat(&l))
    else {
        return;
    };
    // SAFETY: sysconf and getrlimit only read system values; `limit` is a valid out-pointer.
    let (tick, page, max_fds) = unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        let max = (libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0).then_some(limit.rlim_cur);
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
            max,
        )
    };
    // The listing's own descriptor is among those it lists, as Prometheus' Go client counts.
    let open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64);
    let gauge = |out: &mut String, name: &str, help: &str, value: f64| {
        write_samples(out, name, help, "gauge", &[(String::new(), value)]);
    };
    write_samples(
        out,
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        "counter",
        &[(String::new(), stat.cpu_ticks as f64 / tick)],
    );
    gauge(
        out,
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        (stat.resident_pages * page) as f64,
    );
    gauge(
        out,
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        stat.virtual_bytes as f64,
    );
    gauge(
        out,
        "process_threads",
        "Number of OS threads in the process.",
        stat.threads as f64,
    );
    if let Some(boot) = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| boot_time(&s))
    {
        gauge(
            out,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            boot as f64 + stat.start_ticks as f64 / tick,
        );
    }
    if let Ok(open) = open_fds {
        gauge(
            out,
            "process_open_fds",
            "Number of open file descriptors.",
            open as f64,
        );
    }
    // RLIM_INFINITY is u64::MAX: no limit to report.
    if let Some(max) = max_fds.filter(|&m| m != libc::RLIM_INFINITY) {
        gauge(
            out,
            "process_max_fds",
            "Maximum number of open file descriptors.",
            max as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        // proc(5)'s 52 fields, each numeric one set to its own position, under a name with spaces
        // and parentheses; utime (14) + stime (15), num_threads (20), starttime (22), vsize (23),
        // rss (24).
        let fields: Vec<String> = (3..=52)
            .map(|n| if n == 3 { "S".into() } else { n.to_string() })
            .collect();
        let line = format!("4242 (a (b) c) {}\n", fields.join(" "));
        assert_eq!(
            parse_stat(&line),
            Some(Stat {
                cpu_ticks: 14 + 15,
                threads: 20,
                start_ticks: 22,
                virtual_bytes: 23,
                resident_pages: 24,
            })
        );
        assert_eq!(parse_stat("4242 (short) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn boot_time_is_the_btime_line() {
        assert_eq!(
            boot_time("cpu  1 2 3\nintr 5\nbtime 1764979200\nprocesses 9\n"),
            Some(1_764_979_200)
        );
        assert_eq!(boot_time("cpu  1 2 3\n"), None);
    }
}

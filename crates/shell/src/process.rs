//! What every Herald process says about itself on `/metrics`, under the names dashboards and
//! alerts already know: which build runs (`herald_build_info`) and what the process costs
//! (`process_*`, as Prometheus' own client libraries name them), read from `/proc/self`
//! at scrape time.
//!
//! ```text
//!   herald_build_info{component="speaker",version="0.2.0"} 1
//!   process_cpu_seconds_total  process_resident_memory_bytes  process_virtual_memory_bytes
//!   process_open_fds  process_max_fds  process_start_time_seconds
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        MetricType,
        counter::ConstCounter,
        family::Family,
        gauge::{ConstGauge, Gauge},
    },
    registry::Registry,
};

/// Registers `herald_build_info` for `component` (`controller`, `speaker`) at `version` and
/// the process metrics on `registry` (a registry without a prefix: the names are standard).
pub fn register(registry: &mut Registry, component: &str, version: &str) {
    let build: Family<[(&'static str, String); 2], Gauge> = Family::default();
    build
        .get_or_create(&[
            ("component", component.to_owned()),
            ("version", version.to_owned()),
        ])
        .set(1);
    registry.register(
        "herald_build_info",
        "The Herald build running: 1, labelled with its component and version",
        build,
    );
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    registry.register_collector(Box::new(ProcessCollector { started }));
}

/// Reads `/proc/self` at each scrape.
#[derive(Debug)]
struct ProcessCollector {
    /// When the process registered its metrics, in seconds since the epoch.
    started: f64,
}

/// What `/proc/self` says now; `None` where it cannot be read.
#[derive(Debug, Default, PartialEq)]
struct Usage {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<f64>,
    virtual_bytes: Option<f64>,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
}

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on every Linux architecture
/// Herald is built for).
const TICKS_PER_SECOND: f64 = 100.0;

impl Usage {
    fn read() -> Usage {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as f64);
        Usage {
            open_fds,
            ..Usage::parse(&stat, &status, &limits)
        }
    }

    /// From the texts of `/proc/self/stat`, `status` and `limits`.
    fn parse(stat: &str, status: &str, limits: &str) -> Usage {
        // Fields after the command name (which may hold spaces): state is the first; utime
        // and stime are the 12th and 13th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| fields.get(i).and_then(|t| t.parse::<f64>().ok());
        let cpu_seconds = ticks(11)
            .zip(ticks(12))
            .map(|(user, system)| (user + system) / TICKS_PER_SECOND);
        let kib = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
                .map(|kib| kib * 1024.0)
        };
        let max_fds = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .and_then(|line| line.split_whitespace().nth(3)?.parse::<f64>().ok());
        Usage {
            cpu_seconds,
            resident_bytes: kib("VmRSS"),
            virtual_bytes: kib("VmSize"),
            open_fds: None,
            max_fds,
        }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let usage = Usage::read();
        if let Some(cpu) = usage.cpu_seconds {
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(cpu).encode(metric)?;
        }
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory, in bytes",
                usage.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory, in bytes",
                usage.virtual_bytes,
            ),
            ("process_open_fds", "Open file descriptors", usage.open_fds),
            (
                "process_max_fds",
                "The most file descriptors the process may open",
                usage.max_fds,
            ),
            (
                "process_start_time_seconds",
                "When the process started, in seconds since the epoch",
                Some(self.started),
            ),
        ] {
            if let Some(value) = value {
                let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                ConstGauge::new(value).encode(metric)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_texts_are_read_into_usage() {
        let stat = "4242 (herald (speaker)) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 1 0 100 2000000 512";
        let status = "Name:\therald-speaker\nVmSize:\t   20480 kB\nVmRSS:\t    9216 kB\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1048576              1048576              files\n";
        let usage = Usage::parse(stat, status, limits);
        assert_eq!(
            usage,
            Usage {
                cpu_seconds: Some(3.0),
                resident_bytes: Some(9216.0 * 1024.0),
                virtual_bytes: Some(20480.0 * 1024.0),
                open_fds: None,
                max_fds: Some(1_048_576.0),
            }
        );
    }

    #[test]
    fn this_process_reports_its_build_and_its_costs() {
        let mut registry = Registry::default();
        register(&mut registry, "test", "1.2.3");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(
            text.contains(r#"herald_build_info{component="test",version="1.2.3"} 1"#),
            "{text}"
        );
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(text.contains(&format!("\n{name} ")), "{name} in {text}");
        }
    }
}

//! `process_*` (the names every Prometheus client library uses, read from /proc/self on
//! each scrape) and `kaprobe_build_info`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The process's own resources, as client_golang's process collector names them.
#[derive(Debug)]
pub struct ProcessCollector;

/// What /proc/self shows now; `None` where a file could not be read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessFigures {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<f64>,
    pub virtual_bytes: Option<f64>,
    pub start_time_seconds: Option<f64>,
    pub threads: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
}

impl ProcessFigures {
    pub fn read() -> ProcessFigures {
        let mut f = ProcessFigures::default();
        let Ok(me) = procfs::process::Process::myself() else {
            return f;
        };
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            f.cpu_seconds = Some((stat.utime + stat.stime) as f64 / ticks);
            f.resident_bytes = Some((stat.rss * procfs::page_size()) as f64);
            f.virtual_bytes = Some(stat.vsize as f64);
            f.threads = Some(stat.num_threads as f64);
            f.start_time_seconds = procfs::boot_time_secs()
                .ok()
                .map(|boot| boot as f64 + stat.starttime as f64 / ticks);
        }
        f.open_fds = me.fd_count().ok().map(|n| n as f64);
        f.max_fds = me
            .limits()
            .ok()
            .and_then(|l| match l.max_open_files.soft_limit {
                procfs::process::LimitValue::Value(v) => Some(v as f64),
                procfs::process::LimitValue::Unlimited => None,
            });
        f
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let f = ProcessFigures::read();
        if let Some(v) = f.cpu_seconds {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                c.metric_type(),
            )?)?;
        }
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                f.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                f.virtual_bytes,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                f.start_time_seconds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                f.threads,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                f.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                f.max_fds,
            ),
        ] {
            if let Some(v) = value {
                let g = ConstGauge::new(v);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        Ok(())
    }
}

/// `kaprobe_build_info{version,target} 1`.
#[derive(Debug)]
pub struct BuildInfo;

impl Collector for BuildInfo {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let g = ConstGauge::new(1i64);
        let mut m = encoder.encode_descriptor(
            "kaprobe_build_info",
            "1, labelled with the version kaprobe was built from and its target",
            None,
            g.metric_type(),
        )?;
        let labels = [
            ("version", env!("CARGO_PKG_VERSION")),
            ("target", env!("KAPROBE_TARGET")),
        ];
        g.encode(m.encode_family(&labels)?)
    }
}

/// Adds both to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(BuildInfo));
    registry.register_collector(Box::new(ProcessCollector));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_of_this_process() {
        let f = ProcessFigures::read();
        assert!(f.resident_bytes.unwrap() > 100_000.0, "{f:?}");
        assert!(
            f.virtual_bytes.unwrap() >= f.resident_bytes.unwrap(),
            "{f:?}"
        );
        assert!(f.threads.unwrap() >= 1.0, "{f:?}");
        // Other tests open files at the same time: only bounds hold.
        let fds = f.open_fds.unwrap();
        assert!(fds >= 3.0 && f.max_fds.unwrap() >= fds, "{f:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = f.start_time_seconds.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start} {now}"
        );
    }
}

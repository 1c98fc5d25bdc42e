//! The machine a benchmark ran on, as the report records it.
//!
//! Owns: reading `/proc` and `/etc/os-release`. Must never: fail — what it
//! cannot read is `null`.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs this process may run on.
    pub cores: usize,
    pub cpu_model: Option<String>,
    pub memory_bytes: Option<u64>,
    pub kernel: Option<String>,
    pub os: Option<String>,
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: field(&cpuinfo, "model name", ':'),
            memory_bytes: field(&meminfo, "MemTotal", ':')
                .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kib| kib * 1024),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_owned()),
            os: field(&os_release, "PRETTY_NAME", '=').map(|s| s.trim_matches('"').to_owned()),
        }
    }
}

/// The value of the first `key<sep>value` line of `text`.
fn field(text: &str, key: &str, sep: char) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(sep)?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found() {
        assert_eq!(
            field(
                "processor\t: 0\nmodel name\t: AMD EPYC\n",
                "model name",
                ':'
            ),
            Some("AMD EPYC".to_owned())
        );
        assert_eq!(
            field("NAME=x\nPRETTY_NAME=\"Debian 12\"\n", "PRETTY_NAME", '='),
            Some("\"Debian 12\"".to_owned())
        );
        assert_eq!(field("", "MemTotal", ':'), None);
        assert!(Machine::read().cores >= 1);
    }
}

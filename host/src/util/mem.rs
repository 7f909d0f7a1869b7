//! The process's memory, as the kernel counts it.

/// Peak resident set size of this process in bytes (`VmHWM` of /proc/self/status; Linux only).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_rss_is_reported_on_linux() {
        let p = super::peak_rss_bytes().expect("Linux reports VmHWM");
        assert!(p > 1 << 20, "{p}");
    }
}

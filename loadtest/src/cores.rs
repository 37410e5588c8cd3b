//! The cores this process may use, as `taskset` (or a cgroup) set them.

/// The cores this process may run on (as `taskset` sets them), from `Cpus_allowed_list` in
/// `/proc/self/status`; read before any worker pins itself. Empty if unreadable.
pub fn allowed_cores() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .map(|list| parse_cpu_list(list.trim()))
        .unwrap_or_default()
}

/// `"0-2,5"` → `[0, 1, 2, 5]`; malformed parts are skipped.
fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut cores = Vec::new();
    for part in list.split(',').filter(|part| !part.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(first), Ok(last)) = (first.parse::<usize>(), last.parse::<usize>()) {
            // A mask larger than any machine is a parse error, not a loop of a billion steps.
            if last < first + 4096 {
                cores.extend(first..=last);
            }
        }
    }
    cores
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(parse_cpu_list("1"), vec![1]);
        assert_eq!(parse_cpu_list("0-2,5"), vec![0, 1, 2, 5]);
        assert_eq!(parse_cpu_list("3,x,7-6"), vec![3]);
        assert!(parse_cpu_list("").is_empty());
    }
}

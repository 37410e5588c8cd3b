//! The open-file limit, which bounds the connections one process can hold: raised from its
//! soft value to the hard one at start, and read to size `--procs`.

/// Files a process keeps open besides its connections: standard streams, one io_uring and
/// its eventfd per worker thread, `/proc` files read for the report, the pipes to a parent.
const FILES_BESIDE_CONNECTIONS: u64 = 100;

/// Raises the soft open-file limit to the hard one: many systems start processes at 1 024
/// soft with a far higher hard limit, and a load generator wants all it may have. Failing to
/// raise it only leaves the lower limit, which `connections_per_process` then reports.
pub fn raise() {
    let Some(mut limit) = get() else { return };
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct it is given and nothing else.
        let _ = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
}

/// How many connections this process can hold: its soft open-file limit less the files it
/// needs besides them. `None` when the limit cannot be read.
pub fn connections_per_process() -> Option<usize> {
    get().map(|limit| capacity(limit.rlim_cur))
}

/// The open-file limit `connections_per_process` is based on, for messages.
pub fn soft_limit() -> Option<u64> {
    get().map(|limit| limit.rlim_cur)
}

fn capacity(soft_limit: u64) -> usize {
    usize::try_from(soft_limit.saturating_sub(FILES_BESIDE_CONNECTIONS)).unwrap_or(usize::MAX)
}

fn get() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0).then_some(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_leaves_room_for_the_process_own_files() {
        assert_eq!(capacity(20_000), 19_900);
        assert_eq!(capacity(50), 0);
        assert!(capacity(libc::RLIM_INFINITY) > 1 << 40);
    }

    #[test]
    fn the_limit_is_readable_and_raised_to_the_hard_one() {
        raise();
        let limit = get().expect("getrlimit");
        assert_eq!(limit.rlim_cur, limit.rlim_max);
        assert!(connections_per_process().is_some());
    }
}

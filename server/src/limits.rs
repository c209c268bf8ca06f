//! Process-wide start-up work on file descriptors, done before any shard runs.
//!
//! Two things would otherwise stall every shard later: a soft `RLIMIT_NOFILE` far below the
//! hard limit (accepts fail with `EMFILE` long before the machine is full), and the kernel's
//! file-descriptor table growing while connections pile up (in a multi-threaded process each
//! doubling of the table waits for an RCU grace period, a stall of milliseconds across all
//! accepts). So the soft limit is raised to the hard limit and the table is grown to it once,
//! up front.
//!
//! It also counts the descriptors open at start-up, for the server's descriptor budget
//! (`crate::fd_budget`).

use std::io;

/// The table is grown up front at most to this many descriptors (16 MiB of kernel table);
/// past that the kernel grows it on demand.
const PREALLOC_CAP: u64 = 1 << 21;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in force.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = getrlimit()?;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid `rlimit`; raising the soft limit up to the hard one is
        // always permitted.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

/// The soft `RLIMIT_NOFILE` in force.
pub(crate) fn nofile_limit() -> io::Result<u64> {
    getrlimit().map(|limit| limit.rlim_cur)
}

fn getrlimit() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

/// Grows the process's descriptor table so that `limit` descriptors fit without the kernel
/// resizing it later (capped at 2^21 entries).
pub fn grow_fd_table(limit: u64) -> io::Result<()> {
    let highest = limit.min(PREALLOC_CAP).saturating_sub(1);
    if highest < 3 {
        return Ok(());
    }
    // F_DUPFD takes the lowest free descriptor >= `highest`, so unlike dup2 it can never
    // close a descriptor in use; having it at all makes the kernel size the table for it.
    // SAFETY: duplicating stderr has no effect on memory; the copy is closed right away.
    let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, highest as libc::c_int) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created by us and is not shared.
    unsafe { libc::close(fd) };
    Ok(())
}

/// The number of descriptors this process has open (entries of `/proc/self/fd`, less the
/// one listing them), or `None` when `/proc` cannot be read.
pub(crate) fn open_descriptors() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some((entries.count() as u64).saturating_sub(1))
}

//! The `callosum-server` binary as a child process, for the tests that need the server in a
//! process of its own: to read its memory and descriptors in `/proc/PID`, and to signal it.
//! Included with `#[path]` by the test files that use it, beside `support`.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A running `callosum-server` process, killed when dropped.
pub struct ServerProcess {
    /// The process (its stdout is piped; its stderr is drained).
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it wrote to stderr up to saying it listens.
    pub startup_log: String,
    /// Bytes it has written to stderr since it said it listens.
    pub stderr_bytes: Arc<AtomicU64>,
}

impl ServerProcess {
    /// Starts the binary on `127.0.0.1:0` with two shards and `extra` flags; returns once it
    /// says where it listens.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_limited(extra, None)
    }

    /// [`start`](Self::start), with the process's descriptor limit (soft and hard) set to
    /// `nofile`.
    pub fn start_limited(extra: &[&str], nofile: Option<u64>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_callosum-server"));
        if let Some(limit) = nofile {
            let rl = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: setrlimit is async-signal-safe and `rl` is a plain value copied into the
            // closure; lowering both limits is always allowed.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command
            .args(["--host", "127.0.0.1", "--port", "0", "--shards", "2"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn callosum-server");
        let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
        let mut line = String::new();
        let mut startup_log = String::new();
        let addr = loop {
            line.clear();
            let read = stderr.read_line(&mut line).expect("the server's stderr");
            assert!(
                read > 0,
                "the server exited before listening: {startup_log}"
            );
            if let Some(addr) = line.trim().strip_prefix("callosum-server: listening on ") {
                break addr.parse().expect("a socket address");
            }
            startup_log.push_str(&line);
        };
        // Keep draining stderr so the server never blocks on a full pipe, counting it.
        let stderr_bytes = Arc::new(AtomicU64::new(0));
        let counted = stderr_bytes.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut chunk) {
                counted.fetch_add(n as u64, Ordering::Relaxed);
            }
        });
        Self {
            child,
            addr,
            startup_log,
            stderr_bytes,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends it `signal`.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child, which has not been reaped (we hold `child`).
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Its resident memory (`VmRSS`), KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    /// Descriptors it has open.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("/proc/PID/fd")
            .count()
    }

    /// Waits for it to exit, at most `limit` (failing the test beyond); returns its status,
    /// how long it took, and what it printed on stdout.
    pub fn wait_exit(mut self, limit: Duration) -> (ExitStatus, Duration, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waitpid") {
                break status;
            }
            assert!(start.elapsed() < limit, "still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = start.elapsed();
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            stdout
                .read_to_string(&mut out)
                .expect("the server's stdout");
        }
        (status, took, out)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

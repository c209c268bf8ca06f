//! The `callosum-server` binary as a child process, for the tests that need the server in a
//! process of its own: to read its memory and descriptors in `/proc/PID`, and to signal it.
//! Included with `#[path]` by the test files that use it, beside `support`.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running `callosum-server` process, killed when dropped.
pub struct ServerProcess {
    /// The process (its stdout is piped; its stderr is drained).
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it wrote to stderr before its "listening" line.
    pub startup_log: String,
    /// Bytes it has written to stderr since its "listening" line.
    pub stderr_bytes: Arc<AtomicU64>,
    /// Everything it has written to stderr (the first [`KEPT_LOG`] bytes), whole once
    /// `drain` has ended.
    log: Arc<Mutex<Vec<u8>>>,
    /// The thread that drains stderr; it ends when the process exits.
    drain: Option<JoinHandle<()>>,
}

/// Bytes of stderr kept for [`ServerProcess::wait_exit`]; beyond them, only counted.
pub const KEPT_LOG: usize = 1 << 20;

/// The value of the field `name` in a log line (`name=value`).
pub fn log_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
}

/// Whether `line` is a log line whose message is `message`.
pub fn is_log_message(line: &str, message: &str) -> bool {
    line.contains(&format!(": {message} ")) || line.ends_with(&format!(": {message}"))
}

impl ServerProcess {
    /// Starts the binary on `127.0.0.1:0` with two shards and `extra` flags, logging as it
    /// does by default; returns once it logs where it listens.
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
            .env_remove("RUST_LOG")
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
            if is_log_message(line.trim_end(), "listening") {
                let addr = log_field(&line, "addr").expect("an addr field");
                break addr.parse().expect("a socket address");
            }
            startup_log.push_str(&line);
        };
        let log = Arc::new(Mutex::new(format!("{startup_log}{line}").into_bytes()));
        // Keep draining stderr so the server never blocks on a full pipe, counting it.
        let stderr_bytes = Arc::new(AtomicU64::new(0));
        let counted = stderr_bytes.clone();
        let kept = log.clone();
        let drain = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut chunk) {
                counted.fetch_add(n as u64, Ordering::Relaxed);
                let mut kept = kept.lock().unwrap();
                let room = KEPT_LOG.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&chunk[..room]);
            }
        });
        Self {
            child,
            addr,
            startup_log,
            stderr_bytes,
            log,
            drain: Some(drain),
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
    /// how long it took, and all it wrote to stderr (its log).
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
        if let Some(drain) = self.drain.take() {
            drain.join().expect("the stderr drain");
        }
        let log = String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned();
        (status, took, log)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! The `callosum-server` binary as a child process, for the tests that need the server in a
//! process of its own: to read its memory and descriptors in `/proc/PID`, and to signal it.
//! Included with `#[path]` by the test files that use it, beside `support`.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `callosum-server` process, killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts the binary on `127.0.0.1:0` with two unpinned shards and `extra` flags; returns
    /// once it says where it listens.
    pub fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_callosum-server"))
            .args(["--host", "127.0.0.1", "--port", "0", "--shards", "2"])
            .arg("--no-pin")
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn callosum-server");
        let mut log = BufReader::new(child.stderr.take().expect("piped stderr"));
        let mut addr = None;
        for line in (&mut log).lines() {
            let line = line.expect("the server's stderr");
            if let Some(a) = line.strip_prefix("callosum-server: listening on ") {
                addr = Some(a.trim().parse().expect("a socket address"));
                break;
            }
        }
        let addr = addr.expect("the server exited before listening");
        // Keep reading its log so the server never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
        Self { child, addr }
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

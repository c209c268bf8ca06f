//! Parsers of option values, shared by every command so a value means the same everywhere and
//! a bad one is refused while parsing, in one line naming the option (exit status 2).
//!
//! Durations take units (`500ms`, `10s`, `2m`, `1h 30m`, as `humantime` reads them); a bare
//! number is seconds (`2.5`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// The longest duration any option takes, seconds (about three years): longer is a typo,
/// and a run or simulation that long would not stop by itself in any useful time.
pub const MAX_DURATION_SECS: u64 = 100_000_000;

/// The highest open-loop rate, per second: above what any host can connect.
pub const MAX_RATE: f64 = 10_000_000.0;

/// The lowest open-loop rate, per second (one connection every 100 s).
pub const MIN_RATE: f64 = 0.01;

/// A duration: a number of seconds, or a number with a unit (`ms`, `s`, `m`, `h`, …), of at
/// most [`MAX_DURATION_SECS`].
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = if let Ok(secs) = s.parse::<f64>() {
        Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{s} is not a duration of zero or more seconds"))?
    } else {
        humantime::parse_duration(s).map_err(|e| format!("{s}: {e} (examples: 500ms, 10s, 2m)"))?
    };
    if d > Duration::from_secs(MAX_DURATION_SECS) {
        return Err(format!(
            "{s} is longer than {MAX_DURATION_SECS} s (about three years)"
        ));
    }
    Ok(d)
}

/// An open-loop rate per second, from [`MIN_RATE`] to [`MAX_RATE`].
pub fn rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (MIN_RATE..=MAX_RATE).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s} is not a rate from 0.01 to 10000000 per second"
        )),
    }
}

/// A duration longer than zero.
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err("must be longer than zero".to_owned()),
        d => Ok(d),
    }
}

/// A finite number above zero.
pub fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s} is not a number above zero")),
    }
}

/// A finite number of zero or more.
pub fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s} is not a number of zero or more")),
    }
}

/// A share, within `0.0..=1.0`.
pub fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s} is not within 0.0..=1.0")),
    }
}

/// A whole number of at least 1.
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s} is not a whole number of at least 1")),
    }
}

/// A whole number of at least 1, as `u64`.
pub fn count(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s} is not a whole number of at least 1")),
    }
}

/// A running process's id (Linux: one with a `/proc/PID` entry).
pub fn pid(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(pid) if pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists() => Ok(pid),
        Ok(pid) if pid > 0 => Err(format!("no running process {pid}")),
        _ => Err(format!("{s} is not a process id")),
    }
}

/// `host:port`, resolved to its first address; port 0 is no server's.
pub fn target(s: &str) -> Result<SocketAddr, String> {
    let addr = s
        .to_socket_addrs()
        .map_err(|e| format!("{s}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s}: no address"))?;
    if addr.port() == 0 {
        return Err(format!("{s}: port 0 is no server's port"));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_seconds() {
        assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        for bad in ["-1", "abc", "10 parsecs", "NaN", "inf", ""] {
            assert!(duration(bad).is_err(), "{bad}");
        }
        assert!(positive_duration("0s").is_err());
        assert!(positive_duration("0").is_err());
        assert_eq!(positive_duration("1ms"), Ok(Duration::from_millis(1)));
        assert!(duration("999999999999d").is_err());
        assert!(duration("1e30").is_err());
        assert_eq!(
            duration("100000000"),
            Ok(Duration::from_secs(MAX_DURATION_SECS))
        );
    }

    #[test]
    fn numbers_are_refused_out_of_range() {
        assert!(positive("0").is_err());
        assert!(positive("NaN").is_err());
        assert!(positive("inf").is_err());
        assert_eq!(positive("0.5"), Ok(0.5));
        assert!(non_negative("-0.1").is_err());
        assert_eq!(non_negative("0"), Ok(0.0));
        assert!(fraction("1.5").is_err());
        assert!(fraction("NaN").is_err());
        assert_eq!(fraction("1"), Ok(1.0));
        assert!(at_least_one("0").is_err());
        assert!(at_least_one("-3").is_err());
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(count("0").is_err());
        assert!(target("nohost").is_err());
        assert!(target("127.0.0.1:0").is_err());
        assert_eq!(pid(&std::process::id().to_string()), Ok(std::process::id()));
        assert!(pid("0").is_err());
        assert!(pid("4294967295").is_err());
        assert!(rate("1e300").is_err());
        assert!(rate("0.0001").is_err());
        assert_eq!(rate("20000"), Ok(20_000.0));
        assert_eq!(target("127.0.0.1:7"), Ok("127.0.0.1:7".parse().unwrap()));
    }
}

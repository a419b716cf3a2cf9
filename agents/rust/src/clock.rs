//! CLOCK_MONOTONIC in nanoseconds, readable from outside this process: the replay server stamps
//! each chunk with its send time on it (`t_sent_ns`), and Python reads the same clock as
//! `time.monotonic_ns()`. std's `Instant` reads that clock too on Linux but hides its value, so
//! it is read here directly (vDSO, no syscall), and each chunk's `Instant` is derived from the one
//! reading: one clock read per chunk serves both the lag and the existing Instant-based timing.
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    fn clock_gettime(clk: i32, ts: *mut Timespec) -> i32;
}

/// Linux's clock id (x86_64 and aarch64 alike).
const CLOCK_MONOTONIC: i32 = 1;

/// CLOCK_MONOTONIC now, in ns.
pub fn monotonic_ns() -> u64 {
    let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec of the C layout; CLOCK_MONOTONIC always exists.
    let rc = unsafe { clock_gettime(CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One reading: the `Instant` for the agent's own durations, `ns` for the server's stamps.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub at: Instant,
    pub ns: u64,
}

/// An `Instant` and the CLOCK_MONOTONIC value at the same moment: the reading between two of the
/// clock's with the narrowest gap of a few tries (its midpoint; off by half that gap, well under a
/// microsecond, unless every try was preempted).
fn calibrate() -> (Instant, u64) {
    let mut best: Option<(Instant, u64, u64)> = None;
    for _ in 0..16 {
        let a = monotonic_ns();
        let i = Instant::now();
        let b = monotonic_ns();
        if best.is_none_or(|(_, _, gap)| b - a < gap) {
            best = Some((i, a + (b - a) / 2, b - a));
        }
    }
    let (i, ns, _) = best.expect("at least one try");
    (i, ns)
}

static BASE: OnceLock<(Instant, u64)> = OnceLock::new();

/// The `Instant` of a CLOCK_MONOTONIC value.
pub fn instant_of(ns: u64) -> Instant {
    let (i, base) = *BASE.get_or_init(calibrate);
    if ns >= base {
        i + Duration::from_nanos(ns - base)
    } else {
        i - Duration::from_nanos(base - ns)
    }
}

/// Now, once.
pub fn stamp() -> Stamp {
    let ns = monotonic_ns();
    Stamp { at: instant_of(ns), ns }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_agrees_with_instant_and_moves_with_it() {
        let before = Instant::now();
        let s = stamp();
        let after = Instant::now();
        // derived from the calibration: within a few µs of std's own reading around it
        assert!(s.at + Duration::from_micros(50) >= before && s.at <= after + Duration::from_micros(50));
        std::thread::sleep(Duration::from_millis(2));
        let t = stamp();
        assert!(t.ns - s.ns >= 2_000_000);
        assert_eq!((t.at - s.at).as_nanos() as u64, t.ns - s.ns); // durations are the clock's, exactly
    }

    #[test]
    fn monotonic_ns_is_clock_monotonic() {
        // /proc/uptime is CLOCK_BOOTTIME; CLOCK_MONOTONIC is never ahead of it
        let up: f64 = std::fs::read_to_string("/proc/uptime").unwrap().split_whitespace().next().unwrap().parse().unwrap();
        let ns = monotonic_ns();
        assert!(ns > 0 && (ns as f64) / 1e9 <= up + 1.0);
    }
}

//! The process's open-file limit: a session at scale holds one socket per stream in flight (1,024
//! and more in one process, DESIGN.md "Sessions at scale"), past the usual soft limit of 1,024.
//! At start the soft limit is raised to the hard one, as the Python agent's sessions would need
//! too. No crate for two calls: getrlimit/setrlimit are declared here as src/clock.rs declares
//! clock_gettime.

/// `struct rlimit` of Linux (rlim_t is an unsigned long on x86_64 and aarch64).
#[repr(C)]
struct Rlimit {
    rlim_cur: u64,
    rlim_max: u64,
}

extern "C" {
    fn getrlimit(resource: i32, rlim: *mut Rlimit) -> i32;
    fn setrlimit(resource: i32, rlim: *const Rlimit) -> i32;
}

/// Linux's RLIMIT_NOFILE (x86_64 and aarch64 alike).
const RLIMIT_NOFILE: i32 = 7;

/// The open-file limit as (soft, hard), or None when it cannot be read.
pub fn nofile() -> Option<(u64, u64)> {
    let mut r = Rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `r` is a valid, writable rlimit of the C layout.
    (unsafe { getrlimit(RLIMIT_NOFILE, &mut r) } == 0).then_some((r.rlim_cur, r.rlim_max))
}

/// Raises the soft open-file limit to the hard one; the soft limit in force after (unchanged
/// when it was already there or the raise was refused), or None when it cannot be read.
pub fn raise_nofile() -> Option<u64> {
    let (soft, hard) = nofile()?;
    if soft < hard {
        let r = Rlimit { rlim_cur: hard, rlim_max: hard };
        // SAFETY: `r` is a valid rlimit of the C layout; raising the soft limit up to the hard
        // one needs no privilege, and a refusal leaves the limit as it was.
        if unsafe { setrlimit(RLIMIT_NOFILE, &r) } == 0 {
            return Some(hard);
        }
    }
    Some(soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let (soft, hard) = nofile().unwrap();
        // lowered first (no privilege needed), so that the raise has something to do
        let low = Rlimit { rlim_cur: soft / 2, rlim_max: hard };
        assert_eq!(unsafe { setrlimit(RLIMIT_NOFILE, &low) }, 0);
        assert_eq!(nofile(), Some((soft / 2, hard)));
        assert_eq!(raise_nofile(), Some(hard));
        assert_eq!(nofile(), Some((hard, hard)));
        // and /proc agrees: the declared layout and resource number are the kernel's
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
        let soft: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
        let shown = |s: &str| if s == "unlimited" { u64::MAX } else { s.parse().unwrap() };
        assert_eq!((shown(soft[0]), shown(soft[1])), (hard, hard));
    }
}

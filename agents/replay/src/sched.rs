//! One scheduler for every stream: a binary heap of absolute deadlines (CLOCK_MONOTONIC ns) and
//! one timerfd (TFD_TIMER_ABSTIME) armed at the earliest, read through tokio's AsyncFd. tokio's
//! own timer wheel ticks in whole milliseconds; an hrtimer with the thread's timer slack at 1 ns
//! wakes within microseconds. A stream registers (deadline, waker) when it polls before its next
//! chunk is due; the scheduler wakes it once the clock has passed that deadline.
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::task::Waker;
use tokio::io::unix::AsyncFd;

#[inline]
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid pointer to a timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct Slot {
    gen: u32,
    deadline: u64,
    waker: Option<Waker>,
}

/// A stream's place in the scheduler (index, generation); released on drop by `release`.
#[derive(Default)]
pub struct Handle(Option<(u32, u32)>);

struct Sched {
    fd: RawFd,
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    armed: u64,
}

thread_local! {
    static SCHED: RefCell<Option<Sched>> = const { RefCell::new(None) };
}

fn arm(fd: RawFd, at: u64) {
    let spec = libc::itimerspec {
        it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
        // at 0 disarms: a deadline of 0 ns cannot be asked (the clock is past it); use 1
        it_value: libc::timespec { tv_sec: (at / 1_000_000_000) as _, tv_nsec: (at % 1_000_000_000) as _ },
    };
    // SAFETY: fd is our timerfd; the spec is valid.
    unsafe { libc::timerfd_settime(fd, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) };
}

/// Wake `waker` once CLOCK_MONOTONIC reaches `deadline`. Cheap when called again for the same
/// deadline (a spurious poll): the waker is replaced, nothing is pushed.
pub fn register(h: &mut Handle, deadline: u64, waker: &Waker) {
    SCHED.with(|s| {
        let mut s = s.borrow_mut();
        let s = s.as_mut().expect("the scheduler runs");
        let (idx, gen) = match h.0 {
            Some(x) => x,
            None => {
                let idx = match s.free.pop() {
                    Some(i) => i,
                    None => {
                        s.slots.push(Slot { gen: 0, deadline: 0, waker: None });
                        (s.slots.len() - 1) as u32
                    }
                };
                let slot = &mut s.slots[idx as usize];
                slot.gen = slot.gen.wrapping_add(1);
                slot.deadline = 0;
                h.0 = Some((idx, slot.gen));
                (idx, slot.gen)
            }
        };
        let slot = &mut s.slots[idx as usize];
        match &slot.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => slot.waker = Some(waker.clone()),
        }
        if slot.deadline != deadline {
            slot.deadline = deadline;
            s.heap.push(Reverse((deadline, idx, gen)));
            if deadline < s.armed {
                s.armed = deadline;
                arm(s.fd, deadline.max(1));
            }
        }
    })
}

/// Give the stream's slot back (its pending heap entries become stale and are skipped).
pub fn release(h: &mut Handle) {
    if let Some((idx, _)) = h.0.take() {
        let _ = SCHED.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                if let Some(s) = s.as_mut() {
                    let slot = &mut s.slots[idx as usize];
                    slot.gen = slot.gen.wrapping_add(1);
                    slot.waker = None;
                    slot.deadline = 0;
                    s.free.push(idx);
                }
            }
        });
    }
}

/// Pop every deadline the clock has passed, wake those streams, arm the timer at the next.
fn fire(due: &mut Vec<Waker>) {
    SCHED.with(|s| {
        let mut s = s.borrow_mut();
        let s = s.as_mut().unwrap();
        let now = mono_ns();
        while let Some(&Reverse((d, idx, gen))) = s.heap.peek() {
            if d > now {
                break;
            }
            s.heap.pop();
            let slot = &mut s.slots[idx as usize];
            if slot.gen == gen && slot.deadline == d {
                slot.deadline = 0;
                if let Some(w) = slot.waker.take() {
                    due.push(w);
                }
            }
        }
        s.armed = match s.heap.peek() {
            Some(&Reverse((d, _, _))) => d,
            None => u64::MAX,
        };
        // Always re-arm (or disarm): an expiry between the read and now is then never lost.
        arm(s.fd, if s.armed == u64::MAX { 0 } else { s.armed.max(1) });
    });
    for w in due.drain(..) {
        w.wake();
    }
}

struct Fd(OwnedFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Create the timerfd and return the scheduler's task (spawn it on the current-thread runtime).
pub fn start() -> std::io::Result<impl std::future::Future<Output = ()>> {
    // SAFETY: plain syscalls; the fd is owned from here on.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let raw = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = Fd(unsafe { OwnedFd::from_raw_fd(raw) });
    SCHED.with(|s| {
        *s.borrow_mut() = Some(Sched { fd: raw, heap: BinaryHeap::with_capacity(4096), slots: Vec::new(), free: Vec::new(), armed: u64::MAX })
    });
    // SAFETY: the fd is owned by the AsyncFd and closed only when it drops (never: the task runs
    // for the life of the process).
    let afd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
    Ok(async move {
        let mut buf = [0u8; 8];
        let mut due = Vec::with_capacity(4096);
        loop {
            let mut guard = match afd.readable().await {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("langbench-replay: the timerfd failed: {e}");
                    std::process::exit(1);
                }
            };
            // SAFETY: reading 8 bytes into an 8-byte buffer from our non-blocking timerfd.
            let n = unsafe { libc::read(guard.get_inner().as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
            guard.clear_ready();
            let _ = n; // EAGAIN or an expiry count: either way, pop what is due
            fire(&mut due);
        }
    })
}

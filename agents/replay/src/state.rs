//! The process's settings (set once) and its counters (this thread's: the runtime has one).
use crate::plan::{Fault, Load, FAULTS};
use crate::profile::Profile;
use crate::stats::Hist;
use std::cell::RefCell;
use std::collections::HashSet;
use std::io::Write;
use std::sync::OnceLock;

pub struct Config {
    pub profile: &'static Profile,
    pub time_scale: f64,
    pub load: Load,
    pub seed: u64,
    pub faults: [f64; 6],
    pub stall_ns: u64,
}

pub static CONFIG: OnceLock<Config> = OnceLock::new();

pub fn config() -> &'static Config {
    CONFIG.get().expect("configured")
}

#[derive(Default)]
pub struct Counters {
    pub next_stream: u64,
    pub in_flight: u64,
    pub streams: u64,
    pub hist: Hist,
    /// Chunks sent behind schedule because the client was not reading (backpressure): apart.
    pub held: Hist,
    pub faults: [u64; 6],
    pub seen: HashSet<u64>,
    pub lateness: Option<std::io::BufWriter<std::fs::File>>,
}

thread_local! {
    pub static COUNTERS: RefCell<Counters> = RefCell::new(Counters::default());
}

pub fn with<R>(f: impl FnOnce(&mut Counters) -> R) -> R {
    COUNTERS.with(|c| f(&mut c.borrow_mut()))
}

/// Whether the server has seen this prompt key before (first sight: no), remembering it.
pub fn seen_before(key: u64) -> bool {
    with(|c| {
        if c.seen.len() >= 1 << 20 {
            c.seen.clear();
        }
        !c.seen.insert(key)
    })
}

pub fn flush_lateness() {
    let _ = COUNTERS.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            if let Some(w) = c.lateness.as_mut() {
                let _ = w.flush();
            }
        }
    });
}

fn us(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e3)
}

/// /replay/stats: the lateness since start or the last reset (reset after reading).
pub fn stats_json(reset: bool) -> String {
    let cfg = config();
    with(|c| {
        let faults: Vec<String> = FAULTS.iter().map(|f: &Fault| format!("\"{}\":{}", f.name(), c.faults[f.index()])).collect();
        let out = format!(
            "{{\"streams\":{},\"in_flight\":{},\"chunks\":{},\"late_us\":{{\"p50\":{},\"p99\":{},\"max\":{}}},\"held_chunks\":{},\"faults\":{{{}}},\"time_scale\":{},\"load\":\"{}\",\"seed\":{}}}",
            c.streams, c.in_flight, c.hist.total, us(c.hist.quantile(0.5)), us(c.hist.quantile(0.99)), us(c.hist.max),
            c.held.total,
            faults.join(","), serde_json::to_string(&cfg.time_scale).unwrap(),
            if cfg.load == Load::Ideal { "ideal" } else { "profile" }, cfg.seed
        );
        if reset {
            c.streams = 0;
            c.hist = Hist::default();
            c.held = Hist::default();
            c.faults = [0; 6];
        }
        out
    })
}

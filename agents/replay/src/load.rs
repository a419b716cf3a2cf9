//! The bench's load generator (`langbench-replay --bench-client URL`, bench/replay_ceiling.py):
//! N streams on one current-thread runtime (pin it to a CPU of its own), raw HTTP/1.1, one
//! connection per request, every chunk counted by its stamp and its lag (receive time - stamp)
//! measured on the same CLOCK_MONOTONIC. Prints one JSON line.
use crate::sched::mono_ns;
use crate::stats::Hist;
use std::cell::RefCell;
use std::rc::Rc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// bench client: concurrent streams
    #[arg(long, default_value_t = 1, hide = true)]
    streams: usize,
    /// bench client: seconds to keep starting requests
    #[arg(long, default_value_t = 5.0, hide = true)]
    duration_s: f64,
    /// bench client: the endpoint
    #[arg(long, default_value = "/api/generate", hide = true)]
    path: String,
    /// bench client: tokens per request (options.num_predict / max_tokens)
    #[arg(long, default_value_t = 200, hide = true)]
    max_tokens: u64,
    /// bench client: stream k starts at k * ramp_ms / streams
    #[arg(long, default_value_t = 0.0, hide = true)]
    ramp_ms: f64,
}

#[derive(Default)]
struct Totals {
    requests: u64,
    chunks: u64,
    errors: u64,
    lag: Hist,
}

fn scan(lines: &[u8], now: u64, t: &mut Totals) {
    let finder = memchr::memmem::Finder::new(b"\"t_sent_ns\":");
    for pos in finder.find_iter(lines) {
        let digits = &lines[pos + 12..];
        let mut v = 0u64;
        for &b in digits.iter().take_while(|b| b.is_ascii_digit()) {
            v = v * 10 + (b - b'0') as u64;
        }
        t.chunks += 1;
        t.lag.add(now.saturating_sub(v));
    }
}

async fn one(addr: &str, req: &[u8], buf: &mut [u8], pending: &mut Vec<u8>, totals: &RefCell<Totals>) -> std::io::Result<()> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(req).await?;
    pending.clear();
    loop {
        let n = s.read(buf).await?;
        if n == 0 {
            break;
        }
        let now = mono_ns();
        pending.extend_from_slice(&buf[..n]);
        if let Some(last) = memchr::memrchr(b'\n', pending) {
            scan(&pending[..=last], now, &mut totals.borrow_mut());
            pending.drain(..=last);
        }
    }
    let now = mono_ns();
    scan(pending, now, &mut totals.borrow_mut());
    Ok(())
}

pub fn main(url: &str, a: &LoadArgs) -> i32 {
    let addr = url.trim_start_matches("http://").trim_end_matches('/').to_string();
    let body = if a.path.starts_with("/v1") {
        format!(r#"{{"model":"bench","prompt":"bench","messages":[{{"role":"user","content":"bench"}}],"stream":true,"max_tokens":{}}}"#, a.max_tokens)
    } else {
        format!(r#"{{"model":"bench","prompt":"bench","messages":[{{"role":"user","content":"bench"}}],"stream":true,"options":{{"num_predict":{}}}}}"#, a.max_tokens)
    };
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        a.path, body.len()
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local = tokio::task::LocalSet::new();
    let totals = Rc::new(RefCell::new(Totals::default()));
    let started = mono_ns();
    let deadline = started + (a.duration_s * 1e9) as u64;
    for k in 0..a.streams {
        let (addr, req, totals) = (addr.clone(), req.clone(), totals.clone());
        let delay = (a.ramp_ms * 1e6 * k as f64 / a.streams.max(1) as f64) as u64;
        local.spawn_local(async move {
            tokio::time::sleep(std::time::Duration::from_nanos(delay)).await;
            let mut buf = vec![0u8; 1 << 16];
            let mut pending = Vec::with_capacity(1 << 16);
            while mono_ns() < deadline {
                match one(&addr, req.as_bytes(), &mut buf, &mut pending, &totals).await {
                    Ok(()) => totals.borrow_mut().requests += 1,
                    Err(_) => {
                        totals.borrow_mut().errors += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    rt.block_on(local);
    let elapsed = (mono_ns() - started) as f64 / 1e9;
    let t = totals.borrow();
    let us = |v: u64| v as f64 / 1e3;
    println!(
        "{{\"streams\":{},\"requests\":{},\"errors\":{},\"chunks\":{},\"elapsed_s\":{:.3},\"chunks_per_s\":{:.0},\"lag_us\":{{\"p50\":{:.1},\"p99\":{:.1},\"max\":{:.1}}}}}",
        a.streams, t.requests, t.errors, t.chunks, elapsed, t.chunks as f64 / elapsed, us(t.lag.quantile(0.5)), us(t.lag.quantile(0.99)), us(t.lag.max)
    );
    0
}

//! langbench Rust agent: the same contract as agents/python/agent.py (DESIGN.md, "The agent
//! contract"). One persistent HTTP client, one record per run appended and flushed as soon as
//! the run ends.

pub mod agent;
pub mod api;
pub mod client;
pub mod clock;
pub mod conn;
pub mod jobs;
pub mod openai;
pub mod record;
pub mod rlimit;
pub mod tools;

use clap::Parser;
use futures_util::future::join_all;
use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const AGENT_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+reqwest");

#[derive(Parser, Debug)]
#[command(version, about = "Streams Ollama /api/generate or /api/chat, or an OpenAI-compatible /v1, for each run of a jobs file")]
pub struct Opts {
    /// Ollama base URL, e.g. http://127.0.0.1:11434
    #[arg(long)]
    pub host: String,
    /// Jobs file (JSON)
    #[arg(long)]
    pub jobs: PathBuf,
    /// Records file (JSON lines, appended)
    #[arg(long)]
    pub out: PathBuf,
}

/// Everything that stops the agent before or between runs. A run that fails is not an
/// error of the agent: it becomes a record with outcome `error` or `truncated`.
#[derive(Debug)]
pub enum Error {
    BadJobs(String),
    Output(PathBuf, std::io::Error),
    Client(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::BadJobs(_) => 2,
            Error::Output(..) | Error::Client(_) => 3,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::BadJobs(m) => write!(f, "bad jobs file: {m}"),
            Error::Output(p, e) => write!(f, "cannot write records to {}: {e}", p.display()),
            Error::Client(m) => write!(f, "cannot build HTTP client: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// Appends each record as its run ends, flushed; counts what failed and says so on stderr.
struct Writer {
    out: std::fs::File,
    path: PathBuf,
    total: usize,
    done: usize,
    all_ok: bool,
}

impl Writer {
    fn write(&mut self, rec: &record::Record) -> Result<(), Error> {
        let line = serde_json::to_string(rec).expect("a record always serialises");
        writeln!(self.out, "{line}")
            .and_then(|_| self.out.flush())
            .map_err(|e| Error::Output(self.path.clone(), e))?;
        let turn = rec.turn.as_ref().map(|a| format!(" turn {}", a.turn)).unwrap_or_default();
        if rec.turn.as_ref().map_or(true, |a| a.task_outcome.is_some()) {
            self.done += 1;
        }
        match (&rec.error, rec.turn.as_ref()) {
            (Some(err), _) => {
                self.all_ok = false;
                eprintln!("rust agent: run {}{turn}: {}: {}: {}", rec.run_id, rec.outcome, err.kind, err.message);
            }
            (None, Some(a)) if a.task_outcome == Some("error") => {
                self.all_ok = false;
                let e = a.task_error.as_ref().map(|e| format!("{}: {}", e.kind, e.message)).unwrap_or_default();
                eprintln!("rust agent: run {}{turn}: task error: {e}", rec.run_id);
            }
            (None, Some(a)) => eprintln!(
                "rust agent: run {}{turn} ttft={:.1}ms action={:?} task={:?}",
                rec.run_id,
                rec.ttft_ms.unwrap_or(f64::NAN),
                a.action.as_ref().and_then(|x| x.tool.as_deref()),
                a.task_outcome
            ),
            (None, None) => eprintln!(
                "rust agent: run {}/{} {} ok ttft={:.1}ms",
                self.done,
                self.total,
                rec.run_id,
                rec.ttft_ms.unwrap_or(f64::NAN)
            ),
        }
        Ok(())
    }
}

/// Runs every job; `Ok(true)` when every run ended `ok`. Without `streams`, one after another.
/// With `streams: N`: warm-ups one at a time, then the measured runs in N concurrent tasks on
/// this one-thread runtime (as the Python agent's one asyncio loop), each stream's runs in
/// turn (closed loop); with `send_at_s`, each run at its offset whatever is in flight (open loop).
pub fn run(opts: &Opts) -> Result<bool, Error> {
    let jobs = jobs::load(&opts.jobs)?;
    // one socket per session in flight: the soft open-file limit (often 1,024) up to the hard one
    let nofile = rlimit::raise_nofile();
    if let (Some(n), Some(limit)) = (jobs.streams, nofile) {
        if n as u64 + 64 > limit {
            eprintln!("rust agent: {n} streams with an open-file limit of {limit}: sessions past it will fail to connect");
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Client(e.to_string()))?;
    let timeout = Duration::from_secs_f64(jobs.timeout_s);
    let http = reqwest::Client::builder()
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .connector_layer(conn::TimeConnects)
        // One client for every session: its pool neither caps nor queues connections (hyper-util
        // opens one whenever no idle one is free), and every connection a session ends with is
        // kept for the next, however many sessions are in flight (reqwest's default, said here
        // because 1,024 sessions depend on it).
        .pool_max_idle_per_host(usize::MAX)
        .build()
        .map_err(|e| Error::Client(e.to_string()))?;
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&opts.out)
        .map_err(|e| Error::Output(opts.out.clone(), e))?;
    let url = opts.host.trim_end_matches('/').to_string();
    let writer = RefCell::new(Writer { out, path: opts.out.clone(), total: jobs.runs.len(), done: 0, all_ok: true });
    match jobs.streams {
        None => {
            for job in &jobs.runs {
                if is_agent(&jobs) {
                    rt.block_on(agent::run_task(&http, &url, &jobs, job, |rec| writer.borrow_mut().write(&rec)))?;
                } else {
                    let rec = rt.block_on(client::run(&http, &url, &jobs, job));
                    writer.borrow_mut().write(&rec)?;
                }
            }
        }
        Some(n) => rt.block_on(concurrent(&http, &url, &jobs, n, &writer))?,
    }
    let all_ok = writer.borrow().all_ok;
    Ok(all_ok)
}

fn is_agent(jobs: &jobs::Jobs) -> bool {
    jobs.workload.as_deref() == Some("agent")
}

/// One run in concurrent mode: a single request, or (workload agent) a task's turns.
#[allow(clippy::too_many_arguments)]
async fn one(
    http: &reqwest::Client,
    url: &str,
    jobs: &jobs::Jobs,
    job: &jobs::Job,
    n: usize,
    stream: usize,
    lag: Option<f64>,
    writer: &RefCell<Writer>,
) -> Result<(), Error> {
    let tagged = |mut rec: record::Record| {
        rec.concurrency = Some(n);
        rec.stream = Some(stream);
        rec.schedule_lag_ms = lag;
        rec
    };
    if is_agent(jobs) {
        agent::run_task(http, url, jobs, job, |rec| writer.borrow_mut().write(&tagged(rec))).await
    } else {
        let rec = client::run(http, url, jobs, job).await;
        writer.borrow_mut().write(&tagged(rec))
    }
}

async fn concurrent(
    http: &reqwest::Client,
    url: &str,
    jobs: &jobs::Jobs,
    n: usize,
    writer: &RefCell<Writer>,
) -> Result<(), Error> {
    for job in jobs.runs.iter().filter(|j| j.warmup) {
        one(http, url, jobs, job, n, job.stream.unwrap_or(0), None, writer).await?;
    }
    let measured: Vec<&jobs::Job> = jobs.runs.iter().filter(|j| !j.warmup).collect();
    if measured.first().is_some_and(|j| j.send_at_s.is_some()) {
        let start = Instant::now();
        let sends = measured.iter().enumerate().map(|(i, job)| async move {
            let at = Duration::from_secs_f64(job.send_at_s.unwrap_or(0.0));
            tokio::time::sleep_until((start + at).into()).await;
            let lag = (start.elapsed().as_secs_f64() - at.as_secs_f64()) * 1e3;
            one(http, url, jobs, job, n, job.stream.unwrap_or(i), Some(lag), writer).await
        });
        return join_all(sends).await.into_iter().collect();
    }
    let mut by_stream: Vec<Vec<&jobs::Job>> = vec![Vec::new(); n];
    for (i, job) in measured.iter().enumerate() {
        by_stream[job.stream.unwrap_or(i % n)].push(job);
    }
    let streams = by_stream.into_iter().enumerate().map(|(k, own)| async move {
        for job in own {
            one(http, url, jobs, job, n, k, None, writer).await?;
        }
        Ok(())
    });
    join_all(streams).await.into_iter().collect()
}

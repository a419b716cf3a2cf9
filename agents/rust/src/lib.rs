//! langbench Rust agent: the same contract as agents/python/agent.py (DESIGN.md, "The agent
//! contract"). One persistent HTTP client, one record per run appended and flushed before the
//! next run starts.

pub mod api;
pub mod client;
pub mod jobs;
pub mod record;

use clap::Parser;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

pub const AGENT_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+reqwest");

#[derive(Parser, Debug)]
#[command(version, about = "Streams Ollama /api/generate for each run of a jobs file")]
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

/// Runs every job in order; `Ok(true)` when every run ended `ok`.
pub fn run(opts: &Opts) -> Result<bool, Error> {
    let jobs = jobs::load(&opts.jobs)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Client(e.to_string()))?;
    let timeout = Duration::from_secs_f64(jobs.timeout_s);
    let http = reqwest::Client::builder()
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .build()
        .map_err(|e| Error::Client(e.to_string()))?;
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&opts.out)
        .map_err(|e| Error::Output(opts.out.clone(), e))?;
    let url = format!("{}/api/generate", opts.host.trim_end_matches('/'));
    let total = jobs.runs.len();
    let mut all_ok = true;
    for (i, job) in jobs.runs.iter().enumerate() {
        let rec = rt.block_on(client::generate(&http, &url, &jobs, job));
        let line = serde_json::to_string(&rec).expect("a record always serialises");
        writeln!(out, "{line}")
            .and_then(|_| out.flush())
            .map_err(|e| Error::Output(opts.out.clone(), e))?;
        match &rec.error {
            Some(err) => {
                all_ok = false;
                eprintln!("rust agent: run {}: {}: {}: {}", job.run_id, rec.outcome, err.kind, err.message);
            }
            None => eprintln!(
                "rust agent: run {}/{} {} ok ttft={:.1}ms",
                i + 1,
                total,
                job.run_id,
                rec.ttft_ms.unwrap_or(f64::NAN)
            ),
        }
    }
    Ok(all_ok)
}

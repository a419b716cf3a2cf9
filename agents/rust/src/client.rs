//! Streaming one run: the timing points of DESIGN.md, "The agent contract".
use crate::api::{GenerateChunk, GenerateRequest};
use crate::jobs::{Job, Jobs};
use crate::record::{percentile, Itl, Record, RunError};
use crate::AGENT_VERSION;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn err(kind: &str, message: impl Into<String>) -> RunError {
    RunError { kind: kind.to_string(), message: message.into() }
}

fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "stream_interrupted"
    }
}

pub async fn generate(http: &reqwest::Client, url: &str, jobs: &Jobs, job: &Job) -> Record {
    let body = GenerateRequest {
        model: &jobs.model,
        prompt: &jobs.prompts[job.prompt],
        raw: jobs.raw,
        stream: true,
        options: &job.options,
        keep_alive: &job.keep_alive,
    };
    let mut text = String::new();
    let mut chunk_times: Vec<Instant> = Vec::new();
    let mut t_first: Option<Instant> = None;
    let mut t_last: Option<Instant> = None;
    let mut fin: Option<GenerateChunk> = None;
    let mut error: Option<RunError> = None;

    // Timing points (DESIGN.md, "The agent contract"): t0 immediately before the request is
    // written; t_first when the first chunk with a non-empty `response` has been parsed;
    // t_last when the `done` chunk has been parsed; one timestamp per non-empty chunk.
    let t0_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let t0 = Instant::now();
    match http.post(url).json(&body).send().await {
        Err(e) => error = Some(err(transport_kind(&e), e.to_string())),
        Ok(resp) if !resp.status().is_success() => {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            let message = serde_json::from_str::<GenerateChunk>(&body)
                .ok()
                .and_then(|c| c.error)
                .unwrap_or(body);
            error = Some(err(&format!("http_{status}"), message));
        }
        Ok(resp) => {
            let mut stream = resp.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            'read: loop {
                match stream.next().await {
                    None => break,
                    Some(Err(e)) => {
                        error = Some(err(transport_kind(&e), e.to_string()));
                        break;
                    }
                    Some(Ok(bytes)) => {
                        buf.extend_from_slice(&bytes);
                        // A line can arrive split across network chunks: parse whole lines only.
                        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                            let line: Vec<u8> = buf.drain(..=nl).collect();
                            let line = &line[..line.len() - 1];
                            if line.iter().all(u8::is_ascii_whitespace) {
                                continue;
                            }
                            let chunk: GenerateChunk = match serde_json::from_slice(line) {
                                Ok(c) => c,
                                Err(e) => {
                                    error = Some(err("bad_chunk", e.to_string()));
                                    break 'read;
                                }
                            };
                            let now = Instant::now();
                            if let Some(m) = chunk.error.clone() {
                                error = Some(err("server_error", m));
                                break 'read;
                            }
                            if let Some(r) = chunk.response.as_deref().filter(|r| !r.is_empty()) {
                                chunk_times.push(now);
                                text.push_str(r);
                                t_first.get_or_insert(now);
                            }
                            if chunk.done == Some(true) {
                                t_last = Some(now);
                                fin = Some(chunk);
                                break 'read;
                            }
                        }
                    }
                }
            }
        }
    }

    let outcome = if fin.is_some() {
        "ok"
    } else if error.is_none() {
        error = Some(err("no_done", "stream ended without a done:true line"));
        "truncated"
    } else if chunk_times.is_empty() {
        "error"
    } else {
        "truncated"
    };
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    let mut gaps: Vec<f64> = chunk_times.windows(2).map(|w| ms(w[0], w[1])).collect();
    gaps.sort_by(|a, b| a.partial_cmp(b).expect("gaps are finite"));
    let f = fin.unwrap_or_default();
    Record {
        schema_version: 1,
        run_id: job.run_id.clone(),
        agent: "rust",
        agent_version: AGENT_VERSION,
        model: jobs.model.clone(),
        options: job.options.clone(),
        warmup: job.warmup,
        t0_unix,
        ttft_ms: t_first.map(|t| ms(t0, t)),
        e2e_ms: t_last.map(|t| ms(t0, t)),
        decode_ms: match (t_first, t_last) {
            (Some(a), Some(b)) => Some(ms(a, b)),
            _ => None,
        },
        chunks: chunk_times.len(),
        itl_ms: Itl {
            p50: percentile(&gaps, 0.50),
            p95: percentile(&gaps, 0.95),
            p99: percentile(&gaps, 0.99),
            max: gaps.last().copied(),
        },
        total_duration: f.total_duration,
        load_duration: f.load_duration,
        prompt_eval_count: f.prompt_eval_count,
        prompt_eval_duration: f.prompt_eval_duration,
        eval_count: f.eval_count,
        eval_duration: f.eval_duration,
        done_reason: f.done_reason,
        response_chars: text.chars().count(),
        response_sha256: format!("{:x}", Sha256::digest(text.as_bytes())),
        outcome,
        error,
        concurrency: None,
        stream: None,
        schedule_lag_ms: None,
    }
}

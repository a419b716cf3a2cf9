//! Streaming one run: the timing points of DESIGN.md, "The agent contract".
use crate::api::{Chunk, Request};
use crate::conn;
use crate::jobs::{Job, Jobs};
use crate::record::{percentile, Itl, Record, RunError};
use crate::tools::Task;
use serde_json::Value;
use crate::AGENT_VERSION;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Named in every error: the client that met the failure.
pub const CLIENT: &str = "reqwest 0.12 (hyper 1)";

pub(crate) fn err(kind: &str, message: impl Into<String>) -> RunError {
    RunError { kind: kind.to_string(), message: message.into(), client: CLIENT }
}

/// An HTTP error status: `http_<code>`, with the message of the server's JSON error body
/// ({"error": "..."} on /api, {"error": {"message": ...}} on /v1), else the body as it came.
pub(crate) async fn http_error(resp: reqwest::Response) -> RunError {
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    let parsed: Option<Value> = serde_json::from_str(&body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(|e| e.as_str().map(str::to_string).or_else(|| e.get("message").and_then(Value::as_str).map(str::to_string)))
        .unwrap_or(body);
    err(&format!("http_{status}"), message)
}

/// The error and its causes, outermost first: reqwest's own text alone ("error decoding
/// response body") does not say that the cause was a timeout or a reset.
pub(crate) fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

pub(crate) fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "stream_interrupted"
    }
}

/// The URL path of the jobs' endpoint.
pub fn path(jobs: &Jobs) -> &'static str {
    if jobs.endpoint == "chat" {
        "/api/chat"
    } else {
        "/api/generate"
    }
}

/// What one run saw: filled while the stream is read.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) text: String,
    pub(crate) thinking_chars: usize,
    pub(crate) chunk_times: Vec<Instant>,
    pub(crate) chunks_thinking: usize,
    pub(crate) chunks_answer: usize,
    pub(crate) t_first: Option<Instant>,
    pub(crate) t_first_answer: Option<Instant>,
    pub(crate) t_last: Option<Instant>,
    /// The end of generation: Ollama's `done: true` line, or on /v1 the finish_reason and usage
    /// put into the same shape (every server duration None: /v1 has none).
    pub(crate) fin: Option<Chunk>,
    pub(crate) error: Option<RunError>,
    pub(crate) tool_calls: Vec<Value>,
}

impl Seen {
    /// One parsed line; false when reading should stop (an error line).
    fn take(&mut self, chunk: Chunk, chat: bool, now: Instant) -> bool {
        if let Some(m) = chunk.error.clone() {
            self.error = Some(err("server_error", m));
            return false;
        }
        // Ollama sends a tool call as one chunk once its arguments are complete: it carries tokens
        let calls = chunk.message.as_ref().and_then(|m| m.tool_calls.as_ref()).filter(|c| !c.is_empty());
        if let Some(calls) = calls {
            self.tool_calls.extend(calls.iter().cloned());
        }
        let has_calls = calls.is_some();
        let (text, thinking) = match (chat, &chunk.message) {
            (true, Some(m)) => (m.content.as_deref(), m.thinking.as_deref()),
            (true, None) => (None, None),
            (false, _) => (chunk.response.as_deref(), chunk.thinking.as_deref()),
        };
        let text = text.filter(|t| !t.is_empty());
        let thinking = thinking.filter(|t| !t.is_empty());
        if text.is_some() || thinking.is_some() || has_calls {
            self.chunk_times.push(now);
            self.t_first.get_or_insert(now);
        }
        if let Some(t) = thinking {
            self.chunks_thinking += 1;
            self.thinking_chars += t.chars().count();
        }
        if let Some(t) = text {
            self.chunks_answer += 1;
            self.text.push_str(t);
            self.t_first_answer.get_or_insert(now);
        }
        if chunk.done == Some(true) {
            self.t_last = Some(now);
            self.fin = Some(chunk);
        }
        true
    }
}

/// One run, its connect attributed to it (src/conn.rs).
pub async fn run(http: &reqwest::Client, base: &str, jobs: &Jobs, job: &Job) -> Record {
    let x = exchange(http, base, jobs, job, None).await;
    record(x, jobs, job)
}

/// What one request saw, before it becomes a record.
pub struct Exchange {
    pub(crate) seen: Seen,
    pub t0: Instant,
    pub(crate) t0_unix: f64,
    pub(crate) connect_ms: Option<f64>,
}

impl Exchange {
    pub fn text(&self) -> &str {
        &self.seen.text
    }
    pub fn tool_calls(&self) -> &[Value] {
        &self.seen.tool_calls
    }
    pub fn t_last(&self) -> Option<Instant> {
        self.seen.t_last
    }
    /// The run's error as its record will carry it (None when the stream ended with done).
    pub fn failure(&self) -> Option<RunError> {
        if self.seen.fin.is_some() {
            return None;
        }
        Some(self.seen.error.clone().unwrap_or_else(|| err("no_done", "stream ended without a done:true line")))
    }
}

/// One request: a run's prompt, or an agent turn's history with the task's `format` or `tools`.
pub async fn exchange(http: &reqwest::Client, base: &str, jobs: &Jobs, job: &Job, task: Option<&Task<'_>>) -> Exchange {
    let (x, connect_ms) = if crate::openai::is_v1(jobs) {
        conn::scoped(crate::openai::stream(http, base, jobs, job, task)).await
    } else {
        conn::scoped(stream(http, base, jobs, job, task)).await
    };
    Exchange { connect_ms, ..x }
}

async fn stream(http: &reqwest::Client, base: &str, jobs: &Jobs, job: &Job, task: Option<&Task<'_>>) -> Exchange {
    let chat = jobs.endpoint == "chat";
    let prompt = &jobs.prompts[job.prompt];
    let body = Request {
        model: &jobs.model,
        prompt: (!chat).then_some(prompt),
        raw: (!chat).then_some(jobs.raw),
        messages: match task {
            Some(t) => Some(t.history.as_slice()),
            None => prompt.as_array().map(Vec::as_slice).filter(|_| chat),
        },
        tools: task.and_then(|t| t.tools_json.as_deref()),
        format: task.and_then(|t| t.format.as_deref()),
        stream: true,
        options: &job.options,
        keep_alive: &job.keep_alive,
        think: job.think,
    };
    let url = format!("{base}{}", path(jobs));
    let mut seen = Seen::default();

    // Timing points (DESIGN.md, "The agent contract"): t0 immediately before the request is
    // written; t_first when the first chunk carrying any token (thinking or answer) has been
    // parsed; t_first_answer at the first chunk with answer text; t_last when the `done` chunk
    // has been parsed; one timestamp per non-empty chunk, kind kept.
    let t0_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let t0 = Instant::now();
    match http.post(&url).json(&body).send().await {
        Err(e) => seen.error = Some(err(transport_kind(&e), chain(&e))),
        Ok(resp) if !resp.status().is_success() => seen.error = Some(http_error(resp).await),
        Ok(resp) => {
            let mut stream = resp.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            // Read to the body's end, as typical client code does: the chunked body's last bytes
            // come after the done line, and hyper closes a connection whose body was left unread.
            'read: loop {
                match stream.next().await {
                    None => break,
                    Some(Err(e)) => {
                        seen.error = Some(err(transport_kind(&e), chain(&e)));
                        break;
                    }
                    Some(Ok(bytes)) => {
                        if seen.fin.is_some() {
                            continue; // past the done line: only draining
                        }
                        buf.extend_from_slice(&bytes);
                        // A line can arrive split across network chunks: parse whole lines only,
                        // split at b'\n' and nowhere else (U+0085, U+2028 are text inside a line).
                        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                            let line: Vec<u8> = buf.drain(..=nl).collect();
                            let line = &line[..line.len() - 1];
                            if line.iter().all(u8::is_ascii_whitespace) {
                                continue;
                            }
                            let chunk: Chunk = match serde_json::from_slice(line) {
                                Ok(c) => c,
                                Err(e) => {
                                    let head = String::from_utf8_lossy(&line[..line.len().min(60)]).into_owned();
                                    seen.error = Some(err("bad_chunk", format!("line is not JSON: {e}: {head:?}")));
                                    break 'read;
                                }
                            };
                            if !seen.take(chunk, chat, Instant::now()) {
                                break 'read;
                            }
                            if seen.fin.is_some() {
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    Exchange { seen, t0, t0_unix, connect_ms: None }
}

/// The record of one exchange (built after the agent loop has acted: record keeping is not the agent's time).
pub fn record(x: Exchange, jobs: &Jobs, job: &Job) -> Record {
    let Exchange { seen, t0, t0_unix, connect_ms } = x;
    let Seen { text, thinking_chars, chunk_times, chunks_thinking, chunks_answer, t_first, t_first_answer, t_last, fin, mut error, .. } = seen;
    let outcome = if fin.is_some() {
        error = None; // whatever the body's end did after the done line
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
        schema_version: 2, // the record's version (storage.RECORD_VERSION in langbench)
        run_id: job.run_id.clone(),
        agent: "rust",
        agent_version: AGENT_VERSION,
        model: jobs.model.clone(),
        endpoint: jobs.endpoint.clone(),
        options: job.options.clone(),
        think: job.think,
        warmup: job.warmup,
        t0_unix,
        new_connection: connect_ms.is_some(),
        connect_ms,
        ttft_ms: t_first.map(|t| ms(t0, t)),
        ttft_answer_ms: t_first_answer.map(|t| ms(t0, t)),
        e2e_ms: t_last.map(|t| ms(t0, t)),
        decode_ms: match (t_first, t_last) {
            (Some(a), Some(b)) => Some(ms(a, b)),
            _ => None,
        },
        chunks: chunk_times.len(),
        chunks_thinking,
        chunks_answer,
        itl_ms: Itl {
            p50: percentile(&gaps, 0.50),
            p95: percentile(&gaps, 0.95),
            p99: percentile(&gaps, 0.99),
            max: gaps.last().copied(),
            n: gaps.len(),
        },
        total_duration: f.total_duration,
        load_duration: f.load_duration,
        prompt_eval_count: f.prompt_eval_count,
        prompt_eval_duration: f.prompt_eval_duration,
        eval_count: f.eval_count,
        eval_duration: f.eval_duration,
        done_reason: f.done_reason,
        thinking_chars,
        response_chars: text.chars().count(),
        response_sha256: format!("{:x}", Sha256::digest(text.as_bytes())),
        outcome,
        error,
        concurrency: None,
        stream: None,
        schedule_lag_ms: None,
        turn: None,
    }
}

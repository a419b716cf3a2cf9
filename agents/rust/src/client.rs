//! Streaming one run: the timing points of DESIGN.md, "The agent contract".
use crate::api::{Chunk, Request};
use crate::clock::{self, Stamp};
use crate::conn;
use crate::jobs::{Job, Jobs};
use crate::record::{percentile, Capture, Itl, Lag, Record, RunError};
use crate::tools::Task;
use serde_json::Value;
use crate::AGENT_VERSION;
use futures_util::StreamExt;
use serde::Serialize;
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
    /// t0 on CLOCK_MONOTONIC (capture's times are from it).
    pub(crate) t0_ns: u64,
    /// Parse time less the server's send stamp, per stamped chunk of any kind.
    pub(crate) lags_ns: Vec<i64>,
    /// The server's arrival stamp of the request (`t_arrival_ns`), from the first chunk carrying one.
    pub(crate) arrival_ns: Option<u64>,
    /// The chunk trace, when the jobs file asks for it.
    pub(crate) capture: Option<Capture>,
}

/// The text of a `c` capture entry on /api: the chunk's calls as `[{"name", "arguments"}]`.
fn calls_text(calls: &[Value]) -> String {
    #[derive(Serialize)]
    struct Call<'a> {
        name: &'a Value,
        arguments: &'a Value,
    }
    static NULL: Value = Value::Null;
    let calls: Vec<Call> = calls
        .iter()
        .map(|c| {
            let f = c.get("function").unwrap_or(&NULL);
            Call { name: f.get("name").unwrap_or(&NULL), arguments: f.get("arguments").unwrap_or(&NULL) }
        })
        .collect();
    serde_json::to_string(&calls).expect("JSON values serialise")
}

/// The server's send (or arrival) stamp, when it sent one as an unsigned integer.
pub(crate) fn sent_ns(stamp: Option<&Value>) -> Option<u64> {
    stamp.and_then(Value::as_u64)
}

impl Seen {
    /// The reading's state for a run: capture on or off, t0 not yet taken.
    pub(crate) fn new(capture: bool) -> Seen {
        Seen { capture: capture.then(Capture::default), ..Seen::default() }
    }

    /// A chunk's arrival stamp: the first one kept (every chunk of a stream carries the same).
    pub(crate) fn arrived(&mut self, arrival: Option<u64>) {
        if self.arrival_ns.is_none() {
            self.arrival_ns = arrival;
        }
    }

    /// Every parsed chunk, whatever it carries: its lag (when stamped) and its capture entry.
    pub(crate) fn note(&mut self, now: Stamp, sent: Option<u64>, bytes: usize, kind: char, text: impl FnOnce() -> String) {
        if let Some(sent) = sent {
            let sent = i64::try_from(sent).unwrap_or(i64::MAX);
            self.lags_ns.push(i64::try_from(now.ns).unwrap_or(i64::MAX).saturating_sub(sent));
        }
        if let Some(c) = self.capture.as_mut() {
            c.t_us.push(now.ns.saturating_sub(self.t0_ns) / 1_000);
            c.bytes.push(bytes);
            c.kinds.push(kind);
            c.text.push(text());
        }
    }

    /// One parsed line of `bytes` bytes; false when reading should stop (an error line).
    fn take(&mut self, chunk: Chunk, chat: bool, stamp: Stamp, bytes: usize) -> bool {
        let now = stamp.at;
        let sent = sent_ns(chunk.t_sent_ns.as_ref());
        self.arrived(sent_ns(chunk.t_arrival_ns.as_ref()));
        if let Some(m) = chunk.error.clone() {
            self.note(stamp, sent, bytes, 'e', String::new);
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
        let done = chunk.done == Some(true);
        let kind = kind_of(has_calls, text.is_some(), thinking.is_some(), done, false);
        self.note(stamp, sent, bytes, kind, || match kind {
            'c' => calls_text(calls.map_or(&[][..], Vec::as_slice)),
            'a' => text.unwrap_or_default().to_string(),
            't' => thinking.unwrap_or_default().to_string(),
            _ => String::new(),
        });
        if done {
            self.t_last = Some(now);
            self.fin = Some(chunk);
        }
        true
    }
}

/// A chunk's capture kind: c > a > t > d > u > e (record.rs, `Capture`).
pub(crate) fn kind_of(calls: bool, answer: bool, thinking: bool, done: bool, usage: bool) -> char {
    if calls {
        'c'
    } else if answer {
        'a'
    } else if thinking {
        't'
    } else if done {
        'd'
    } else if usage {
        'u'
    } else {
        'e'
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
    let mut seen = Seen::new(jobs.capture);

    // Timing points (DESIGN.md, "The agent contract"): t0 immediately before the request is
    // written; t_first when the first chunk carrying any token (thinking or answer) has been
    // parsed; t_first_answer at the first chunk with answer text; t_last when the `done` chunk
    // has been parsed; one timestamp per non-empty chunk, kind kept.
    let t0_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let Stamp { at: t0, ns: t0_ns } = clock::stamp();
    seen.t0_ns = t0_ns;
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
                            if !seen.take(chunk, chat, clock::stamp(), line.len()) {
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
    let Seen {
        text, thinking_chars, chunk_times, chunks_thinking, chunks_answer, t_first, t_first_answer, t_last, fin, mut error,
        lags_ns, arrival_ns, t0_ns, capture, ..
    } = seen;
    // t0 to the server's having the whole request: both on CLOCK_MONOTONIC
    let send_ns = arrival_ns.map(|a| i64::try_from(a).unwrap_or(i64::MAX).saturating_sub(i64::try_from(t0_ns).unwrap_or(i64::MAX)));
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
        lag_ms: Lag::of(&lags_ns, send_ns),
        capture,
        concurrency: None,
        stream: None,
        schedule_lag_ms: None,
        turn: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A fake clock reading: `ns` on CLOCK_MONOTONIC, its Instant derived as the agent's are.
    pub(crate) fn at(ns: u64) -> Stamp {
        Stamp { at: clock::instant_of(ns), ns }
    }

    pub(crate) fn jobs(endpoint: &str, capture: bool) -> Jobs {
        let prompt = if endpoint.contains("chat") { json!([{"role": "user", "content": "go"}]) } else { json!("go") };
        serde_json::from_value(json!({"schema_version": 1, "model": "m", "endpoint": endpoint, "prompts": [prompt],
                                      "capture": capture, "runs": []}))
        .unwrap()
    }

    pub(crate) fn job() -> Job {
        serde_json::from_value(json!({"run_id": "r", "prompt": 0, "options": {}, "keep_alive": -1, "warmup": false})).unwrap()
    }

    pub(crate) fn exchange(seen: Seen, t0_ns: u64) -> Exchange {
        Exchange { seen, t0: clock::instant_of(t0_ns), t0_unix: 0.0, connect_ms: None }
    }

    const T0: u64 = 5_000_000_000;

    /// The lines, each parsed at its fake time; what `take` said of the last.
    fn feed(seen: &mut Seen, chat: bool, lines: &[(&str, u64)]) -> bool {
        seen.t0_ns = T0;
        let mut going = true;
        for (line, ns) in lines {
            let chunk: Chunk = serde_json::from_str(line).unwrap();
            going = seen.take(chunk, chat, at(*ns), line.len());
        }
        going
    }

    #[test]
    fn every_line_is_captured_with_its_kind_bytes_time_and_lag() {
        // the request was in whole at T0 + 0.4 ms (t_arrival_ns, on every stamped line)
        let lines = [
            (r#"{"response":"","thinking":"h","done":false,"t_sent_ns":5001000000,"t_arrival_ns":5000400000}"#, T0 + 1_000_500),
            (r#"{"response":"a","done":false,"t_sent_ns":5002000000,"t_arrival_ns":5000400000}"#, T0 + 2_000_250),
            (r#"{"response":"b","thinking":"x","done":false}"#, T0 + 3_000_000), // no stamp: no lag
            (r#"{"response":"","done":false,"t_sent_ns":5003500000,"t_arrival_ns":5000400000}"#, T0 + 3_500_999),
            (r#"{"response":"","done":true,"done_reason":"stop","eval_count":2,"t_sent_ns":5004000000,"t_arrival_ns":5000400000}"#, T0 + 4_002_000),
        ];
        let mut seen = Seen::new(true);
        assert!(feed(&mut seen, false, &lines));
        assert_eq!(seen.lags_ns, vec![500, 250, 999, 2000]);
        let rec = record(exchange(seen, T0), &jobs("generate", true), &job());
        let cap = rec.capture.as_ref().unwrap();
        assert_eq!(cap.kinds, "taaed");
        assert_eq!(cap.t_us, vec![1000, 2000, 3000, 3500, 4002]);
        assert_eq!(cap.bytes, lines.iter().map(|(l, _)| l.len()).collect::<Vec<_>>());
        assert_eq!(cap.text, vec!["h", "a", "b", "", ""]);
        let lag = rec.lag_ms.as_ref().unwrap();
        assert_eq!((lag.first, lag.max, lag.n), (500e-6, 2000e-6, 4));
        assert!((lag.p50 - (500e-6 + 999e-6) / 2.0).abs() < 1e-15);
        assert_eq!(lag.send, Some(0.4)); // t_arrival_ns − t0
        let v = serde_json::to_value(&rec).unwrap();
        assert_eq!(v["lag_ms"]["send"], json!(0.4));
        assert_eq!((rec.outcome, rec.chunks, rec.chunks_answer, rec.chunks_thinking), ("ok", 3, 2, 2));
        assert!((rec.ttft_ms.unwrap() - 1.0005).abs() < 1e-9);
    }

    #[test]
    fn the_send_delay_is_the_first_arrival_stamp_less_t0_even_from_an_error_line() {
        // an arrival stamp of another shape is none; the first integer one counts
        let mut seen = Seen::new(false);
        let going = feed(&mut seen, false, &[
            (r#"{"response":"a","done":false,"t_sent_ns":5040000000,"t_arrival_ns":"5031000000"}"#, T0 + 41_000_000),
            (r#"{"error":"scripted failure","t_sent_ns":5042000000,"t_arrival_ns":5031000000}"#, T0 + 42_000_000),
        ]);
        assert!(!going);
        let rec = record(exchange(seen, T0), &jobs("generate", false), &job());
        let lag = rec.lag_ms.as_ref().unwrap();
        assert_eq!((lag.send, lag.first, lag.n), (Some(31.0), 1.0, 2));
    }

    #[test]
    fn a_tool_call_chunk_is_c_with_its_calls_as_name_and_arguments() {
        let call = r#"{"message":{"role":"assistant","content":"so","thinking":"t","tool_calls":[{"function":{"name":"add","arguments":{"a":1,"b":2}}},{"function":{"name":"finish","arguments":{"answer":"3"}}}]},"done":false}"#;
        let done = r#"{"message":{"role":"assistant","content":""},"done":true,"done_reason":"stop"}"#;
        let mut seen = Seen::new(true);
        feed(&mut seen, true, &[(call, T0 + 1_000), (done, T0 + 2_000)]);
        let cap = seen.capture.as_ref().unwrap();
        assert_eq!(cap.kinds, "cd");
        assert_eq!(cap.text[0], r#"[{"name":"add","arguments":{"a":1,"b":2}},{"name":"finish","arguments":{"answer":"3"}}]"#);
        assert_eq!(seen.tool_calls.len(), 2);
    }

    #[test]
    fn an_error_line_is_e_and_stops_and_a_stamp_of_another_shape_is_no_stamp() {
        let mut seen = Seen::new(true);
        let going = feed(&mut seen, false, &[
            (r#"{"response":"a","done":false,"t_sent_ns":"5000000000"}"#, T0 + 10),
            (r#"{"error":"scripted failure","t_sent_ns":5000000000}"#, T0 + 20),
        ]);
        assert!(!going);
        assert_eq!(seen.capture.as_ref().unwrap().kinds, "ae");
        assert_eq!(seen.lags_ns, vec![20]); // the error line's stamp counts too
        let rec = record(exchange(seen, T0), &jobs("generate", true), &job());
        assert_eq!((rec.outcome, rec.error.as_ref().unwrap().kind.as_str()), ("truncated", "server_error"));
        // send stamps without an arrival stamp (a server that stamps only its sends): send is null
        let v = serde_json::to_value(&rec).unwrap();
        assert!(v["lag_ms"]["send"].is_null() && v["lag_ms"].as_object().unwrap().contains_key("send"));
    }

    #[test]
    fn a_stream_done_at_its_first_line_is_ok_with_no_chunks_and_no_ttft() {
        for capture in [false, true] {
            let mut seen = Seen::new(capture);
            feed(&mut seen, false, &[(r#"{"response":"","done":true,"done_reason":"stop","eval_count":0}"#, T0 + 7_000)]);
            let rec = record(exchange(seen, T0), &jobs("generate", capture), &job());
            assert_eq!((rec.outcome, rec.chunks, rec.ttft_ms, rec.decode_ms), ("ok", 0, None, None));
            assert!(rec.error.is_none() && rec.itl_ms.n == 0 && rec.itl_ms.p50.is_none());
            assert_eq!(rec.done_reason.as_deref(), Some("stop"));
            assert!((rec.e2e_ms.unwrap() - 0.007).abs() < 1e-9);
            let v = serde_json::to_value(&rec).unwrap();
            assert!(v["lag_ms"].is_null() && v.as_object().unwrap().contains_key("lag_ms"));
            if capture {
                assert_eq!(v["capture"], json!({"t_us": [7], "bytes": [63], "kinds": "d", "text": [""]}));
            } else {
                assert!(!v.as_object().unwrap().contains_key("capture")); // records stay as they were
            }
        }
    }

    #[test]
    fn the_capture_key_of_the_jobs_file_is_optional_and_off_by_default() {
        let j: Jobs = serde_json::from_value(json!({"schema_version": 1, "model": "m", "prompts": ["go"], "runs": []})).unwrap();
        assert!(!j.capture);
        assert!(jobs("generate", true).capture);
    }
}

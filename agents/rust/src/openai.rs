//! The /v1 path: /v1/chat/completions or /v1/completions of any OpenAI-compatible server,
//! streamed as Server-Sent Events over reqwest's byte stream and parsed by the
//! `eventsource-stream` crate (what async-openai and reqwest-eventsource read SSE with), into our
//! own serde structs with every field optional (Cargo.toml says why not async-openai itself).
//!
//! The request carries `stream_options.include_usage`; the run's `options` are the request's
//! own fields (max_tokens, temperature, ...: the runner translated them), sent at the top of the
//! body as given. Timing points are the /api path's: t_first at the first chunk whose delta
//! carries a token (content, `reasoning_content` or `reasoning` as thinking, or a tool call),
//! t_last at the chunk with a finish_reason. /v1 has no server durations: they stay None.
use crate::api::Chunk;
use crate::client::{chain, http_error, transport_kind, Exchange, Seen};
use crate::record::RunError;
use crate::jobs::{Job, Jobs};
use crate::tools::Task;
use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Named in every error of this path.
pub const CLIENT: &str = "reqwest 0.12 (hyper 1) + eventsource-stream 0.2";

fn err(kind: &str, message: impl Into<String>) -> RunError {
    RunError { kind: kind.to_string(), message: message.into(), client: CLIENT }
}

pub fn is_v1(jobs: &Jobs) -> bool {
    jobs.endpoint.starts_with("openai-")
}

fn path(jobs: &Jobs) -> &'static str {
    if jobs.endpoint == "openai-chat" {
        "/v1/chat/completions"
    } else {
        "/v1/completions"
    }
}

#[derive(Debug, Default, Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Debug, Default, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    /// llama.cpp's name for the thinking text; Ollama's is `reasoning`.
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Debug, Default, Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    /// /v1/completions: the text of this chunk.
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

/// One event's data: a chunk, the usage event (no choices), or an error after HTTP 200.
#[derive(Debug, Default, Deserialize)]
struct V1Chunk {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<Value>,
}

/// A tool call streamed in pieces, by index: the name first, then the arguments' text.
#[derive(Default)]
struct Call {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// The request body: the prompt (or a turn's history and its `tools` or `response_format`),
/// the run's options at the top, usage in the stream.
fn body(jobs: &Jobs, job: &Job, task: Option<&Task<'_>>) -> Value {
    let mut b = Map::new();
    b.insert("model".into(), json!(jobs.model));
    b.insert("stream".into(), json!(true));
    b.insert("stream_options".into(), json!({"include_usage": true}));
    for (k, v) in &job.options {
        b.insert(k.clone(), v.clone());
    }
    match task {
        Some(t) => {
            b.insert("messages".into(), Value::Array(t.history.clone()));
            if let Some(tools) = &t.tools_json {
                b.insert("tools".into(), serde_json::from_str(tools.get()).expect("tools are JSON"));
            }
            if let Some(format) = &t.format {
                b.insert("response_format".into(), crate::tools::response_format(format.get()));
            }
        }
        None => {
            let key = if jobs.endpoint == "openai-chat" { "messages" } else { "prompt" };
            b.insert(key.into(), jobs.prompts[job.prompt].clone());
        }
    }
    Value::Object(b)
}

impl Seen {
    /// One event's chunk; false when reading should stop taking chunks (an error event).
    fn take_v1(&mut self, chunk: V1Chunk, chat: bool, now: Instant, calls: &mut BTreeMap<usize, Call>,
               usage: &mut Option<Usage>, finish: &mut Option<String>) -> bool {
        if let Some(e) = chunk.error.filter(|e| !e.is_null()) {
            let message = e.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| e.to_string());
            self.error = Some(err("server_error", message));
            return false;
        }
        let choices = chunk.choices.unwrap_or_default();
        if chunk.usage.is_some() {
            // the last one counts: Ollama's /v1/completions sends zeros on every chunk before its usage
            // event; llama-server puts it on the finish_reason chunk
            *usage = chunk.usage;
        }
        for choice in choices {
            let (text, thinking, deltas) = match (chat, choice.delta) {
                (true, Some(d)) => (d.content, d.reasoning_content.or(d.reasoning), d.tool_calls.unwrap_or_default()),
                (true, None) => (None, None, Vec::new()),
                (false, _) => (choice.text, None, Vec::new()),
            };
            let has_calls = !deltas.is_empty();
            for d in deltas {
                let slot = calls.entry(d.index.unwrap_or(0)).or_default();
                if d.id.is_some() {
                    slot.id = d.id;
                }
                if let Some(f) = d.function {
                    slot.name.push_str(f.name.as_deref().unwrap_or(""));
                    slot.arguments.push_str(f.arguments.as_deref().unwrap_or(""));
                }
            }
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
                self.text.push_str(&t);
                self.t_first_answer.get_or_insert(now);
            }
            if finish.is_none() {
                if let Some(reason) = choice.finish_reason {
                    *finish = Some(reason);
                    self.t_last = Some(now);
                }
            }
        }
        true
    }
}

/// A request written on a kept-alive connection that the server had closed: hyper's "connection
/// closed before message completed" (hyper retries by itself only when nothing was written yet).
fn stale(e: &reqwest::Error) -> bool {
    chain(e).contains("connection closed before message completed")
}

/// One request on /v1, read to the body's end (so the connection is kept).
pub async fn stream(http: &reqwest::Client, base: &str, jobs: &Jobs, job: &Job, task: Option<&Task<'_>>) -> Exchange {
    let chat = jobs.endpoint == "openai-chat";
    let body = body(jobs, job, task);
    let url = format!("{base}{}", path(jobs));
    let mut seen = Seen::default();
    let mut calls: BTreeMap<usize, Call> = BTreeMap::new();
    let (mut usage, mut finish) = (None, None);
    let t0_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let t0 = Instant::now();
    let mut sent = http.post(&url).json(&body).send().await;
    if sent.as_ref().is_err_and(stale) {
        // The pooled connection was closed by the server after the previous response (llama.cpp's
        // llama-server does so after every stream while it advertises keep-alive) before hyper saw it:
        // nothing of this request was answered, so send it once more, on a new connection (in TTFT).
        sent = http.post(&url).json(&body).send().await;
    }
    match sent {
        Err(e) => seen.error = Some(err(transport_kind(&e), chain(&e))),
        Ok(resp) if !resp.status().is_success() => seen.error = Some(RunError { client: CLIENT, ..http_error(resp).await }),
        Ok(resp) => {
            let mut events = resp.bytes_stream().eventsource();
            let mut taking = true;
            while let Some(item) = events.next().await {
                let now = Instant::now();
                match item {
                    Err(EventStreamError::Transport(e)) => {
                        seen.error.get_or_insert(err(transport_kind(&e), chain(&e)));
                        break;
                    }
                    Err(e) => {
                        seen.error.get_or_insert(err("bad_chunk", format!("the SSE stream cannot be parsed: {e}")));
                        break;
                    }
                    Ok(event) => {
                        if !taking || event.data == "[DONE]" {
                            continue; // past an error or the end marker: only draining
                        }
                        match serde_json::from_str::<V1Chunk>(&event.data) {
                            Ok(chunk) => taking = seen.take_v1(chunk, chat, now, &mut calls, &mut usage, &mut finish),
                            Err(e) => {
                                let head: String = event.data.chars().take(60).collect();
                                seen.error = Some(err("bad_chunk", format!("data is not JSON: {e}: {head:?}")));
                                taking = false;
                            }
                        }
                    }
                }
            }
        }
    }
    seen.tool_calls = calls
        .into_values()
        .map(|c| {
            let args = if c.arguments.is_empty() {
                json!({})
            } else {
                serde_json::from_str(&c.arguments).unwrap_or_else(|_| Value::String(c.arguments.clone()))
            };
            json!({"id": c.id, "function": {"name": if c.name.is_empty() { Value::Null } else { json!(c.name) }, "arguments": args},
                   "arguments_text": c.arguments})
        })
        .collect();
    match finish {
        Some(reason) if seen.error.is_none() => {
            let u = usage.unwrap_or_default();
            seen.fin = Some(Chunk {
                done: Some(true),
                done_reason: Some(reason),
                prompt_eval_count: u.prompt_tokens,
                eval_count: u.completion_tokens,
                ..Chunk::default()
            });
        }
        _ => {
            if seen.error.is_none() {
                seen.error = Some(err("no_done", "stream ended without a finish_reason"));
            }
            seen.t_last = None;
        }
    }
    Exchange { seen, t0, t0_unix, connect_ms: None }
}

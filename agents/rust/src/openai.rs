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
use crate::client::{chain, http_error, kind_of, sent_ns, transport_kind, Exchange, Seen};
use crate::clock::{self, Stamp};
use crate::record::RunError;
use crate::jobs::{Job, Jobs};
use crate::tools::Task;
use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

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
    /// Kept as sent (a capture's `c` entry is this text), read into `ToolCallDelta`s after.
    #[serde(default)]
    tool_calls: Option<Box<RawValue>>,
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
    /// The replay server's send time of this event (CLOCK_MONOTONIC ns; real servers send none).
    #[serde(default)]
    t_sent_ns: Option<Value>,
    /// The replay server's arrival time of the request (CLOCK_MONOTONIC ns, the whole body in).
    #[serde(default)]
    t_arrival_ns: Option<Value>,
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
    /// One event's chunk, its data `bytes` long; false when reading should stop taking chunks
    /// (an error event, or tool-call deltas that are not a list of calls).
    #[allow(clippy::too_many_arguments)]
    fn take_v1(&mut self, chunk: V1Chunk, chat: bool, stamp: Stamp, bytes: usize, calls: &mut BTreeMap<usize, Call>,
               usage: &mut Option<Usage>, finish: &mut Option<String>) -> bool {
        let now = stamp.at;
        let sent = sent_ns(chunk.t_sent_ns.as_ref());
        self.arrived(sent_ns(chunk.t_arrival_ns.as_ref()));
        if let Some(e) = chunk.error.filter(|e| !e.is_null()) {
            let message = e.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| e.to_string());
            self.note(stamp, sent, bytes, 'e', String::new);
            self.error = Some(err("server_error", message));
            return false;
        }
        let has_usage = chunk.usage.is_some();
        if has_usage {
            // the last one counts: Ollama's /v1/completions sends zeros on every chunk before its usage
            // event; llama-server puts it on the finish_reason chunk
            *usage = chunk.usage;
        }
        // what the chunk carries, over its choices (one, from every server seen), for its capture
        // entry: the texts kept only when capturing (nothing more per chunk otherwise)
        let capturing = self.capture.is_some();
        let (mut answer, mut thought, mut call_text) = (String::new(), String::new(), Vec::new());
        let (mut any_answer, mut any_thought, mut any_calls, mut finished) = (false, false, false, false);
        for choice in chunk.choices.unwrap_or_default() {
            let (text, thinking, raw) = match (chat, choice.delta) {
                (true, Some(d)) => (d.content, d.reasoning_content.or(d.reasoning), d.tool_calls),
                (true, None) => (None, None, None),
                (false, _) => (choice.text, None, None),
            };
            let deltas: Vec<ToolCallDelta> = match raw.as_deref().map(|r| serde_json::from_str(r.get())) {
                None => Vec::new(),
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    let head: String = raw.as_deref().map(RawValue::get).unwrap_or_default().chars().take(60).collect();
                    self.error = Some(err("bad_chunk", format!("tool_calls is not a list of calls: {e}: {head:?}")));
                    return false;
                }
            };
            let has_calls = !deltas.is_empty();
            if has_calls {
                any_calls = true;
                if capturing {
                    call_text.extend(raw);
                }
            }
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
                any_thought = true;
                if capturing {
                    thought.push_str(&t);
                }
            }
            if let Some(t) = text {
                self.chunks_answer += 1;
                self.text.push_str(&t);
                self.t_first_answer.get_or_insert(now);
                any_answer = true;
                if capturing {
                    answer.push_str(&t);
                }
            }
            finished |= choice.finish_reason.is_some();
            if finish.is_none() {
                if let Some(reason) = choice.finish_reason {
                    *finish = Some(reason);
                    self.t_last = Some(now);
                }
            }
        }
        let kind = kind_of(any_calls, any_answer, any_thought, finished, has_usage);
        self.note(stamp, sent, bytes, kind, || match kind {
            'c' if call_text.len() == 1 => call_text[0].get().to_string(),
            'c' => {
                // several choices with calls: their lists as one
                let all: Vec<Value> = call_text
                    .iter()
                    .flat_map(|r| serde_json::from_str::<Vec<Value>>(r.get()).unwrap_or_default())
                    .collect();
                serde_json::to_string(&all).expect("JSON values serialise")
            }
            'a' => answer,
            't' => thought,
            _ => String::new(),
        });
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
    let mut seen = Seen::new(jobs.capture);
    let mut calls: BTreeMap<usize, Call> = BTreeMap::new();
    let (mut usage, mut finish) = (None, None);
    let t0_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let Stamp { at: t0, ns: t0_ns } = clock::stamp();
    seen.t0_ns = t0_ns;
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
                let now = clock::stamp();
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
                            Ok(chunk) => {
                                taking = seen.take_v1(chunk, chat, now, event.data.len(), &mut calls, &mut usage, &mut finish)
                            }
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
    close(&mut seen, calls, usage, finish);
    Exchange { seen, t0, t0_unix, connect_ms: None }
}

/// The stream's end: the calls put together, and the finish_reason and usage in the /api done
/// line's shape (or no_done: none came).
fn close(seen: &mut Seen, calls: BTreeMap<usize, Call>, usage: Option<Usage>, finish: Option<String>) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::record;
    use crate::client::tests::{at, exchange, job, jobs};

    const T0: u64 = 9_000_000_000;

    /// Events' data as eventsource-stream gives them, each read at its fake time; then the end.
    fn feed(seen: &mut Seen, chat: bool, events: &[(&str, u64)]) -> Vec<bool> {
        seen.t0_ns = T0;
        let (mut calls, mut usage, mut finish) = (BTreeMap::new(), None, None);
        let going = events
            .iter()
            .map(|(data, ns)| {
                let chunk: V1Chunk = serde_json::from_str(data).unwrap();
                seen.take_v1(chunk, chat, at(*ns), data.len(), &mut calls, &mut usage, &mut finish)
            })
            .collect();
        close(seen, calls, usage, finish);
        going
    }

    const ROLE: &str = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null},"finish_reason":null}],"t_sent_ns":9000100000,"t_arrival_ns":9000020000}"#;
    const THINK: &str = r#"{"choices":[{"index":0,"delta":{"reasoning_content":"hm"},"finish_reason":null}],"t_sent_ns":9000200000}"#;
    const CALL: &str = r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"add","arguments":""}}]},"finish_reason":null}],"t_sent_ns":9000300000}"#;
    const ARGS: &str = r#"{"choices":[{"index":0,"delta":{"content":"x","tool_calls":[{"index":0,"function":{"arguments":"{\"a\":1,\"b\":2}"}}]},"finish_reason":null}]}"#;
    const TEXT: &str = r#"{"choices":[{"index":0,"delta":{"content":"ok","reasoning":"r"},"finish_reason":null}],"t_sent_ns":9000500000}"#;
    const FIN: &str = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"t_sent_ns":9000600000}"#;
    const USAGE: &str = r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4},"t_sent_ns":9000700000}"#;

    #[test]
    fn every_event_is_captured_with_its_kind_and_the_deltas_calls_as_sent() {
        let events = [(ROLE, T0 + 100_400), (THINK, T0 + 200_300), (CALL, T0 + 300_200), (ARGS, T0 + 400_000),
                      (TEXT, T0 + 500_100), (FIN, T0 + 600_050), (USAGE, T0 + 700_020)];
        let mut seen = Seen::new(true);
        assert!(feed(&mut seen, true, &events).into_iter().all(|g| g));
        assert_eq!(seen.lags_ns, vec![400, 300, 200, 100, 50, 20]); // ARGS carries no stamp
        let rec = record(exchange(seen, T0), &jobs("openai-chat", true), &job());
        let cap = rec.capture.as_ref().unwrap();
        assert_eq!(cap.kinds, "etccadu");
        assert_eq!(cap.t_us, vec![100, 200, 300, 400, 500, 600, 700]);
        assert_eq!(cap.bytes, events.iter().map(|(d, _)| d.len()).collect::<Vec<_>>());
        assert_eq!(cap.text[1], "hm");
        assert_eq!(cap.text[2], r#"[{"index":0,"id":"c1","type":"function","function":{"name":"add","arguments":""}}]"#);
        assert_eq!(cap.text[3], r#"[{"index":0,"function":{"arguments":"{\"a\":1,\"b\":2}"}}]"#);
        assert_eq!(cap.text[4], "ok");
        assert_eq!((cap.text[0].as_str(), cap.text[5].as_str(), cap.text[6].as_str()), ("", "", ""));
        let lag = rec.lag_ms.as_ref().unwrap();
        assert_eq!((lag.first, lag.max, lag.n), (400e-6, 400e-6, 6));
        assert_eq!(lag.send, Some(0.02)); // the role chunk's t_arrival_ns − t0
        assert_eq!((rec.outcome, rec.chunks, rec.eval_count, rec.done_reason.as_deref()), ("ok", 4, Some(4), Some("tool_calls")));
    }

    #[test]
    fn usage_on_the_finish_chunk_is_d_and_an_error_event_is_e() {
        let fin_usage = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":0}}"#;
        let mut seen = Seen::new(true);
        feed(&mut seen, true, &[(fin_usage, T0 + 1)]);
        assert_eq!(seen.capture.as_ref().unwrap().kinds, "d");
        let error = r#"{"error":{"message":"scripted failure","type":"server_error"},"t_sent_ns":9000000000}"#;
        let mut seen = Seen::new(true);
        assert_eq!(feed(&mut seen, true, &[(TEXT, T0 + 500_500), (error, T0 + 900)]), vec![true, false]);
        assert_eq!(seen.capture.as_ref().unwrap().kinds, "ae");
        assert_eq!(seen.lags_ns, vec![500, 900]);
        assert_eq!(seen.error.as_ref().unwrap().kind, "server_error");
        assert_eq!(seen.arrival_ns, None); // no event carried an arrival stamp: send will be null
        let rec = record(exchange(seen, T0), &jobs("openai-chat", true), &job());
        assert!(rec.lag_ms.as_ref().unwrap().send.is_none());
    }

    #[test]
    fn a_stream_finished_at_its_first_event_is_ok_with_no_chunks_and_no_ttft() {
        let fin = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":"stop"}]}"#;
        let mut seen = Seen::new(false);
        feed(&mut seen, true, &[(fin, T0 + 3_000), (USAGE, T0 + 4_000)]);
        let rec = record(exchange(seen, T0), &jobs("openai-chat", false), &job());
        assert_eq!((rec.outcome, rec.chunks, rec.ttft_ms, rec.done_reason.as_deref()), ("ok", 0, None, Some("stop")));
        assert!(rec.error.is_none() && rec.capture.is_none());
        assert_eq!(rec.lag_ms.as_ref().map(|l| l.n), Some(1));
        // and one with nothing at all before [DONE]: no finish_reason, a named failure (no token
        // came, so `error` as the Python agent's /v1 path says too)
        let mut seen = Seen::new(false);
        feed(&mut seen, true, &[]);
        let rec = record(exchange(seen, T0), &jobs("openai-chat", false), &job());
        assert_eq!((rec.outcome, rec.error.as_ref().unwrap().kind.as_str()), ("error", "no_done"));
    }

    #[test]
    fn tool_calls_that_are_no_list_of_calls_are_a_bad_chunk() {
        let bad = r#"{"choices":[{"index":0,"delta":{"tool_calls":{"index":0}},"finish_reason":null}]}"#;
        let mut seen = Seen::new(true);
        assert_eq!(feed(&mut seen, true, &[(bad, T0 + 1)]), vec![false]);
        assert_eq!(seen.error.as_ref().unwrap().kind, "bad_chunk");
        assert_eq!(seen.capture.as_ref().unwrap().kinds, "");
    }
}

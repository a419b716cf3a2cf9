//! Ollama's /api/generate and /api/chat wire types: our own, every metric optional.
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The request body of either endpoint: options as given; keep_alive and think at the top of
/// the request, where the API reads them (think only when the run sets it).
#[derive(Debug, Serialize)]
pub struct Request<'a> {
    pub model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<&'a [Value]>,
    /// Agent turns: native `tools`, or a `format` (structured actions' schema), sent as built.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<&'a RawValue>,
    pub stream: bool,
    pub options: &'a Map<String, Value>,
    pub keep_alive: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub think: Option<bool>,
}

/// A chat chunk's message: answer text in `content`, the thinking trace in `thinking`.
#[derive(Debug, Default, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub thinking: Option<String>,
    /// Native tool calls: Ollama sends a call as one chunk once its arguments are complete.
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
}

/// One NDJSON line of either stream. An `{"error": ...}` line can arrive after HTTP 200.
#[derive(Debug, Default, Deserialize)]
pub struct Chunk {
    #[serde(default)]
    pub response: Option<String>,
    #[serde(default)]
    pub thinking: Option<String>,
    #[serde(default)]
    pub message: Option<Message>,
    #[serde(default)]
    pub done: Option<bool>,
    #[serde(default)]
    pub done_reason: Option<String>,
    #[serde(default)]
    pub total_duration: Option<u64>,
    #[serde(default)]
    pub load_duration: Option<u64>,
    #[serde(default)]
    pub prompt_eval_count: Option<u64>,
    #[serde(default)]
    pub prompt_eval_duration: Option<u64>,
    #[serde(default)]
    pub eval_count: Option<u64>,
    #[serde(default)]
    pub eval_duration: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
    /// The replay server's send time of this line (CLOCK_MONOTONIC ns; real servers send none).
    /// Any JSON: a stamp of another shape is no stamp, never a failed line.
    #[serde(default)]
    pub t_sent_ns: Option<Value>,
    /// The replay server's arrival time of the request this line answers: the instant its whole
    /// body was in (CLOCK_MONOTONIC ns, the same on every line of a stream).
    #[serde(default)]
    pub t_arrival_ns: Option<Value>,
}

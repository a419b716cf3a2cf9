//! Ollama's /api/generate wire types: our own, every metric optional.
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Serialize)]
pub struct GenerateRequest<'a> {
    pub model: &'a str,
    pub prompt: &'a str,
    pub raw: bool,
    pub stream: bool,
    pub options: &'a Map<String, Value>,
    pub keep_alive: &'a Value,
}

/// One NDJSON line of the stream. An `{"error": ...}` line can arrive after HTTP 200.
#[derive(Debug, Default, Deserialize)]
pub struct GenerateChunk {
    #[serde(default)]
    pub response: Option<String>,
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
}

//! One output line (lib/langbench/schemas/record.schema.json).
use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Serialize)]
pub struct Itl {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    /// How many gaps the percentiles come from.
    pub n: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunError {
    pub kind: String,
    pub message: String,
    /// The client that met the failure (library and version).
    pub client: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Record {
    pub schema_version: u32,
    pub run_id: String,
    pub agent: &'static str,
    pub agent_version: &'static str,
    pub model: String,
    pub endpoint: String,
    pub options: Map<String, Value>,
    pub think: Option<bool>,
    pub warmup: bool,
    pub t0_unix: f64,
    pub new_connection: bool,
    pub connect_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub ttft_answer_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
    pub decode_ms: Option<f64>,
    pub chunks: usize,
    pub chunks_thinking: usize,
    pub chunks_answer: usize,
    pub itl_ms: Itl,
    pub total_duration: Option<u64>,
    pub load_duration: Option<u64>,
    pub prompt_eval_count: Option<u64>,
    pub prompt_eval_duration: Option<u64>,
    pub eval_count: Option<u64>,
    pub eval_duration: Option<u64>,
    pub done_reason: Option<String>,
    pub thinking_chars: usize,
    pub response_chars: usize,
    pub response_sha256: String,
    pub outcome: &'static str,
    pub error: Option<RunError>,
    /// Concurrent mode only: the process's streams, this run's stream, and (open loop) how
    /// much later than its intended send time the request went out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_lag_ms: Option<f64>,
    /// workload agent only: the turn's fields (DESIGN.md, "Agent loops").
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub turn: Option<AgentFields>,
}

/// The action parsed from an answer (tool None: none could be parsed).
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    pub tool: Option<String>,
    pub arguments: Option<Value>,
    pub valid: bool,
}

/// One agent turn's fields, in the Python agent's order.
#[derive(Debug, Serialize)]
pub struct AgentFields {
    pub task_id: String,
    pub turn: usize,
    pub actions: Option<String>,
    pub replay: Option<String>,
    pub max_turns: usize,
    pub messages: usize,
    pub history_sha256: String,
    pub action: Option<Action>,
    pub tool_result: Option<String>,
    pub tool_ms: Option<f64>,
    pub agent_ms: Option<f64>,
    pub task_outcome: Option<&'static str>,
    pub task_error: Option<RunError>,
}

/// Linear interpolation between closest ranks (numpy's default); the Python agent matches.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), Some(2.5));
        assert_eq!(percentile(&v, 1.0), Some(4.0));
        assert!((percentile(&v, 0.95).unwrap() - 3.85).abs() < 1e-12);
        assert_eq!(percentile(&[], 0.5), None);
    }
}

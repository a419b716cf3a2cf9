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

/// Per-chunk lag against the server's send stamps (`t_sent_ns`, the replay server's): the
/// client's parse time less the send time, both on CLOCK_MONOTONIC, in ms; and the send delay
/// before them (`t_arrival_ns`, the instant the server had the whole request, less t0).
#[derive(Debug, Serialize)]
pub struct Lag {
    /// t0 (just before the request went to the HTTP client) to the server's having the whole
    /// request; None when the server stamps no arrival.
    pub send: Option<f64>,
    /// The first stamped chunk's.
    pub first: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// How many chunks carried a stamp.
    pub n: usize,
}

impl Lag {
    /// None when no chunk carried a stamp; `send_ns`: the arrival stamp less t0, where there was one.
    pub fn of(lags_ns: &[i64], send_ns: Option<i64>) -> Option<Lag> {
        let first = *lags_ns.first()? as f64 / 1e6;
        let mut ms: Vec<f64> = lags_ns.iter().map(|&l| l as f64 / 1e6).collect();
        ms.sort_by(|a, b| a.partial_cmp(b).expect("lags are finite"));
        Some(Lag {
            send: send_ns.map(|s| s as f64 / 1e6),
            first,
            p50: percentile(&ms, 0.50)?,
            p99: percentile(&ms, 0.99)?,
            max: *ms.last()?,
            n: ms.len(),
        })
    }
}

/// `capture: true` in the jobs file: one entry per parsed chunk (every NDJSON line; every SSE
/// event's data but `[DONE]`), for `langbench profile`.
#[derive(Debug, Default, Serialize)]
pub struct Capture {
    /// Parse time less t0, whole µs.
    pub t_us: Vec<u64>,
    /// The chunk's raw length: the line without its newline, or the event's data field.
    pub bytes: Vec<usize>,
    /// One char per chunk: `t` thinking, `a` answer, `c` tool call(s), `d` the done line or
    /// the finish_reason chunk, `u` usage only, `e` anything else (c > a > t > d > u > e).
    pub kinds: String,
    /// The token text for t and a; the calls as JSON for c; "" for d, u and e.
    pub text: Vec<String>,
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
    /// Null when no chunk carried a send stamp (every real server).
    pub lag_ms: Option<Lag>,
    /// Only with the jobs file's `capture: true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<Capture>,
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
    use super::{percentile, Lag};

    #[test]
    fn lag_is_null_without_stamps_and_in_ms_with_them() {
        assert!(Lag::of(&[], None).is_none());
        assert!(Lag::of(&[], Some(3)).is_none()); // no send stamp, no lag: an arrival alone is none
        // 1.5, 0.5, 2.5, 4.5 ms: the first as it came, the rest by numpy's interpolation
        let lag = Lag::of(&[1_500_000, 500_000, 2_500_000, 4_500_000], Some(31_250_000)).unwrap();
        assert_eq!(lag.send, Some(31.25));
        assert_eq!(lag.first, 1.5);
        assert_eq!(lag.n, 4);
        assert_eq!(lag.max, 4.5);
        assert!((lag.p50 - 2.0).abs() < 1e-12);
        assert!((lag.p99 - (2.5 + 2.0 * 0.97)).abs() < 1e-9);
        let one = Lag::of(&[7], None).unwrap();
        assert_eq!((one.first, one.p50, one.p99, one.max, one.n), (7e-6, 7e-6, 7e-6, 7e-6, 1));
        assert!(one.send.is_none());
        // the record's field order, send first, and send null without an arrival stamp
        let v = serde_json::to_value(&one).unwrap();
        assert!(v["send"].is_null());
        assert_eq!(serde_json::to_string(&Lag::of(&[1_000_000], Some(2_000_000)).unwrap()).unwrap(),
                   r#"{"send":2.0,"first":1.0,"p50":1.0,"p99":1.0,"max":1.0,"n":1}"#);
    }

    #[test]
    fn percentile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), Some(2.5));
        assert_eq!(percentile(&v, 1.0), Some(4.0));
        assert!((percentile(&v, 0.95).unwrap() - 3.85).abs() < 1e-12);
        assert_eq!(percentile(&[], 0.5), None);
    }
}

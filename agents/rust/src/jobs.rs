//! The jobs file (lib/langbench/schemas/jobs.schema.json), read strictly.
use crate::Error;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jobs {
    pub schema_version: u32,
    pub model: String,
    /// `generate` or `openai-completions` (prompts are strings), `chat` or `openai-chat`
    /// (prompts are message lists): Ollama's /api or an OpenAI-compatible /v1.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Strings for generate, lists of {role, content} messages for chat: checked in `load`.
    pub prompts: Vec<Value>,
    #[serde(default)]
    pub raw: bool,
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Concurrent mode: warm-ups one at a time, then the measured runs in this many streams, on
    /// every endpoint (/api and /v1 alike: DESIGN.md, "Sessions at scale").
    #[serde(default)]
    pub streams: Option<usize>,
    pub runs: Vec<Job>,
    /// `request` (one request per run) or `agent` (each run a task: DESIGN.md, "Agent loops").
    #[serde(default)]
    pub workload: Option<String>,
    #[serde(default = "default_actions")]
    pub actions: String,
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub tables: Vec<Map<String, Value>>,
    /// Native actions only: a `format` sent as is (its key order kept).
    #[serde(default)]
    pub format: Option<Box<RawValue>>,
    /// Each record keeps its stream's chunk trace (record.rs, `Capture`).
    #[serde(default)]
    pub capture: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub run_id: String,
    pub prompt: usize,
    /// Sent to Ollama exactly as given: an absent option and a set one reload differently.
    pub options: Map<String, Value>,
    pub keep_alive: Value,
    /// Request-level `think`, sent only when set (absent and false differ for some models).
    #[serde(default)]
    pub think: Option<bool>,
    pub warmup: bool,
    /// The stream that runs it (default: its index among the measured runs modulo streams).
    #[serde(default)]
    pub stream: Option<usize>,
    /// Open loop: seconds after the start of the measured phase at which it is sent.
    #[serde(default)]
    pub send_at_s: Option<f64>,
    /// workload agent: the task's turn limit, name, tools, table and replay mode.
    #[serde(default)]
    pub max_turns: Option<usize>,
    #[serde(default)]
    pub task_id: Option<String>,
    #[serde(default)]
    pub tools: Option<Vec<String>>,
    #[serde(default)]
    pub table: Option<usize>,
    #[serde(default)]
    pub replay: Option<String>,
}

/// The endpoints whose prompts are message lists (and that can carry an agent's turns).
pub const CHAT_ENDPOINTS: [&str; 2] = ["chat", "openai-chat"];

fn default_timeout() -> f64 {
    600.0
}

fn default_actions() -> String {
    "structured".to_string()
}

fn default_endpoint() -> String {
    "generate".to_string()
}

fn is_messages(prompt: &Value) -> bool {
    prompt.as_array().is_some_and(|msgs| {
        !msgs.is_empty()
            && msgs.iter().all(|m| {
                m.as_object().is_some_and(|o| {
                    o.len() == 2
                        && o.get("role").and_then(Value::as_str).is_some_and(|r| ["system", "user", "assistant"].contains(&r))
                        && o.get("content").and_then(Value::as_str).is_some_and(|c| !c.is_empty())
                })
            })
    })
}

pub fn load(path: &Path) -> Result<Jobs, Error> {
    let p = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| Error::BadJobs(format!("{p}: cannot read jobs file: {e}")))?;
    // serde_path_to_error names the field: "runs[0].prompt: invalid type: ..."
    let de = &mut serde_json::Deserializer::from_str(&text);
    let jobs: Jobs = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        if field == "." {
            Error::BadJobs(format!("{p}: {inner}"))
        } else {
            Error::BadJobs(format!("{p}: field '{field}': {inner}"))
        }
    })?;
    if jobs.schema_version != 1 {
        return Err(Error::BadJobs(format!("{p}: field 'schema_version' must be 1")));
    }
    if jobs.model.is_empty() {
        return Err(Error::BadJobs(format!("{p}: field 'model' must be a non-empty string")));
    }
    if jobs.workload.as_deref() == Some("agent") && !CHAT_ENDPOINTS.contains(&jobs.endpoint.as_str()) {
        return Err(Error::BadJobs(format!("{p}: field 'endpoint' must be chat or openai-chat for workload agent")));
    }
    match jobs.endpoint.as_str() {
        "generate" | "openai-completions" => {
            if jobs.prompts.is_empty() || jobs.prompts.iter().any(|s| s.as_str().map_or(true, str::is_empty)) {
                return Err(Error::BadJobs(format!("{p}: field 'prompts' must be a non-empty list of non-empty strings")));
            }
        }
        "chat" | "openai-chat" => {
            if jobs.prompts.is_empty() || !jobs.prompts.iter().all(is_messages) {
                return Err(Error::BadJobs(format!(
                    "{p}: field 'prompts': endpoint {} needs each prompt as a non-empty list of messages \
                     {{role: system|user|assistant, content: non-empty string}}",
                    jobs.endpoint
                )));
            }
        }
        other => {
            return Err(Error::BadJobs(format!(
                "{p}: field 'endpoint' must be one of generate, chat, openai-chat, openai-completions, got {other:?}"
            )));
        }
    }
    if jobs.runs.is_empty() {
        return Err(Error::BadJobs(format!("{p}: field 'runs' is empty")));
    }
    if jobs.endpoint.starts_with("openai-") {
        // what /v1 cannot carry (the runner refuses it first)
        let e = &jobs.endpoint;
        if jobs.raw {
            return Err(Error::BadJobs(format!("{p}: field 'raw': endpoint {e} has no raw prompt")));
        }
        if let Some(i) = jobs.runs.iter().position(|r| r.think.is_some()) {
            return Err(Error::BadJobs(format!("{p}: field 'runs[{i}].think': endpoint {e} has no think field")));
        }
    }
    if !(jobs.timeout_s > 0.0) {
        return Err(Error::BadJobs(format!("{p}: field 'timeout_s' must be > 0")));
    }
    let streams = jobs.streams.unwrap_or(1);
    if streams < 1 {
        return Err(Error::BadJobs(format!("{p}: field 'streams' must be at least 1")));
    }
    for (i, run) in jobs.runs.iter().enumerate() {
        if run.run_id.is_empty() {
            return Err(Error::BadJobs(format!("{p}: field 'runs[{i}].run_id' must be a non-empty string")));
        }
        if run.prompt >= jobs.prompts.len() {
            return Err(Error::BadJobs(format!("{p}: field 'runs[{i}].prompt' is out of range")));
        }
        if !(run.keep_alive.is_i64() || run.keep_alive.is_u64() || run.keep_alive.is_string()) {
            return Err(Error::BadJobs(format!("{p}: field 'runs[{i}].keep_alive' must be int/str")));
        }
        if run.stream.is_some_and(|k| k >= streams) {
            return Err(Error::BadJobs(format!("{p}: field 'runs[{i}].stream' must be in [0, streams)")));
        }
        if let Some(at) = run.send_at_s {
            if !(at.is_finite() && at >= 0.0) {
                return Err(Error::BadJobs(format!("{p}: field 'runs[{i}].send_at_s' must be a finite number ≥ 0")));
            }
            if jobs.streams.is_none() {
                return Err(Error::BadJobs(format!(
                    "{p}: field 'runs[{i}].send_at_s' needs 'streams' (the concurrent mode)"
                )));
            }
        }
    }
    let measured: Vec<&Job> = jobs.runs.iter().filter(|r| !r.warmup).collect();
    let timed = measured.iter().filter(|r| r.send_at_s.is_some()).count();
    if timed != 0 && timed != measured.len() {
        return Err(Error::BadJobs(format!(
            "{p}: either every measured run has 'send_at_s' (open loop) or none has"
        )));
    }
    check_agent(&p.to_string(), &text, &jobs)?;
    Ok(jobs)
}

fn check_tools(p: &str, tools: &[String], key: &str) -> Result<(), Error> {
    for (j, name) in tools.iter().enumerate() {
        if !crate::tools::BUILTIN_TOOLS.contains(&name.as_str()) {
            return Err(Error::BadJobs(format!(
                "{p}: field '{key}[{j}]': unknown tool {name:?} (built-ins: {})",
                crate::tools::BUILTIN_TOOLS.join(", ")
            )));
        }
        if tools[..j].contains(name) {
            return Err(Error::BadJobs(format!("{p}: field '{key}' names a tool twice")));
        }
    }
    Ok(())
}

/// workload: agent (DESIGN.md, "Agent loops"): every run is a task of up to max_turns turns.
fn check_agent(p: &str, text: &str, jobs: &Jobs) -> Result<(), Error> {
    let bad = |m: String| Err(Error::BadJobs(format!("{p}: {m}")));
    let workload = jobs.workload.as_deref().unwrap_or("request");
    if workload == "request" {
        // defaults cannot tell absent from given: look at the file's own top-level keys
        let top: Map<String, Value> = serde_json::from_str(text).unwrap_or_default();
        for key in ["actions", "tools", "tables", "format"] {
            if top.contains_key(key) {
                return bad(format!("field '{key}' needs 'workload: agent'"));
            }
        }
        for (i, run) in jobs.runs.iter().enumerate() {
            let given = [("max_turns", run.max_turns.is_some()), ("task_id", run.task_id.is_some()),
                         ("tools", run.tools.is_some()), ("table", run.table.is_some()), ("replay", run.replay.is_some())];
            if let Some((key, _)) = given.iter().find(|(_, g)| *g) {
                return bad(format!("field 'runs[{i}].{key}' needs 'workload: agent'"));
            }
        }
        return Ok(());
    }
    if workload != "agent" {
        return bad(format!("field 'workload' must be one of request, agent, got {workload:?}"));
    }
    if !CHAT_ENDPOINTS.contains(&jobs.endpoint.as_str()) {
        return bad("field 'endpoint' must be chat or openai-chat for workload agent".into());
    }
    if jobs.runs[0].send_at_s.is_some() {
        return bad("field 'runs[0].send_at_s': workload agent runs closed loop only".into());
    }
    if jobs.actions != "structured" && jobs.actions != "native" {
        return bad(format!("field 'actions' must be one of structured, native, got {:?}", jobs.actions));
    }
    if jobs.format.is_some() && jobs.actions != "native" {
        return bad("field 'format': structured actions send their own schema".into());
    }
    check_tools(p, &jobs.tools, "tools")?;
    for (t, table) in jobs.tables.iter().enumerate() {
        if let Some((k, _)) = table.iter().find(|(_, v)| !v.is_string()) {
            return bad(format!("field 'tables[{t}].{k}' must be str"));
        }
    }
    for (i, run) in jobs.runs.iter().enumerate() {
        let Some(max_turns) = run.max_turns else {
            return bad(format!("missing field 'runs[{i}].max_turns'"));
        };
        if max_turns < 1 {
            return bad(format!("field 'runs[{i}].max_turns' must be at least 1"));
        }
        if let Some(tools) = &run.tools {
            check_tools(p, tools, &format!("runs[{i}].tools"))?;
        }
        if run.table.is_some_and(|t| t >= jobs.tables.len()) {
            return bad(format!("field 'runs[{i}].table' is out of range"));
        }
        match run.replay.as_deref() {
            Some("fixed") | Some("regenerated") => {
                if jobs.prompts[run.prompt][0]["role"] == "assistant" {
                    return bad(format!(
                        "field 'runs[{i}].prompt': a replayed conversation cannot open with an assistant message"
                    ));
                }
            }
            Some(other) => {
                return bad(format!("field 'runs[{i}].replay' must be one of fixed, regenerated, got {other:?}"));
            }
            None => {
                if run.tools.as_ref().unwrap_or(&jobs.tools).is_empty() {
                    return bad(format!(
                        "field 'runs[{i}].tools': a task needs at least one tool (its own 'tools' or the jobs file's)"
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// `load` of this jobs file, written to a file of its own.
    fn load_value(v: Value) -> Result<Jobs, Error> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("langbench-jobs-test-{}-{n}.json", std::process::id()));
        std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
        let out = load(&path);
        let _ = std::fs::remove_file(&path);
        out
    }

    fn run(i: usize, warmup: bool) -> Value {
        json!({"run_id": format!("r{i}"), "prompt": 0, "options": {"max_tokens": 16}, "keep_alive": -1, "warmup": warmup})
    }

    fn v1(endpoint: &str, extra: Value) -> Value {
        let prompt = if endpoint == "openai-chat" { json!([{"role": "user", "content": "go"}]) } else { json!("go") };
        let mut v = json!({"schema_version": 1, "model": "m", "endpoint": endpoint, "prompts": [prompt],
                           "runs": [run(0, true), run(1, false), run(2, false), run(3, false)]});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v
    }

    fn refusal(v: Value) -> String {
        match load_value(v) {
            Err(Error::BadJobs(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn streams_load_on_v1_closed_loop_open_loop_and_agent_tasks() {
        for endpoint in ["openai-chat", "openai-completions"] {
            let jobs = load_value(v1(endpoint, json!({"streams": 1024}))).unwrap();
            assert_eq!(jobs.streams, Some(1024));
            // each run on its own stream, and open loop
            let mut v = v1(endpoint, json!({"streams": 2}));
            for (i, r) in v["runs"].as_array_mut().unwrap().iter_mut().enumerate().skip(1) {
                r["stream"] = json!(i % 2);
                r["send_at_s"] = json!(0.1 * i as f64);
            }
            assert!(load_value(v).unwrap().runs.iter().skip(1).all(|r| r.send_at_s.is_some()));
        }
        let mut v = v1("openai-chat", json!({"streams": 3, "workload": "agent", "tools": ["add"]}));
        for r in v["runs"].as_array_mut().unwrap() {
            r["max_turns"] = json!(4);
        }
        assert_eq!(load_value(v).unwrap().workload.as_deref(), Some("agent"));
    }

    #[test]
    fn v1_still_refuses_what_it_cannot_carry_and_streams_keep_their_bounds() {
        assert!(refusal(v1("openai-chat", json!({"streams": 0}))).contains("field 'streams' must be at least 1"));
        let mut v = v1("openai-chat", json!({"streams": 2}));
        v["runs"][1]["stream"] = json!(2);
        assert!(refusal(v).contains("field 'runs[1].stream' must be in [0, streams)"));
        assert!(refusal(v1("openai-completions", json!({"streams": 2, "raw": true}))).contains("field 'raw'"));
        let mut v = v1("openai-chat", json!({"streams": 2}));
        v["runs"][2]["think"] = json!(true);
        assert!(refusal(v).contains("field 'runs[2].think'"));
        // open loop still needs the concurrent mode, on /v1 as on /api
        let mut v = v1("openai-chat", json!({}));
        v["runs"][1]["send_at_s"] = json!(0.0);
        assert!(refusal(v).contains("needs 'streams'"));
    }
}

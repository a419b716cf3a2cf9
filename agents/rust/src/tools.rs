//! The agent loop's built-in tools and bookkeeping (DESIGN.md, "Agent loops"): the same, line for
//! line, as agents/python/agent_tools.py. Every result string, every schema byte and the history
//! digest are identical in the three clients. Nothing here does I/O or sleeps: the loop
//! (src/agent.rs) sends, reads, calls `Task::act`, sleeps what it returns, then `Task::after_tool`.
use crate::jobs::{Job, Jobs};
use crate::record::{Action, AgentFields, RunError};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::time::Instant;

pub const BUILTIN_TOOLS: [&str; 4] = ["lookup", "add", "wait", "finish"];
pub const WAIT_MAX_MS: i64 = 10_000;

/// Structured actions: one JSON schema per tool, as literal text, so that every client sends the
/// same bytes in the same key order (the server's grammar follows the order of `properties`).
fn action_schema(tool: &str) -> &'static str {
    match tool {
        "lookup" => r#"{"type":"object","properties":{"tool":{"const":"lookup"},"arguments":{"type":"object","properties":{"key":{"type":"string"}},"required":["key"]}},"required":["tool","arguments"]}"#,
        "add" => r#"{"type":"object","properties":{"tool":{"const":"add"},"arguments":{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"]}},"required":["tool","arguments"]}"#,
        "wait" => r#"{"type":"object","properties":{"tool":{"const":"wait"},"arguments":{"type":"object","properties":{"ms":{"type":"integer","minimum":0,"maximum":10000}},"required":["ms"]}},"required":["tool","arguments"]}"#,
        _ => r#"{"type":"object","properties":{"tool":{"const":"finish"},"arguments":{"type":"object","properties":{"answer":{"type":"string"}},"required":["answer"]}},"required":["tool","arguments"]}"#,
    }
}

/// Native tool calls: Ollama's `tools` entries (only the fields its api.ToolProperty carries).
fn native_tool(tool: &str) -> &'static str {
    match tool {
        "lookup" => r#"{"type":"function","function":{"name":"lookup","description":"Read the value stored under a key of the task's table.","parameters":{"type":"object","required":["key"],"properties":{"key":{"type":"string","description":"the key to read"}}}}}"#,
        "add" => r#"{"type":"function","function":{"name":"add","description":"Add two 64-bit integers.","parameters":{"type":"object","required":["a","b"],"properties":{"a":{"type":"integer","description":"first addend"},"b":{"type":"integer","description":"second addend"}}}}}"#,
        "wait" => r#"{"type":"function","function":{"name":"wait","description":"Wait for a number of milliseconds (0 to 10000), as an external API would.","parameters":{"type":"object","required":["ms"],"properties":{"ms":{"type":"integer","description":"milliseconds to wait, 0 to 10000"}}}}}"#,
        _ => r#"{"type":"function","function":{"name":"finish","description":"End the task with its answer.","parameters":{"type":"object","required":["answer"],"properties":{"answer":{"type":"string","description":"the final answer"}}}}}"#,
    }
}

/// The `format` of a structured-action request: any one of the offered tools.
pub fn action_format(tools: &[String]) -> String {
    let parts: Vec<&str> = tools.iter().map(|t| action_schema(t)).collect();
    format!("{{\"anyOf\":[{}]}}", parts.join(","))
}

/// The `tools` of a native request.
pub fn native_tools(tools: &[String]) -> String {
    let parts: Vec<&str> = tools.iter().map(|t| native_tool(t)).collect();
    format!("[{}]", parts.join(","))
}

/// /v1's `response_format` for a structured action: the same schema as /api's `format`.
pub fn response_format(schema: &str) -> Value {
    json!({"type": "json_schema", "json_schema": {"name": "action", "schema": serde_json::from_str::<Value>(schema).expect("schemas are JSON")}})
}

/// SHA-256 of the messages as JSON with sorted keys, `,`/`:` separators, UTF-8 unescaped:
/// serde_json's Map is ordered by key (no `preserve_order`) and writes non-ASCII as is.
pub fn history_sha256(messages: &[Value]) -> String {
    let text = serde_json::to_string(messages).expect("messages serialise");
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// An integer as JSON wrote it: Some(its value) in i64, Some(None) for an integer literal outside
/// i64 (arbitrary_precision keeps the literal), None when it is no integer at all.
fn integer(v: &Value) -> Option<Option<i64>> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(Some(i));
    }
    let text = n.to_string();
    let digits = text.strip_prefix('-').unwrap_or(&text);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(None)
}

fn wanted(tool: &str) -> &'static [&'static str] {
    match tool {
        "lookup" => &["key"],
        "add" => &["a", "b"],
        "wait" => &["ms"],
        _ => &["answer"],
    }
}

/// None when `args` are the tool's arguments, else what is wrong (the Python words).
pub fn check_arguments(tool: &str, args: &Value) -> Option<String> {
    let Some(obj) = args.as_object() else {
        return Some("arguments is not an object".into());
    };
    let want = wanted(tool);
    let mut have: Vec<&str> = obj.keys().map(String::as_str).collect();
    let mut need: Vec<&str> = want.to_vec();
    have.sort_unstable();
    need.sort_unstable();
    if have != need {
        return Some(format!("{tool} takes exactly {}", want.join(", ")));
    }
    if tool == "lookup" || tool == "finish" {
        return (!obj[want[0]].is_string()).then(|| format!("{} is not a string", want[0]));
    }
    if !want.iter().all(|k| integer(&obj[*k]).is_some()) {
        return Some(format!("{} must be integers", want.join(" and ")));
    }
    if tool == "wait" && !matches!(integer(&obj["ms"]), Some(Some(ms)) if (0..=WAIT_MAX_MS).contains(&ms)) {
        return Some(format!("ms must be in 0..{WAIT_MAX_MS}"));
    }
    None
}

/// (result string, ms the caller must sleep). finish has no result.
pub fn run_tool(tool: &str, args: &Value, table: &Map<String, Value>) -> (Option<String>, i64) {
    match tool {
        "lookup" => {
            let key = args["key"].as_str().unwrap_or_default();
            match table.get(key).and_then(Value::as_str) {
                Some(v) => (Some(v.to_string()), 0),
                None => (Some(format!("unknown key: {key}")), 0),
            }
        }
        "add" => {
            let sum = match (integer(&args["a"]), integer(&args["b"])) {
                (Some(Some(a)), Some(Some(b))) => a.checked_add(b),
                _ => None,
            };
            (Some(sum.map_or_else(|| "overflow".to_string(), |s| s.to_string())), 0)
        }
        "wait" => {
            let ms = integer(&args["ms"]).flatten().unwrap_or(0);
            (Some(format!("waited {ms} ms")), ms)
        }
        _ => (None, 0),
    }
}

/// A recorded conversation's requests: each the index where an assistant message would follow.
pub fn replay_turns(messages: &[Value]) -> Vec<usize> {
    let role = |m: &Value| m["role"].as_str().unwrap_or_default().to_string();
    let mut cuts: Vec<usize> = messages.iter().enumerate().filter(|(_, m)| role(m) == "assistant").map(|(i, _)| i).collect();
    if messages.last().is_some_and(|m| role(m) != "assistant") {
        cuts.push(messages.len());
    }
    cuts
}

fn raw(text: String) -> Box<RawValue> {
    RawValue::from_string(text).expect("built-in schemas are JSON")
}

/// One task's conversation and the per-turn fields of its records (see agent_tools.Task).
pub struct Task<'a> {
    client: &'static str,
    job: &'a Job,
    pub actions: &'a str,
    replay: Option<&'a str>,
    max_turns: usize,
    tools: Vec<String>,
    table: Map<String, Value>,
    script: &'a [Value],
    cuts: Vec<usize>,
    pub history: Vec<Value>,
    pub format: Option<Box<RawValue>>,
    pub tools_json: Option<Box<RawValue>>,
    pub turn: i64,
    pub over: bool,
    sent_messages: usize,
    prev_t_last: Option<Instant>,
    prev_tool_ms: f64,
    prev_book_ms: f64,
    t_last: Option<Instant>,
    t_tool: Option<Instant>,
    t_book: Option<Instant>,
    own_ms: Option<f64>,
    action: Option<Action>,
    tool_result: Option<String>,
    tool_ms: Option<f64>,
    outcome: Option<&'static str>,
    error: Option<RunError>,
    call: Option<(String, Value, String, Value)>,
    /// /v1's message shapes (tool calls with an id and their arguments' text, `tool_call_id`).
    v1: bool,
    pending: Vec<Value>,
}

impl<'a> Task<'a> {
    pub fn new(jobs: &'a Jobs, job: &'a Job, client: &'static str) -> Task<'a> {
        let opening = jobs.prompts[job.prompt].as_array().map(Vec::as_slice).unwrap_or_default();
        let replay = job.replay.as_deref();
        let max_turns = job.max_turns.unwrap_or(1);
        let tools = job.tools.clone().unwrap_or_else(|| jobs.tools.clone());
        let table = job.table.and_then(|t| jobs.tables.get(t)).cloned().unwrap_or_default();
        let (cuts, history) = match replay {
            Some(_) => {
                let mut cuts = replay_turns(opening);
                cuts.truncate(max_turns);
                let first = cuts.first().copied().unwrap_or(opening.len());
                (cuts, opening[..first].to_vec())
            }
            None => (Vec::new(), opening.to_vec()),
        };
        let (format, tools_json) = match (replay, jobs.actions.as_str()) {
            (Some(_), _) => (None, None),
            (None, "native") => (jobs.format.clone(), Some(raw(native_tools(&tools)))),
            (None, _) => (Some(raw(action_format(&tools))), None),
        };
        Task {
            client,
            job,
            actions: &jobs.actions,
            replay,
            max_turns,
            tools,
            table,
            script: opening,
            cuts,
            sent_messages: history.len(),
            history,
            format,
            tools_json,
            turn: -1,
            over: false,
            prev_t_last: None,
            prev_tool_ms: 0.0,
            prev_book_ms: 0.0,
            t_last: None,
            t_tool: None,
            t_book: None,
            own_ms: None,
            action: None,
            tool_result: None,
            tool_ms: None,
            outcome: None,
            error: None,
            call: None,
            pending: Vec::new(),
            v1: jobs.endpoint.starts_with("openai-"),
        }
    }

    /// At t0: agent_ms = from the previous turn's t_last to this t0, less the previous turn's
    /// tool time and record keeping (None at turn 0).
    pub fn before_send(&mut self, t0: Instant) {
        self.turn += 1;
        self.own_ms = self.prev_t_last.map(|t| (t0 - t).as_secs_f64() * 1e3 - self.prev_tool_ms - self.prev_book_ms);
        self.sent_messages = self.history.len();
        self.action = None;
        self.tool_result = None;
        self.tool_ms = None;
    }

    fn end(&mut self, outcome: &'static str, kind: Option<&str>, message: String) {
        self.over = true;
        self.outcome = Some(outcome);
        self.error = kind.map(|k| RunError { kind: k.to_string(), message, client: self.client });
    }

    fn invalid(&mut self, kind: &str, message: &str) -> f64 {
        self.action = Some(Action { tool: None, arguments: None, valid: false });
        self.end("invalid_action", Some(kind), message.to_string());
        0.0
    }

    /// Parse the answer into an action and run its tool; returns the ms to sleep (wait).
    pub fn act(&mut self, text: &str, tool_calls: &[Value], error: Option<&RunError>, t_last: Option<Instant>, timeout_s: f64) -> f64 {
        let now = Instant::now();
        self.t_tool = Some(now);
        self.t_last = Some(t_last.unwrap_or(now));
        if let Some(e) = error {
            self.end("error", Some(&e.kind.clone()), e.message.clone());
            return 0.0;
        }
        if self.replay.is_some() {
            return self.replay_next(text);
        }
        let (name, args) = if self.actions == "native" {
            let Some(call) = tool_calls.first() else {
                return self.invalid("no_tool_call", "the answer holds no tool call");
            };
            let function = &call["function"];
            let Some(name) = function["name"].as_str() else {
                return self.invalid("bad_tool_call", "the tool call has no function name");
            };
            (name.to_string(), function.get("arguments").cloned().unwrap_or(Value::Null))
        } else {
            let doc: Value = match serde_json::from_str(text) {
                Ok(d) => d,
                Err(e) => return self.invalid("not_json", &format!("the answer is not JSON: {e}")),
            };
            match doc.as_object() {
                Some(o) if o.len() == 2 && o.get("tool").is_some_and(Value::is_string) && o.contains_key("arguments") => {
                    (o["tool"].as_str().unwrap_or_default().to_string(), o["arguments"].clone())
                }
                _ => return self.invalid("not_an_action", r#"the answer is not {"tool": NAME, "arguments": {...}}"#),
            }
        };
        self.action = Some(Action { tool: Some(name.clone()), arguments: Some(args.clone()), valid: false });
        if !self.tools.iter().any(|t| *t == name) {
            let message = format!("no tool {name:?} in this task (tools: {})", self.tools.join(", "));
            self.end("unknown_tool", Some("unknown_tool"), message);
            return 0.0;
        }
        if let Some(problem) = check_arguments(&name, &args) {
            self.end("invalid_action", Some("bad_arguments"), format!("{name}: {problem}"));
            return 0.0;
        }
        if let Some(a) = self.action.as_mut() {
            a.valid = true;
        }
        let (result, sleep_ms) = run_tool(&name, &args, &self.table);
        self.tool_result = result;
        self.call = Some((name.clone(), args, text.to_string(), tool_calls.first().cloned().unwrap_or(Value::Null)));
        if name == "finish" {
            self.end("finished", None, String::new());
            return 0.0;
        }
        if sleep_ms as f64 > timeout_s * 1e3 {
            self.tool_result = None;
            let message = format!("wait {sleep_ms} ms is longer than the run's timeout ({timeout_s} s)");
            self.end("error", Some("tool_timeout"), message);
            return timeout_s * 1e3;
        }
        sleep_ms as f64
    }

    fn replay_next(&mut self, text: &str) -> f64 {
        let k = self.turn as usize;
        let Some(&end) = self.cuts.get(k + 1) else {
            let whole = self.cuts.len() == replay_turns(self.script).len();
            self.end(if whole { "finished" } else { "max_turns" }, None, String::new());
            return 0.0;
        };
        let mut recorded: Vec<Value> = self.script[self.cuts[k]..end].to_vec();
        if self.replay == Some("regenerated") && recorded.first().is_some_and(|m| m["role"] == "assistant") {
            recorded[0] = json!({"role": "assistant", "content": text});
        }
        self.pending = recorded;
        0.0
    }

    pub fn after_tool(&mut self) {
        let now = Instant::now();
        let valid = self.action.as_ref().is_some_and(|a| a.valid);
        self.tool_ms = Some(match (valid, self.t_tool) {
            (true, Some(t)) => (now - t).as_secs_f64() * 1e3,
            _ => 0.0,
        });
        if !self.over && self.replay.is_none() {
            if let Some((name, args, text, call)) = self.call.take() {
                let result = self.tool_result.clone().unwrap_or_default();
                if self.actions == "native" && self.v1 {
                    // the call as it came (its arguments' own text)
                    let id = call.get("id").cloned().unwrap_or(Value::Null);
                    let arguments = call.get("arguments_text").cloned().unwrap_or(json!(""));
                    self.history.push(json!({"role": "assistant", "content": text, "tool_calls": [
                        {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}]}));
                    self.history.push(json!({"role": "tool", "content": result, "tool_call_id": id}));
                } else if self.actions == "native" {
                    self.history.push(json!({"role": "assistant", "content": text,
                                             "tool_calls": [{"function": {"name": name, "arguments": args}}]}));
                    self.history.push(json!({"role": "tool", "content": result, "tool_name": name}));
                } else {
                    self.history.push(json!({"role": "assistant", "content": text}));
                    self.history.push(json!({"role": "user", "content": format!("{name} returned: {result}")}));
                }
            }
        } else if !self.over {
            self.history.append(&mut self.pending);
        }
        if !self.over && (self.turn + 1) as usize >= self.max_turns {
            self.end("max_turns", None, String::new());
        }
        self.t_book = Some(Instant::now());
    }

    /// The per-turn fields of this turn's record.
    pub fn fields(&mut self) -> AgentFields {
        let messages = &self.history[..self.sent_messages];
        AgentFields {
            task_id: self.job.task_id.clone().unwrap_or_else(|| self.job.run_id.clone()),
            turn: self.turn.max(0) as usize,
            actions: if self.replay.is_some() { None } else { Some(self.actions.to_string()) },
            replay: self.replay.map(str::to_string),
            max_turns: self.max_turns,
            messages: messages.len(),
            history_sha256: history_sha256(messages),
            action: self.action.clone(),
            tool_result: self.tool_result.clone(),
            tool_ms: if self.replay.is_some() { None } else { self.tool_ms },
            agent_ms: self.own_ms,
            task_outcome: if self.over { self.outcome } else { None },
            task_error: if self.over { self.error.clone() } else { None },
        }
    }

    /// Record keeping (hashing, writing) is the harness's, not the agent's: left out of agent_ms.
    pub fn after_record(&mut self) {
        let now = Instant::now();
        self.prev_t_last = self.t_last;
        self.prev_tool_ms = self.tool_ms.unwrap_or(0.0);
        self.prev_book_ms = self.t_book.map_or(0.0, |t| (now - t).as_secs_f64() * 1e3);
    }
}

//! The profile (`python -m langbench profile RUN` writes it): read once, checked, and every text
//! pre-escaped, so that a chunk is written by copying bytes. Leaked: it lives as long as the process.
use crate::json::escape;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Generate,
    Chat,
    OpenaiChat,
    OpenaiCompletions,
}

impl Endpoint {
    pub fn parse(s: &str) -> Option<Endpoint> {
        Some(match s {
            "generate" => Endpoint::Generate,
            "chat" => Endpoint::Chat,
            "openai-chat" => Endpoint::OpenaiChat,
            "openai-completions" => Endpoint::OpenaiCompletions,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Think,
    Answer,
    Calls,
    Empty,
    Usage,
    Done,
}

impl Kind {
    pub fn is_token(self) -> bool {
        matches!(self, Kind::Think | Kind::Answer | Kind::Calls)
    }
}

#[derive(Debug)]
pub struct Chunk {
    pub kind: Kind,
    /// The text, escaped for the inside of a JSON string.
    pub text: Box<[u8]>,
    /// Tool calls as /api writes them: `{"function":{"name":..,"arguments":{..}}},...` (no brackets).
    pub calls_api: Box<[u8]>,
    /// Tool calls as /v1 writes them (arguments a JSON string), no brackets.
    pub calls_v1: Box<[u8]>,
}

impl Chunk {
    pub fn bare(kind: Kind) -> Chunk {
        Chunk { kind, text: Box::default(), calls_api: Box::default(), calls_v1: Box::default() }
    }
}

pub static SYNTHETIC_DONE: std::sync::LazyLock<Chunk> = std::sync::LazyLock::new(|| Chunk::bare(Kind::Done));

/// The captured done line's numbers (all read, not all used: eval_count is the tokens sent).
#[derive(Debug, Default)]
#[allow(dead_code)]
pub struct Final {
    pub done_reason: Option<String>,
    pub prompt_eval_count: Option<u64>,
    pub eval_count: Option<u64>,
    pub total_duration: Option<u64>,
    pub load_duration: Option<u64>,
    pub prompt_eval_duration: Option<u64>,
    pub eval_duration: Option<u64>,
}

#[derive(Debug)]
pub struct Content {
    pub chunks: Vec<Chunk>,
    pub fin: Final,
    pub has_calls: bool,
    /// Indices of the answer chunks: what a token limit beyond the content repeats.
    pub answers: Vec<usize>,
}

#[derive(Debug)]
pub struct Donor {
    pub id: String,
    pub endpoint: Option<Endpoint>,
    pub concurrency: u32,
    pub cached: Option<bool>,
    pub prompt_tokens: u64,
    pub ttft_ns: u64,
    pub gaps_ns: Vec<u64>,
    pub content: Content,
}

#[derive(Debug)]
pub struct Profile {
    pub server_version: String,
    pub model: String,
    pub models: Vec<Value>,
    pub donors: Vec<Donor>,
    pub turns: HashMap<String, Content>,
}

#[derive(Deserialize)]
struct RawProfile {
    schema_version: Value,
    kind: Option<String>,
    #[serde(default)]
    source: Value,
    model: Option<String>,
    #[serde(default)]
    models: Vec<Value>,
    donors: Vec<RawDonor>,
    #[serde(default)]
    turns: BTreeMap<String, RawTurn>,
}

#[derive(Deserialize)]
struct RawDonor {
    id: Value,
    endpoint: Option<String>,
    concurrency: Option<u32>,
    cached: Option<bool>,
    prompt_tokens: Option<f64>,
    ttft_us: f64,
    #[serde(default)]
    gaps_us: Vec<f64>,
    chunks: Vec<RawChunk>,
    #[serde(default, rename = "final")]
    fin: RawFinal,
}

#[derive(Deserialize)]
struct RawTurn {
    chunks: Vec<RawChunk>,
    #[serde(default, rename = "final")]
    fin: RawFinal,
}

#[derive(Deserialize)]
struct RawChunk {
    k: String,
    text: Option<String>,
    calls: Option<Vec<RawCall>>,
}

#[derive(Deserialize)]
struct RawCall {
    name: String,
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize, Default)]
struct RawFinal {
    done_reason: Option<String>,
    prompt_eval_count: Option<f64>,
    eval_count: Option<f64>,
    total_duration: Option<f64>,
    load_duration: Option<f64>,
    prompt_eval_duration: Option<f64>,
    eval_duration: Option<f64>,
}

fn count(v: Option<f64>) -> Option<u64> {
    v.filter(|x| x.is_finite() && *x >= 0.0).map(|x| x.round() as u64)
}

fn us_to_ns(us: f64, what: &str) -> Result<u64, String> {
    if !us.is_finite() || us < 0.0 {
        return Err(format!("{what} is {us}: it must be a finite number of microseconds >= 0"));
    }
    Ok((us * 1000.0).round() as u64)
}

fn chunk(raw: RawChunk, at: &str) -> Result<Chunk, String> {
    let kind = match raw.k.as_str() {
        "t" => Kind::Think,
        "a" => Kind::Answer,
        "c" => Kind::Calls,
        "e" => Kind::Empty,
        "u" => Kind::Usage,
        "d" => Kind::Done,
        other => return Err(format!("{at}: unknown chunk kind {other:?} (expected t, a, c, e, u or d)")),
    };
    let mut c = Chunk::bare(kind);
    c.text = escape(raw.text.as_deref().unwrap_or(""));
    if kind == Kind::Calls {
        let calls = raw.calls.filter(|c| !c.is_empty()).ok_or_else(|| format!("{at}: a c chunk needs a non-empty calls list"))?;
        let (mut api, mut v1) = (Vec::new(), Vec::new());
        for (i, call) in calls.iter().enumerate() {
            let args = serde_json::to_string(&call.arguments).expect("a JSON value serialises");
            let name = escape(&call.name);
            if i > 0 {
                api.push(b',');
                v1.push(b',');
            }
            api.extend_from_slice(b"{\"function\":{\"name\":\"");
            api.extend_from_slice(&name);
            api.extend_from_slice(b"\",\"arguments\":");
            api.extend_from_slice(args.as_bytes());
            api.extend_from_slice(b"}}");
            v1.extend_from_slice(format!("{{\"index\":{i},\"id\":\"call_{i}\",\"type\":\"function\",\"function\":{{\"name\":\"").as_bytes());
            v1.extend_from_slice(&name);
            v1.extend_from_slice(b"\",\"arguments\":\"");
            v1.extend_from_slice(&escape(&args));
            v1.extend_from_slice(b"\"}}");
        }
        c.calls_api = api.into_boxed_slice();
        c.calls_v1 = v1.into_boxed_slice();
    }
    Ok(c)
}

fn content(raw: Vec<RawChunk>, fin: RawFinal, at: &str) -> Result<Content, String> {
    let chunks = raw.into_iter().enumerate().map(|(i, c)| chunk(c, &format!("{at} chunk {i}"))).collect::<Result<Vec<_>, _>>()?;
    let has_calls = chunks.iter().any(|c| c.kind == Kind::Calls);
    let answers = chunks.iter().enumerate().filter(|(_, c)| c.kind == Kind::Answer).map(|(i, _)| i).collect();
    let fin = Final {
        done_reason: fin.done_reason,
        prompt_eval_count: count(fin.prompt_eval_count),
        eval_count: count(fin.eval_count),
        total_duration: count(fin.total_duration),
        load_duration: count(fin.load_duration),
        prompt_eval_duration: count(fin.prompt_eval_duration),
        eval_duration: count(fin.eval_duration),
    };
    Ok(Content { chunks, fin, has_calls, answers })
}

/// Parse and check a profile's text; the error is one line that names the cause.
pub fn parse(text: &str) -> Result<Profile, String> {
    let raw: RawProfile = serde_json::from_str(text).map_err(|e| format!("not a replay profile: {e}"))?;
    if raw.schema_version.as_u64() != Some(1) {
        return Err(format!("schema_version is {}, this server reads 1", raw.schema_version));
    }
    if raw.kind.as_deref() != Some("langbench-replay-profile") {
        return Err(format!("kind is {:?}, expected \"langbench-replay-profile\"", raw.kind.unwrap_or_default()));
    }
    if raw.donors.is_empty() {
        return Err("the profile has no donors: nothing to replay".into());
    }
    let mut donors = Vec::with_capacity(raw.donors.len());
    for (i, d) in raw.donors.into_iter().enumerate() {
        let id = match &d.id {
            Value::String(s) => s.clone(),
            Value::Null => format!("donor-{i}"),
            other => other.to_string(),
        };
        let at = format!("donor {id}");
        let endpoint = match d.endpoint.as_deref() {
            None => None,
            Some(e) => Some(Endpoint::parse(e).ok_or_else(|| {
                format!("{at}: unknown endpoint {e:?} (expected generate, chat, openai-chat or openai-completions)")
            })?),
        };
        let ttft_ns = us_to_ns(d.ttft_us, &format!("{at}: ttft_us"))?;
        let gaps_ns = d.gaps_us.iter().map(|&g| us_to_ns(g, &format!("{at}: a gap"))).collect::<Result<Vec<_>, _>>()?;
        if d.chunks.is_empty() {
            return Err(format!("{at} has no chunks"));
        }
        let content = content(d.chunks, d.fin, &at)?;
        let prompt_tokens = count(d.prompt_tokens).or(content.fin.prompt_eval_count).unwrap_or(0);
        donors.push(Donor { id, endpoint, concurrency: d.concurrency.unwrap_or(1).max(1), cached: d.cached, prompt_tokens, ttft_ns, gaps_ns, content });
    }
    let mut turns = HashMap::new();
    for (key, t) in raw.turns {
        let at = format!("turn {key}");
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{at}: a turn's key is the history's SHA-256 in hex (64 characters)"));
        }
        turns.insert(key.to_ascii_lowercase(), content(t.chunks, t.fin, &at)?);
    }
    let server_version = raw.source.get("server_version").and_then(Value::as_str).unwrap_or("0.0.0").to_string();
    let model = raw.model.or_else(|| raw.models.first().and_then(|m| m.get("name")).and_then(Value::as_str).map(String::from)).unwrap_or_else(|| "replay".into());
    Ok(Profile { server_version, model, models: raw.models, donors, turns })
}

pub fn load(path: &str) -> Result<&'static Profile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the profile {path}: {e}"))?;
    let p = parse(&text).map_err(|e| format!("bad profile {path}: {e}"))?;
    Ok(Box::leak(Box::new(p)))
}

//! The HTTP side: routes, request parsing, and the stream a request starts.
use crate::plan::{self, Fault, Rng};
use crate::profile::{Endpoint, Kind, SYNTHETIC_DONE};
use crate::sched::mono_ns;
use crate::state::{self, config};
use crate::stream::{Proto, Stream};
use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::task::{Context, Poll};

pub enum Body {
    Full(Option<Bytes>),
    Stream(Box<Stream>),
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(s) => Pin::new(&mut **s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

fn full(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder().status(status).header("content-type", ctype).body(Body::Full(Some(body.into()))).unwrap()
}

fn json_resp(status: StatusCode, v: String) -> Response<Body> {
    full(status, "application/json; charset=utf-8", v)
}

fn error(status: StatusCode, msg: &str) -> Response<Body> {
    json_resp(status, json!({ "error": msg }).to_string())
}

fn model_entry(m: &Value) -> (String, serde_json::Map<String, Value>) {
    let mut o = m.as_object().cloned().unwrap_or_default();
    let name = o.get("name").and_then(Value::as_str).unwrap_or("replay").to_string();
    o.remove("name");
    (name, o)
}

fn tags() -> String {
    let models: Vec<Value> = config().profile.models.iter().map(|m| {
        let (name, mut o) = model_entry(m);
        o.entry("model").or_insert_with(|| json!(name));
        o.entry("modified_at").or_insert_with(|| json!("1970-01-01T00:00:00Z"));
        o.entry("size").or_insert_with(|| json!(0));
        o.entry("digest").or_insert_with(|| json!(""));
        o.entry("details").or_insert_with(|| json!({}));
        o.insert("name".into(), json!(name));
        Value::Object(o)
    }).collect();
    json!({ "models": models }).to_string()
}

fn show(body: &Value) -> Response<Body> {
    let want = body.get("model").or_else(|| body.get("name")).and_then(Value::as_str).unwrap_or("");
    for m in &config().profile.models {
        let (name, mut o) = model_entry(m);
        if name == want || name == format!("{want}:latest") {
            o.remove("model");
            for (k, v) in [("modelfile", json!("")), ("parameters", json!("")), ("template", json!("")), ("details", json!({})),
                           ("model_info", json!({})), ("capabilities", json!(["completion"])), ("modified_at", json!("1970-01-01T00:00:00Z"))] {
                o.entry(k).or_insert(v);
            }
            return json_resp(StatusCode::OK, Value::Object(o).to_string());
        }
    }
    error(StatusCode::NOT_FOUND, &format!("model '{want}' not found"))
}

fn v1_models() -> String {
    let data: Vec<Value> = config().profile.models.iter().map(|m| {
        let (name, _) = model_entry(m);
        json!({"id": name, "object": "model", "created": 0, "owned_by": "library"})
    }).collect();
    json!({"object": "list", "data": data}).to_string()
}

fn key_of(v: &impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

fn limit(body: &Value, proto: Proto) -> Option<u64> {
    let n = match proto {
        Proto::Generate | Proto::Chat => body.get("options").and_then(|o| o.get("num_predict")),
        _ => body.get("max_completion_tokens").filter(|v| !v.is_null()).or_else(|| body.get("max_tokens")),
    };
    n.and_then(Value::as_i64).filter(|&n| n >= 0).map(|n| n as u64)
}

pub async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (proto, path) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/") => return Ok(full(StatusCode::OK, "text/plain; charset=utf-8", "Ollama is running")),
        (&Method::GET, "/health") => return Ok(json_resp(StatusCode::OK, "{\"status\":\"ok\"}".into())),
        (&Method::GET, "/api/version") => {
            return Ok(json_resp(StatusCode::OK, json!({"version": config().profile.server_version, "replay": true}).to_string()))
        }
        (&Method::GET, "/api/tags") => return Ok(json_resp(StatusCode::OK, tags())),
        (&Method::GET, "/v1/models") => return Ok(json_resp(StatusCode::OK, v1_models())),
        (&Method::GET, "/replay/stats") => {
            let reset = req.uri().query().is_some_and(|q| q.split('&').any(|kv| kv == "reset=1" || kv == "reset=true"));
            return Ok(json_resp(StatusCode::OK, state::stats_json(reset)));
        }
        (&Method::POST, "/api/show") => (None, "/api/show"),
        (&Method::POST, "/api/generate") => (Some(Proto::Generate), "/api/generate"),
        (&Method::POST, "/api/chat") => (Some(Proto::Chat), "/api/chat"),
        (&Method::POST, "/v1/chat/completions") => (Some(Proto::V1Chat), "/v1/chat/completions"),
        (&Method::POST, "/v1/completions") => (Some(Proto::V1Completions), "/v1/completions"),
        (m, p) => return Ok(error(StatusCode::NOT_FOUND, &format!("replay: no route for {m} {p}"))),
    };
    let forced = match req.headers().get("x-replay-fault") {
        None => None,
        Some(h) => match h.to_str().ok().and_then(Fault::parse) {
            Some(f) => Some(f),
            None => return Ok(error(StatusCode::BAD_REQUEST, &format!("replay: unknown X-Replay-Fault {h:?} (expected one of disconnect, no_done, stall, error_after_200, malformed, empty)"))),
        },
    };
    let bytes = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(error(StatusCode::BAD_REQUEST, &format!("replay: cannot read the body: {e}"))),
    };
    // The schedule starts once the whole request is here, as a real server's work does: a client
    // that sends its headers and, CPU-starved, its body seconds later (an SDK at a thousand
    // sessions) must not read as the server's lateness. Every chunk carries this instant
    // (`t_arrival_ns`), so that a client's delay in getting its request here is measured too.
    let arrival = mono_ns();
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return Ok(error(StatusCode::BAD_REQUEST, "replay: the body is not a JSON object")),
        Err(e) => return Ok(error(StatusCode::BAD_REQUEST, &format!("replay: the body is not JSON: {e}"))),
    };
    let Some(proto) = proto else { return Ok(show(&body)) };
    Ok(match start(proto, path, &body, forced, arrival) {
        Ok(r) => r,
        Err(msg) => error(StatusCode::BAD_REQUEST, &msg),
    })
}

fn start(proto: Proto, path: &'static str, body: &Value, forced: Option<Fault>, arrival: u64) -> Result<Response<Body>, String> {
    let cfg = config();
    let p = cfg.profile;
    let model = match body.get("model") {
        None | Some(Value::Null) => p.model.clone(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("replay: model must be a string".into()),
    };
    let streaming = match body.get("stream") {
        None | Some(Value::Null) => proto.api_default_stream(),
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("replay: stream must be true or false".into()),
    };
    let (endpoint, messages) = match proto {
        Proto::Chat | Proto::V1Chat => {
            let m = body.get("messages").and_then(Value::as_array).ok_or("replay: messages must be a list")?;
            (if proto == Proto::Chat { Endpoint::Chat } else { Endpoint::OpenaiChat }, Some(m.as_slice()))
        }
        Proto::Generate => (Endpoint::Generate, None),
        Proto::V1Completions => (Endpoint::OpenaiCompletions, None),
    };
    if let Some(pr) = body.get("prompt") {
        if proto == Proto::Generate && !pr.is_string() {
            return Err("replay: prompt must be a string".into());
        }
    }
    let lim = limit(body, proto);
    let include_usage = body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool) == Some(true);
    // The prompt cache: the history before the last user message (chat), the prompt (generate).
    let key = match messages {
        Some(m) => {
            let last_user = m.iter().rposition(|x| x.get("role").and_then(Value::as_str) == Some("user")).unwrap_or(m.len());
            key_of(&(model.as_str(), serde_json::to_string(&m[..last_user]).unwrap_or_default()))
        }
        None => key_of(&(model.as_str(), body.get("system").map(|s| s.to_string()), body.get("prompt").map(|s| s.to_string()))),
    };
    let cached = state::seen_before(key);
    let turn = messages.and_then(|m| p.turns.get(&plan::history_sha256(m)));
    let (n, in_flight) = state::with(|c| {
        c.next_stream += 1;
        c.in_flight += 1;
        (c.next_stream - 1, c.in_flight)
    });
    let mut rng = Rng::for_stream(cfg.seed, n);
    let drawn = plan::pick_fault(&cfg.faults, rng.next_f64());
    let fault = forced.or(drawn);
    let donor = plan::pick_donor(p, endpoint, cached, cfg.load, in_flight, &mut rng);
    let content = turn.unwrap_or(&donor.content);
    let mut pl = plan::build(content, &donor.content, lim);
    match fault {
        Some(Fault::Empty) => {
            pl.items.clear();
            pl.items.push(&SYNTHETIC_DONE);
            pl.length = false;
        }
        Some(Fault::NoDone) => {
            if let Some(i) = pl.items.iter().position(|c| c.kind == Kind::Done) {
                pl.items.truncate(i);
            }
        }
        _ => {}
    }
    if let Some(f) = fault {
        state::with(|c| c.faults[f.index()] += 1);
    }
    let created_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let fin = &content.fin;
    let prompt_tokens = fin.prompt_eval_count.unwrap_or(donor.prompt_tokens);
    let n_items = pl.items.len();
    let stream = Stream {
        n,
        path,
        proto,
        streaming,
        model: crate::json::escape(&model),
        created_s,
        length: pl.length,
        sched: plan::Schedule::new(arrival, donor.ttft_ns, &donor.gaps_ns, cfg.time_scale),
        fault,
        fault_at: n_items / 2,
        fault_fired: matches!(fault, Some(Fault::Empty | Fault::NoDone)),
        stall_ns: cfg.stall_ns,
        include_usage,
        prompt_tokens,
        fin,
        donor_id: &donor.id,
        time_scale: cfg.time_scale,
        idx: 0,
        handle: Default::default(),
        stall_until: 0,
        usage_sent: false,
        done_seen: false,
        calls_sent: false,
        tokens: 0,
        first_token_ns: 0,
        buf: BytesMut::with_capacity(4096),
        late: Vec::with_capacity(if streaming { n_items } else { 1 }),
        ended: false,
        complete: false,
        acc_content: Vec::new(),
        acc_think: Vec::new(),
        acc_calls: Vec::new(),
        registered: 0,
        t_prev: 0,
        held: false,
        plan: pl.items,
    };
    let ctype = match (proto, streaming) {
        (Proto::Generate | Proto::Chat, true) => "application/x-ndjson",
        (_, false) => "application/json; charset=utf-8",
        (_, true) => "text/event-stream",
    };
    let mut r = Response::builder().status(StatusCode::OK).header("content-type", ctype);
    if ctype == "text/event-stream" {
        r = r.header("cache-control", "no-cache");
    }
    Ok(r.body(Body::Stream(Box::new(stream))).unwrap())
}

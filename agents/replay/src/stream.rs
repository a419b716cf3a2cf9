//! One response body per request: it sends its plan's chunks on the absolute schedule, each JSON
//! chunk stamped with CLOCK_MONOTONIC ns taken right before its bytes go to hyper (`t_sent_ns`) and
//! with the request's arrival, the schedule's origin (`t_arrival_ns`), and records its own
//! lateness. Written into one reusable buffer per stream (no allocation per chunk).
use crate::plan::{Fault, Schedule};
use crate::profile::{Chunk, Final, Kind};
use crate::sched::{self, mono_ns};
use crate::state;
use crate::stats::quantile_sorted;
use bytes::{Bytes, BytesMut};
use http_body::Frame;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Proto {
    Generate,
    Chat,
    V1Chat,
    V1Completions,
}

impl Proto {
    /// Ollama's /api streams unless told not to; OpenAI's /v1 does not unless told to.
    pub fn api_default_stream(self) -> bool {
        self.api()
    }

    fn api(self) -> bool {
        matches!(self, Proto::Generate | Proto::Chat)
    }
}

pub struct Stream {
    pub n: u64,
    pub path: &'static str,
    pub proto: Proto,
    pub streaming: bool,
    pub model: Box<[u8]>,
    pub created_s: u64,
    pub plan: Vec<&'static Chunk>,
    pub length: bool,
    pub sched: Schedule,
    pub fault: Option<Fault>,
    pub fault_at: usize,
    pub fault_fired: bool,
    pub stall_ns: u64,
    pub include_usage: bool,
    pub prompt_tokens: u64,
    pub fin: &'static Final,
    pub donor_id: &'static str,
    pub time_scale: f64,
    // progress
    pub idx: usize,
    pub handle: sched::Handle,
    pub stall_until: u64,
    pub usage_sent: bool,
    pub done_seen: bool,
    pub calls_sent: bool,
    pub tokens: u64,
    pub first_token_ns: u64,
    pub buf: BytesMut,
    pub late: Vec<u32>,
    /// The deadline this stream last asked the scheduler to wake it at (0: none pending).
    pub registered: u64,
    /// When the last chunk was handed to hyper, and whether the stream is behind its schedule
    /// because its client is not reading (hyper did not ask for the next chunk in time).
    pub t_prev: u64,
    pub held: bool,
    pub ended: bool,
    pub complete: bool,
    pub acc_content: Vec<u8>,
    pub acc_think: Vec<u8>,
    pub acc_calls: Vec<u8>,
}

fn num(buf: &mut BytesMut, v: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// /api's `created_at`, the one field ollama-python keeps of a chunk (a plain str there): both
/// stamps as `"<t_sent_ns>/<t_arrival_ns>"`, decimal ns. Not a number (nothing reads it as a float
/// by mistake) and not RFC 3339 (a real Ollama's time reads as no stamp in every client).
fn created_at(buf: &mut BytesMut, sent: u64, arrival: u64) {
    buf.extend_from_slice(b"\"created_at\":\"");
    num(buf, sent);
    buf.extend_from_slice(b"/");
    num(buf, arrival);
    buf.extend_from_slice(b"\",");
}

/// The stamps as JSON fields, the chunk's last: when it was sent and when its request was in whole
/// (CLOCK_MONOTONIC ns), then `end`.
fn stamps(buf: &mut BytesMut, sent: u64, arrival: u64, end: &[u8]) {
    buf.extend_from_slice(b"\"t_sent_ns\":");
    num(buf, sent);
    buf.extend_from_slice(b",\"t_arrival_ns\":");
    num(buf, arrival);
    buf.extend_from_slice(end);
}

impl Stream {
    fn finish_reason(&self) -> &'static str {
        if self.length {
            "length"
        } else if self.calls_sent && self.proto == Proto::V1Chat {
            "tool_calls"
        } else {
            match self.fin.done_reason.as_deref() {
                Some("length") => "length",
                Some("tool_calls") if self.proto == Proto::V1Chat => "tool_calls",
                _ => "stop",
            }
        }
    }

    fn api_head(&mut self, stamp: u64) {
        let b = &mut self.buf;
        b.extend_from_slice(b"{\"model\":\"");
        b.extend_from_slice(&self.model);
        b.extend_from_slice(b"\",");
        created_at(b, stamp, self.sched.arrival_ns);
    }

    fn v1_head(&mut self, object: &[u8]) {
        let b = &mut self.buf;
        b.extend_from_slice(if self.proto == Proto::V1Chat { b"{\"id\":\"chatcmpl-" } else { b"{\"id\":\"cmpl-" });
        num(b, self.n);
        b.extend_from_slice(b"\",\"object\":\"");
        b.extend_from_slice(object);
        b.extend_from_slice(b"\",\"created\":");
        num(b, self.created_s);
        b.extend_from_slice(b",\"model\":\"");
        b.extend_from_slice(&self.model);
        b.extend_from_slice(b"\",\"system_fingerprint\":\"fp_ollama\",");
    }

    fn stamp_tail(&mut self, stamp: u64, end: &[u8]) {
        stamps(&mut self.buf, stamp, self.sched.arrival_ns, end);
    }

    fn usage(&mut self, stamp: u64, sse: bool) {
        if sse {
            self.buf.extend_from_slice(b"data: ");
            self.v1_head(b"chat.completion.chunk");
            self.buf.extend_from_slice(b"\"choices\":[],");
        }
        let b = &mut self.buf;
        b.extend_from_slice(b"\"usage\":{\"prompt_tokens\":");
        num(b, self.prompt_tokens);
        b.extend_from_slice(b",\"completion_tokens\":");
        num(b, self.tokens);
        b.extend_from_slice(b",\"total_tokens\":");
        num(b, self.prompt_tokens + self.tokens);
        b.extend_from_slice(b"},");
        if sse {
            self.stamp_tail(stamp, b"}\n\n");
        }
    }

    fn api_done_fields(&mut self, stamp: u64) {
        let scale = self.time_scale;
        let scaled = |v: Option<u64>| (v.unwrap_or(0) as f64 / scale) as u64;
        let reason = self.finish_reason();
        let (load, prompt_eval) = (scaled(self.fin.load_duration), scaled(self.fin.prompt_eval_duration));
        let eval = if self.first_token_ns != 0 { stamp.saturating_sub(self.first_token_ns) } else { 0 };
        let total = stamp.saturating_sub(self.sched.arrival_ns);
        let b = &mut self.buf;
        b.extend_from_slice(b"\"done\":true,\"done_reason\":\"");
        b.extend_from_slice(reason.as_bytes());
        b.extend_from_slice(b"\",\"total_duration\":");
        num(b, total);
        b.extend_from_slice(b",\"load_duration\":");
        num(b, load);
        b.extend_from_slice(b",\"prompt_eval_count\":");
        num(b, self.prompt_tokens);
        b.extend_from_slice(b",\"prompt_eval_duration\":");
        num(b, prompt_eval);
        b.extend_from_slice(b",\"eval_count\":");
        num(b, self.tokens);
        b.extend_from_slice(b",\"eval_duration\":");
        num(b, eval);
        b.extend_from_slice(b",");
    }

    /// The message / delta body: content, then thinking and tool calls where there are any.
    fn message_body(&mut self, content: &[u8], think: &[u8], calls: &[u8], think_key: &[u8]) {
        let b = &mut self.buf;
        b.extend_from_slice(b"\"role\":\"assistant\",\"content\":\"");
        b.extend_from_slice(content);
        b.extend_from_slice(b"\"");
        if !think.is_empty() {
            b.extend_from_slice(think_key);
            b.extend_from_slice(think);
            b.extend_from_slice(b"\"");
        }
        if !calls.is_empty() {
            b.extend_from_slice(b",\"tool_calls\":[");
            b.extend_from_slice(calls);
            b.extend_from_slice(b"]");
        }
    }

    /// Write chunk `c` (or take it into the non-streaming totals); the stamp when bytes were written.
    fn write_chunk(&mut self, c: &'static Chunk) -> Option<u64> {
        let token = c.kind.is_token() && !(c.kind == Kind::Calls && matches!(self.proto, Proto::Generate | Proto::V1Completions))
            && !(c.kind == Kind::Think && self.proto == Proto::V1Completions);
        if c.kind.is_token() && !token {
            return None; // this endpoint has no field for it: its slot passes
        }
        let stamp = mono_ns();
        if token {
            self.tokens += 1;
            if self.first_token_ns == 0 {
                self.first_token_ns = stamp;
            }
            if c.kind == Kind::Calls {
                self.calls_sent = true;
            }
            if !self.streaming {
                let calls = if self.proto.api() { &c.calls_api } else { &c.calls_v1 };
                match c.kind {
                    Kind::Answer => self.acc_content.extend_from_slice(&c.text),
                    Kind::Think => self.acc_think.extend_from_slice(&c.text),
                    _ => {
                        if !self.acc_calls.is_empty() {
                            self.acc_calls.push(b',');
                        }
                        self.acc_calls.extend_from_slice(calls);
                    }
                }
                return None;
            }
        }
        if !self.streaming && c.kind != Kind::Done {
            return None; // one object at the end: nothing else is written
        }
        let (text, think, calls): (&[u8], &[u8], &[u8]) = match c.kind {
            Kind::Answer => (&c.text, b"", b""),
            Kind::Think => (b"", &c.text, b""),
            Kind::Calls => (b"", b"", if self.proto.api() { &c.calls_api } else { &c.calls_v1 }),
            _ => (b"", b"", b""),
        };
        match (self.proto, c.kind) {
            (Proto::Generate | Proto::Chat, Kind::Empty | Kind::Usage) => return None,
            (_, Kind::Usage) => {
                if !self.include_usage || !self.streaming {
                    return None;
                }
                self.usage(stamp, true);
                self.usage_sent = true;
            }
            (Proto::Generate, Kind::Done) => {
                self.api_head(stamp);
                let (content, think) = (std::mem::take(&mut self.acc_content), std::mem::take(&mut self.acc_think));
                self.buf.extend_from_slice(b"\"response\":\"");
                self.buf.extend_from_slice(&content);
                self.buf.extend_from_slice(b"\"");
                if !think.is_empty() {
                    self.buf.extend_from_slice(b",\"thinking\":\"");
                    self.buf.extend_from_slice(&think);
                    self.buf.extend_from_slice(b"\"");
                }
                self.buf.extend_from_slice(b",");
                self.api_done_fields(stamp);
                self.stamp_tail(stamp, b"}\n");
            }
            (Proto::Generate, _) => {
                self.api_head(stamp);
                self.buf.extend_from_slice(b"\"response\":\"");
                self.buf.extend_from_slice(text);
                self.buf.extend_from_slice(b"\"");
                if !think.is_empty() {
                    self.buf.extend_from_slice(b",\"thinking\":\"");
                    self.buf.extend_from_slice(think);
                    self.buf.extend_from_slice(b"\"");
                }
                self.buf.extend_from_slice(b",\"done\":false,");
                self.stamp_tail(stamp, b"}\n");
            }
            (Proto::Chat, kind) => {
                self.api_head(stamp);
                self.buf.extend_from_slice(b"\"message\":{");
                if kind == Kind::Done {
                    let (a, t, k) = (std::mem::take(&mut self.acc_content), std::mem::take(&mut self.acc_think), std::mem::take(&mut self.acc_calls));
                    self.message_body(&a, &t, &k, b",\"thinking\":\"");
                    self.buf.extend_from_slice(b"},");
                    self.api_done_fields(stamp);
                } else {
                    self.message_body(text, think, calls, b",\"thinking\":\"");
                    self.buf.extend_from_slice(b"},\"done\":false,");
                }
                self.stamp_tail(stamp, b"}\n");
            }
            (Proto::V1Chat, kind) => {
                if self.streaming {
                    self.buf.extend_from_slice(b"data: ");
                    self.v1_head(b"chat.completion.chunk");
                    self.buf.extend_from_slice(b"\"choices\":[{\"index\":0,\"delta\":{");
                    self.message_body(text, think, calls, b",\"reasoning\":\"");
                    self.buf.extend_from_slice(b"},\"finish_reason\":");
                } else {
                    self.v1_head(b"chat.completion");
                    self.buf.extend_from_slice(b"\"choices\":[{\"index\":0,\"message\":{");
                    let (a, t, k) = (std::mem::take(&mut self.acc_content), std::mem::take(&mut self.acc_think), std::mem::take(&mut self.acc_calls));
                    self.message_body(&a, &t, &k, b",\"reasoning\":\"");
                    self.buf.extend_from_slice(b"},\"finish_reason\":");
                }
                self.v1_finish(kind, stamp);
            }
            (Proto::V1Completions, kind) => {
                if self.streaming {
                    self.buf.extend_from_slice(b"data: ");
                    self.v1_head(b"text_completion");
                    self.buf.extend_from_slice(b"\"choices\":[{\"text\":\"");
                    self.buf.extend_from_slice(text);
                } else {
                    self.v1_head(b"text_completion");
                    self.buf.extend_from_slice(b"\"choices\":[{\"text\":\"");
                    let a = std::mem::take(&mut self.acc_content);
                    self.buf.extend_from_slice(&a);
                }
                self.buf.extend_from_slice(b"\",\"index\":0,\"finish_reason\":");
                self.v1_finish(kind, stamp);
            }
        }
        Some(stamp)
    }

    /// finish_reason, the choice's end and the object's, usage where due, [DONE] after the last.
    fn v1_finish(&mut self, kind: Kind, stamp: u64) {
        if kind == Kind::Done {
            let r = self.finish_reason();
            self.buf.extend_from_slice(b"\"");
            self.buf.extend_from_slice(r.as_bytes());
            self.buf.extend_from_slice(b"\"}],");
        } else {
            self.buf.extend_from_slice(b"null}],");
        }
        if !self.streaming {
            self.usage(stamp, false);
            self.stamp_tail(stamp, b"}");
            return;
        }
        self.stamp_tail(stamp, b"}\n\n");
        if kind == Kind::Done {
            self.done_seen = true;
        }
    }

    /// /v1 streams end with usage (where asked and not sent at a u slot) and [DONE], right after
    /// the plan's last chunk (a u slot may follow the finish chunk, as Ollama sends it).
    fn v1_end(&mut self) -> bool {
        if self.proto.api() || !self.streaming || !self.done_seen {
            return false;
        }
        self.buf.reserve(512);
        if self.include_usage && !self.usage_sent {
            self.usage(mono_ns(), true);
            self.usage_sent = true;
        }
        self.buf.extend_from_slice(b"data: [DONE]\n\n");
        true
    }

    fn fault_line(&mut self, f: Fault) {
        let sse = !self.proto.api() && self.streaming;
        let line: &[u8] = match (f, sse) {
            (Fault::ErrorAfter200, true) => b"data: {\"error\":{\"message\":\"replay: injected error\",\"type\":\"server_error\"}}\n\n",
            (Fault::ErrorAfter200, false) if self.proto.api() => b"{\"error\":\"replay: injected error\"}\n",
            (Fault::ErrorAfter200, false) => b"{\"error\":{\"message\":\"replay: injected error\",\"type\":\"server_error\"}}",
            (_, true) => b"data: {\"model\": \"\n\n",
            (_, false) => b"{\"model\": \"\n",
        };
        self.buf.extend_from_slice(line);
    }

    fn frame(&mut self) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(Some(Ok(Frame::data(self.buf.split().freeze()))))
    }
}

impl http_body::Body for Stream {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let s = self.get_mut();
        loop {
            if s.ended {
                return Poll::Ready(None);
            }
            if s.stall_until != 0 {
                if mono_ns() < s.stall_until {
                    sched::register(&mut s.handle, s.stall_until, cx.waker());
                    return Poll::Pending;
                }
                s.ended = true;
                return Poll::Ready(Some(Err(std::io::Error::other("replay: stall over, closing"))));
            }
            if s.idx >= s.plan.len() {
                s.ended = true;
                s.complete = true;
                if s.v1_end() {
                    return s.frame();
                }
                return Poll::Ready(None);
            }
            let deadline = s.sched.deadline();
            let now = mono_ns();
            if now < deadline {
                sched::register(&mut s.handle, deadline, cx.waker());
                s.registered = deadline;
                s.held = false;  // on schedule again
                return Poll::Pending;
            }
            // Asked for this chunk only after it was due, though the last one went out before: hyper
            // did not ask (the client is not reading, its socket is full). The delay, and every chunk
            // until the stream is on schedule again, is the client's backpressure, not the server's
            // lateness.
            if s.registered != deadline && s.t_prev != 0 && s.t_prev < deadline {
                s.held = true;
            }
            if let Some(f) = s.fault {
                if !s.fault_fired && s.idx == s.fault_at {
                    s.fault_fired = true;
                    s.buf.reserve(256);
                    match f {
                        Fault::Disconnect => {
                            s.ended = true;
                            return Poll::Ready(Some(Err(std::io::Error::other("replay: injected disconnect"))));
                        }
                        Fault::Stall => {
                            s.stall_until = now.saturating_add(s.stall_ns).max(now + 1);
                            continue;
                        }
                        Fault::ErrorAfter200 => {
                            s.fault_line(f);
                            s.ended = true;
                            return s.frame();
                        }
                        Fault::Malformed => {
                            s.fault_line(f);
                            return s.frame();
                        }
                        Fault::NoDone | Fault::Empty => {}
                    }
                }
            }
            let c = s.plan[s.idx];
            s.idx += 1;
            s.sched.advance();
            s.buf.reserve(512 + c.text.len() + c.calls_v1.len() + s.acc_content.len() + s.acc_think.len() + s.acc_calls.len());
            if let Some(stamp) = s.write_chunk(c) {
                let late = stamp.saturating_sub(deadline);
                s.t_prev = stamp;
                if s.held {
                    state::with(|st| st.held.add(late));
                } else {
                    s.late.push(late.min(u32::MAX as u64) as u32);
                    state::with(|st| st.hist.add(late));
                }
                return s.frame();
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        sched::release(&mut self.handle);
        let end = if self.fault_fired {
            "fault"
        } else if self.complete {
            "complete"
        } else {
            "client_closed"
        };
        self.late.sort_unstable();
        let q = |v: u32| format!("{:.3}", v as f64 / 1e3);
        let (p50, p99, max) = (q(quantile_sorted(&self.late, 0.5)), q(quantile_sorted(&self.late, 0.99)), q(self.late.last().copied().unwrap_or(0)));
        let fault = match self.fault {
            Some(f) => format!("\"{}\"", f.name()),
            None => "null".into(),
        };
        let _ = state::COUNTERS.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                c.in_flight = c.in_flight.saturating_sub(1);
                c.streams += 1;
                if let Some(w) = c.lateness.as_mut() {
                    let _ = writeln!(
                        w,
                        "{{\"stream\":{},\"path\":\"{}\",\"arrival_ns\":{},\"donor\":{},\"chunks\":{},\"late_us\":{{\"p50\":{p50},\"p99\":{p99},\"max\":{max}}},\"fault\":{fault},\"end\":\"{end}\"}}",
                        self.n, self.path, self.sched.arrival_ns, serde_json::to_string(self.donor_id).unwrap(), self.late.len()
                    );
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_at_carries_both_stamps_and_the_tail_both_fields() {
        let mut b = BytesMut::new();
        b.extend_from_slice(b"{\"model\":\"m\",");
        created_at(&mut b, 5_000_123, 4_000_007);
        stamps(&mut b, 5_000_123, 4_000_007, b"}");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["created_at"], "5000123/4000007");
        assert_eq!((v["t_sent_ns"].as_u64(), v["t_arrival_ns"].as_u64()), (Some(5_000_123), Some(4_000_007)));
    }
}

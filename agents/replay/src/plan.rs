//! What a stream sends and when: the content cut or extended to the token limit, the absolute
//! schedule, the seeded RNG, fault selection, donor choice and the history hash.
use crate::profile::{Chunk, Content, Donor, Endpoint, Kind, Profile, SYNTHETIC_DONE};
use sha2::{Digest, Sha256};

/// The chunks a stream sends, in order, and whether the token limit changed its end.
pub struct Plan {
    pub items: Vec<&'static Chunk>,
    pub length: bool,
}

/// `content` cut at `limit` token chunks (t, a, c), or, where the limit asks for more than the
/// content has (and it makes no tool call), extended with `extra`'s answer chunks cyclically up to
/// the limit. Non-token chunks keep their places; the trailing ones (u, d) stay at the end, and a
/// content without a d chunk gets one.
pub fn build(content: &'static Content, extra: &'static Content, limit: Option<u64>) -> Plan {
    let chunks = &content.chunks;
    let tail_start = match chunks.iter().rposition(|c| c.kind.is_token()) {
        Some(i) => i + 1,
        None => chunks.iter().position(|c| matches!(c.kind, Kind::Usage | Kind::Done)).unwrap_or(chunks.len()),
    };
    let mut items = Vec::with_capacity(chunks.len() + limit.unwrap_or(0).min(1 << 16) as usize);
    let mut tokens = 0u64;
    let mut length = false;
    for c in &chunks[..tail_start] {
        if c.kind.is_token() {
            if limit.is_some_and(|l| tokens >= l) {
                length = true;
                continue;
            }
            tokens += 1;
        }
        items.push(c);
    }
    if let Some(l) = limit {
        let (src, answers) = if !content.answers.is_empty() { (content, &content.answers) } else { (extra, &extra.answers) };
        if tokens < l && !content.has_calls && !answers.is_empty() {
            for &i in answers.iter().cycle().take((l - tokens) as usize) {
                items.push(&src.chunks[i]);
            }
            length = true;
        }
    }
    items.extend(chunks[tail_start..].iter());
    if !items.iter().any(|c| c.kind == Kind::Done) {
        items.push(&SYNTHETIC_DONE);
    }
    Plan { items, length }
}

/// Chunk i's scheduled time: arrival + (ttft + sum(gaps[..i])) / time_scale, gaps used cyclically.
/// Absolute: computed from the arrival every time, so a late chunk moves no other.
pub struct Schedule {
    pub arrival_ns: u64,
    gaps: &'static [u64],
    scale: f64,
    i: usize,
    cum_ns: u64,
}

impl Schedule {
    pub fn new(arrival_ns: u64, ttft_ns: u64, gaps: &'static [u64], scale: f64) -> Schedule {
        Schedule { arrival_ns, gaps, scale, i: 0, cum_ns: ttft_ns }
    }

    #[inline]
    pub fn deadline(&self) -> u64 {
        self.arrival_ns + (self.cum_ns as f64 / self.scale) as u64
    }

    #[inline]
    pub fn advance(&mut self) {
        if !self.gaps.is_empty() {
            self.cum_ns += self.gaps[self.i % self.gaps.len()];
        }
        self.i += 1;
    }
}

/// splitmix64: small, seeded, the same sequence on every platform.
pub struct Rng(u64);

impl Rng {
    #[cfg(test)]
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The RNG of stream `n` under `seed`: a stream's draws do not depend on what others drew.
    pub fn for_stream(seed: u64, n: u64) -> Rng {
        let mut r = Rng(seed ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_f64() * n as f64) as usize).min(n.saturating_sub(1))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Disconnect,
    NoDone,
    Stall,
    ErrorAfter200,
    Malformed,
    Empty,
}

pub const FAULTS: [Fault; 6] = [Fault::Disconnect, Fault::NoDone, Fault::Stall, Fault::ErrorAfter200, Fault::Malformed, Fault::Empty];

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Disconnect => "disconnect",
            Fault::NoDone => "no_done",
            Fault::Stall => "stall",
            Fault::ErrorAfter200 => "error_after_200",
            Fault::Malformed => "malformed",
            Fault::Empty => "empty",
        }
    }

    pub fn parse(s: &str) -> Option<Fault> {
        FAULTS.iter().copied().find(|f| f.name() == s)
    }

    pub fn index(self) -> usize {
        FAULTS.iter().position(|&f| f == self).unwrap()
    }
}

/// `--faults '{"stall": 0.02, ...}'`: the share of requests per kind; at most 1 in all.
pub fn parse_faults(text: &str) -> Result<[f64; 6], String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("--faults is not JSON: {e}"))?;
    let obj = v.as_object().ok_or("--faults must be a JSON object of kind -> share")?;
    let mut shares = [0.0; 6];
    for (k, share) in obj {
        let f = Fault::parse(k).ok_or_else(|| format!("--faults: unknown kind {k:?} (expected one of disconnect, no_done, stall, error_after_200, malformed, empty)"))?;
        let s = share.as_f64().filter(|s| (0.0..=1.0).contains(s)).ok_or_else(|| format!("--faults: {k} must be a share between 0 and 1"))?;
        shares[f.index()] = s;
    }
    let total: f64 = shares.iter().sum();
    if total > 1.0 + 1e-9 {
        return Err(format!("--faults: the shares add up to {total}, more than 1"));
    }
    Ok(shares)
}

/// The fault of a request whose uniform draw is `u`, or None (the shares in FAULTS' order).
pub fn pick_fault(shares: &[f64; 6], u: f64) -> Option<Fault> {
    let mut acc = 0.0;
    for (i, &s) in shares.iter().enumerate() {
        acc += s;
        if s > 0.0 && u < acc {
            return Some(FAULTS[i]);
        }
    }
    None
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    Ideal,
    Profile,
}

/// The timing donor: same endpoint if any, else any; `cached` as this prompt's (where any
/// matches); the lowest concurrency level (ideal) or the one nearest the streams in flight
/// (profile); then one of those at random.
pub fn pick_donor(p: &'static Profile, ep: Endpoint, cached: bool, load: Load, in_flight: u64, rng: &mut Rng) -> &'static Donor {
    let mut pool: Vec<&Donor> = p.donors.iter().filter(|d| d.endpoint == Some(ep)).collect();
    if pool.is_empty() {
        pool = p.donors.iter().collect();
    }
    if pool.iter().any(|d| d.cached == Some(cached)) {
        pool.retain(|d| d.cached == Some(cached));
    }
    let level = match load {
        Load::Ideal => pool.iter().map(|d| d.concurrency).min().unwrap(),
        Load::Profile => {
            let n = in_flight.max(1) as i64;
            pool.iter().map(|d| d.concurrency).min_by_key(|&c| ((c as i64 - n).abs(), c)).unwrap()
        }
    };
    pool.retain(|d| d.concurrency == level);
    pool[rng.below(pool.len())]
}

/// The agent's history digest (agents/rust/src/tools.rs `history_sha256`), byte for byte.
pub fn history_sha256(messages: &[serde_json::Value]) -> String {
    let text = serde_json::to_string(messages).expect("messages serialise");
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile;

    fn leak(text: &str) -> &'static Profile {
        Box::leak(Box::new(profile::parse(text).unwrap()))
    }

    const PROFILE: &str = r#"{"schema_version":1,"kind":"langbench-replay-profile","source":{"server_version":"0.11.4"},
      "model":"m","models":[{"name":"m"}],
      "donors":[
        {"id":"a1","endpoint":"chat","concurrency":1,"cached":false,"ttft_us":1000,"gaps_us":[100,200,300,400,500],
         "chunks":[{"k":"t","text":"hm"},{"k":"a","text":"A"},{"k":"a","text":"B"},{"k":"a","text":"C"},{"k":"u"},{"k":"d"}],
         "final":{"done_reason":"stop","eval_count":4}},
        {"id":"a4","endpoint":"chat","concurrency":4,"cached":true,"ttft_us":1000,"gaps_us":[100],"chunks":[{"k":"a","text":"x"},{"k":"d"}]},
        {"id":"a16","endpoint":"chat","concurrency":16,"cached":true,"ttft_us":1000,"gaps_us":[100],"chunks":[{"k":"a","text":"x"},{"k":"d"}]},
        {"id":"g","endpoint":"generate","concurrency":2,"ttft_us":5,"gaps_us":[],"chunks":[{"k":"c","calls":[{"name":"add","arguments":{"a":1,"b":2}}]},{"k":"d"}]}],
      "turns":{}}"#;

    fn kinds(p: &Plan) -> String {
        p.items.iter().map(|c| match c.kind { Kind::Think => 't', Kind::Answer => 'a', Kind::Calls => 'c', Kind::Empty => 'e', Kind::Usage => 'u', Kind::Done => 'd' }).collect()
    }

    #[test]
    fn schedule_is_absolute_scaled_and_cycles_its_gaps() {
        static GAPS: [u64; 2] = [1_000, 3_000];
        let mut s = Schedule::new(10_000, 5_000, &GAPS, 2.0);
        let mut got = vec![];
        for _ in 0..5 {
            got.push(s.deadline());
            s.advance();
        }
        // (5000, 6000, 9000, 10000, 13000) / 2 + arrival
        assert_eq!(got, vec![12_500, 13_000, 14_500, 15_000, 16_500]);
        let empty = Schedule::new(7, 100, &[], 1.0);
        assert_eq!(empty.deadline(), 107);
        let fast = Schedule::new(1, 1_000_000_000, &GAPS, 1e12);
        assert_eq!(fast.deadline(), 1);
    }

    #[test]
    fn token_limit_cuts_think_and_answer_chunks_and_keeps_the_tail() {
        let p = leak(PROFILE);
        let c = &p.donors[0].content;
        let full = build(c, c, None);
        assert_eq!(kinds(&full), "taaaud");
        assert!(!full.length);
        let cut = build(c, c, Some(2));
        assert_eq!(kinds(&cut), "taud");
        assert!(cut.length);
        let exact = build(c, c, Some(4));
        assert_eq!(kinds(&exact), "taaaud");
        assert!(!exact.length);
        let zero = build(c, c, Some(0));
        assert_eq!(kinds(&zero), "ud");
    }

    #[test]
    fn token_limit_beyond_the_content_repeats_its_answer_chunks() {
        let p = leak(PROFILE);
        let c = &p.donors[0].content;
        let long = build(c, c, Some(9));
        assert_eq!(kinds(&long), "taaaaaaaaud");
        let texts: Vec<&[u8]> = long.items[1..9].iter().map(|c| &*c.text).collect();
        assert_eq!(texts, [b"A", b"B", b"C", b"A", b"B", b"C", b"A", b"B"].map(|t| &t[..]).to_vec());
        assert!(long.length);
        // a tool call is not padded with text
        let calls = &p.donors[3].content;
        assert_eq!(kinds(&build(calls, c, Some(9))), "cd");
    }

    #[test]
    fn a_content_without_done_gets_one() {
        let p = leak(&PROFILE.replace(r#",{"k":"u"},{"k":"d"}]"#, "]"));
        assert_eq!(kinds(&build(&p.donors[0].content, &p.donors[0].content, None)), "taaad");
    }

    #[test]
    fn fault_selection_is_deterministic_with_a_seed_and_follows_the_shares() {
        let shares = parse_faults(r#"{"disconnect":0.1,"stall":0.2,"empty":0.05}"#).unwrap();
        let draw = |seed| (0..20_000u64).map(|n| pick_fault(&shares, Rng::for_stream(seed, n).next_f64())).collect::<Vec<_>>();
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        let share = |f| a.iter().filter(|x| **x == Some(f)).count() as f64 / a.len() as f64;
        assert!((share(Fault::Disconnect) - 0.1).abs() < 0.01);
        assert!((share(Fault::Stall) - 0.2).abs() < 0.01);
        assert!((share(Fault::Empty) - 0.05).abs() < 0.01);
        assert_eq!(share(Fault::NoDone), 0.0);
        assert_eq!(pick_fault(&[0.0; 6], 0.0), None);
    }

    #[test]
    fn bad_fault_specs_are_refused_with_the_cause() {
        assert!(parse_faults(r#"{"boom":0.1}"#).unwrap_err().contains("boom"));
        assert!(parse_faults(r#"{"stall":0.7,"empty":0.7}"#).unwrap_err().contains("more than 1"));
        assert!(parse_faults(r#"{"stall":-1}"#).is_err());
        assert!(parse_faults("[1]").is_err());
    }

    #[test]
    fn donor_choice_follows_endpoint_cache_and_load() {
        let p = leak(PROFILE);
        let mut rng = Rng::new(1);
        assert_eq!(pick_donor(p, Endpoint::Chat, false, Load::Ideal, 100, &mut rng).id, "a1");
        // cached: the cached chat donors; ideal: their lowest level
        assert_eq!(pick_donor(p, Endpoint::Chat, true, Load::Ideal, 100, &mut rng).id, "a4");
        assert_eq!(pick_donor(p, Endpoint::Chat, true, Load::Profile, 12, &mut rng).id, "a16");
        assert_eq!(pick_donor(p, Endpoint::Chat, true, Load::Profile, 5, &mut rng).id, "a4");
        assert_eq!(pick_donor(p, Endpoint::Generate, true, Load::Ideal, 1, &mut rng).id, "g");
        // no donor of this endpoint: any
        let d = pick_donor(p, Endpoint::OpenaiCompletions, false, Load::Ideal, 1, &mut rng);
        assert_eq!(d.id, "a1");
    }

    #[test]
    fn history_hash_is_the_agents() {
        // The agent's: serde_json with sorted keys and arbitrary_precision (agents/rust/src/tools.rs).
        let messages: Vec<serde_json::Value> = serde_json::from_str(
            r#"[{"role":"user","content":"add 2^70 and 1 ✓"},{"role":"assistant","content":"","tool_calls":[{"function":{"name":"add","arguments":{"b":1,"a":1180591620717411303424}}}]}]"#).unwrap();
        let text = serde_json::to_string(&messages).unwrap();
        assert_eq!(text, r#"[{"content":"add 2^70 and 1 ✓","role":"user"},{"content":"","role":"assistant","tool_calls":[{"function":{"arguments":{"a":1180591620717411303424,"b":1},"name":"add"}}]}]"#);
        assert_eq!(history_sha256(&messages), format!("{:x}", Sha256::digest(text.as_bytes())));
        // the same digest as Python's json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert_eq!(history_sha256(&[]), "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945");
    }
}

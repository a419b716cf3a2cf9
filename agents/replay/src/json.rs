//! JSON text without serde on the hot path: a string escaper (run once per text, when the profile
//! is loaded, so that a chunk is written by copying pre-escaped bytes) and integers via itoa.

/// Append `s` to `out` as the inside of a JSON string (no quotes): `"` `\` and the control
/// characters escaped, everything else (non-ASCII included) as is, as serde_json writes it.
pub fn escape_into(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

pub fn escape(s: &str) -> Box<[u8]> {
    let mut v = Vec::with_capacity(s.len() + 2);
    escape_into(&mut v, s);
    v.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str) -> String {
        String::from_utf8(escape(s).into_vec()).unwrap()
    }

    #[test]
    fn escaper_agrees_with_serde_json_on_every_awkward_character() {
        let cases = ["plain", "quote \" and \\ backslash", "line\nbreak\r\ttab", "\u{0}\u{1}\u{8}\u{c}\u{1f}\u{7f}",
                     "héllo ✓ 😀", "", "\"", "end\\"];
        for s in cases {
            let want = serde_json::to_string(s).unwrap();
            assert_eq!(format!("\"{}\"", esc(s)), want, "{s:?}");
            let back: String = serde_json::from_str(&format!("\"{}\"", esc(s))).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn escaper_round_trips_every_control_and_ascii_byte() {
        let s: String = (0u8..128).map(|b| b as char).collect();
        let back: String = serde_json::from_str(&format!("\"{}\"", esc(&s))).unwrap();
        assert_eq!(back, s);
    }
}

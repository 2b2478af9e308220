//! W3C Trace Context (level 1): the `traceparent` header and fresh ids.
//!
//! A `traceparent` is `version-traceid-parentid-flags`, for example
//! `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`: lowercase hex,
//! a 16-byte trace id and an 8-byte span id, neither all zeros. Version `00`
//! is exactly 55 characters. A later version may append fields after a dash;
//! its first four fields are read as version `00`'s, and what follows is
//! ignored. Version `ff` is invalid.

use std::fmt;

use http::HeaderValue;
use rand::Rng;

/// The length of a version-`00` `traceparent` value.
pub const TRACEPARENT_LEN: usize = 55;

/// The `sampled` bit of the trace flags.
pub const FLAG_SAMPLED: u8 = 0x01;

/// The identity of one span in a trace, as carried by `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace id, shared by every span of the trace. Never all zeros.
    pub trace_id: [u8; 16],
    /// The span id: in a received header the caller's span, the parent of
    /// ours; in a header we send, our span. Never all zeros.
    pub span_id: [u8; 8],
    /// The trace flags; only [`FLAG_SAMPLED`] is defined in version `00`.
    pub flags: u8,
}

impl TraceContext {
    /// Parses a `traceparent` value (a `HeaderValue`, `&str` or bytes).
    /// Returns `None` for anything W3C Trace Context level 1 says to
    /// ignore: the caller then starts a new trace. Surrounding spaces and
    /// tabs (HTTP optional whitespace) are ignored.
    pub fn parse(value: impl AsRef<[u8]>) -> Option<TraceContext> {
        let b = trim_ows(value.as_ref());
        if b.len() < TRACEPARENT_LEN {
            return None;
        }
        let version = hex_byte(b[0], b[1])?;
        if version == 0xff {
            return None;
        }
        if version == 0 && b.len() != TRACEPARENT_LEN {
            return None;
        }
        if b.len() > TRACEPARENT_LEN && b[TRACEPARENT_LEN] != b'-' {
            return None;
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        decode_hex(&b[3..35], &mut trace_id)?;
        let mut span_id = [0u8; 8];
        decode_hex(&b[36..52], &mut span_id)?;
        let flags = hex_byte(b[53], b[54])?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A new root context: fresh random trace and span ids.
    pub fn new_root(sampled: bool) -> TraceContext {
        TraceContext {
            trace_id: new_trace_id(),
            span_id: new_span_id(),
            flags: if sampled { FLAG_SAMPLED } else { 0 },
        }
    }

    /// The same trace with another span id (a child, or our span under a
    /// received parent), keeping the flags.
    pub fn with_span_id(self, span_id: [u8; 8]) -> TraceContext {
        TraceContext { span_id, ..self }
    }

    /// Whether the `sampled` flag is set.
    pub fn is_sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// The version-`00` header text. Only the `sampled` flag is written:
    /// version `00` defines no other bit.
    pub fn to_bytes(&self) -> [u8; TRACEPARENT_LEN] {
        let mut out = [0u8; TRACEPARENT_LEN];
        out[0] = b'0';
        out[1] = b'0';
        out[2] = b'-';
        encode_hex(&self.trace_id, &mut out[3..35]);
        out[35] = b'-';
        encode_hex(&self.span_id, &mut out[36..52]);
        out[52] = b'-';
        encode_hex(&[self.flags & FLAG_SAMPLED], &mut out[53..55]);
        out
    }

    /// The version-`00` `traceparent` header value for this context.
    pub fn to_traceparent(&self) -> HeaderValue {
        // Hex digits and dashes are always a valid header value.
        HeaderValue::from_bytes(&self.to_bytes()).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The trace id as 32 lowercase hex digits (as in logs and OTLP/JSON).
    pub fn trace_id_hex(&self) -> String {
        hex_string(&self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        hex_string(&self.span_id)
    }
}

impl fmt::Display for TraceContext {
    /// Writes the `traceparent` text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.to_bytes();
        f.write_str(std::str::from_utf8(&b).map_err(|_| fmt::Error)?)
    }
}

/// Parses a `traceparent` value; see [`TraceContext::parse`].
pub fn parse_traceparent(value: impl AsRef<[u8]>) -> Option<TraceContext> {
    TraceContext::parse(value)
}

/// A fresh random trace id, never all zeros. Uses the thread-local RNG
/// (no system call, no lock).
pub fn new_trace_id() -> [u8; 16] {
    let mut rng = rand::rng();
    loop {
        let id: u128 = rng.random();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

/// A fresh random span id, never all zeros.
pub fn new_span_id() -> [u8; 8] {
    let mut rng = rand::rng();
    loop {
        let id: u64 = rng.random();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    Some(nibble(hi)? << 4 | nibble(lo)?)
}

fn decode_hex(src: &[u8], out: &mut [u8]) -> Option<()> {
    for (o, pair) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = hex_byte(pair[0], pair[1])?;
    }
    Some(())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `src` as lowercase hex into `out` (twice as long as `src`).
pub(crate) fn encode_hex(src: &[u8], out: &mut [u8]) {
    for (byte, pair) in src.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
}

pub(crate) fn hex_string(src: &[u8]) -> String {
    src.iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0x0f)]])
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: [u8; 16] = [
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47,
        0x36,
    ];
    const SPAN: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];

    #[test]
    fn parses_the_specification_examples() {
        let sampled = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("valid");
        assert_eq!(sampled.trace_id, TRACE);
        assert_eq!(sampled.span_id, SPAN);
        assert!(sampled.is_sampled());

        let unsampled =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .expect("valid");
        assert!(!unsampled.is_sampled());

        let other = parse_traceparent(HeaderValue::from_static(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ))
        .expect("valid");
        assert_eq!(other.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(other.span_id_hex(), "b7ad6b7169203331");
    }

    #[test]
    fn round_trips() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = parse_traceparent(text).expect("valid");
        assert_eq!(ctx.to_traceparent(), text);
        assert_eq!(ctx.to_string(), text);
    }

    #[test]
    fn future_versions_are_read_by_their_first_four_fields() {
        for text in [
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-x",
        ] {
            let ctx = parse_traceparent(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(ctx.trace_id, TRACE);
            assert_eq!(ctx.span_id, SPAN);
            assert!(ctx.is_sampled());
        }
        // Written back as version 00, with only the sampled flag.
        let ctx = parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-x")
            .expect("valid");
        assert_eq!(
            ctx.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn rejects_what_the_specification_says_to_ignore() {
        for bad in [
            "",
            "garbage",
            // all-zero ids
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // version ff, and versions that are not hex
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // uppercase hex
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            // version 00 with trailing data, or too short
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            // a future version whose extra data does not start with a dash
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what-the-future",
            // wrong separators, non-hex digits
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ignores_optional_whitespace() {
        let ctx = parse_traceparent(" \t00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ");
        assert_eq!(ctx.map(|c| c.trace_id), Some(TRACE));
    }

    #[test]
    fn fresh_ids_are_nonzero_and_distinct() {
        let a = TraceContext::new_root(true);
        let b = TraceContext::new_root(false);
        assert_ne!(a.trace_id, [0; 16]);
        assert_ne!(a.span_id, [0; 8]);
        assert_ne!(a.trace_id, b.trace_id);
        assert!(a.is_sampled() && !b.is_sampled());
        assert_eq!(parse_traceparent(a.to_traceparent()), Some(a));
        assert_eq!(parse_traceparent(b.to_traceparent()), Some(b));
        let child = a.with_span_id(new_span_id());
        assert_eq!(child.trace_id, a.trace_id);
        assert_ne!(child.span_id, a.span_id);
    }
}

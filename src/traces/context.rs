//! W3C Trace Context (`traceparent`): the caller's trace a request joins, and the ids pixguard
//! makes for its own spans.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

/// A trace's 16-byte id.
pub type TraceId = [u8; 16];
/// A span's 8-byte id.
pub type SpanId = [u8; 8];

/// The two W3C Trace Context headers of a request or message, as they came.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Headers<'h> {
    /// `traceparent`.
    pub traceparent: Option<&'h [u8]>,
    /// `tracestate`: vendors' entries, kept on the span of a request that joins the trace.
    pub tracestate: Option<&'h [u8]>,
}

/// The longest `tracestate` kept: the Recommendation's 512 characters that a vendor must pass on.
const MAX_TRACE_STATE: usize = 512;

/// A `tracestate` value as the span records it: printable ASCII, at most 512 characters, its
/// surrounding whitespace trimmed; `None` otherwise (the Recommendation lets an invalid one be
/// dropped).
pub fn trace_state(value: &[u8]) -> Option<String> {
    let value = trim(value);
    if value.is_empty()
        || value.len() > MAX_TRACE_STATE
        || !value.iter().all(|b| (0x20..0x7f).contains(b))
    {
        return None;
    }
    // Printable ASCII is UTF-8.
    String::from_utf8(value.to_vec()).ok()
}

/// The span a request was sent from, as its `traceparent` header names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    /// The trace the request belongs to.
    pub trace_id: TraceId,
    /// The caller's span.
    pub span_id: SpanId,
    /// The caller recorded its span (flag `01`): the trace is being kept.
    pub sampled: bool,
}

impl Parent {
    /// Reads a `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`); `None` when it is not one,
    /// which the specification says to treat as no parent. A version above `00` is read by its
    /// first four fields, as the specification asks of a version it does not know.
    pub fn parse(value: &[u8]) -> Option<Parent> {
        let value = trim(value);
        if value.len() < 55 {
            return None;
        }
        let version = hex::<1>(&value[0..2])?;
        if version[0] == 0xff
            || value[2] != b'-'
            || value[35] != b'-'
            || value[52] != b'-'
            || (version[0] == 0 && value.len() != 55)
            || (value.len() > 55 && value[55] != b'-')
        {
            return None;
        }
        let trace_id = hex::<16>(&value[3..35])?;
        let span_id = hex::<8>(&value[36..52])?;
        let flags = hex::<1>(&value[53..55])?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Parent {
            trace_id,
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    /// The header value naming `span` of this trace as the parent of what comes next.
    pub fn traceparent(trace_id: &TraceId, span: &SpanId, sampled: bool) -> String {
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        push_hex(&mut out, trace_id);
        out.push('-');
        push_hex(&mut out, span);
        out.push_str(if sampled { "-01" } else { "-00" });
        out
    }
}

fn trim(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// Lowercase hex only: the specification forbids uppercase.
fn hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// Appends `bytes` as lowercase hex.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

thread_local! {
    // splitmix64, seeded once per thread from the standard library's random hash keys: ids need
    // to be unique and unpredictable enough to not collide across pods, not cryptographic.
    static STATE: Cell<u64> = Cell::new(std::collections::hash_map::RandomState::new().build_hasher().finish());
}

fn next_u64() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// A new span id (never all zeros, which means none).
pub fn new_span_id() -> SpanId {
    loop {
        let id = next_u64();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

/// A new trace id (never all zeros).
pub fn new_trace_id() -> TraceId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&next_u64().to_be_bytes());
    id[8..].copy_from_slice(&new_span_id());
    id
}

/// OpenTelemetry's `TraceIdRatioBased` decision: the trace id's last 8 bytes, read as a number
/// below 2^63, under `ratio` × 2^63. Every service using the same rule keeps the same traces.
pub fn ratio_keeps(trace_id: &TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    (u64::from_be_bytes(low) >> 1) < bound
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the W3C Trace Context recommendation, section 3.2.
    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_recommendations_example_reads_and_writes_back() {
        let p = Parent::parse(EXAMPLE.as_bytes()).unwrap();
        assert!(p.sampled);
        assert_eq!(p.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(p.trace_id[0], 0x4b);
        assert_eq!(p.trace_id[15], 0x36);
        assert_eq!(Parent::traceparent(&p.trace_id, &p.span_id, true), EXAMPLE);
        let unsampled = EXAMPLE.replace("-01", "-00");
        assert!(!Parent::parse(unsampled.as_bytes()).unwrap().sampled);
        assert_eq!(
            Parent::parse(format!("  {EXAMPLE}\t").as_bytes()),
            Some(p),
            "optional whitespace around the value"
        );
    }

    #[test]
    fn what_is_not_a_traceparent_is_no_parent() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(Parent::parse(bad.as_bytes()), None, "{bad}");
        }
        // A later version may add fields after a dash; its first four are read.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        assert!(Parent::parse(future.as_bytes()).is_some());
        let glued = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x";
        assert!(Parent::parse(glued.as_bytes()).is_none());
    }

    #[test]
    fn a_tracestate_is_kept_when_printable_and_not_too_long() {
        assert_eq!(
            trace_state(b" rojo=00f067aa0ba902b7,congo=t61rcWkgMzE ").as_deref(),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        );
        assert_eq!(trace_state(b""), None);
        assert_eq!(trace_state("congo=\u{e9}".as_bytes()), None);
        assert_eq!(trace_state(b"a=b\n"), None, "a line break is not printable");
        assert_eq!(trace_state(b"a=\x01"), None);
        assert!(trace_state(&[b'a'; 512]).is_some());
        assert_eq!(trace_state(&[b'a'; 513]), None);
    }

    #[test]
    fn new_ids_are_distinct_and_never_zero() {
        let ids: std::collections::HashSet<TraceId> = (0..10_000).map(|_| new_trace_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(!ids.contains(&[0; 16]));
    }

    #[test]
    fn the_ratio_keeps_its_share_and_the_ends_are_exact() {
        let kept = (0..20_000)
            .filter(|_| ratio_keeps(&new_trace_id(), 0.25))
            .count();
        // Binomial(20,000, 0.25): sd 61, so ±400 is over six of them.
        assert!((4_600..=5_400).contains(&kept), "{kept}");
        let id = new_trace_id();
        assert!(ratio_keeps(&id, 1.0));
        assert!(!ratio_keeps(&id, 0.0));
        let mut low = [0u8; 16];
        low[15] = 2;
        assert!(ratio_keeps(&low, 1e-9), "the smallest ids are kept first");
    }
}

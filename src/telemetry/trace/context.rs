//! W3C Trace Context (`traceparent`): read from a request, written for the next hop.
//! Hand-written rather than through the SDK's propagator, which builds a `Context` (a
//! map behind an `Arc`) per request: with export off this is all tracing costs.

use http::HeaderValue;
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// The ids a valid `traceparent` carries (W3C Trace Context, level 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

impl Parent {
    /// The parent as the SDK's remote span context.
    pub fn span_context(&self) -> SpanContext {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanContext::new(
            self.trace_id,
            self.span_id,
            flags,
            true,
            TraceState::default(),
        )
    }
}

/// Parses one `traceparent` value; `None` for anything the W3C rules refuse (a
/// request with such a header starts a trace of its own).
pub fn parse(value: &[u8]) -> Option<Parent> {
    // version "-" trace-id "-" parent-id "-" flags: 2 + 1 + 32 + 1 + 16 + 1 + 2.
    if value.len() < 55 {
        return None;
    }
    let version = hex_byte(&value[0..2])?;
    // Version 00 is exactly 55 characters; a later version may add fields after a dash.
    // ff is forbidden.
    match version {
        0 if value.len() != 55 => return None,
        0xff => return None,
        _ if value.len() > 55 && value[55] != b'-' => return None,
        _ => {}
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let mut trace_id = [0u8; 16];
    for (index, byte) in trace_id.iter_mut().enumerate() {
        *byte = hex_byte(&value[3 + 2 * index..5 + 2 * index])?;
    }
    let mut span_id = [0u8; 8];
    for (index, byte) in span_id.iter_mut().enumerate() {
        *byte = hex_byte(&value[36 + 2 * index..38 + 2 * index])?;
    }
    let flags = hex_byte(&value[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id: TraceId::from_bytes(trace_id),
        span_id: SpanId::from_bytes(span_id),
        sampled: flags & 1 == 1,
    })
}

/// The `traceparent` that makes `span_id` the parent of the next hop.
pub fn format(trace_id: TraceId, span_id: SpanId, sampled: bool) -> HeaderValue {
    let mut text = [b'-'; 55];
    text[0] = b'0';
    text[1] = b'0';
    hex_into(&mut text[3..35], &trace_id.to_bytes());
    hex_into(&mut text[36..52], &span_id.to_bytes());
    hex_into(&mut text[53..55], &[u8::from(sampled)]);
    // Only hex digits and dashes: always a valid header value.
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static(""))
}

/// Each byte as two lowercase hex digits (one table lookup per byte: this runs for
/// every request).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const PAIRS: [[u8; 2]; 256] = {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut pairs = [[0u8; 2]; 256];
        let mut byte = 0;
        while byte < 256 {
            pairs[byte] = [HEX[byte >> 4], HEX[byte & 0xf]];
            byte += 1;
        }
        pairs
    };
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&PAIRS[usize::from(*byte)]);
    }
}

/// The same decision as the SDK's trace-id ratio sampler, so a trace is sampled or not
/// alike whether or not spans are exported.
pub fn sampled_by_ratio(trace_id: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    let bytes = trace_id.to_bytes();
    let low = u64::from_be_bytes([
        bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15],
    ]);
    (low >> 1) < bound
}

/// Two lowercase hex digits as a byte (W3C: uppercase is invalid).
fn hex_byte(pair: &[u8]) -> Option<u8> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    Some(digit(pair[0])? << 4 | digit(pair[1])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read_and_written_back_alike() {
        let parent = parse(VALID.as_bytes()).unwrap();
        assert!(parent.sampled);
        assert_eq!(
            parent.trace_id,
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(
            format(parent.trace_id, parent.span_id, parent.sampled),
            VALID
        );
        let unsampled = VALID.replace("-01", "-00");
        assert!(!parse(unsampled.as_bytes()).unwrap().sampled);
    }

    #[test]
    fn what_the_w3c_rules_refuse_is_not_a_parent() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:?}");
        }
        // A later version may carry more after a dash; its first fields count.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-next";
        assert!(parse(later.as_bytes()).is_some());
    }

    #[test]
    fn the_ratio_decision_follows_the_trace_id() {
        let low = TraceId::from_hex("00000000000000000000000000000001").unwrap();
        let high = TraceId::from_hex("0000000000000000ffffffffffffffff").unwrap();
        assert!(sampled_by_ratio(low, 0.5));
        assert!(!sampled_by_ratio(high, 0.5));
        assert!(sampled_by_ratio(high, 1.0));
        assert!(!sampled_by_ratio(low, 0.0));
    }
}

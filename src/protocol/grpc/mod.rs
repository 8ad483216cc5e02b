//! The Open Inference Protocol's gRPC service, generated from `inference.proto` (server and the
//! client `pixguard bench` uses), the standard `grpc-timeout` request header, and the 5-byte
//! prefix that frames a message in a call's body.

use std::time::Duration;

#[allow(missing_docs, clippy::all)]
mod generated {
    tonic::include_proto!("inference");
}

pub use generated::*;

/// `inference.proto` compiled (a `FileDescriptorSet`), for the server reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/inference_descriptor.bin"));

pub mod infer;

/// The HTTP/2 path of `ModelInfer`, the method a client scores with.
pub const MODEL_INFER_PATH: &str = "/inference.GRPCInferenceService/ModelInfer";

/// The header a gRPC client sets to bound a call (`grpc-timeout: 250m`).
pub const TIMEOUT_HEADER: &str = "grpc-timeout";

/// Why a unary call's body is not one well-framed, uncompressed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer than the prefix's 5 bytes.
    #[error("Missing request message.")]
    Missing,
    /// The compressed flag set: this side negotiated no compression.
    #[error(
        "protocol error: received message with compressed-flag but no grpc-encoding was specified"
    )]
    Compressed,
    /// A flag other than 0 or 1.
    #[error(
        "protocol error: received message with invalid compression flag: {0} (valid flags are 0 and 1)"
    )]
    Flag(u8),
    /// The prefix announces more than the limit.
    #[error("message of {0} bytes is larger than the limit of {1}")]
    TooLarge(usize, usize),
    /// The prefix's length and the bytes that follow it differ.
    #[error(
        "a unary call carries one message: its prefix says {said} bytes, the body holds {held}"
    )]
    Length {
        /// Bytes the prefix announces.
        said: usize,
        /// Bytes after the prefix.
        held: usize,
    },
}

/// The one message of a unary call's `body` (prefix: flag 0, big-endian length), at most `max`
/// bytes long.
pub fn unframe(body: &[u8], max: usize) -> Result<std::ops::Range<usize>, FrameError> {
    unframe_encoded(body, max, false).map(|(range, _)| range)
}

/// [`unframe`] for a call that named a `grpc-encoding` when `encoded`: the message may then be
/// compressed (flag 1), and the answer says whether it is.
pub fn unframe_encoded(
    body: &[u8],
    max: usize,
    encoded: bool,
) -> Result<(std::ops::Range<usize>, bool), FrameError> {
    let Some((prefix, message)) = body.split_first_chunk::<5>() else {
        return Err(FrameError::Missing);
    };
    let compressed = match prefix[0] {
        0 => false,
        1 if encoded => true,
        1 => return Err(FrameError::Compressed),
        f => return Err(FrameError::Flag(f)),
    };
    let said = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if said > max {
        return Err(FrameError::TooLarge(said, max));
    }
    if message.len() != said {
        return Err(FrameError::Length {
            said,
            held: message.len(),
        });
    }
    Ok((5..body.len(), compressed))
}

/// `message` behind its prefix, as a unary call's whole body (`None` past 4 GiB).
pub fn frame(message: &[u8]) -> Option<bytes::Bytes> {
    let len = u32::try_from(message.len()).ok()?;
    let mut body = Vec::with_capacity(5 + message.len());
    body.push(0);
    body.extend_from_slice(&len.to_be_bytes());
    body.extend_from_slice(message);
    Some(body.into())
}

/// Parses a `grpc-timeout` value: at most 8 ASCII digits and a unit (`H`, `M`, `S`, `m`, `u`,
/// `n`), as gRPC over HTTP/2 defines it. Anything else is `None`.
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::{FrameError, frame, parse_timeout, unframe, unframe_encoded};
    use std::time::Duration;

    #[test]
    fn a_framed_message_unframes_and_bad_prefixes_are_named() {
        let body = frame(b"hello").expect("small");
        assert_eq!(&body[..5], &[0, 0, 0, 0, 5]);
        assert_eq!(&body[unframe(&body, 5).expect("framed")], b"hello");
        assert_eq!(unframe(&body, 4), Err(FrameError::TooLarge(5, 4)));
        assert_eq!(unframe(&body[..4], 9), Err(FrameError::Missing));
        assert_eq!(
            unframe(&body[..7], 9),
            Err(FrameError::Length { said: 5, held: 2 })
        );
        let mut flagged = body.to_vec();
        flagged[0] = 1;
        assert_eq!(unframe(&flagged, 9), Err(FrameError::Compressed));
        // With a grpc-encoding named, the compressed flag is taken and reported.
        assert_eq!(unframe_encoded(&flagged, 9, true), Ok((5..10, true)));
        assert_eq!(unframe_encoded(&body, 9, true), Ok((5..10, false)));
        flagged[0] = 7;
        assert_eq!(unframe(&flagged, 9), Err(FrameError::Flag(7)));
        assert_eq!(&frame(b"").expect("empty")[..], &[0, 0, 0, 0, 0]);
    }

    #[test]
    fn grpc_timeout_values_follow_the_http2_mapping() {
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(
            parse_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "m", "123456789m", "10x", "-1S", "1.5S", "１S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }
}

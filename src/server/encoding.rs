//! Compressed requests: `content-encoding: gzip` or `deflate` on HTTP, `grpc-encoding` on gRPC's
//! `ModelInfer`, as Triton takes them and tritonclient sends them (`request_compression_algorithm`,
//! `compression_algorithm`). Answers are not compressed: a client that asked for that with
//! `accept-encoding` or `grpc-accept-encoding` reads a plain answer as it is.

use std::io::Read;

use axum::http::HeaderMap;
use axum::http::header::CONTENT_ENCODING;
use bytes::Bytes;

use crate::scoring::ScoreError;

/// A compression a request may arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Coding {
    /// gzip (RFC 1952); several members are one body, as `gzip -c a b` writes them.
    Gzip,
    /// The zlib format (RFC 1950): what HTTP and gRPC call "deflate", what zlib.compress writes.
    Deflate,
}

impl Coding {
    /// The coding a `content-encoding` / `grpc-encoding` header value names: `None` for identity
    /// (or empty), the reason for one not taken.
    pub(super) fn from_header(value: &[u8]) -> Result<Option<Coding>, String> {
        match String::from_utf8_lossy(value)
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "" | "identity" => Ok(None),
            "gzip" | "x-gzip" => Ok(Some(Coding::Gzip)),
            "deflate" => Ok(Some(Coding::Deflate)),
            other => Err(format!(
                "`{other}` is not supported: send gzip, deflate or identity"
            )),
        }
    }

    /// The coding's name, as the headers spell it.
    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }

    /// `data` inflated, or `None` when that is more than `limit` bytes: the limit bounds what is
    /// parsed, so a small compressed body cannot stand for a large one.
    pub(super) fn inflate(self, data: &[u8], limit: usize) -> std::io::Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        let reader: Box<dyn Read + '_> = match self {
            Coding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(data)),
            Coding::Deflate => Box::new(flate2::read::ZlibDecoder::new(data)),
        };
        reader.take(limit as u64 + 1).read_to_end(&mut out)?;
        Ok((out.len() <= limit).then_some(out))
    }
}

/// An HTTP body as the client wrote it, inflated when it came compressed; more than `limit` bytes
/// inflated is 413, as a plain body over the limit is.
pub(super) fn decode_body(
    headers: &HeaderMap,
    body: Bytes,
    limit: usize,
) -> Result<Bytes, ScoreError> {
    let Some(value) = headers.get(CONTENT_ENCODING) else {
        return Ok(body);
    };
    let coding = Coding::from_header(value.as_bytes())
        .map_err(|reason| ScoreError::Malformed(format!("content-encoding {reason}")))?;
    let Some(coding) = coding else {
        return Ok(body);
    };
    match coding.inflate(&body, limit) {
        Ok(Some(inflated)) => Ok(inflated.into()),
        Ok(None) => Err(ScoreError::PayloadTooLarge { limit }),
        Err(e) => Err(ScoreError::Malformed(format!(
            "content-encoding {}: {e}",
            coding.name()
        ))),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::io::Write;

    use axum::http::HeaderValue;
    use flate2::Compression;
    use flate2::write::{GzEncoder, ZlibEncoder};

    use super::*;

    fn headers(encoding: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(e) = encoding {
            h.insert(CONTENT_ENCODING, HeaderValue::from_str(e).unwrap());
        }
        h
    }

    /// `data` compressed with gzip, as a client sends it.
    pub(in crate::server) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_and_deflate_bodies_are_inflated_and_plain_ones_pass() {
        let text = br#"{"transactions": []}"#.repeat(50);
        let decode =
            |enc: Option<&str>, body: Vec<u8>| decode_body(&headers(enc), body.into(), 4096);
        assert_eq!(decode(None, text.clone()).unwrap(), text);
        assert_eq!(decode(Some("identity"), text.clone()).unwrap(), text);
        assert_eq!(decode(Some("gzip"), gzip(&text)).unwrap(), text);
        assert_eq!(decode(Some(" GZIP "), gzip(&text)).unwrap(), text);
        assert_eq!(decode(Some("deflate"), zlib(&text)).unwrap(), text);
        let two = [gzip(&text[..40]), gzip(&text[40..])].concat();
        assert_eq!(decode(Some("gzip"), two).unwrap(), text);
    }

    #[test]
    fn unknown_broken_and_oversized_bodies_are_refused() {
        let text = vec![b' '; 10_000];
        let err = decode_body(&headers(Some("br")), gzip(&text).into(), 20_000).unwrap_err();
        assert!(
            matches!(&err, ScoreError::Malformed(m) if m.contains("`br`")),
            "{err}"
        );
        let mut broken = gzip(&text);
        broken.truncate(broken.len() / 2);
        let err = decode_body(&headers(Some("gzip")), broken.into(), 20_000).unwrap_err();
        assert!(
            matches!(&err, ScoreError::Malformed(m) if m.contains("gzip")),
            "{err}"
        );
        let err = decode_body(&headers(Some("deflate")), gzip(&text).into(), 20_000).unwrap_err();
        assert!(matches!(err, ScoreError::Malformed(_)), "{err}");
        // 10,000 bytes inflate from a few dozen: over a 9,999-byte limit, at the limit not.
        let small = gzip(&text);
        assert!(small.len() < 100);
        let err = decode_body(&headers(Some("gzip")), small.clone().into(), 9_999).unwrap_err();
        assert_eq!(err, ScoreError::PayloadTooLarge { limit: 9_999 });
        assert_eq!(
            decode_body(&headers(Some("gzip")), small.into(), 10_000)
                .unwrap()
                .len(),
            10_000
        );
    }
}

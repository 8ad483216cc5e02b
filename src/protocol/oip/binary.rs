//! The binary tensor extension: a body is the JSON request, `Inference-Header-Content-Length`
//! bytes long, followed by the raw bytes of each input that says `binary_data_size`, in order;
//! BYTES elements in its length-prefixed form; and the `NaN` literals tritonclient writes.

use super::request::InferRequest;
use crate::protocol::ProtocolError;
use crate::transaction::json_from_bytes;

/// Header of the binary tensor extension: length of the JSON part of the body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Each input's slice of the binary payload (`None`: its data is in the JSON).
pub type BinaryParts<'a> = Vec<Option<&'a [u8]>>;

/// Splits `body` into the JSON request and each binary input's bytes. `header_length` is the
/// extension's header when the request carried one.
pub fn split_body<'a>(
    header_length: Option<&[u8]>,
    body: &'a [u8],
) -> Result<(InferRequest, BinaryParts<'a>), ProtocolError> {
    let json_len = match header_length {
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|n| *n <= body.len())
            .ok_or_else(|| {
                ProtocolError::Malformed(format!(
                    "{HEADER_LENGTH} is not a length within the {}-byte body",
                    body.len()
                ))
            })?,
        None => body.len(),
    };
    let (head, mut rest) = body.split_at(json_len);
    let fixed = nan_literals_to_null(head);
    let request: InferRequest = json_from_bytes(fixed.as_deref().unwrap_or(head)).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ProtocolError::InvalidJson(format!("invalid JSON: {e}"))
        } else {
            ProtocolError::Malformed(format!("malformed inference request: {e}"))
        }
    })?;
    let mut slices = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        match input.parameters.get("binary_data_size") {
            Some(size) => {
                let size = size
                    .as_u64()
                    .and_then(|s| usize::try_from(s).ok())
                    .filter(|s| *s <= rest.len())
                    .ok_or_else(|| {
                        ProtocolError::invalid(
                            &input.name,
                            format!(
                                "binary_data_size {size} is not a length within the {} bytes left",
                                rest.len()
                            ),
                        )
                    })?;
                let (mine, tail) = rest.split_at(size);
                slices.push(Some(mine));
                rest = tail;
            }
            None => slices.push(None),
        }
    }
    if !rest.is_empty() {
        return Err(ProtocolError::Malformed(format!(
            "{} bytes of binary data are not claimed by any input",
            rest.len()
        )));
    }
    Ok((request, slices))
}

/// Encodes BYTES elements in the binary extension's length-prefixed form.
pub fn encode_bytes(items: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.iter().map(|s| s.len() + 4).sum());
    for s in items {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

/// Triton accepts the non-standard `NaN` and `Infinity` literals that tritonclient writes for float
/// tensors; serde_json does not. Outside strings, `NaN` becomes `null` (read back as NaN) and
/// `Infinity` a string (refused by name). Returns `None` when the text has neither.
pub fn nan_literals_to_null(json: &[u8]) -> Option<Vec<u8>> {
    // Most bodies have neither: a vectorised search keeps them from paying for the rewrite.
    let has = |pat: &[u8]| memchr::memmem::find(json, pat).is_some();
    if !has(b"NaN") && !has(b"Infinity") {
        return None;
    }
    // Jumps from one byte that matters to the next (a quote, or an `N` or `I` outside strings;
    // a quote or a backslash inside them) and copies what lies between in runs: a byte-by-byte
    // copy was a third of a 1,000-row JSON request's decoding (docs/benchmarks.md).
    let mut out = Vec::with_capacity(json.len() + json.len() / 16);
    let (mut copied, mut at) = (0, 0);
    while let Some(k) = memchr::memchr3(b'"', b'N', b'I', &json[at..]).map(|k| at + k) {
        if json[k] == b'"' {
            at = string_end(json, k + 1);
            continue;
        }
        let (literal, replacement): (usize, &[u8]) = if json[k..].starts_with(b"NaN") {
            (3, b"null")
        } else if json[k..].starts_with(b"Infinity") {
            (8, b"\"Infinity\"")
        } else {
            at = k + 1;
            continue;
        };
        out.extend_from_slice(&json[copied..k]);
        out.extend_from_slice(replacement);
        copied = k + literal;
        at = copied;
    }
    out.extend_from_slice(&json[copied..]);
    Some(out)
}

/// Where the string whose contents start at `from` ends: just past its closing quote, or the end
/// of the text for an unterminated one. A backslash escapes the byte after it.
fn string_end(json: &[u8], mut from: usize) -> usize {
    while let Some(d) = memchr::memchr2(b'"', b'\\', &json[from..]) {
        if json[from + d] == b'"' {
            return from + d + 1;
        }
        from = (from + d + 2).min(json.len());
    }
    json.len()
}

#[cfg(test)]
mod tests {
    use super::nan_literals_to_null;

    #[test]
    fn nan_literals_become_null_outside_strings() {
        let fixed =
            nan_literals_to_null(br#"{"a": [1.0, NaN, -Infinity], "s": "NaN \" NaN"}"#).unwrap();
        assert_eq!(
            String::from_utf8(fixed).unwrap(),
            r#"{"a": [1.0, null, -"Infinity"], "s": "NaN \" NaN"}"#
        );
        assert!(nan_literals_to_null(b"[1, 2]").is_none());
    }

    /// The rewrite as a byte-by-byte loop: what the jumping version must equal.
    fn byte_by_byte(json: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(json.len());
        let (mut in_string, mut escaped, mut i) = (false, false, 0);
        while i < json.len() {
            let c = json[i];
            if in_string {
                out.push(c);
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                i += 1;
                continue;
            }
            if c == b'"' {
                in_string = true;
            } else if json[i..].starts_with(b"NaN") {
                out.extend_from_slice(b"null");
                i += 3;
                continue;
            } else if json[i..].starts_with(b"Infinity") {
                out.extend_from_slice(b"\"Infinity\"");
                i += 8;
                continue;
            }
            out.push(c);
            i += 1;
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn jumping_equals_byte_by_byte(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "NaN", "Infinity", "-Infinity", "\"", "\\", "\\\"", "N", "I", "Na", "Inf",
                    "null", "1.5", ",", "[", "]", "\"s\"", "x", " ",
                ]),
                0..40,
            )
        ) {
            let json = parts.concat();
            let want = byte_by_byte(json.as_bytes());
            match nan_literals_to_null(json.as_bytes()) {
                Some(got) => proptest::prop_assert_eq!(got, want),
                None => proptest::prop_assert_eq!(json.as_bytes(), want.as_slice()),
            }
        }
    }
}

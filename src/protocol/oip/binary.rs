//! The binary tensor extension: a body is the JSON request, `Inference-Header-Content-Length`
//! bytes long, followed by the raw bytes of each input that says `binary_data_size`, in order.

use super::request::InferRequest;
use super::tensor::nan_literals_to_null;
use crate::protocol::ProtocolError;

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
    let request: InferRequest =
        serde_json::from_slice(fixed.as_deref().unwrap_or(head)).map_err(|e| {
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

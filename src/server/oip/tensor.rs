//! Open Inference Protocol tensors: JSON `data` arrays and the binary tensor extension, decoded into
//! typed columns.

use serde::Deserialize;
use serde_json::Value;

/// A client error in an inference request, naming the input or output it is about.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct OipError(pub String);

/// Tensor element types pixguard accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datatype {
    /// Length-prefixed byte strings.
    Bytes,
    /// i64.
    Int64,
    /// f64.
    Fp64,
    /// f32.
    Fp32,
    /// bool.
    Bool,
}

impl Datatype {
    /// The protocol's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Datatype::Bytes => "BYTES",
            Datatype::Int64 => "INT64",
            Datatype::Fp64 => "FP64",
            Datatype::Fp32 => "FP32",
            Datatype::Bool => "BOOL",
        }
    }
}

/// One input as the request's JSON describes it.
#[derive(Debug, Default, Deserialize)]
pub struct RawInput {
    /// Input name.
    pub name: String,
    /// Shape; the first dimension is the batch.
    pub shape: Vec<i64>,
    /// Datatype name.
    pub datatype: String,
    /// Per-input parameters (`binary_data_size`).
    #[serde(default)]
    pub parameters: serde_json::Map<String, Value>,
    /// JSON data, absent when the tensor travels as binary.
    #[serde(default)]
    pub data: Option<Value>,
}

/// Decoded elements of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// BYTES elements as UTF-8 text.
    Text(Vec<String>),
    /// INT64 elements.
    Int(Vec<i64>),
    /// FP64 or FP32 elements.
    Float(Vec<f64>),
    /// BOOL elements.
    Bool(Vec<bool>),
}

impl Column {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Column::Text(v) => v.len(),
            Column::Int(v) => v.len(),
            Column::Float(v) => v.len(),
            Column::Bool(v) => v.len(),
        }
    }

    /// Whether the tensor is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other),
    }
}

/// Decodes `input` of the expected `datatype` from its JSON data or its slice of the binary payload.
pub fn decode(
    input: &RawInput,
    expected: Datatype,
    binary: Option<&[u8]>,
) -> Result<Column, OipError> {
    let name = &input.name;
    if input.datatype != expected.as_str() {
        return Err(OipError(format!(
            "input '{name}': datatype {} does not match the model's {}",
            input.datatype,
            expected.as_str()
        )));
    }
    let elements: i64 = input.shape.iter().product();
    if input.shape.iter().any(|d| *d < 0) {
        return Err(OipError(format!(
            "input '{name}': shape {:?} has a negative dimension",
            input.shape
        )));
    }
    let column = match binary {
        Some(bytes) => decode_binary(name, expected, bytes)?,
        None => {
            let data = input
                .data
                .as_ref()
                .ok_or_else(|| OipError(format!("input '{name}': no data")))?;
            let mut flat = Vec::new();
            flatten(data, &mut flat);
            decode_json(name, expected, &flat)?
        }
    };
    if column.len() as i64 != elements {
        return Err(OipError(format!(
            "input '{name}': shape {:?} holds {elements} elements, the data has {}",
            input.shape,
            column.len()
        )));
    }
    Ok(column)
}

fn decode_json(name: &str, datatype: Datatype, values: &[&Value]) -> Result<Column, OipError> {
    let bad = |i: usize, what: &str| OipError(format!("input '{name}': element {i} is not {what}"));
    Ok(match datatype {
        Datatype::Bytes => Column::Text(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad(i, "a string"))
                })
                .collect::<Result<_, _>>()?,
        ),
        Datatype::Int64 => Column::Int(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_i64().ok_or_else(|| bad(i, "an integer")))
                .collect::<Result<_, _>>()?,
        ),
        // `null` is NaN: see `nan_literals_to_null`.
        Datatype::Fp64 | Datatype::Fp32 => Column::Float(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    if v.is_null() {
                        Some(f64::NAN)
                    } else {
                        v.as_f64()
                    }
                    .ok_or_else(|| bad(i, "a number"))
                })
                .collect::<Result<_, _>>()?,
        ),
        Datatype::Bool => Column::Bool(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_bool().ok_or_else(|| bad(i, "a boolean")))
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn decode_binary(name: &str, datatype: Datatype, bytes: &[u8]) -> Result<Column, OipError> {
    let width = |w: usize| {
        if bytes.len().is_multiple_of(w) {
            Ok(bytes.chunks_exact(w))
        } else {
            Err(OipError(format!(
                "input '{name}': {} binary bytes are not a whole number of {w}-byte elements",
                bytes.len()
            )))
        }
    };
    Ok(match datatype {
        Datatype::Bytes => {
            let mut out = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                let len_bytes: [u8; 4] = bytes
                    .get(at..at + 4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| {
                        OipError(format!("input '{name}': truncated BYTES length prefix"))
                    })?;
                let len = u32::from_le_bytes(len_bytes) as usize;
                let text = bytes
                    .get(at + 4..at + 4 + len)
                    .ok_or_else(|| OipError(format!("input '{name}': truncated BYTES element")))?;
                out.push(String::from_utf8(text.to_vec()).map_err(|_| {
                    OipError(format!(
                        "input '{name}': element {} is not UTF-8",
                        out.len()
                    ))
                })?);
                at += 4 + len;
            }
            Column::Text(out)
        }
        Datatype::Int64 => Column::Int(
            width(8)?
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
                .collect(),
        ),
        Datatype::Fp64 => Column::Float(
            width(8)?
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or_default()))
                .collect(),
        ),
        Datatype::Fp32 => Column::Float(
            width(4)?
                .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap_or_default())))
                .collect(),
        ),
        Datatype::Bool => Column::Bool(width(1)?.map(|b| b[0] != 0).collect()),
    })
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
    let has = |pat: &[u8]| json.windows(pat.len()).any(|w| w == pat);
    if !has(b"NaN") && !has(b"Infinity") {
        return None;
    }
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
    Some(out)
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
}

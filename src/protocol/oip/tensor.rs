//! Open Inference Protocol tensors decoded into typed columns from any of the three encodings a
//! request can use — JSON `data`, the binary tensor extension (or gRPC's `raw_input_contents`), and
//! gRPC's typed `contents` — with the same checks and the same errors for all three.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::protocol::ProtocolError;
use crate::protocol::grpc::InferTensorContents;
use crate::protocol::grpc::infer::InferCall;

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
    /// The datatype a protocol name denotes (`FP64` → `Fp64`), when pixguard has it.
    pub fn from_name(name: &str) -> Option<Datatype> {
        [
            Datatype::Bytes,
            Datatype::Int64,
            Datatype::Fp64,
            Datatype::Fp32,
            Datatype::Bool,
        ]
        .into_iter()
        .find(|d| d.as_str() == name)
    }

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

    /// Triton's model-configuration name (`TYPE_STRING` for BYTES).
    pub fn triton_name(self) -> &'static str {
        match self {
            Datatype::Bytes => "TYPE_STRING",
            Datatype::Int64 => "TYPE_INT64",
            Datatype::Fp64 => "TYPE_FP64",
            Datatype::Fp32 => "TYPE_FP32",
            Datatype::Bool => "TYPE_BOOL",
        }
    }

    /// Triton's `DataType` enum value (model_config.proto).
    pub fn triton_value(self) -> i32 {
        match self {
            Datatype::Bool => 1,
            Datatype::Int64 => 9,
            Datatype::Fp32 => 11,
            Datatype::Fp64 => 12,
            Datatype::Bytes => 13,
        }
    }
}

/// Decoded elements of one tensor. Text borrows from the request wherever it can (binary and
/// typed contents always, JSON strings without escapes): a 1,000-row request's BYTES elements were
/// ten thousand allocations, each parsed into a typed field and dropped.
#[derive(Debug, Clone, PartialEq)]
pub enum Column<'a> {
    /// BYTES elements as UTF-8 text.
    Text(Vec<Cow<'a, str>>),
    /// INT64 elements.
    Int(Vec<i64>),
    /// FP64 or FP32 elements.
    Float(Vec<f64>),
    /// BOOL elements.
    Bool(Vec<bool>),
}

impl Column<'_> {
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

/// Where a tensor's elements are.
#[derive(Debug, Clone, Copy)]
pub enum TensorData<'a> {
    /// The JSON `data` array (nested or flat), not yet parsed.
    Json(&'a RawValue),
    /// Little-endian bytes: the binary extension's slice, or gRPC's raw contents.
    Binary(&'a [u8]),
    /// gRPC's typed contents.
    Proto(&'a InferTensorContents),
    /// None was sent.
    Missing,
}

/// One input tensor as a request describes it, whatever its encoding.
#[derive(Debug, Clone, Copy)]
pub struct Tensor<'a> {
    /// Input name.
    pub name: &'a str,
    /// Datatype name as sent.
    pub datatype: &'a str,
    /// Shape; the first dimension is the batch.
    pub shape: &'a [i64],
    /// Its elements.
    pub data: TensorData<'a>,
}

/// A gRPC call's input tensors, in request order: each input's raw contents where the call sent
/// them (the n-th raw content is the n-th input's), else its typed contents.
pub fn call_tensors(call: &InferCall) -> Vec<Tensor<'_>> {
    let mut raw = call.raw_input_contents();
    call.inputs()
        .enumerate()
        .map(|(k, i)| Tensor {
            name: i.name,
            datatype: i.datatype,
            shape: i.shape,
            data: match (raw.next(), call.typed_contents(k)) {
                (Some(raw), _) => TensorData::Binary(raw),
                (None, Some(contents)) => TensorData::Proto(contents),
                (None, None) => TensorData::Missing,
            },
        })
        .collect()
}

fn invalid(name: &str, reason: impl Into<String>) -> ProtocolError {
    ProtocolError::invalid(name, reason)
}

/// Elements a shape holds: refused when a dimension is negative or the product overflows.
pub fn element_count(name: &str, shape: &[i64]) -> Result<usize, ProtocolError> {
    shape.iter().try_fold(1usize, |n, &d| {
        let d = usize::try_from(d)
            .map_err(|_| invalid(name, format!("shape {shape:?} has a negative dimension")))?;
        n.checked_mul(d).ok_or_else(|| {
            invalid(
                name,
                format!("shape {shape:?} holds more elements than fit in memory"),
            )
        })
    })
}

/// Decodes `tensor`, which the model declares as `expected`, into a column.
pub fn decode<'a>(tensor: &Tensor<'a>, expected: Datatype) -> Result<Column<'a>, ProtocolError> {
    let name = tensor.name;
    if tensor.datatype != expected.as_str() {
        return Err(invalid(
            name,
            format!(
                "datatype {} does not match the model's {}",
                tensor.datatype,
                expected.as_str()
            ),
        ));
    }
    let elements = element_count(name, tensor.shape)?;
    let column = match tensor.data {
        TensorData::Binary(bytes) => decode_binary(name, expected, bytes)?,
        TensorData::Json(raw) => decode_json(name, expected, raw, elements)?,
        TensorData::Proto(contents) => decode_proto(name, expected, contents)?,
        TensorData::Missing => return Err(invalid(name, "no data")),
    };
    if column.len() != elements {
        return Err(invalid(
            name,
            format!(
                "shape {:?} holds {elements} element{}, the data has {}",
                tensor.shape,
                if elements == 1 { "" } else { "s" },
                column.len()
            ),
        ));
    }
    Ok(column)
}

/// A JSON element of one datatype; `null` stands for NaN in float tensors (`nan_literals_to_null`).
trait Element<'de>: Sized {
    const WHAT: &'static str;
    fn from_str(_: &str) -> Option<Self> {
        None
    }
    /// A string the JSON holds as is (no escapes), which can be borrowed.
    fn from_borrowed_str(v: &'de str) -> Option<Self> {
        Self::from_str(v)
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_null() -> Option<Self> {
        None
    }
}

impl<'de> Element<'de> for Cow<'de, str> {
    const WHAT: &'static str = "a string";
    fn from_str(v: &str) -> Option<Self> {
        Some(Cow::Owned(v.to_owned()))
    }
    fn from_borrowed_str(v: &'de str) -> Option<Self> {
        Some(Cow::Borrowed(v))
    }
}

impl Element<'_> for i64 {
    const WHAT: &'static str = "an integer";
    fn from_i64(v: i64) -> Option<Self> {
        Some(v)
    }
    fn from_u64(v: u64) -> Option<Self> {
        i64::try_from(v).ok()
    }
}

impl Element<'_> for f64 {
    const WHAT: &'static str = "a number";
    fn from_i64(v: i64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_u64(v: u64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_f64(v: f64) -> Option<Self> {
        Some(v)
    }
    fn from_null() -> Option<Self> {
        Some(f64::NAN)
    }
}

impl Element<'_> for bool {
    const WHAT: &'static str = "a boolean";
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

/// Appends the elements of a (possibly nested) JSON array to a typed vector, with no `Value` tree.
struct Flat<'v, T>(&'v mut Vec<T>);

impl<'de, T: Element<'de>> Flat<'_, T> {
    fn push<E: de::Error>(&mut self, v: Option<T>) -> Result<(), E> {
        match v {
            Some(v) => {
                self.0.push(v);
                Ok(())
            }
            None => Err(E::custom(format_args!(
                "element {} is not {}",
                self.0.len(),
                T::WHAT
            ))),
        }
    }
}

impl<'de, T: Element<'de>> DeserializeSeed<'de> for Flat<'_, T> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Element<'de>> Visitor<'de> for Flat<'_, T> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {} elements", T::WHAT)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flat(&mut *self.0))?.is_some() {}
        Ok(())
    }
    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<(), E> {
        self.push(T::from_str(v))
    }
    fn visit_borrowed_str<E: de::Error>(mut self, v: &'de str) -> Result<(), E> {
        self.push(T::from_borrowed_str(v))
    }
    fn visit_i64<E: de::Error>(mut self, v: i64) -> Result<(), E> {
        self.push(T::from_i64(v))
    }
    fn visit_u64<E: de::Error>(mut self, v: u64) -> Result<(), E> {
        self.push(T::from_u64(v))
    }
    fn visit_f64<E: de::Error>(mut self, v: f64) -> Result<(), E> {
        self.push(T::from_f64(v))
    }
    fn visit_bool<E: de::Error>(mut self, v: bool) -> Result<(), E> {
        self.push(T::from_bool(v))
    }
    fn visit_unit<E: de::Error>(mut self) -> Result<(), E> {
        self.push(T::from_null())
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(format_args!(
            "element {} is not {}",
            self.0.len(),
            T::WHAT
        )))
    }
}

fn json_elements<'a, T: Element<'a>>(
    name: &str,
    raw: &'a RawValue,
    capacity: usize,
) -> Result<Vec<T>, ProtocolError> {
    // Capped: the shape is the client's word, the data may be shorter.
    let mut out = Vec::with_capacity(capacity.min(1 << 16));
    let mut de = serde_json::Deserializer::from_str(raw.get());
    Flat(&mut out).deserialize(&mut de).map_err(|e| {
        let message = e.to_string();
        // serde_json appends " at line L column C"; the element index already locates it.
        let message = match message.rfind(" at line ") {
            Some(i) => message[..i].to_string(),
            None => message,
        };
        invalid(name, message)
    })?;
    Ok(out)
}

fn decode_json<'a>(
    name: &str,
    datatype: Datatype,
    raw: &'a RawValue,
    elements: usize,
) -> Result<Column<'a>, ProtocolError> {
    Ok(match datatype {
        Datatype::Bytes => Column::Text(json_elements(name, raw, elements)?),
        Datatype::Int64 => Column::Int(json_elements(name, raw, elements)?),
        Datatype::Fp64 | Datatype::Fp32 => Column::Float(json_elements(name, raw, elements)?),
        Datatype::Bool => Column::Bool(json_elements(name, raw, elements)?),
    })
}

fn decode_binary<'a>(
    name: &str,
    datatype: Datatype,
    bytes: &'a [u8],
) -> Result<Column<'a>, ProtocolError> {
    let width = |w: usize| {
        if bytes.len().is_multiple_of(w) {
            Ok(bytes.chunks_exact(w))
        } else {
            Err(invalid(
                name,
                format!(
                    "{} binary bytes are not a whole number of {w}-byte elements",
                    bytes.len()
                ),
            ))
        }
    };
    Ok(match datatype {
        Datatype::Bytes => {
            let mut out = Vec::new();
            let mut rest = bytes;
            while !rest.is_empty() {
                let (prefix, tail) = rest
                    .split_first_chunk::<4>()
                    .ok_or_else(|| invalid(name, "truncated BYTES length prefix"))?;
                let len = u32::from_le_bytes(*prefix) as usize;
                if len > tail.len() {
                    return Err(invalid(
                        name,
                        format!(
                            "BYTES element {} claims {len} bytes, {} are left",
                            out.len(),
                            tail.len()
                        ),
                    ));
                }
                let (text, tail) = tail.split_at(len);
                out.push(Cow::Borrowed(std::str::from_utf8(text).map_err(|_| {
                    invalid(name, format!("element {} is not UTF-8", out.len()))
                })?));
                rest = tail;
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

/// gRPC's typed contents: the field the protocol assigns to the datatype, and no other.
fn decode_proto<'a>(
    name: &str,
    datatype: Datatype,
    c: &'a InferTensorContents,
) -> Result<Column<'a>, ProtocolError> {
    let others = [
        ("bool_contents", c.bool_contents.len(), Datatype::Bool),
        ("int64_contents", c.int64_contents.len(), Datatype::Int64),
        ("fp64_contents", c.fp64_contents.len(), Datatype::Fp64),
        ("fp32_contents", c.fp32_contents.len(), Datatype::Fp32),
        ("bytes_contents", c.bytes_contents.len(), Datatype::Bytes),
        ("int_contents", c.int_contents.len(), Datatype::Int64),
        ("uint_contents", c.uint_contents.len(), Datatype::Int64),
        ("uint64_contents", c.uint64_contents.len(), Datatype::Int64),
    ];
    let field = |d: Datatype| match d {
        Datatype::Bool => "bool_contents",
        Datatype::Int64 => "int64_contents",
        Datatype::Fp64 => "fp64_contents",
        Datatype::Fp32 => "fp32_contents",
        Datatype::Bytes => "bytes_contents",
    };
    if let Some((wrong, _, _)) = others
        .iter()
        .find(|(f, n, _)| *n > 0 && *f != field(datatype))
    {
        return Err(invalid(
            name,
            format!(
                "{} data belongs in {}, not {wrong}",
                datatype.as_str(),
                field(datatype)
            ),
        ));
    }
    Ok(match datatype {
        Datatype::Bool => Column::Bool(c.bool_contents.clone()),
        Datatype::Int64 => Column::Int(c.int64_contents.clone()),
        Datatype::Fp64 => Column::Float(c.fp64_contents.clone()),
        Datatype::Fp32 => Column::Float(c.fp32_contents.iter().map(|&v| f64::from(v)).collect()),
        Datatype::Bytes => Column::Text(
            c.bytes_contents
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    std::str::from_utf8(b)
                        .map(Cow::Borrowed)
                        .map_err(|_| invalid(name, format!("element {i} is not UTF-8")))
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

//! The `infer` request as JSON carries it (`$inference_request`), and its view as tensors.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::ProtocolError;
use super::tensor::{Tensor, TensorData};

/// `$inference_request`.
#[derive(Debug, Deserialize)]
pub struct InferRequest {
    /// Returned in the response when given.
    #[serde(default)]
    pub id: Option<String>,
    /// Request parameters (`binary_data_output`).
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// The input tensors.
    pub inputs: Vec<RequestInput>,
    /// The outputs wanted; absent: all.
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// `$request_input`. The data stays unparsed until the input's datatype is known, then goes straight
/// into a typed column.
#[derive(Debug, Deserialize)]
pub struct RequestInput {
    /// Input name.
    pub name: String,
    /// Shape; the first dimension is the batch.
    pub shape: Vec<i64>,
    /// Datatype name.
    pub datatype: String,
    /// Per-input parameters (`binary_data_size`).
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// JSON data, absent when the tensor travels as binary.
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
}

/// `$request_output`.
#[derive(Debug, Deserialize)]
pub struct RequestedOutput {
    /// Output name.
    pub name: String,
    /// Per-output parameters (`binary_data`).
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

impl InferRequest {
    /// The inputs as tensors, each with its binary slice when it has one.
    pub fn tensors<'a>(&'a self, binary: &[Option<&'a [u8]>]) -> Vec<Tensor<'a>> {
        self.inputs
            .iter()
            .zip(binary.iter().chain(std::iter::repeat(&None)))
            .map(|(input, bin)| Tensor {
                name: &input.name,
                datatype: &input.datatype,
                shape: &input.shape,
                data: match (*bin, &input.data) {
                    (Some(bytes), _) => TensorData::Binary(bytes),
                    (None, Some(raw)) => TensorData::Json(raw),
                    (None, None) => TensorData::Missing,
                },
            })
            .collect()
    }

    /// `explain`: reasons for every row, not only the held and rejected ones; a value that is not
    /// a boolean is refused rather than read as false.
    pub fn explain(&self) -> Result<bool, ProtocolError> {
        match self.parameters.get("explain") {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(ProtocolError::invalid(
                "parameters.explain",
                format!("must be true or false, got {other}"),
            )),
        }
    }

    /// `binary_data_output`: whether outputs go binary unless they say otherwise.
    pub fn binary_output(&self) -> bool {
        flag(&self.parameters, "binary_data_output").unwrap_or(false)
    }

    /// The requested outputs as (name, binary), when the request names any.
    pub fn requested_outputs(&self) -> Option<impl Iterator<Item = (&str, bool)>> {
        let default = self.binary_output();
        self.outputs.as_ref().map(|outputs| {
            outputs.iter().map(move |o| {
                (
                    o.name.as_str(),
                    flag(&o.parameters, "binary_data").unwrap_or(default),
                )
            })
        })
    }
}

fn flag(parameters: &Map<String, Value>, key: &str) -> Option<bool> {
    parameters.get(key).and_then(Value::as_bool)
}

//! The `infer` response: JSON (`$inference_response`, with binary outputs appended when asked) and
//! gRPC (`raw_output_contents`), from the same scores, decisions and reasons.

use serde::Serialize;

use super::Output;
use super::binary::encode_bytes;
use crate::model::Decision;
use crate::protocol::grpc::model_infer_response::InferOutputTensor;

#[derive(Serialize)]
struct Response<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<ResponseOutput<'a>>,
}

#[derive(Serialize)]
struct ResponseOutput<'a> {
    name: &'static str,
    datatype: &'static str,
    shape: [usize; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Scores(&'a [f32]),
    Texts(Vec<&'a str>),
}

/// What the outputs are made of, row by row.
pub struct Answers<'a> {
    /// Fraud probabilities.
    pub scores: &'a [f32],
    /// Their decisions.
    pub decisions: &'a [Decision],
    /// Each row's reasons as JSON text (a row past the end has none: `[]`); only read when the
    /// `reasons` output is selected.
    pub reasons: &'a [String],
}

impl<'a> Answers<'a> {
    fn texts(&self, output: Output) -> Vec<&'a str> {
        match output {
            Output::Decision => self.decisions.iter().map(|d| d.as_str()).collect(),
            _ => (0..self.scores.len())
                .map(|i| self.reasons.get(i).map_or("[]", String::as_str))
                .collect(),
        }
    }

    fn raw(&self, output: Output) -> Vec<u8> {
        match output {
            Output::Score => self.scores.iter().flat_map(|s| s.to_le_bytes()).collect(),
            _ => encode_bytes(&self.texts(output)),
        }
    }
}

/// The JSON response body, and the length of its JSON part when binary outputs follow it (the
/// value of `Inference-Header-Content-Length`).
pub fn http_body(
    model: (&str, &str),
    id: Option<&str>,
    outputs: &[(Output, bool)],
    answers: &Answers<'_>,
) -> (Vec<u8>, Option<usize>) {
    let rows = answers.scores.len();
    let mut tail: Vec<u8> = Vec::new();
    let outputs = outputs
        .iter()
        .map(|&(output, binary)| {
            let (parameters, data) = if binary {
                let bytes = answers.raw(output);
                let size = bytes.len();
                tail.extend_from_slice(&bytes);
                (
                    Some(BinarySize {
                        binary_data_size: size,
                    }),
                    None,
                )
            } else {
                let data = match output {
                    Output::Score => Data::Scores(answers.scores),
                    _ => Data::Texts(answers.texts(output)),
                };
                (None, Some(data))
            };
            ResponseOutput {
                name: output.name(),
                datatype: output.datatype().as_str(),
                shape: [rows, 1],
                parameters,
                data,
            }
        })
        .collect();
    let response = Response {
        model_name: model.0,
        model_version: model.1,
        id,
        outputs,
    };
    // Serializing plain structs of strings and numbers cannot fail.
    let mut body = serde_json::to_vec(&response).unwrap_or_default();
    if tail.is_empty() {
        return (body, None);
    }
    let length = body.len();
    body.extend_from_slice(&tail);
    (body, Some(length))
}

/// gRPC output tensors and their raw contents, in the requested order.
pub fn grpc_outputs(
    outputs: &[(Output, bool)],
    answers: &Answers<'_>,
) -> (Vec<InferOutputTensor>, Vec<bytes::Bytes>) {
    outputs
        .iter()
        .map(|&(output, _)| {
            (
                InferOutputTensor {
                    name: output.name().into(),
                    datatype: output.datatype().as_str().into(),
                    shape: vec![answers.scores.len() as i64, 1],
                    ..Default::default()
                },
                answers.raw(output).into(),
            )
        })
        .unzip()
}

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

/// The gRPC `ModelInferResponse` of `model` (name, version), `id`, `outputs` and `answers`,
/// encoded straight onto `buf` behind the 5-byte gRPC message prefix: the bytes prost writes for
/// the message [`grpc_outputs`] describes, without building it (a dozen allocations less per call).
pub fn grpc_message(
    buf: &mut bytes::BytesMut,
    model: (&str, &str),
    id: &str,
    outputs: &[(Output, bool)],
    answers: &Answers<'_>,
) -> Result<(), std::num::TryFromIntError> {
    use bytes::BufMut;
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

    fn string(tag: u32, text: &str, buf: &mut bytes::BytesMut) {
        if !text.is_empty() {
            encode_key(tag, WireType::LengthDelimited, buf);
            encode_varint(text.len() as u64, buf);
            buf.put_slice(text.as_bytes());
        }
    }
    let start = buf.len();
    buf.put_slice(&[0; 5]);
    string(1, model.0, buf);
    string(2, model.1, buf);
    string(3, id, buf);
    let shape = [answers.scores.len() as i64, 1];
    let shape_len: usize = shape.iter().map(|&d| encoded_len_varint(d as u64)).sum();
    for &(output, _) in outputs {
        let (name, datatype) = (output.name(), output.datatype().as_str());
        let field = |len: usize| 1 + encoded_len_varint(len as u64) + len;
        let len = field(name.len()) + field(datatype.len()) + field(shape_len);
        encode_key(5, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
        string(1, name, buf);
        string(2, datatype, buf);
        encode_key(3, WireType::LengthDelimited, buf);
        encode_varint(shape_len as u64, buf);
        for &d in &shape {
            encode_varint(d as u64, buf);
        }
    }
    for &(output, _) in outputs {
        let raw = answers.raw(output);
        encode_key(6, WireType::LengthDelimited, buf);
        encode_varint(raw.len() as u64, buf);
        buf.put_slice(&raw);
    }
    let len = u32::try_from(buf.len() - start - 5)?;
    buf[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::protocol::grpc::ModelInferResponse;

    /// The direct encoder writes what prost writes for the same answer, for every output
    /// selection and batch size, reasons or none, empty id or not.
    #[test]
    fn grpc_message_is_prosts_encoding() {
        let decisions = [
            Decision::Allow,
            Decision::Hold,
            Decision::Reject,
            Decision::Allow,
        ];
        let scores = [0.01f32, 0.5, 0.97, 0.2];
        let reasons = [
            "[]".to_string(),
            "[{\"code\":\"NEW_PAYEE\"}]".into(),
            "[]".into(),
            "é".into(),
        ];
        let selections: Vec<Vec<(Output, bool)>> = vec![
            vec![],
            vec![(Output::Score, true)],
            vec![(Output::Decision, false), (Output::Score, true)],
            vec![
                (Output::Score, true),
                (Output::Decision, true),
                (Output::Reasons, true),
            ],
        ];
        for rows in [0, 1, 4] {
            for with_reasons in [false, true] {
                let answers = Answers {
                    scores: &scores[..rows],
                    decisions: &decisions[..rows],
                    reasons: if with_reasons { &reasons[..rows] } else { &[] },
                };
                for outputs in &selections {
                    for id in ["", "call-7"] {
                        let (tensors, raw) = grpc_outputs(outputs, &answers);
                        let message = ModelInferResponse {
                            model_name: "pix-fraud".into(),
                            model_version: "3".into(),
                            id: id.into(),
                            outputs: tensors,
                            raw_output_contents: raw,
                            ..Default::default()
                        };
                        let mut ours = bytes::BytesMut::new();
                        grpc_message(&mut ours, ("pix-fraud", "3"), id, outputs, &answers).unwrap();
                        let mut theirs = vec![0u8];
                        theirs.extend_from_slice(&(message.encoded_len() as u32).to_be_bytes());
                        theirs.extend_from_slice(&message.encode_to_vec());
                        assert_eq!(
                            &ours[..],
                            &theirs[..],
                            "rows {rows}, {outputs:?}, id {id:?}"
                        );
                    }
                }
            }
        }
    }
}

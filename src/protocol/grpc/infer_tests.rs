//! The in-place reader against prost's generated decoder: the same messages accepted, the same
//! fields read, on random requests, their corruptions, unknown fields and the unpacked shape form.

use std::collections::HashMap;

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::protocol::grpc::infer_parameter::ParameterChoice;
use crate::protocol::grpc::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};

/// Whether `call` reads as prost's `m` does.
fn assert_same(call: &InferCall, m: &ModelInferRequest) {
    assert_eq!(call.model_name(), m.model_name);
    assert_eq!(call.model_version(), m.model_version);
    assert_eq!(call.id(), m.id);
    assert_eq!(call.input_count(), m.inputs.len());
    for (k, (view, input)) in call.inputs().zip(&m.inputs).enumerate() {
        assert_eq!(view.name, input.name);
        assert_eq!(view.datatype, input.datatype);
        assert_eq!(view.shape, input.shape.as_slice());
        // Compared as encoded bytes: a corrupted message can read as a NaN, which is not equal to
        // itself, yet both decoders must have read the same bits.
        assert_eq!(
            call.typed_contents(k).map(Message::encode_to_vec),
            input.contents.as_ref().map(Message::encode_to_vec)
        );
    }
    let raw: Vec<&[u8]> = call.raw_input_contents().collect();
    let want: Vec<&[u8]> = m.raw_input_contents.iter().map(|b| b.as_ref()).collect();
    assert_eq!(raw, want);
    assert_eq!(call.raw_count(), m.raw_input_contents.len());
    let outputs: Vec<&str> = call.output_names().collect();
    let want: Vec<&str> = m.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outputs, want);
    for (key, value) in &m.parameters {
        // As bytes, like the contents: a flipped bit can make a double parameter NaN, which
        // equals nothing, though both decoders read the same bits.
        assert_eq!(
            call.parameter(key).map(Message::encode_to_vec),
            Some(value.encode_to_vec()),
            "{key}"
        );
    }
    assert_eq!(
        call.parameter("no such parameter"),
        m.parameters.get("no such parameter")
    );
}

fn parameter() -> impl Strategy<Value = InferParameter> {
    prop_oneof![
        any::<bool>().prop_map(ParameterChoice::BoolParam),
        any::<i64>().prop_map(ParameterChoice::Int64Param),
        "[a-z]{0,6}".prop_map(ParameterChoice::StringParam),
        any::<f64>().prop_map(ParameterChoice::DoubleParam),
    ]
    .prop_map(|c| InferParameter {
        parameter_choice: Some(c),
    })
}

fn parameters() -> impl Strategy<Value = HashMap<String, InferParameter>> {
    prop::collection::hash_map("[a-z_]{0,8}", parameter(), 0..3)
}

fn contents() -> impl Strategy<Value = Option<InferTensorContents>> {
    prop::option::of(
        (
            prop::collection::vec(any::<i64>(), 0..4),
            prop::collection::vec(
                any::<f32>().prop_filter("NaN never equals", |f| !f.is_nan()),
                0..3,
            ),
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..5), 0..3),
            prop::collection::vec(any::<bool>(), 0..3),
        )
            .prop_map(|(i64s, f32s, bytes, bools)| InferTensorContents {
                int64_contents: i64s,
                fp32_contents: f32s,
                bytes_contents: bytes.into_iter().map(Bytes::from).collect(),
                bool_contents: bools,
                ..Default::default()
            }),
    )
}

fn input() -> impl Strategy<Value = InferInputTensor> {
    (
        "[a-z._]{0,14}",
        prop::sample::select(vec!["BYTES", "INT64", "FP32", "BOOL", "", "é"]),
        prop::collection::vec(any::<i64>(), 0..4),
        parameters(),
        contents(),
    )
        .prop_map(
            |(name, datatype, shape, parameters, contents)| InferInputTensor {
                name,
                datatype: datatype.to_string(),
                shape,
                parameters,
                contents,
            },
        )
}

fn request() -> impl Strategy<Value = ModelInferRequest> {
    (
        "[a-z-]{0,10}",
        "[0-9]{0,2}",
        "[ -~]{0,12}",
        parameters(),
        prop::collection::vec(input(), 0..6),
        prop::collection::vec(("[a-z]{0,8}", parameters()), 0..3),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..9), 0..6),
    )
        .prop_map(
            |(name, version, id, parameters, inputs, outputs, raw)| ModelInferRequest {
                model_name: name,
                model_version: version,
                id,
                parameters,
                inputs,
                outputs: outputs
                    .into_iter()
                    .map(|(name, parameters)| InferRequestedOutputTensor { name, parameters })
                    .collect(),
                raw_input_contents: raw.into_iter().map(Bytes::from).collect(),
            },
        )
}

/// Both decoders on `bytes`: both refuse, or both accept and read the same.
fn agree(bytes: &[u8]) {
    let theirs = ModelInferRequest::decode(bytes);
    let ours = InferCall::decode(Bytes::copy_from_slice(bytes));
    match (&theirs, &ours) {
        (Ok(m), Ok(call)) => assert_same(call, m),
        (Err(_), Err(_)) => {}
        _ => panic!("prost {theirs:?}, ours {ours:?} on {bytes:?}"),
    }
}

proptest! {
    #[test]
    fn reads_what_prost_reads(m in request()) {
        let bytes = m.encode_to_vec();
        let call = InferCall::decode(Bytes::from(bytes)).unwrap();
        assert_same(&call, &m);
        assert_same(&InferCall::from_message(&m), &m);
    }

    #[test]
    fn refuses_what_prost_refuses(m in request(), cut in any::<prop::sample::Index>(),
                                  flip in any::<prop::sample::Index>(), bit in 0u8..8) {
        let bytes = m.encode_to_vec();
        if !bytes.is_empty() {
            agree(&bytes[..cut.index(bytes.len())]);
            let mut flipped = bytes.clone();
            let at = flip.index(flipped.len());
            flipped[at] ^= 1 << bit;
            agree(&flipped);
        }
    }

    #[test]
    fn random_bytes_never_panic_and_agree(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        agree(&bytes);
    }
}

#[test]
fn unknown_fields_groups_and_unpacked_shapes() {
    let m = ModelInferRequest {
        model_name: "pix-fraud".into(),
        inputs: vec![InferInputTensor {
            name: "amount_cents".into(),
            datatype: "INT64".into(),
            shape: vec![1],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut bytes = m.encode_to_vec();
    // Field 9 as a varint, field 10 as a length-delimited blob, field 11 as a group holding a
    // nested group (field 12) and a fixed32, field 13 as a fixed64: all unknown, all skipped.
    bytes.extend_from_slice(&[9 << 3, 0x96, 0x01]);
    bytes.extend_from_slice(&[(10 << 3) | 2, 3, b'a', b'b', b'c']);
    bytes.extend_from_slice(&[
        (11 << 3) | 3,
        (12 << 3) | 3,
        (12 << 3) | 4,
        (1 << 3) | 5,
        0,
        0,
        0,
        0,
    ]);
    bytes.extend_from_slice(&[(11 << 3) | 4, (13 << 3) | 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    // A second input whose shape is sent unpacked: [2, 3] as two varint fields.
    let input = [(1 << 3) | 2, 1, b'x', 3 << 3, 2, 3 << 3, 3];
    bytes.extend_from_slice(&[(5 << 3) | 2, input.len() as u8]);
    bytes.extend_from_slice(&input);
    agree(&bytes);
    let call = InferCall::decode(Bytes::from(bytes)).unwrap();
    let shapes: Vec<&[i64]> = call.inputs().map(|i| i.shape).collect();
    assert_eq!(shapes, [&[1][..], &[2, 3][..]]);
    // A group closed by another field's end, and an end without a start: refused by both.
    agree(&[(11 << 3) | 3, (12 << 3) | 4]);
    agree(&[(11 << 3) | 4]);
}

//! Property tests: no input, however broken, makes parsing or extraction panic.

mod common;

use pixguard::features::{FeatureExtractor, default_spec};
use pixguard::jsonl::parse_line;
use pixguard::transaction::Transaction;
use proptest::prelude::*;
use serde_json::Value;

fn replacement() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        Just(serde_json::json!({"x": 1})),
        Just(serde_json::json!([])),
    ]
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Transaction::from_json(&bytes);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = parse_line(text);
        }
    }

    #[test]
    fn mutated_transactions_are_accepted_or_refused_with_a_field(
        picks in proptest::collection::vec((any::<prop::sample::Index>(), replacement(), any::<bool>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut doc = common::valid();
        let mut paths = Vec::new();
        common::leaves(&doc, String::new(), &mut paths);
        for (index, value, delete) in picks {
            let path = index.get(&paths).clone();
            if delete { common::remove(&mut doc, &path) } else { common::set(&mut doc, &path, value) }
        }
        let mut text = doc.to_string();
        if truncate {
            let mut at = cut.index(text.len() + 1);
            while !text.is_char_boundary(at) { at -= 1; }
            text.truncate(at);
        }
        match Transaction::from_json(text.as_bytes()) {
            Ok(tx) => {
                // Whatever validates must also extract without panicking.
                let ex = FeatureExtractor::new(default_spec()).unwrap();
                let batch = ex.extract(std::slice::from_ref(&tx));
                prop_assert!(batch.numeric.iter().all(|x| x.is_finite()));
            }
            Err(e) => prop_assert!(!e.reason.is_empty()),
        }
    }
}

/// The bundled model's signature.
fn signature() -> pixguard::protocol::oip::Signature {
    pixguard::protocol::oip::Signature::new(&default_spec())
}

/// Splits and decodes an OIP body as the server does; an error must be a 4xx with a message.
fn parse_oip(header: Option<&[u8]>, body: &[u8]) -> Result<(), TestCaseError> {
    use pixguard::scoring::ScoreError;
    let outcome =
        pixguard::protocol::oip::split_body(header, body).and_then(|(request, binary)| {
            signature().select_outputs(request.requested_outputs(), request.binary_output())?;
            signature().decode_inputs(&request.tensors(&binary), 1000)
        });
    match outcome {
        Ok(payload) => prop_assert!(payload.rows() <= 1000),
        Err(e) => {
            let e = ScoreError::from(e);
            prop_assert!((400..500).contains(&e.http_status()), "{e:?}");
            prop_assert!(!e.to_string().is_empty());
        }
    }
    Ok(())
}

/// A valid binary-extension body for one synth transaction: (JSON header, whole body).
fn binary_body() -> (Vec<u8>, Vec<u8>) {
    let tx: Transaction = serde_json::from_value(common::valid()).unwrap();
    let requests = pixguard::bench::requests::build(
        pixguard::bench::requests::Api::OipGrpc,
        "pix-fraud",
        &[tx],
        1,
        None,
    )
    .unwrap();
    let request = requests.grpc_request(0).unwrap();
    let inputs: Vec<Value> = request
        .inputs
        .iter()
        .zip(&request.raw_input_contents)
        .map(|(i, raw)| {
            serde_json::json!({"name": i.name, "datatype": i.datatype, "shape": i.shape,
                "parameters": {"binary_data_size": raw.len()}})
        })
        .collect();
    let head = serde_json::to_vec(&serde_json::json!({"inputs": inputs})).unwrap();
    let mut body = head.clone();
    for raw in &request.raw_input_contents {
        body.extend_from_slice(raw);
    }
    (head, body)
}

fn datatype() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["BYTES", "INT64", "FP64", "FP32", "BOOL", "UINT8", ""])
}

fn input_name() -> impl Strategy<Value = String> {
    let mut names: Vec<String> = pixguard::protocol::oip::FIELD_INPUTS
        .iter()
        .map(|f| f.0.to_string())
        .collect();
    names.extend(["features".into(), "categories".into(), "shoe_size".into()]);
    prop::sample::select(names)
}

fn dimension() -> impl Strategy<Value = i64> {
    prop_oneof![
        0i64..4,
        Just(27),
        Just(10),
        Just(-1),
        Just(i64::MAX),
        Just(1 << 40),
        any::<i64>()
    ]
}

proptest! {
    #[test]
    fn the_valid_binary_body_decodes(_x in 0..1u8) {
        let (head, body) = binary_body();
        let length = head.len().to_string();
        let (request, binary) =
            pixguard::protocol::oip::split_body(Some(length.as_bytes()), &body).unwrap();
        let payload = signature().decode_inputs(&request.tensors(&binary), 1000).unwrap();
        prop_assert_eq!(payload.rows(), 1);
    }

    #[test]
    fn truncated_or_corrupted_binary_bodies_and_lying_lengths_are_4xx(
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        lie in prop_oneof![Just(None), (0usize..4096).prop_map(Some), Just(Some(usize::MAX))],
        garbage_header in any::<bool>(),
    ) {
        let (head, mut body) = binary_body();
        for (at, byte) in flips {
            let i = at.index(body.len());
            body[i] = byte;
        }
        if truncate {
            body.truncate(cut.index(body.len() + 1));
        }
        let length = match lie {
            Some(n) => n.to_string(),
            None => head.len().to_string(),
        };
        let header = if garbage_header { "12x".to_string() } else { length };
        parse_oip(Some(header.as_bytes()), &body)?;
        parse_oip(None, &body)?;
    }

    #[test]
    fn random_tensors_and_shapes_never_panic(
        inputs in proptest::collection::vec(
            (input_name(), datatype(), proptest::collection::vec(dimension(), 0..3),
             prop_oneof![Just(None), (0u64..64).prop_map(Some), Just(Some(u64::MAX))],
             any::<bool>()),
            0..5),
        tail in proptest::collection::vec(any::<u8>(), 0..96),
        data in prop_oneof![
            Just(serde_json::json!([1, 2, 3])),
            Just(serde_json::json!([["a"], ["b"]])),
            Just(serde_json::json!([true, null, 1.5, "x"])),
            Just(serde_json::json!([[[-1]]])),
            Just(serde_json::json!({"k": 1})),
            Just(serde_json::json!("text")),
        ],
        outputs in proptest::collection::vec(".{0,8}", 0..3),
    ) {
        let inputs: Vec<Value> = inputs
            .into_iter()
            .map(|(name, datatype, shape, size, with_data)| {
                let mut input = serde_json::json!({"name": name, "datatype": datatype, "shape": shape});
                if let Some(size) = size {
                    input["parameters"] = serde_json::json!({"binary_data_size": size});
                }
                if with_data {
                    input["data"] = data.clone();
                }
                input
            })
            .collect();
        let mut request = serde_json::json!({"inputs": inputs});
        if !outputs.is_empty() {
            request["outputs"] = outputs.iter().map(|n| serde_json::json!({"name": n})).collect();
        }
        let head = serde_json::to_vec(&request).unwrap();
        let mut body = head.clone();
        body.extend_from_slice(&tail);
        parse_oip(Some(head.len().to_string().as_bytes()), &body)?;
        parse_oip(None, &head)?;
    }

    #[test]
    fn random_bytes_as_an_oip_body_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        length in 0usize..600,
    ) {
        parse_oip(Some(length.to_string().as_bytes()), &bytes)?;
        parse_oip(None, &bytes)?;
    }
}

//! Field tensors decoded and validated on several threads give exactly what one thread gives:
//! the same transactions, and the same first error, whichever tensor or row it is in.

use serde_json::{Value, json};

use super::*;
use crate::bench::requests::{Api, Bodies, build, transactions};
use crate::protocol::Payload;
use crate::transaction::Transaction;

fn signature() -> Signature {
    Signature::new(&crate::features::default_spec())
}

/// A 1,000-row OIP JSON request, as a JSON value to corrupt.
fn request(txs: &[Transaction]) -> Value {
    match build(Api::OipHttp, "m", txs, txs.len(), None).expect("built") {
        Bodies::Http { bodies, .. } => {
            // `NaN` (an absent z-score) is not JSON for serde_json::Value; the server reads it as null.
            let text = nan_literals_to_null(&bodies[0]).unwrap_or_else(|| bodies[0].to_vec());
            serde_json::from_slice(&text).expect("JSON")
        }
        Bodies::Grpc(_) => unreachable!("oip-http builds HTTP bodies"),
    }
}

/// The outcome on `parallel` and on the caller's thread.
fn both(
    body: &Value,
    parallel: &Parallel,
) -> (
    Result<Vec<Transaction>, ProtocolError>,
    Result<Vec<Transaction>, ProtocolError>,
) {
    let bytes = serde_json::to_vec(body).expect("serialisable");
    let (request, binary) = split_body(None, &bytes).expect("a well-formed body");
    let tensors = request.tensors(&binary);
    let rows = |p: Result<Payload, ProtocolError>| {
        p.map(|p| match p {
            Payload::Transactions(txs) => txs,
            Payload::Features(_) => panic!("decoded as precomputed features"),
        })
    };
    let signature = signature();
    (
        rows(signature.decode_inputs_with(&tensors, 1_000, parallel)),
        rows(signature.decode_inputs(&tensors, 1_000)),
    )
}

fn input<'a>(body: &'a mut Value, name: &str) -> &'a mut Value {
    body["inputs"]
        .as_array_mut()
        .and_then(|a| a.iter_mut().find(|i| i["name"] == name))
        .expect("input")
}

#[test]
fn a_large_request_decodes_the_same_on_several_threads() {
    let parallel = Parallel::new(3).expect("pool");
    let txs = transactions(None, 1_000, 5).expect("synth");
    let (many, one) = both(&request(&txs), &parallel);
    assert_eq!(many, one);
    // Equal to the generated rows: this caught the wire format moving timestamps whose offset has
    // seconds (see `Timestamp::format_into`).
    assert_eq!(many.expect("valid"), txs);
    // The same rows as binary tensors (gRPC's raw contents): rows built on the pool too.
    let grpc = build(Api::OipGrpc, "m", &txs, txs.len(), None).expect("built");
    let message = grpc.grpc_request(0).expect("a ModelInferRequest");
    let call = crate::protocol::grpc::infer::InferCall::from_message(&message);
    let tensors = call_tensors(&call);
    let decoded = signature()
        .decode_inputs_with(&tensors, 1_000, &parallel)
        .expect("valid");
    assert!(matches!(decoded, Payload::Transactions(rows) if rows == txs));
}

#[test]
fn the_first_error_is_the_serial_loops() {
    let parallel = Parallel::new(3).expect("pool");
    let txs = transactions(None, 1_000, 5).expect("synth");
    let pristine = request(&txs);
    let check = |body: &Value, field: &str, reason: &str| {
        let (many, one) = both(body, &parallel);
        assert_eq!(many, one);
        match many {
            Err(ProtocolError::Invalid(e)) => {
                assert_eq!(e.field, field, "{e:?}");
                assert!(e.reason.contains(reason), "{e:?}");
            }
            other => panic!("expected an error on {field}, got {other:?}"),
        }
    };

    // Two bad cells in different fields: the earlier row wins, whichever chunk holds it.
    let mut body = pristine.clone();
    input(&mut body, "history.payer_tx_1h")["data"][900] = json!(-3);
    input(&mut body, "payee.key_type")["data"][700] = json!("BOGUS");
    check(&body, "payee.key_type", "row 700");

    // Elements of the wrong type in two tensors: the earlier tensor's, although a later run of
    // tensors failed on another thread too.
    let mut body = pristine.clone();
    input(&mut body, "history.payer_tx_1h")["data"][3] = json!("four");
    input(&mut body, "payer.ispb")["data"][10] = json!(12);
    check(&body, "payer.ispb", "");

    // A decode error before an unknown input: the decode error, as the serial loop meets it first.
    let mut body = pristine.clone();
    input(&mut body, "purpose")["data"][0] = json!(false);
    body["inputs"].as_array_mut().expect("inputs").push(
        json!({"name": "color", "datatype": "BYTES", "shape": [1000, 1], "data": vec!["x"; 1000]}),
    );
    check(&body, "purpose", "");

    // An unknown input before a decode error: the unknown input, and later tensors not decoded.
    let mut body = pristine.clone();
    input(&mut body, "history.amount_zscore_90d")["data"][5] = json!("high");
    body["inputs"].as_array_mut().expect("inputs").insert(
        2,
        json!({"name": "color", "datatype": "BYTES", "shape": [1000, 1], "data": vec!["x"; 1000]}),
    );
    check(&body, "color", "unknown input");

    // A tensor one row short: the row count check, after every tensor decoded.
    let mut body = pristine.clone();
    let short = input(&mut body, "amount_cents");
    short["data"].as_array_mut().expect("data").pop();
    short["shape"] = json!([999, 1]);
    check(&body, "amount_cents", "has 999 rows");
}

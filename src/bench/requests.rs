//! Request bodies built once before the run, from synth traffic or a JSONL file, so the load
//! generator spends its time sending, not encoding.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::protocol::grpc::ModelInferRequest;
use crate::protocol::grpc::model_infer_request::InferInputTensor;
use crate::protocol::oip::{Datatype, FIELD_INPUTS, encode_bytes};
use crate::synth::{Generator, SynthConfig};
use crate::transaction::{CSV_COLUMNS, Transaction};

/// Which API the load goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Api {
    /// `POST /v1/score` with one transaction (pixguard's JSON API; also the FastAPI peer).
    V1,
    /// Open Inference Protocol over HTTP, the transaction's fields as JSON tensors.
    OipHttp,
    /// Open Inference Protocol over gRPC, the transaction's fields as raw_input_contents.
    OipGrpc,
    /// MLflow scoring server: `POST /invocations` with a one-row `dataframe_split`.
    Mlflow,
}

/// The datatype each transaction field is sent as, where the server's model metadata declares
/// one other than pixguard's (`--oip-types metadata`): e.g. MLServer's MLflow runtime declares
/// the DICT counts FP64 because the MLflow signature says `double`.
pub type InputTypes = HashMap<String, Datatype>;

/// One request per transaction, in the form the API takes.
pub enum Bodies {
    /// HTTP: path and bodies.
    Http {
        /// Request path, e.g. `/v1/score`.
        path: String,
        /// Extra content type.
        content_type: &'static str,
        /// One body per transaction.
        bodies: Vec<Bytes>,
    },
    /// gRPC ModelInfer requests, encoded and framed: each a unary call's whole body.
    Grpc(Vec<Bytes>),
}

impl Bodies {
    /// How many distinct requests there are.
    pub fn len(&self) -> usize {
        match self {
            Bodies::Http { bodies, .. } => bodies.len(),
            Bodies::Grpc(r) => r.len(),
        }
    }

    /// gRPC request `i` decoded back from its framed body (`None` for HTTP bodies).
    pub fn grpc_request(&self, i: usize) -> Option<ModelInferRequest> {
        let Bodies::Grpc(bodies) = self else {
            return None;
        };
        let body = bodies.get(i)?;
        let message = crate::protocol::grpc::unframe(body, usize::MAX).ok()?;
        prost::Message::decode(&body[message]).ok()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Transactions from a JSONL file (bare or `pixguard synth` rows), or `count` synth ones.
pub fn transactions(
    input: Option<&Path>,
    count: usize,
    seed: u64,
) -> anyhow::Result<Vec<Transaction>> {
    if let Some(path) = input {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut out = Vec::new();
        for (i, line) in text
            .strip_prefix('\u{feff}')
            .unwrap_or(&text)
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let mut value: Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
            // A decision log's shadow record copies a request its champion record already holds.
            if value.get("role").and_then(Value::as_str) == Some("challenger") {
                continue;
            }
            if let Some(inner) = value.get_mut("transaction") {
                value = inner.take();
            }
            let tx: Transaction = serde_json::from_value(value)
                .with_context(|| format!("{}:{}: not a transaction", path.display(), i + 1))?;
            out.push(tx);
        }
        anyhow::ensure!(!out.is_empty(), "{} holds no transactions", path.display());
        return Ok(out);
    }
    let cfg = SynthConfig {
        seed,
        rows: count as u64,
        ..SynthConfig::default()
    };
    Ok(Generator::new(cfg)?.map(|row| row.transaction).collect())
}

/// The transaction's leaves by dotted name (absent optional fields are missing).
fn flatten(tx: &Transaction) -> anyhow::Result<Map<String, Value>> {
    fn walk(prefix: &str, value: Value, out: &mut Map<String, Value>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    walk(&format!("{prefix}{k}."), v, out);
                }
            }
            Value::Null => {}
            leaf => {
                out.insert(prefix.trim_end_matches('.').to_string(), leaf);
            }
        }
    }
    let mut out = Map::new();
    walk("", serde_json::to_value(tx)?, &mut out);
    Ok(out)
}

/// A field's value as `datatype` carries it; absent is `""`, -1, false (see FIELD_INPUTS) or, for
/// floats, `Null` (written `NaN` or `null`, see [`oip_http_body`]).
fn oip_value(flat: &Map<String, Value>, name: &str, datatype: Datatype) -> Value {
    let v = flat.get(name);
    match datatype {
        Datatype::Bytes => match v {
            Some(Value::String(s)) => json!(s),
            Some(other) => json!(other.to_string()),
            None => json!(""),
        },
        Datatype::Int64 => v.and_then(Value::as_i64).map_or(json!(-1), |i| json!(i)),
        Datatype::Bool => v
            .and_then(Value::as_bool)
            .map_or(json!(false), |b| json!(b)),
        Datatype::Fp64 | Datatype::Fp32 => {
            v.and_then(Value::as_f64).map_or(Value::Null, |f| json!(f))
        }
    }
}

/// The datatype field `name` goes as: the server's declaration, else pixguard's.
fn field_type(types: Option<&InputTypes>, name: &str, pixguard: Datatype) -> Datatype {
    types.and_then(|t| t.get(name)).copied().unwrap_or(pixguard)
}

/// An OIP JSON request with the fields of `rows` transactions: one `[N, 1]` tensor per field, row
/// `i` of each the `i`-th transaction's. An absent float is the `NaN` literal (tritonclient writes
/// it; pixguard and Triton take it) or, with the server's own types, `null` (MLServer's JSON parser
/// refuses `NaN`; numpy reads `null` in an FP64 tensor as NaN).
fn oip_http_body(rows: &[&Map<String, Value>], types: Option<&InputTypes>) -> Bytes {
    use std::fmt::Write as _;
    let absent_float = if types.is_some() { "null" } else { "NaN" };
    let mut text = String::from("{\"inputs\":[");
    for (k, (name, pixguard, _)) in FIELD_INPUTS.iter().enumerate() {
        let datatype = field_type(types, name, *pixguard);
        if k > 0 {
            text.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write!(
            text,
            "{{\"name\":\"{name}\",\"datatype\":\"{}\",\"shape\":[{},1],\"data\":[",
            datatype.as_str(),
            rows.len()
        );
        for (i, flat) in rows.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            match oip_value(flat, name, datatype) {
                Value::Null => text.push_str(absent_float),
                value => text.push_str(&value.to_string()),
            }
        }
        text.push_str("]}");
    }
    text.push_str("]}");
    Bytes::from(text)
}

/// An OIP gRPC request with the fields of `rows` transactions as `raw_input_contents`, one
/// `[N, 1]` tensor per field.
fn oip_grpc_request(
    rows: &[&Map<String, Value>],
    model: &str,
    types: Option<&InputTypes>,
) -> ModelInferRequest {
    let mut inputs = Vec::new();
    let mut raw = Vec::new();
    for (name, pixguard, _) in FIELD_INPUTS {
        let datatype = field_type(types, name, *pixguard);
        let values: Vec<Value> = rows
            .iter()
            .map(|flat| oip_value(flat, name, datatype))
            .collect();
        let bytes: Vec<u8> = match datatype {
            Datatype::Bytes => {
                let strings: Vec<&str> = values
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default())
                    .collect();
                encode_bytes(&strings)
            }
            Datatype::Int64 => values
                .iter()
                .flat_map(|v| v.as_i64().unwrap_or(-1).to_le_bytes())
                .collect(),
            Datatype::Fp64 => values
                .iter()
                .flat_map(|v| v.as_f64().unwrap_or(f64::NAN).to_le_bytes())
                .collect(),
            Datatype::Fp32 => values
                .iter()
                .flat_map(|v| (v.as_f64().unwrap_or(f64::NAN) as f32).to_le_bytes())
                .collect(),
            Datatype::Bool => values
                .iter()
                .map(|v| u8::from(v.as_bool().unwrap_or(false)))
                .collect(),
        };
        inputs.push(InferInputTensor {
            name: name.to_string(),
            datatype: datatype.as_str().into(),
            shape: vec![rows.len() as i64, 1],
            ..Default::default()
        });
        raw.push(bytes::Bytes::from(bytes));
    }
    ModelInferRequest {
        model_name: model.into(),
        inputs,
        raw_input_contents: raw,
        ..Default::default()
    }
}

fn mlflow_body(flat: &Map<String, Value>) -> Bytes {
    // MLflow's schema enforcement cannot take null in an optional integer column, but an optional
    // column may be left out: each one-row request carries the columns its transaction has.
    let columns: Vec<&str> = CSV_COLUMNS
        .iter()
        .copied()
        .filter(|c| flat.contains_key(*c))
        .collect();
    let row: Vec<&Value> = columns.iter().filter_map(|c| flat.get(*c)).collect();
    let body = json!({"dataframe_split": {"columns": columns, "data": [row]}});
    Bytes::from(body.to_string())
}

/// The flattened transactions a request's rows are.
fn pick<'a>(flats: &'a [Map<String, Value>], group: &[usize]) -> Vec<&'a Map<String, Value>> {
    group.iter().map(|&i| &flats[i]).collect()
}

/// Encodes every transaction for `api`; `model` names the OIP model, `types` the OIP datatypes
/// the server declares (else pixguard's). With `rows_per_request` > 1 each request carries that
/// many, cycling through `txs`: `/v1` as a `{"transactions": [...]}` batch, the OIP as `[N, 1]`
/// tensors (MLflow takes one row per request).
pub fn build(
    api: Api,
    model: &str,
    txs: &[Transaction],
    rows_per_request: usize,
    types: Option<&InputTypes>,
) -> anyhow::Result<Bodies> {
    anyhow::ensure!(!txs.is_empty(), "no transactions to send");
    anyhow::ensure!(
        rows_per_request == 1 || api != Api::Mlflow,
        "--rows-per-request does not apply to --api mlflow"
    );
    let rows = rows_per_request.max(1);
    let groups: Vec<Vec<usize>> = (0..(txs.len() / rows).max(1))
        .map(|b| (0..rows).map(|i| (b * rows + i) % txs.len()).collect())
        .collect();
    let flats = || txs.iter().map(flatten).collect::<anyhow::Result<Vec<_>>>();
    Ok(match api {
        Api::V1 => Bodies::Http {
            path: "/v1/score".into(),
            content_type: "application/json",
            bodies: groups
                .iter()
                .map(|group| match group.as_slice() {
                    [one] => serde_json::to_vec(&txs[*one]),
                    _ => {
                        let batch: Vec<&Transaction> = group.iter().map(|&i| &txs[i]).collect();
                        serde_json::to_vec(&json!({ "transactions": batch }))
                    }
                })
                .map(|body| body.map(Bytes::from))
                .collect::<Result<_, _>>()?,
        },
        Api::OipHttp => {
            let flats = flats()?;
            Bodies::Http {
                path: format!("/v2/models/{model}/infer"),
                content_type: "application/json",
                bodies: groups
                    .iter()
                    .map(|group| oip_http_body(&pick(&flats, group), types))
                    .collect(),
            }
        }
        Api::OipGrpc => {
            let flats = flats()?;
            Bodies::Grpc(
                groups
                    .iter()
                    .map(|group| {
                        let request = oip_grpc_request(&pick(&flats, group), model, types);
                        crate::protocol::grpc::frame(&prost::Message::encode_to_vec(&request))
                            .ok_or_else(|| anyhow::anyhow!("a request over 4 GiB"))
                    })
                    .collect::<anyhow::Result<_>>()?,
            )
        }
        Api::Mlflow => Bodies::Http {
            path: "/invocations".into(),
            content_type: "application/json",
            bodies: flats()?.iter().map(mlflow_body).collect(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_body(tx: &Transaction, types: Option<&InputTypes>) -> String {
        match build(Api::OipHttp, "m", std::slice::from_ref(tx), 1, types).expect("built") {
            Bodies::Http { bodies, .. } => String::from_utf8(bodies[0].to_vec()).expect("UTF-8"),
            Bodies::Grpc(_) => unreachable!(),
        }
    }

    fn input(body: &Value, name: &str) -> Value {
        body["inputs"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == name))
            .cloned()
            .expect("input")
    }

    #[test]
    fn declared_types_change_the_datatype_and_the_absent_value() {
        let txs = transactions(None, 200, 3).expect("synth");
        // A transaction without DICT statistics: its counts are absent.
        let tx = txs
            .iter()
            .find(|t| t.payee.dict_stats.is_none())
            .expect("one without DICT statistics");
        let mut types = InputTypes::new();
        types.insert("payee.dict_stats.settlements_90d".into(), Datatype::Fp64);
        let declared: Value =
            serde_json::from_str(&http_body(tx, Some(&types))).expect("JSON without NaN");
        let counts = input(&declared, "payee.dict_stats.settlements_90d");
        assert_eq!(counts["datatype"], "FP64");
        assert_eq!(counts["data"], json!([null]));
        // Fields the server does not redeclare keep pixguard's types.
        assert_eq!(input(&declared, "amount_cents")["datatype"], "INT64");
        // pixguard's own types: INT64 with -1 for the absent count.
        let own = http_body(tx, None);
        assert!(
            own.contains(r#""name":"payee.dict_stats.settlements_90d","datatype":"INT64","shape":[1,1],"data":[-1]"#),
            "{own}"
        );
    }

    /// The transactions the server decodes from OIP tensors, as the HTTP and gRPC handlers do.
    fn decoded(tensors: &[crate::protocol::oip::Tensor<'_>]) -> Vec<Transaction> {
        let signature = crate::protocol::oip::Signature::new(&crate::features::default_spec());
        match signature.decode_inputs(tensors, 1_000).expect("decoded") {
            crate::protocol::Payload::Transactions(txs) => txs,
            crate::protocol::Payload::Features(_) => panic!("decoded as precomputed features"),
        }
    }

    #[test]
    fn multi_row_oip_requests_carry_their_transactions_in_order() {
        use crate::protocol::oip::split_body;
        let txs = transactions(None, 50, 11).expect("synth");
        // 50 transactions in requests of 20: two requests, rows 0..20 and 20..40.
        let want = |b: usize| txs[b * 20..(b + 1) * 20].to_vec();
        let Bodies::Http { bodies, .. } = build(Api::OipHttp, "m", &txs, 20, None).expect("built")
        else {
            panic!("HTTP bodies for oip-http")
        };
        assert_eq!(bodies.len(), 2);
        for (b, body) in bodies.iter().enumerate() {
            let (request, binary) = split_body(None, body).expect("a valid body");
            assert_eq!(
                decoded(&request.tensors(&binary)),
                want(b),
                "JSON request {b}"
            );
        }
        let grpc = build(Api::OipGrpc, "m", &txs, 20, None).expect("built");
        assert_eq!(grpc.len(), 2);
        for b in 0..2 {
            let request = grpc.grpc_request(b).expect("a framed ModelInferRequest");
            let call = crate::protocol::grpc::infer::InferCall::from_message(&request);
            let tensors = crate::protocol::oip::call_tensors(&call);
            assert_eq!(decoded(&tensors), want(b), "gRPC request {b}");
        }
        assert!(
            build(Api::Mlflow, "m", &txs, 20, None).is_err(),
            "MLflow takes one row per request"
        );
    }
}

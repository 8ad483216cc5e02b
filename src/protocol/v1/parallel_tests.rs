//! The parallel parse and render give exactly what the one-thread path gives, errors included.

use super::*;
use crate::parallel::Parallel;
use crate::synth::{Generator, SynthConfig};

fn transactions(rows: u64) -> Vec<Transaction> {
    let cfg = SynthConfig {
        seed: 11,
        rows,
        ..SynthConfig::default()
    };
    Generator::new(cfg)
        .expect("valid config")
        .map(|r| r.transaction)
        .collect()
}

fn body(txs: &[serde_json::Value], tail: &str) -> Vec<u8> {
    let array = serde_json::to_string(txs).expect("serialisable");
    format!("{{ \"transactions\" :\n {array} {tail}").into_bytes()
}

fn values(txs: &[Transaction]) -> Vec<serde_json::Value> {
    txs.iter()
        .map(|t| serde_json::to_value(t).expect("serialisable"))
        .collect()
}

#[test]
fn a_large_batch_parses_the_same_on_several_threads() {
    let parallel = Parallel::new(3).expect("pool");
    let txs = transactions(1_000);
    for (tail, explain) in [("}", false), (", \"explain\": true }\n", true)] {
        let body = body(&values(&txs), tail);
        let many = parse_request_with(&body, 1_000, &parallel).expect("valid");
        let one = parse_request(&body, 1_000).expect("valid");
        assert_eq!(many.transactions, one.transactions);
        assert_eq!(many.transactions, txs);
        assert_eq!((many.batch, many.explain), (true, explain));
    }
}

#[test]
fn errors_are_the_whole_parses() {
    let parallel = Parallel::new(3).expect("pool");
    let mut docs = values(&transactions(600));
    let pristine = docs.clone();
    let limit = |b: &[u8], limit| {
        (
            parse_request_with(b, limit, &parallel).map(|r| r.transactions.len()),
            parse_request(b, limit).map(|r| r.transactions.len()),
        )
    };
    // Too many rows: refused before any element is parsed, with the same error.
    let (many, one) = limit(&body(&docs, "}"), 599);
    assert!(matches!(
        many,
        Err(ProtocolError::TooManyRows {
            rows: 600,
            limit: 599,
            ..
        })
    ));
    assert_eq!(many, one);
    // A field invalid deep in the batch, a rule across fields broken, a syntax error in an
    // element, an unknown field after the array: each named as the one-thread parse names it.
    docs[417]["payee"]["key_type"] = serde_json::json!("FAX");
    let mut cases = vec![body(&docs, "}")];
    docs = pristine.clone();
    docs[599]["amount_cents"] = serde_json::json!(0);
    cases.push(body(&docs, "}"));
    let mut broken = body(&pristine, "}");
    let at = broken.len() / 2;
    let colon = at
        + broken[at..]
            .iter()
            .position(|b| *b == b':')
            .expect("a colon");
    broken[colon] = b';';
    cases.push(broken);
    cases.push(body(&pristine, ", \"explain\": true, \"trace\": 1}"));
    // Where the cut is a guess: a string holding `},{`, a `]` after the array's own, a comma
    // with no field after it.
    docs = pristine.clone();
    docs[300]["end_to_end_id"] = serde_json::json!("E},{\"x\": 1},{");
    cases.push(body(&docs, "}"));
    let array = serde_json::to_string(&pristine).expect("serialisable");
    cases.push(format!("{{\"transactions\": {array}, \"transactions\": [1]}}").into_bytes());
    cases.push(body(&pristine, ", \"explain\": [true]}"));
    cases.push(body(&pristine, ", }"));
    for (i, case) in cases.iter().enumerate() {
        // Cases 3 and 7 have tails the split refuses; every other one is cut and its runs tried.
        let runs = split::split_batch(case, 3).map(|s| s.runs.len());
        if i == 3 || i == 7 {
            assert_eq!(runs, None, "case {i}");
        } else {
            assert!(runs.is_some_and(|n| n > 1), "case {i}: {runs:?} runs");
        }
        let (many, one) = limit(case, 1_000);
        assert!(many.is_err(), "{many:?}");
        assert_eq!(many, one);
    }
}

#[test]
fn a_small_batch_is_parsed_whole() {
    let parallel = Parallel::new(3).expect("pool");
    let txs = transactions(2);
    let body = body(&values(&txs), "}");
    assert_eq!(parallel.parts(body.len(), MIN_RUN_BYTES), 1);
    let request = parse_request_with(&body, 1_000, &parallel).expect("valid");
    assert_eq!(request.transactions, txs);
}

#[test]
fn a_large_answer_renders_the_same_bytes_on_several_threads() {
    let parallel = Parallel::new(3).expect("pool");
    let model = ModelRef {
        name: "pix-fraud".into(),
        version: "7".into(),
    };
    let ids: Vec<String> = (0..1_001).map(|i| format!("E{i:031}\"\\")).collect();
    let reasons = ["PAYEE_KEY_NEW", "AMOUNT_HIGH"];
    let result = |row: usize| ScoreResult {
        end_to_end_id: &ids[row],
        score: row as f32 / 1_001.0,
        decision: Decision::ALL[row % 3],
        reasons: (!row.is_multiple_of(3)).then(|| {
            reasons
                .iter()
                .map(|code| ReasonOut {
                    code,
                    contribution: 0.125,
                })
                .collect()
        }),
        model: &model,
    };
    for rows in [0, 1, 200, 1_001] {
        let want = serde_json::to_vec(&BatchResponse {
            results: (0..rows).map(result).collect(),
        })
        .expect("serialisable");
        let got = render_batch(rows, &parallel, result).expect("renders");
        assert_eq!(
            String::from_utf8(got).unwrap(),
            String::from_utf8(want).unwrap(),
            "{rows} rows"
        );
    }
}

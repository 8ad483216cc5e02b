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

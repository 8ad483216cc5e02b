//! Shared fixtures for the integration tests.
#![allow(dead_code)]

use serde_json::{Value, json};

/// A valid transaction: a DICT payment of R$ 1,500.00 on Monday 2026-10-05 at 14:00 in São Paulo.
pub fn valid() -> Value {
    json!({
        "end_to_end_id": "E18236120202610051700AbCdEf12345",
        "accepted_at": "2026-10-05T14:00:00-03:00",
        "amount_cents": 150000,
        "initiation_form": "DICT",
        "purpose": "IPAY",
        "payer": {
            "ispb": "18236120",
            "account_type": "CACC",
            "person_type": "NATURAL",
            "account_opened_at": "2026-10-04T14:00:00-03:00",
            "device": { "registered": true, "first_seen_at": "2026-10-05T13:00:00-03:00" }
        },
        "payee": {
            "ispb": "60701190",
            "account_type": "TRAN",
            "person_type": "NATURAL",
            "key_type": "PHONE",
            "key_created_at": "2026-10-05T11:00:00-03:00",
            "account_opened_at": "2026-09-05T14:00:00-03:00",
            "dict_stats": { "settlements_90d": 3, "fraud_markers_30d": 1, "infractions_open": 0, "mule_marker": true }
        },
        "history": {
            "payee_first_time": true,
            "payer_tx_1h": 4,
            "payer_amount_24h_cents": 50000,
            "amount_zscore_90d": 2.5
        }
    })
}

/// Sets the value at a dotted path, creating nothing: the parent must exist.
pub fn set(doc: &mut Value, path: &str, value: Value) {
    let (parent, key) = split(doc, path);
    parent
        .as_object_mut()
        .expect("parent is an object")
        .insert(key, value);
}

/// Removes the value at a dotted path.
pub fn remove(doc: &mut Value, path: &str) {
    let (parent, key) = split(doc, path);
    parent
        .as_object_mut()
        .expect("parent is an object")
        .remove(&key);
}

fn split<'a>(doc: &'a mut Value, path: &str) -> (&'a mut Value, String) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let key = parts.pop().expect("non-empty path").to_string();
    let mut node = doc;
    for p in parts {
        node = node
            .get_mut(p)
            .unwrap_or_else(|| panic!("no `{p}` in fixture"));
    }
    (node, key)
}

/// Every dotted path to a leaf (non-object value) of a JSON document.
pub fn leaves(v: &Value, prefix: String, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(child, path, out);
            }
        }
        _ => out.push(prefix),
    }
}

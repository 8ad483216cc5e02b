//! The transaction flattened to one row of named columns (CSV, and later Parquet and OIP inputs).
//!
//! Column names are the dotted JSON paths, so an error on either form names the same field.
//! An absent optional value is an empty cell.

use std::io::Write;

use super::{Timestamp, Transaction};

/// Column names of the flattened transaction, in output order.
pub const CSV_COLUMNS: &[&str] = &[
    "end_to_end_id",
    "accepted_at",
    "amount_cents",
    "initiation_form",
    "purpose",
    "payer.ispb",
    "payer.account_type",
    "payer.person_type",
    "payer.account_opened_at",
    "payer.device.registered",
    "payer.device.first_seen_at",
    "payee.ispb",
    "payee.account_type",
    "payee.person_type",
    "payee.key_type",
    "payee.key_created_at",
    "payee.account_opened_at",
    "payee.dict_stats.settlements_90d",
    "payee.dict_stats.fraud_markers_30d",
    "payee.dict_stats.infractions_open",
    "payee.dict_stats.mule_marker",
    "history.payee_first_time",
    "history.payer_tx_1h",
    "history.payer_amount_24h_cents",
    "history.amount_zscore_90d",
];

/// Positions of each flattened field in [`CSV_COLUMNS`] (and in every list kept in that order:
/// the OIP field inputs, the Arrow leaves).
pub mod at {
    pub const E2E: usize = 0;
    pub const ACCEPTED: usize = 1;
    pub const AMOUNT: usize = 2;
    pub const FORM: usize = 3;
    pub const PURPOSE: usize = 4;
    pub const PAYER_ISPB: usize = 5;
    pub const PAYER_ACCOUNT: usize = 6;
    pub const PAYER_PERSON: usize = 7;
    pub const PAYER_OPENED: usize = 8;
    pub const DEVICE_REGISTERED: usize = 9;
    pub const DEVICE_FIRST_SEEN: usize = 10;
    pub const PAYEE_ISPB: usize = 11;
    pub const PAYEE_ACCOUNT: usize = 12;
    pub const PAYEE_PERSON: usize = 13;
    pub const KEY_TYPE: usize = 14;
    pub const KEY_CREATED: usize = 15;
    pub const PAYEE_OPENED: usize = 16;
    pub const SETTLEMENTS: usize = 17;
    pub const FRAUD_MARKERS: usize = 18;
    pub const INFRACTIONS: usize = 19;
    pub const MULE: usize = 20;
    pub const FIRST_TIME: usize = 21;
    pub const TX_1H: usize = 22;
    pub const AMOUNT_24H: usize = 23;
    pub const ZSCORE: usize = 24;
}

/// Appends the transaction's cells, comma-separated, in [`CSV_COLUMNS`] order (no newline).
///
/// No value can contain a comma, quote or newline (codes, digits, RFC 3339), so no quoting is needed.
pub fn write_csv_row(tx: &Transaction, out: &mut Vec<u8>) {
    let ts = |out: &mut Vec<u8>, t: Option<&Timestamp>| {
        if let Some(t) = t {
            t.write_rfc3339(out);
        }
        out.push(b',');
    };
    let s = |out: &mut Vec<u8>, v: &str| {
        out.extend_from_slice(v.as_bytes());
        out.push(b',');
    };
    s(out, tx.end_to_end_id.as_str());
    ts(out, Some(&tx.accepted_at));
    let _ = write!(out, "{},", tx.amount_cents);
    s(out, tx.initiation_form.as_str());
    s(out, tx.purpose.as_str());

    let p = &tx.payer;
    s(out, p.ispb.as_str());
    s(out, p.account_type.as_str());
    s(out, p.person_type.as_str());
    ts(out, Some(&p.account_opened_at));
    s(out, bool_str(p.device.registered));
    ts(out, p.device.first_seen_at.as_ref());

    let q = &tx.payee;
    s(out, q.ispb.as_str());
    s(out, q.account_type.as_str());
    s(out, q.person_type.as_str());
    s(out, q.key_type.map_or("", |k| k.as_str()));
    ts(out, q.key_created_at.as_ref());
    ts(out, q.account_opened_at.as_ref());
    match &q.dict_stats {
        Some(d) => {
            let _ = write!(
                out,
                "{},{},{},{},",
                d.settlements_90d,
                d.fraud_markers_30d,
                d.infractions_open,
                bool_str(d.mule_marker)
            );
        }
        None => out.extend_from_slice(b",,,,"),
    }

    let h = &tx.history;
    s(out, bool_str(h.payee_first_time));
    let _ = write!(out, "{},{},", h.payer_tx_1h, h.payer_amount_24h_cents);
    if let Some(z) = h.amount_zscore_90d {
        let _ = write!(out, "{z}");
    }
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// Builds and validates a transaction from flattened cells (names as in [`CSV_COLUMNS`], JSON
/// values); a null cell means the field is absent. Unknown columns are refused by name.
pub fn from_flat<'a>(
    cells: impl IntoIterator<Item = (&'a str, &'a serde_json::Value)>,
) -> Result<Transaction, super::ValidationError> {
    use serde_json::{Map, Value};
    let mut root = Map::new();
    for (name, value) in cells {
        if value.is_null() {
            continue;
        }
        let mut node = &mut root;
        let mut parts = name.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                node.insert(part.to_string(), value.clone());
                break;
            }
            node = node
                .entry(part)
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .ok_or_else(|| {
                    super::ValidationError::new(
                        name,
                        "conflicts with another column of the same prefix",
                    )
                })?;
        }
    }
    let root = Value::Object(root);
    // As in `parse_json`: plain serde first; path tracking (an allocation per key) only to name
    // the field of a cell that fails.
    let tx = match <Transaction as serde::Deserialize>::deserialize(&root) {
        Ok(tx) => tx,
        Err(_) => super::deserialize_with_path(root)?,
    };
    tx.validate()?;
    Ok(tx)
}

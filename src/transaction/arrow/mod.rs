//! The transaction as Arrow columns: the schema pixguard writes (Parquet from `pixguard synth`),
//! and the reading of whatever schema a file has (`pixguard batch`): nested structs
//! (`payer` → `ispb`) or flat dotted names (`payer.ispb`, as in the MLflow signature and CSV).
//!
//! Column names are the dotted JSON paths of [`super::CSV_COLUMNS`], so an error in any format
//! names the same field.

mod cells;
mod read;
mod write;

use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};

pub use read::{Plan, PlanError, column, has_column};
pub use write::Columns;

/// How a file arranges the transaction's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Struct columns as the JSON nests them: `payer` { `ispb`, …, `device` { … } }.
    Nested,
    /// One top-level column per leaf, named by its dotted path: `payer.device.registered`.
    Flat,
}

/// What a leaf column holds, which decides the Arrow types it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An identifier or a code: text.
    Text,
    /// An instant: an Arrow timestamp (any unit, any zone) or RFC 3339 text.
    Timestamp,
    /// A signed integer (centavos).
    Int,
    /// A count (u32).
    Count,
    /// A boolean.
    Bool,
    /// A float.
    Float,
}

/// One leaf of the transaction.
#[derive(Debug, Clone, Copy)]
pub struct Leaf {
    /// Dotted path, as in [`super::CSV_COLUMNS`].
    pub path: &'static str,
    /// What it holds.
    pub kind: Kind,
    /// Whether a transaction without it is invalid (optional leaves may be absent columns).
    pub required: bool,
}

const fn leaf(path: &'static str, kind: Kind, required: bool) -> Leaf {
    Leaf {
        path,
        kind,
        required,
    }
}

/// Every leaf, in [`super::CSV_COLUMNS`] order (indexed by [`super::at`]). The four `payee.dict_stats` leaves are required
/// together: all absent means no DICT statistics.
pub const LEAVES: [Leaf; 25] = [
    leaf("end_to_end_id", Kind::Text, true),
    leaf("accepted_at", Kind::Timestamp, true),
    leaf("amount_cents", Kind::Int, true),
    leaf("initiation_form", Kind::Text, true),
    leaf("purpose", Kind::Text, true),
    leaf("payer.ispb", Kind::Text, true),
    leaf("payer.account_type", Kind::Text, true),
    leaf("payer.person_type", Kind::Text, true),
    leaf("payer.account_opened_at", Kind::Timestamp, true),
    leaf("payer.device.registered", Kind::Bool, true),
    leaf("payer.device.first_seen_at", Kind::Timestamp, false),
    leaf("payee.ispb", Kind::Text, true),
    leaf("payee.account_type", Kind::Text, true),
    leaf("payee.person_type", Kind::Text, true),
    leaf("payee.key_type", Kind::Text, false),
    leaf("payee.key_created_at", Kind::Timestamp, false),
    leaf("payee.account_opened_at", Kind::Timestamp, false),
    leaf("payee.dict_stats.settlements_90d", Kind::Count, false),
    leaf("payee.dict_stats.fraud_markers_30d", Kind::Count, false),
    leaf("payee.dict_stats.infractions_open", Kind::Count, false),
    leaf("payee.dict_stats.mule_marker", Kind::Bool, false),
    leaf("history.payee_first_time", Kind::Bool, true),
    leaf("history.payer_tx_1h", Kind::Count, true),
    leaf("history.payer_amount_24h_cents", Kind::Int, true),
    leaf("history.amount_zscore_90d", Kind::Float, false),
];

/// The Arrow type pixguard writes for a leaf: what Spark and pandas write for such data.
pub fn data_type(kind: Kind) -> DataType {
    match kind {
        Kind::Text => DataType::Utf8,
        Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Kind::Int => DataType::Int64,
        Kind::Count => DataType::Int32,
        Kind::Bool => DataType::Boolean,
        Kind::Float => DataType::Float64,
    }
}

/// The schema pixguard writes for transactions in `layout`, before any extra columns.
pub fn schema(layout: Layout) -> Schema {
    let leaves: Vec<Field> = LEAVES
        .iter()
        .map(|l| Field::new(l.path, data_type(l.kind), true))
        .collect();
    match layout {
        Layout::Flat => Schema::new(leaves),
        Layout::Nested => Schema::new(nest(&leaves, "")),
    }
}

/// Groups fields named by dotted paths under `prefix` into struct fields, in first-seen order.
fn nest(leaves: &[Field], prefix: &str) -> Vec<Field> {
    let mut out: Vec<Field> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for f in leaves {
        let Some(rest) = f.name().strip_prefix(prefix) else {
            continue;
        };
        match rest.split_once('.') {
            None => out.push(Field::new(rest, f.data_type().clone(), true)),
            Some((head, _)) if !seen.contains(&head) => {
                seen.push(head);
                let inner = nest(leaves, &format!("{prefix}{head}."));
                out.push(Field::new(
                    head,
                    DataType::Struct(Fields::from(inner)),
                    true,
                ));
            }
            Some(_) => {}
        }
    }
    out
}

/// The schema as a shared reference, for record batches.
pub fn schema_ref(layout: Layout) -> Arc<Schema> {
    Arc::new(schema(layout))
}

#[cfg(test)]
mod tests {
    use arrow_array::{ArrayRef, RecordBatch};

    use super::*;
    use crate::synth::{Generator, SynthConfig};
    use crate::transaction::{CSV_COLUMNS, at};

    #[test]
    fn the_leaves_are_the_flattened_columns_in_order() {
        let paths: Vec<&str> = LEAVES.iter().map(|l| l.path).collect();
        assert_eq!(paths, CSV_COLUMNS);
    }

    fn synth(rows: u64) -> Vec<crate::transaction::Transaction> {
        let cfg = SynthConfig {
            seed: 5,
            rows,
            fraud_rate: 0.2,
            start: chrono::NaiveDate::from_ymd_opt(2026, 10, 1).unwrap_or_default(),
            days: 7,
            shifts: Vec::new(),
        };
        Generator::new(cfg)
            .map(|g| g.map(|r| r.transaction).collect())
            .unwrap_or_default()
    }

    #[test]
    fn both_layouts_read_back_what_was_written() {
        let txs = synth(3000);
        assert_eq!(txs.len(), 3000);
        for layout in [Layout::Nested, Layout::Flat] {
            let mut columns = Columns::with_capacity(txs.len());
            txs.iter().for_each(|t| columns.push(t));
            let arrays: Vec<ArrayRef> =
                columns.finish(layout).into_iter().map(|(_, a)| a).collect();
            let batch = RecordBatch::try_new(schema_ref(layout), arrays).expect("schema matches");
            let plan = Plan::new(&batch.schema()).expect("every leaf found");
            let (mut read, mut rows, mut rejects) = (Vec::new(), Vec::new(), Vec::new());
            plan.read(&batch, &mut read, &mut rows, &mut rejects)
                .expect("readable");
            assert!(rejects.is_empty(), "{layout:?}: {:?}", rejects.first());
            assert_eq!(read, txs, "{layout:?}");
            assert_eq!(rows, (0..txs.len() as u32).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_missing_required_leaf_is_named() {
        let mut fields = schema(Layout::Flat).fields().to_vec();
        fields.retain(|f| f.name() != "payer.ispb" && f.name() != "history.payer_tx_1h");
        let err = Plan::new(&Schema::new(fields)).expect_err("refused");
        assert_eq!(
            err,
            PlanError::Missing(vec!["payer.ispb".into(), "history.payer_tx_1h".into()])
        );
        let mut fields = schema(Layout::Flat).fields().to_vec();
        fields[at::AMOUNT] = Arc::new(Field::new("amount_cents", DataType::Float64, true));
        let err = Plan::new(&Schema::new(fields.clone())).expect_err("refused");
        assert!(err.to_string().contains("amount_cents is Float64"), "{err}");
        assert!(err.to_string().contains("cast it to Int64"), "{err}");
        fields[at::AMOUNT] = Arc::new(Field::new("amount_cents", DataType::Boolean, true));
        let err = Plan::new(&Schema::new(fields)).expect_err("refused");
        assert!(!err.to_string().contains("pandas"), "{err}");
    }
}

//! Transactions into Arrow columns, in either layout.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{Array, ArrayRef, StructArray};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, Fields};

use super::{Kind, LEAVES, Layout, data_type};
use crate::transaction::{Timestamp, Transaction};

enum Builder {
    Text(StringBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Int(Int64Builder),
    Count(Int32Builder),
    Bool(BooleanBuilder),
    Float(Float64Builder),
}

impl Builder {
    fn new(kind: Kind, rows: usize) -> Self {
        match kind {
            Kind::Text => Builder::Text(StringBuilder::with_capacity(rows, rows * 8)),
            Kind::Timestamp => Builder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            ),
            Kind::Int => Builder::Int(Int64Builder::with_capacity(rows)),
            Kind::Count => Builder::Count(Int32Builder::with_capacity(rows)),
            Kind::Bool => Builder::Bool(BooleanBuilder::with_capacity(rows)),
            Kind::Float => Builder::Float(Float64Builder::with_capacity(rows)),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Count(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Float(b) => Arc::new(b.finish()),
        }
    }
}

/// Accumulates transactions as one Arrow column per leaf of [`LEAVES`].
pub struct Columns {
    builders: Vec<Builder>,
}

fn micros(t: &Timestamp) -> i64 {
    t.0.timestamp_micros()
}

impl Columns {
    /// Builders sized for `rows` transactions.
    pub fn with_capacity(rows: usize) -> Self {
        Columns {
            builders: LEAVES.iter().map(|l| Builder::new(l.kind, rows)).collect(),
        }
    }

    /// Appends one transaction.
    pub fn push(&mut self, tx: &Transaction) {
        use crate::transaction::at::*;
        let b = &mut self.builders;
        let text = |b: &mut Builder, v: Option<&str>| {
            if let Builder::Text(b) = b {
                b.append_option(v);
            }
        };
        let ts = |b: &mut Builder, v: Option<&Timestamp>| {
            if let Builder::Timestamp(b) = b {
                b.append_option(v.map(micros));
            }
        };
        let int = |b: &mut Builder, v: i64| {
            if let Builder::Int(b) = b {
                b.append_value(v);
            }
        };
        let count = |b: &mut Builder, v: Option<u32>| {
            if let Builder::Count(b) = b {
                // A count above i32::MAX is not a count any PSP reports; it saturates.
                b.append_option(v.map(|v| i32::try_from(v).unwrap_or(i32::MAX)));
            }
        };
        let boolean = |b: &mut Builder, v: Option<bool>| {
            if let Builder::Bool(b) = b {
                b.append_option(v);
            }
        };
        text(&mut b[E2E], Some(tx.end_to_end_id.as_str()));
        ts(&mut b[ACCEPTED], Some(&tx.accepted_at));
        int(&mut b[AMOUNT], tx.amount_cents);
        text(&mut b[FORM], Some(tx.initiation_form.as_str()));
        text(&mut b[PURPOSE], Some(tx.purpose.as_str()));
        let p = &tx.payer;
        text(&mut b[PAYER_ISPB], Some(p.ispb.as_str()));
        text(&mut b[PAYER_ACCOUNT], Some(p.account_type.as_str()));
        text(&mut b[PAYER_PERSON], Some(p.person_type.as_str()));
        ts(&mut b[PAYER_OPENED], Some(&p.account_opened_at));
        boolean(&mut b[DEVICE_REGISTERED], Some(p.device.registered));
        ts(&mut b[DEVICE_FIRST_SEEN], p.device.first_seen_at.as_ref());
        let q = &tx.payee;
        text(&mut b[PAYEE_ISPB], Some(q.ispb.as_str()));
        text(&mut b[PAYEE_ACCOUNT], Some(q.account_type.as_str()));
        text(&mut b[PAYEE_PERSON], Some(q.person_type.as_str()));
        text(&mut b[KEY_TYPE], q.key_type.map(|k| k.as_str()));
        ts(&mut b[KEY_CREATED], q.key_created_at.as_ref());
        ts(&mut b[PAYEE_OPENED], q.account_opened_at.as_ref());
        let d = q.dict_stats.as_ref();
        count(&mut b[SETTLEMENTS], d.map(|d| d.settlements_90d));
        count(&mut b[FRAUD_MARKERS], d.map(|d| d.fraud_markers_30d));
        count(&mut b[INFRACTIONS], d.map(|d| d.infractions_open));
        boolean(&mut b[MULE], d.map(|d| d.mule_marker));
        let h = &tx.history;
        boolean(&mut b[FIRST_TIME], Some(h.payee_first_time));
        count(&mut b[TX_1H], Some(h.payer_tx_1h));
        int(&mut b[AMOUNT_24H], h.payer_amount_24h_cents);
        if let Builder::Float(f) = &mut b[ZSCORE] {
            f.append_option(h.amount_zscore_90d);
        }
    }

    /// The columns so far in `layout`, as (field, array) pairs; the builders start over empty.
    pub fn finish(&mut self, layout: Layout) -> Vec<(Field, ArrayRef)> {
        let leaves: Vec<(Field, ArrayRef)> = LEAVES
            .iter()
            .zip(&mut self.builders)
            .map(|(l, b)| (Field::new(l.path, data_type(l.kind), true), b.finish()))
            .collect();
        match layout {
            Layout::Flat => leaves,
            Layout::Nested => nest(&leaves, ""),
        }
    }
}

/// Groups dotted-path columns under `prefix` into struct columns. A struct is null on the rows
/// where every leaf under it is null (`payee.dict_stats` without DICT statistics).
fn nest(leaves: &[(Field, ArrayRef)], prefix: &str) -> Vec<(Field, ArrayRef)> {
    let mut out: Vec<(Field, ArrayRef)> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (f, a) in leaves {
        let Some(rest) = f.name().strip_prefix(prefix) else {
            continue;
        };
        match rest.split_once('.') {
            None => out.push((Field::new(rest, f.data_type().clone(), true), a.clone())),
            Some((head, _)) if !seen.contains(&head) => {
                seen.push(head);
                let inner = nest(leaves, &format!("{prefix}{head}."));
                let len = inner.first().map_or(0, |(_, a)| a.len());
                let any_valid = (0..len)
                    .map(|row| inner.iter().any(|(_, a)| a.is_valid(row)))
                    .collect::<Vec<bool>>();
                let nulls = (!any_valid.iter().all(|v| *v)).then(|| NullBuffer::from(any_valid));
                let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = inner.into_iter().unzip();
                let fields = Fields::from(fields);
                let array = StructArray::new(fields.clone(), arrays, nulls);
                out.push((
                    Field::new(head, DataType::Struct(fields), true),
                    Arc::new(array),
                ));
            }
            Some(_) => {}
        }
    }
    out
}

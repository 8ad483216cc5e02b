//! The transaction-fields input mode: one typed column per flattened field, turned into validated
//! transactions directly (no JSON in between), with every error naming the input and the row.

use std::str::FromStr;

use super::tensor::{Column, Tensor, TensorData, decode};
use super::{FIELD_INPUTS, ProtocolError};
use crate::parallel::{MIN_CHUNK_ROWS, Parallel};
// FIELD_INPUTS is in CSV_COLUMNS order (checked in oip/mod.rs), so the flattened columns'
// positions index it.
use crate::transaction::{
    DictStats, EndToEndId, History, Ispb, Payee, Payer, Timestamp, Transaction, at,
};

/// Decodes the field tensors and builds one validated transaction per row. A large request's
/// JSON tensors are decoded, and its rows built, on `parallel`'s threads; the transactions and the
/// error (the first in the order the serial loop meets them) are the same on any number.
pub(super) fn transactions(
    tensors: &[Tensor<'_>],
    parallel: &Parallel,
) -> Result<Vec<Transaction>, ProtocolError> {
    // Names, shapes and duplicates are checked in order first (cheap); a tensor after the first
    // one that fails them is not decoded, as in a serial loop that stops at its first error.
    let mut filled = [false; FIELD_INPUTS.len()];
    let mut assigned: Vec<(usize, &Tensor<'_>)> = Vec::with_capacity(tensors.len());
    let mut refused = None;
    for t in tensors {
        match slot(t, &filled) {
            Ok(k) => {
                filled[k] = true;
                assigned.push((k, t));
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let mut columns: Vec<Option<Column>> = vec![None; FIELD_INPUTS.len()];
    for run in decode_columns(&assigned, parallel) {
        for (k, column) in run? {
            columns[k] = Some(column);
        }
    }
    if let Some(e) = refused {
        return Err(e);
    }
    for (k, (name, _, optional)) in FIELD_INPUTS.iter().enumerate() {
        if !optional && columns[k].is_none() {
            return Err(ProtocolError::invalid(
                *name,
                format!("missing input '{name}' (required)"),
            ));
        }
    }
    let rows = columns[at::E2E].as_ref().map_or(0, Column::len);
    for (k, c) in columns.iter().enumerate() {
        if let Some(c) = c
            && c.len() != rows
        {
            return Err(ProtocolError::invalid(
                FIELD_INPUTS[k].0,
                format!("has {} rows, end_to_end_id has {rows}", c.len()),
            ));
        }
    }
    let cells = Cells { columns: &columns };
    let mut txs = Vec::with_capacity(rows);
    for part in parallel.map(parallel.row_ranges(rows), |range| {
        range
            .map(|row| cells.validated(row))
            .collect::<Result<Vec<_>, _>>()
    }) {
        txs.extend(part?);
    }
    Ok(txs)
}

/// The column a field tensor fills, or why it is refused.
fn slot(t: &Tensor<'_>, filled: &[bool]) -> Result<usize, ProtocolError> {
    let Some(k) = FIELD_INPUTS.iter().position(|(n, _, _)| *n == t.name) else {
        return Err(ProtocolError::invalid(
            t.name,
            format!(
                "unknown input '{}' (the model takes the transaction's fields, or features \
                 and categories)",
                t.name
            ),
        ));
    };
    if t.shape.len() > 2 || t.shape.get(1).is_some_and(|d| *d != 1) {
        return Err(ProtocolError::invalid(
            t.name,
            format!("shape {:?} must be [N] or [N, 1]", t.shape),
        ));
    }
    if filled[k] {
        return Err(ProtocolError::invalid(t.name, "input given twice"));
    }
    Ok(k)
}

/// Each tensor decoded into its column, in runs of tensors in the tensors' order; a run stops at
/// its first error, so the first error met in the runs is the serial loop's. JSON tensors of a
/// large request are shared over the pool a run each; binary and typed contents are copies, not
/// worth a hand-off, so they are one run.
fn decode_columns<'a>(
    assigned: &[(usize, &Tensor<'a>)],
    parallel: &Parallel,
) -> Vec<Result<Vec<(usize, Column<'a>)>, ProtocolError>> {
    let decode_run = |run: &[(usize, &Tensor<'a>)]| {
        run.iter()
            .map(|&(k, t)| decode(t, FIELD_INPUTS[k].1).map(|c| (k, c)))
            .collect::<Result<Vec<_>, _>>()
    };
    let json = assigned
        .iter()
        .any(|(_, t)| matches!(t.data, TensorData::Json(_)));
    let rows = assigned
        .first()
        .and_then(|(_, t)| t.shape.first())
        .map_or(0, |&r| usize::try_from(r).unwrap_or(0));
    let parts = if json {
        parallel.parts(rows, MIN_CHUNK_ROWS).min(assigned.len())
    } else {
        1
    };
    if parts <= 1 {
        return vec![decode_run(assigned)];
    }
    let runs: Vec<&[(usize, &Tensor<'a>)]> =
        assigned.chunks(assigned.len().div_ceil(parts)).collect();
    parallel.map(runs, decode_run)
}

/// A cell error: the field's index and why.
type CellError = (usize, String);

struct Cells<'a, 'b> {
    columns: &'a [Option<Column<'b>>],
}

impl Cells<'_, '_> {
    fn text(&self, k: usize, row: usize) -> Option<&str> {
        match &self.columns[k] {
            Some(Column::Text(v)) if !v[row].is_empty() => Some(v[row].as_ref()),
            _ => None,
        }
    }

    fn int(&self, k: usize, row: usize) -> Option<i64> {
        match &self.columns[k] {
            Some(Column::Int(v)) => Some(v[row]),
            _ => None,
        }
    }

    fn boolean(&self, k: usize, row: usize) -> Option<bool> {
        match &self.columns[k] {
            Some(Column::Bool(v)) => Some(v[row]),
            _ => None,
        }
    }

    fn float(&self, k: usize, row: usize) -> Option<f64> {
        match &self.columns[k] {
            Some(Column::Float(v)) if !v[row].is_nan() => Some(v[row]),
            _ => None,
        }
    }

    fn required<T>(k: usize, v: Option<T>) -> Result<T, CellError> {
        v.ok_or_else(|| {
            (
                k,
                "is required (an empty or absent value was sent)".to_string(),
            )
        })
    }

    fn parsed<T>(
        &self,
        k: usize,
        row: usize,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, CellError> {
        self.text(k, row)
            .map(|s| parse(s).map_err(|e| (k, e)))
            .transpose()
    }

    fn code<T: FromStr<Err = String>>(&self, k: usize, row: usize) -> Result<T, CellError> {
        Self::required(k, self.parsed(k, row, T::from_str)?)
    }

    fn time(&self, k: usize, row: usize) -> Result<Option<Timestamp>, CellError> {
        self.parsed(k, row, Timestamp::parse)
    }

    fn required_time(&self, k: usize, row: usize) -> Result<Timestamp, CellError> {
        Self::required(k, self.time(k, row)?)
    }

    fn ispb(&self, k: usize, row: usize) -> Result<Ispb, CellError> {
        Self::required(k, self.parsed(k, row, Ispb::parse)?)
    }

    fn flag(&self, k: usize, row: usize) -> Result<bool, CellError> {
        Self::required(k, self.boolean(k, row))
    }

    fn required_int(&self, k: usize, row: usize) -> Result<i64, CellError> {
        Self::required(k, self.int(k, row))
    }

    fn count(&self, k: usize, row: usize) -> Result<u32, CellError> {
        let v = Self::required(k, self.int(k, row))?;
        crate::transaction::count(v).map_err(|reason| (k, reason))
    }

    /// Row `row` as a validated transaction, or the protocol error naming its field and row.
    fn validated(&self, row: usize) -> Result<Transaction, ProtocolError> {
        let tx = self.transaction(row).map_err(|(k, reason)| {
            ProtocolError::invalid(FIELD_INPUTS[k].0, format!("row {row}: {reason}"))
        })?;
        tx.validate()
            .map_err(|e| ProtocolError::invalid(e.field, format!("row {row}: {}", e.reason)))?;
        Ok(tx)
    }

    fn transaction(&self, row: usize) -> Result<Transaction, CellError> {
        let dict_stats = match self.int(at::SETTLEMENTS, row) {
            // -1 (or any negative count) marks the whole DICT group absent.
            Some(n) if n < 0 => None,
            None if [at::FRAUD_MARKERS, at::INFRACTIONS, at::MULE]
                .iter()
                .all(|&k| self.columns[k].is_none()) =>
            {
                None
            }
            _ => Some(DictStats {
                settlements_90d: self.count(at::SETTLEMENTS, row)?,
                fraud_markers_30d: self.count(at::FRAUD_MARKERS, row)?,
                infractions_open: self.count(at::INFRACTIONS, row)?,
                mule_marker: self.flag(at::MULE, row)?,
            }),
        };
        Ok(Transaction {
            end_to_end_id: Self::required(at::E2E, self.parsed(at::E2E, row, EndToEndId::parse)?)?,
            accepted_at: self.required_time(at::ACCEPTED, row)?,
            amount_cents: self.required_int(at::AMOUNT, row)?,
            initiation_form: self.code(at::FORM, row)?,
            purpose: self.code(at::PURPOSE, row)?,
            payer: Payer {
                ispb: self.ispb(at::PAYER_ISPB, row)?,
                account_type: self.code(at::PAYER_ACCOUNT, row)?,
                person_type: self.code(at::PAYER_PERSON, row)?,
                account_opened_at: self.required_time(at::PAYER_OPENED, row)?,
                device: crate::transaction::Device {
                    registered: self.flag(at::DEVICE_REGISTERED, row)?,
                    first_seen_at: self.time(at::DEVICE_FIRST_SEEN, row)?,
                },
            },
            payee: Payee {
                ispb: self.ispb(at::PAYEE_ISPB, row)?,
                account_type: self.code(at::PAYEE_ACCOUNT, row)?,
                person_type: self.code(at::PAYEE_PERSON, row)?,
                key_type: self.parsed(at::KEY_TYPE, row, |s| s.parse())?,
                key_created_at: self.time(at::KEY_CREATED, row)?,
                account_opened_at: self.time(at::PAYEE_OPENED, row)?,
                dict_stats,
            },
            history: History {
                payee_first_time: self.flag(at::FIRST_TIME, row)?,
                payer_tx_1h: self.count(at::TX_1H, row)?,
                payer_amount_24h_cents: self.required_int(at::AMOUNT_24H, row)?,
                amount_zscore_90d: self.float(at::ZSCORE, row),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{FIELD_INPUTS, at};

    #[test]
    fn the_builder_indices_name_the_fields_they_read() {
        let named = [
            (at::E2E, "end_to_end_id"),
            (at::ACCEPTED, "accepted_at"),
            (at::AMOUNT, "amount_cents"),
            (at::FORM, "initiation_form"),
            (at::PURPOSE, "purpose"),
            (at::PAYER_ISPB, "payer.ispb"),
            (at::PAYER_ACCOUNT, "payer.account_type"),
            (at::PAYER_PERSON, "payer.person_type"),
            (at::PAYER_OPENED, "payer.account_opened_at"),
            (at::DEVICE_REGISTERED, "payer.device.registered"),
            (at::DEVICE_FIRST_SEEN, "payer.device.first_seen_at"),
            (at::PAYEE_ISPB, "payee.ispb"),
            (at::PAYEE_ACCOUNT, "payee.account_type"),
            (at::PAYEE_PERSON, "payee.person_type"),
            (at::KEY_TYPE, "payee.key_type"),
            (at::KEY_CREATED, "payee.key_created_at"),
            (at::PAYEE_OPENED, "payee.account_opened_at"),
            (at::SETTLEMENTS, "payee.dict_stats.settlements_90d"),
            (at::FRAUD_MARKERS, "payee.dict_stats.fraud_markers_30d"),
            (at::INFRACTIONS, "payee.dict_stats.infractions_open"),
            (at::MULE, "payee.dict_stats.mule_marker"),
            (at::FIRST_TIME, "history.payee_first_time"),
            (at::TX_1H, "history.payer_tx_1h"),
            (at::AMOUNT_24H, "history.payer_amount_24h_cents"),
            (at::ZSCORE, "history.amount_zscore_90d"),
        ];
        assert_eq!(named.len(), FIELD_INPUTS.len());
        for (k, name) in named {
            assert_eq!(FIELD_INPUTS[k].0, name);
        }
    }
}

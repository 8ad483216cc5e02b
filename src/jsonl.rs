//! Reading transactions from JSON lines. Each line is one of:
//! - a bare transaction;
//! - a labelled row as `pixguard synth` writes it: `{"transaction": {...}, "label": 0, "fraud_type": "none"}`;
//! - a batch, as `/v1/score` takes it: `{"transactions": [{...}, ...]}`;
//! - MLflow's dataframe-split form of flattened transactions (a package's `input_example.json`):
//!   `{"columns": ["end_to_end_id", "payer.ispb", ...], "data": [[...], ...]}`.

use std::io::BufRead;

use serde_json::Value;

use crate::protocol::v1::{BatchRequest, validate_batch};
use crate::synth::{FraudType, SynthRow};
use crate::transaction::{
    NOT_AN_ARRAY, Transaction, ValidationError, deserialize_with_path, from_flat,
};

/// The UTF-8 byte order mark: Excel's "CSV UTF-8", Windows PowerShell 5's `-Encoding utf8` and
/// Notepad put it before a file's first line, where JSON parsers refuse it.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Skips a UTF-8 byte order mark at the start of `input`, so the first line parses like the rest.
/// (Only a mark whole in the first read: a reader that handed over fewer than three bytes
/// leaves it, and the line fails as it would have.)
pub fn skip_bom(input: &mut impl BufRead) -> std::io::Result<()> {
    if input.fill_buf()?.starts_with(BOM) {
        input.consume(BOM.len());
    }
    Ok(())
}

/// A transaction read from the input, with its label when the line carried one.
#[derive(Debug, Clone, PartialEq)]
pub struct InputRow {
    /// The validated transaction.
    pub transaction: Transaction,
    /// `(label, fraud_type)` for synth rows.
    pub label: Option<(u8, FraudType)>,
}

/// A line that could not be read, with its 1-based number.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The line is not a valid transaction.
    #[error("line {line}: {error}")]
    Invalid { line: usize, error: ValidationError },
    /// The input could not be read.
    #[error("reading input: {0}")]
    Io(#[from] std::io::Error),
}

fn bare(value: Value, prefix: &str) -> Result<InputRow, ValidationError> {
    if value.is_array() {
        return Err(ValidationError::new(prefix, NOT_AN_ARRAY));
    }
    let transaction: Transaction = deserialize_with_path(value).map_err(|e| e.within(prefix))?;
    transaction.validate().map_err(|e| e.within(prefix))?;
    Ok(InputRow {
        transaction,
        label: None,
    })
}

fn split_orient(value: &Value) -> Result<Vec<InputRow>, ValidationError> {
    let columns: Vec<&str> = value["columns"]
        .as_array()
        .and_then(|c| c.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
        .ok_or_else(|| ValidationError::new("columns", "must be an array of column names"))?;
    let data = value["data"]
        .as_array()
        .ok_or_else(|| ValidationError::new("data", "must be an array of rows"))?;
    data.iter()
        .enumerate()
        .map(|(i, row)| {
            let prefix = format!("data[{i}]");
            let cells = row
                .as_array()
                .ok_or_else(|| ValidationError::new(&prefix, "must be an array"))?;
            if cells.len() != columns.len() {
                return Err(ValidationError::new(
                    &prefix,
                    format!("has {} cells for {} columns", cells.len(), columns.len()),
                ));
            }
            let transaction =
                from_flat(columns.iter().copied().zip(cells)).map_err(|e| e.within(&prefix))?;
            Ok(InputRow {
                transaction,
                label: None,
            })
        })
        .collect()
}

/// Parses and validates one line into the rows it holds.
pub fn parse_document(line: &str) -> Result<Vec<InputRow>, ValidationError> {
    let value: Value = serde_json::from_str(line)
        .map_err(|e| ValidationError::new("", format!("invalid JSON: {e}")))?;
    if value.get("transaction").is_some() {
        let row: SynthRow = deserialize_with_path(value)?;
        row.transaction
            .validate()
            .map_err(|e| e.within("transaction"))?;
        return Ok(vec![InputRow {
            transaction: row.transaction,
            label: Some((row.label, row.fraud_type)),
        }]);
    }
    if value.get("transactions").is_some_and(Value::is_array) {
        let batch: BatchRequest = deserialize_with_path(value)?;
        validate_batch(&batch.transactions)?;
        return Ok(batch
            .transactions
            .into_iter()
            .map(|transaction| InputRow {
                transaction,
                label: None,
            })
            .collect());
    }
    if value.get("columns").is_some() && value.get("data").is_some() {
        return split_orient(&value);
    }
    Ok(vec![bare(value, "")?])
}

/// Parses one line that must hold exactly one transaction.
pub fn parse_line(line: &str) -> Result<InputRow, ValidationError> {
    let mut rows = parse_document(line)?;
    match rows.len() {
        1 => Ok(rows.remove(0)),
        n => Err(ValidationError::new(
            "",
            format!("expected one transaction, the line holds {n}"),
        )),
    }
}

/// Reads rows in batches from JSON lines; stops at the first invalid line so no row is silently lost.
pub struct RowReader<R> {
    lines: std::io::Lines<R>,
    line: usize,
}

impl<R: BufRead> RowReader<R> {
    /// Wraps a buffered input.
    pub fn new(input: R) -> Self {
        RowReader {
            lines: input.lines(),
            line: 0,
        }
    }

    /// Appends at least `min_rows` rows to `out` (fewer only at the end); `Ok(false)` once exhausted.
    pub fn next_batch(
        &mut self,
        min_rows: usize,
        out: &mut Vec<InputRow>,
    ) -> Result<bool, ReadError> {
        let start = out.len();
        while out.len() - start < min_rows {
            let Some(line) = self.lines.next() else {
                return Ok(out.len() > start);
            };
            let line = line?;
            self.line += 1;
            if line.trim().is_empty() {
                continue;
            }
            let rows = parse_document(&line).map_err(|error| ReadError::Invalid {
                line: self.line,
                error,
            })?;
            out.extend(rows);
        }
        Ok(true)
    }
}

/// Reads every row of the input.
pub fn read_all(input: impl BufRead) -> Result<Vec<InputRow>, ReadError> {
    let mut reader = RowReader::new(input);
    let mut rows = Vec::new();
    while reader.next_batch(usize::MAX, &mut rows)? {}
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_order_mark_is_skipped_once_and_only_at_the_start() {
        let read = |bytes: &[u8]| {
            let mut input = bytes;
            skip_bom(&mut input).unwrap();
            read_all(input)
        };
        let line = br#"{"transactions": []}"#;
        let marked = [BOM, line.as_slice(), b"\n"].concat();
        assert_eq!(read(&marked).unwrap(), Vec::new());
        // A second mark is not a mark but data, and fails as before.
        let twice = [BOM, &marked].concat();
        assert!(
            read(&twice)
                .unwrap_err()
                .to_string()
                .starts_with("line 1: invalid JSON")
        );
        assert!(read(b"").unwrap().is_empty());
        assert!(read(b"\xEF\xBB").is_err());
    }
}

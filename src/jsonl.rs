//! Reading transactions from JSON lines: a bare transaction per line, or a labelled row as
//! `pixguard synth` writes it (`{"transaction": {...}, "label": 0, "fraud_type": "none"}`).

use std::io::BufRead;

use serde_json::Value;

use crate::synth::{FraudType, SynthRow};
use crate::transaction::{Transaction, ValidationError, deserialize_with_path};

/// A transaction read from one line, with its label when the line carried one.
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

/// Parses and validates one line.
pub fn parse_line(line: &str) -> Result<InputRow, ValidationError> {
    let value: Value = serde_json::from_str(line)
        .map_err(|e| ValidationError::new("", format!("invalid JSON: {e}")))?;
    if value.get("transaction").is_some() {
        let row: SynthRow = deserialize_with_path(value)?;
        row.transaction
            .validate()
            .map_err(|e| e.within("transaction"))?;
        Ok(InputRow {
            transaction: row.transaction,
            label: Some((row.label, row.fraud_type)),
        })
    } else {
        let transaction: Transaction = deserialize_with_path(value)?;
        transaction.validate()?;
        Ok(InputRow {
            transaction,
            label: None,
        })
    }
}

/// Reads every non-blank line; stops at the first invalid one so no row is silently lost.
pub fn read_all(input: impl BufRead) -> Result<Vec<InputRow>, ReadError> {
    let mut rows = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        rows.push(parse_line(&line).map_err(|error| ReadError::Invalid { line: i + 1, error })?);
    }
    Ok(rows)
}

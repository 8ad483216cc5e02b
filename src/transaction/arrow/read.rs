//! Transactions out of Arrow record batches of any reasonable schema.
//!
//! A [`Plan`] is made once per file schema: it finds every leaf (flat dotted name or nested
//! struct field), checks its type, and refuses a schema that lacks a required leaf before any row
//! is read. Each batch is then read row by row straight from the columns (no JSON), and a row
//! that is not a valid transaction is reported with its field and reason, never aborting the rest.

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch, StructArray};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Schema};

use super::cells::{Col, Owned, expected, is_text, row};
use super::{Kind, LEAVES};
use crate::transaction::{Transaction, ValidationError};

/// Why a file's columns cannot be read as transactions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Required leaves with no column.
    #[error(
        "missing required column(s): {} (as flat dotted names or nested struct fields)",
        .0.join(", ")
    )]
    Missing(Vec<String>),
    /// A column whose type cannot hold its leaf.
    #[error("column {path} is {found}, expected {expected}{hint}")]
    Type {
        /// Dotted path of the leaf.
        path: String,
        /// The column's Arrow type.
        found: String,
        /// What the leaf accepts.
        expected: &'static str,
        /// How such a column usually comes about, when that is known.
        hint: &'static str,
    },
}

/// Where each leaf lives in a schema, and how it is read.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Per leaf of [`LEAVES`]: the column indices from the top level down, when present.
    found: Vec<Option<Vec<usize>>>,
}

fn accepts(kind: Kind, t: &DataType) -> bool {
    if is_text(t) {
        return true;
    }
    match kind {
        Kind::Text => false,
        Kind::Timestamp => matches!(t, DataType::Timestamp(_, _)),
        Kind::Int | Kind::Count => t.is_integer(),
        Kind::Bool => matches!(t, DataType::Boolean),
        Kind::Float => t.is_integer() || t.is_floating(),
    }
}

/// Column indices of `path` in `fields`: the whole remaining path as one name first (flat), else
/// its first segment as a struct to descend into (nested); any mix of the two.
fn locate(fields: &arrow_schema::Fields, path: &str) -> Option<(Vec<usize>, DataType)> {
    if let Some((i, f)) = fields.find(path) {
        return Some((vec![i], f.data_type().clone()));
    }
    let (head, rest) = path.split_once('.')?;
    let (i, f) = fields.find(head)?;
    let DataType::Struct(inner) = f.data_type() else {
        return None;
    };
    let (mut below, t) = locate(inner, rest)?;
    below.insert(0, i);
    Some((below, t))
}

/// The column at `indices` (see [`locate`]) with the nulls of the structs above it folded in.
fn extract(batch: &RecordBatch, indices: &[usize]) -> Option<ArrayRef> {
    let (first, rest) = indices.split_first()?;
    let mut array = batch.columns().get(*first)?.clone();
    let mut nulls: Option<NullBuffer> = None;
    for &i in rest {
        let s: &StructArray = array.as_struct_opt()?;
        nulls = NullBuffer::union(nulls.as_ref(), s.nulls());
        array = s.columns().get(i)?.clone();
    }
    if nulls.is_none() {
        return Some(array);
    }
    let merged = NullBuffer::union(nulls.as_ref(), array.logical_nulls().as_ref());
    let data = array.to_data().into_builder().nulls(merged).build().ok()?;
    Some(arrow_array::make_array(data))
}

/// The column named by dotted `path` (flat or nested), for copying input columns to the output.
pub fn column(batch: &RecordBatch, path: &str) -> Option<ArrayRef> {
    let (indices, _) = locate(batch.schema().fields(), path)?;
    extract(batch, &indices)
}

/// Whether `path` names a column of `schema` (flat or nested).
pub fn has_column(schema: &Schema, path: &str) -> bool {
    locate(schema.fields(), path).is_some()
}

impl Plan {
    /// Finds and type-checks every leaf in `schema`; refuses missing required leaves by name.
    pub fn new(schema: &Schema) -> Result<Plan, PlanError> {
        let mut missing = Vec::new();
        let mut found = Vec::with_capacity(LEAVES.len());
        for leaf in &LEAVES {
            match locate(schema.fields(), leaf.path) {
                Some((indices, t)) => {
                    if !accepts(leaf.kind, &t) {
                        let float_for_int = matches!(leaf.kind, Kind::Int | Kind::Count)
                            && matches!(
                                t,
                                DataType::Float16 | DataType::Float32 | DataType::Float64
                            );
                        return Err(PlanError::Type {
                            path: leaf.path.to_string(),
                            found: t.to_string(),
                            expected: expected(leaf.kind),
                            hint: if float_for_int {
                                " (pandas writes an integer column with missing values as \
                                 float64: cast it to Int64 before writing)"
                            } else {
                                ""
                            },
                        });
                    }
                    found.push(Some(indices));
                }
                None => {
                    if leaf.required {
                        missing.push(leaf.path.to_string());
                    }
                    found.push(None);
                }
            }
        }
        if !missing.is_empty() {
            return Err(PlanError::Missing(missing));
        }
        Ok(Plan { found })
    }

    /// Reads every row of `batch`: valid transactions into `txs` with their row numbers
    /// (within the batch) in `rows`; the others into `rejects` with their error.
    pub fn read(
        &self,
        batch: &RecordBatch,
        txs: &mut Vec<Transaction>,
        rows: &mut Vec<u32>,
        rejects: &mut Vec<(u32, ValidationError)>,
    ) -> Result<(), arrow_schema::ArrowError> {
        let mut owned: Vec<Option<Owned>> = Vec::with_capacity(LEAVES.len());
        for (leaf, found) in LEAVES.iter().zip(&self.found) {
            owned.push(match found {
                None => None,
                Some(indices) => {
                    let array = extract(batch, indices).ok_or_else(|| {
                        arrow_schema::ArrowError::SchemaError(format!(
                            "column {} changed shape between batches",
                            leaf.path
                        ))
                    })?;
                    Some(Owned::new(leaf.kind, array)?)
                }
            });
        }
        let cols: Vec<Option<Col<'_>>> =
            owned.iter().map(|o| o.as_ref().map(Owned::view)).collect();
        for i in 0..batch.num_rows() {
            match row(&cols, i) {
                Ok(tx) => {
                    txs.push(tx);
                    rows.push(i as u32);
                }
                Err(e) => rejects.push((i as u32, e)),
            }
        }
        Ok(())
    }
}

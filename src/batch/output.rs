//! The job's outputs: scores (Parquet, JSONL or CSV) and the rejects file (JSONL).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arrow_array::builder::{
    Float32Builder, ListBuilder, StringBuilder, StringDictionaryBuilder, StructBuilder,
};
use arrow_array::types::Int32Type;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde::Serialize;

use super::input::Format;
use crate::protocol::v1::ReasonOut;
use crate::scoring::{Scores, Served};
use crate::transaction::Transaction;

/// Scores of one chunk, encoded for the output file.
pub enum Encoded {
    /// Parquet output: the chunk's rows as a record batch.
    Arrow(RecordBatch),
    /// JSONL or CSV output: the chunk's lines.
    Text(Vec<u8>),
}

fn reason_fields() -> Fields {
    Fields::from(vec![
        Field::new("code", DataType::Utf8, false),
        Field::new("contribution", DataType::Float32, false),
    ])
}

/// The `reasons` list's item: one struct of code and contribution.
fn reason_item() -> FieldRef {
    Arc::new(Field::new("item", DataType::Struct(reason_fields()), true))
}

/// The output's schema: the score columns, then the kept input columns under their paths.
pub fn schema(keep: &[(String, DataType)]) -> SchemaRef {
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let mut fields = vec![
        Field::new("end_to_end_id", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
        Field::new("decision", dict.clone(), false),
        Field::new("reasons", DataType::List(reason_item()), false),
        Field::new("model_version", dict, false),
    ];
    fields.extend(keep.iter().map(|(n, t)| Field::new(n, t.clone(), true)));
    Arc::new(Schema::new(fields))
}

/// One JSONL output line, before the kept columns.
#[derive(Serialize)]
struct Line<'a> {
    end_to_end_id: &'a str,
    score: f32,
    decision: &'static str,
    reasons: Vec<ReasonOut<'a>>,
    model_version: &'a str,
}

/// Encodes a chunk's scores. `keep` holds the kept columns, already cut to the scored rows.
pub fn encode(
    format: Format,
    schema: &SchemaRef,
    served: &Served,
    model_version: &str,
    txs: &[Transaction],
    scores: &Scores,
    keep: &[ArrayRef],
) -> anyhow::Result<Encoded> {
    let n = txs.len();
    match format {
        Format::Parquet => {
            let mut ids = StringBuilder::with_capacity(n, n * 32);
            let mut score = Float32Builder::with_capacity(n);
            let mut decision = StringDictionaryBuilder::<Int32Type>::new();
            let mut version = StringDictionaryBuilder::<Int32Type>::new();
            let item = StructBuilder::from_fields(reason_fields(), 0);
            let mut reasons = ListBuilder::new(item).with_field(reason_item());
            for (row, tx) in txs.iter().enumerate() {
                ids.append_value(tx.end_to_end_id.as_str());
                score.append_value(scores.scores[row]);
                decision.append_value(scores.decisions[row].as_str());
                version.append_value(model_version);
                for r in served.reason(scores, row).unwrap_or_default() {
                    let s = reasons.values();
                    if let Some(code) = s.field_builder::<StringBuilder>(0) {
                        code.append_value(r.code);
                    }
                    if let Some(c) = s.field_builder::<Float32Builder>(1) {
                        c.append_value(r.contribution);
                    }
                    s.append(true);
                }
                reasons.append(true);
            }
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(ids.finish()),
                Arc::new(score.finish()),
                Arc::new(decision.finish()),
                Arc::new(reasons.finish()),
                Arc::new(version.finish()),
            ];
            columns.extend(keep.iter().cloned());
            Ok(Encoded::Arrow(RecordBatch::try_new(
                schema.clone(),
                columns,
            )?))
        }
        Format::Jsonl => {
            let names: Vec<&str> = schema.fields()[5..]
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            let formatters = formatters(keep)?;
            let mut out = Vec::with_capacity(n * 160);
            for (row, tx) in txs.iter().enumerate() {
                let line = Line {
                    end_to_end_id: tx.end_to_end_id.as_str(),
                    score: scores.scores[row],
                    decision: scores.decisions[row].as_str(),
                    reasons: served.reason(scores, row).unwrap_or_default(),
                    model_version,
                };
                serde_json::to_writer(&mut out, &line)?;
                out.pop(); // the closing brace: the kept columns follow
                for ((name, f), array) in names.iter().zip(&formatters).zip(keep) {
                    out.push(b',');
                    serde_json::to_writer(&mut out, name)?;
                    out.push(b':');
                    if array.is_null(row) {
                        out.extend_from_slice(b"null");
                    } else if is_json_scalar(array.data_type()) {
                        write!(out, "{}", f.value(row))?;
                    } else {
                        serde_json::to_writer(&mut out, &f.value(row).to_string())?;
                    }
                }
                out.extend_from_slice(b"}\n");
            }
            Ok(Encoded::Text(out))
        }
        Format::Csv => {
            let formatters = formatters(keep)?;
            let mut w = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(Vec::with_capacity(n * 96));
            let mut record: Vec<String> = Vec::with_capacity(5 + keep.len());
            for (row, tx) in txs.iter().enumerate() {
                record.clear();
                record.push(tx.end_to_end_id.as_str().to_string());
                record.push(scores.scores[row].to_string());
                record.push(scores.decisions[row].as_str().to_string());
                let reasons = served.reason(scores, row).unwrap_or_default();
                record.push(reasons.iter().map(|r| r.code).collect::<Vec<_>>().join(";"));
                record.push(model_version.to_string());
                for (f, array) in formatters.iter().zip(keep) {
                    record.push(if array.is_null(row) {
                        String::new()
                    } else {
                        f.value(row).to_string()
                    });
                }
                w.write_record(&record)?;
            }
            Ok(Encoded::Text(
                w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?,
            ))
        }
    }
}

fn is_json_scalar(t: &DataType) -> bool {
    t.is_numeric() || matches!(t, DataType::Boolean)
}

fn formatters(keep: &[ArrayRef]) -> anyhow::Result<Vec<ArrayFormatter<'_>>> {
    let options = FormatOptions::default();
    keep.iter()
        .map(|a| ArrayFormatter::try_new(a.as_ref(), &options).map_err(anyhow::Error::from))
        .collect()
}

/// Where scores go.
pub enum Sink {
    /// A Parquet file.
    Parquet(Box<ArrowWriter<BufWriter<File>>>),
    /// A text file (JSONL, or CSV after its header).
    Text(BufWriter<File>),
}

impl Sink {
    /// Creates the output file at `path`.
    pub fn create(path: &Path, format: Format, schema: &SchemaRef) -> anyhow::Result<Sink> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let out = BufWriter::with_capacity(1 << 20, file);
        Ok(match format {
            Format::Parquet => {
                // Ids and scores are all distinct: a dictionary for them only costs time.
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_column_dictionary_enabled(ColumnPath::from("end_to_end_id"), false)
                    .set_column_dictionary_enabled(ColumnPath::from("score"), false)
                    .build();
                Sink::Parquet(Box::new(ArrowWriter::try_new(
                    out,
                    schema.clone(),
                    Some(props),
                )?))
            }
            Format::Jsonl => Sink::Text(out),
            Format::Csv => {
                let mut out = out;
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
                w.write_record(&names)?;
                out.write_all(&w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?)?;
                Sink::Text(out)
            }
        })
    }

    /// Appends a chunk.
    pub fn write(&mut self, encoded: Encoded) -> anyhow::Result<()> {
        match (self, encoded) {
            (Sink::Parquet(w), Encoded::Arrow(batch)) => w.write(&batch)?,
            (Sink::Text(w), Encoded::Text(text)) => w.write_all(&text)?,
            _ => anyhow::bail!("an encoded chunk does not match the output format"),
        }
        Ok(())
    }

    /// Flushes and closes the file.
    pub fn finish(self) -> anyhow::Result<()> {
        match self {
            Sink::Parquet(w) => {
                w.close()?;
            }
            Sink::Text(mut w) => w.flush()?,
        }
        Ok(())
    }
}

/// A row that was not scored, as the rejects file records it.
#[derive(Debug, Clone, Serialize)]
pub struct Reject {
    /// The input file.
    pub file: String,
    /// Its row number in the file, from 0 (JSONL: the line number minus one).
    pub row: u64,
    /// The row's end-to-end id, when it had a readable one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_to_end_id: Option<String>,
    /// Dotted path of the offending field; empty when the whole row is wrong.
    pub field: String,
    /// Why.
    pub reason: String,
}

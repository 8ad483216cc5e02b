//! The job's input: a file or a folder of files (Parquet, JSONL or CSV), checked whole before any
//! row is scored, then read in chunks of rows on one thread.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::transaction::ValidationError;
use crate::transaction::arrow::{Plan, has_column};

/// A file format the job reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Apache Parquet.
    Parquet,
    /// One JSON transaction per line (bare, or a `pixguard synth` row).
    Jsonl,
    /// A header of dotted column names, then one transaction per row.
    Csv,
}

impl Format {
    /// The format a file name says, by its extension.
    pub fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "parquet" | "pq" => Some(Format::Parquet),
            "jsonl" | "ndjson" | "json" => Some(Format::Jsonl),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// One input file, checked.
#[derive(Debug)]
pub struct InputFile {
    /// Where it is.
    pub path: PathBuf,
    /// Rows, when the format says before reading (Parquet).
    pub rows: Option<u64>,
    /// Bytes on disk.
    pub bytes: u64,
    /// Where the transaction's leaves are (Parquet and CSV).
    pub plan: Option<Arc<Plan>>,
    /// Its columns (Parquet and CSV), as read when it was checked.
    pub schema: Option<SchemaRef>,
    /// CSV: the header's column names.
    header: Vec<String>,
    /// CSV: the field separator, as the header line shows it.
    delimiter: u8,
}

/// Every input file, checked before the job starts.
#[derive(Debug)]
pub struct Inputs {
    /// The files, in the order they are read.
    pub files: Vec<InputFile>,
    /// Their format.
    pub format: Format,
}

impl Inputs {
    /// Rows in all files, when every file says.
    pub fn rows(&self) -> Option<u64> {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// Bytes in all files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// Finds the input files under `path` and checks each one's columns (every required leaf, and
/// each `keep` column) so a bad file is refused, by name, before any work starts.
pub fn discover(path: &Path, format: Option<Format>, keep: &[String]) -> anyhow::Result<Inputs> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let mut paths = Vec::new();
    let format = if meta.is_dir() {
        for entry in
            std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))?
        {
            let p = entry?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // Spark's and Hadoop's markers and checksums sit beside the data.
            if name.starts_with(['.', '_']) || !p.is_file() {
                continue;
            }
            match (format, Format::of(&p)) {
                (Some(f), Some(g)) if f != g => continue,
                (_, Some(_)) => paths.push(p),
                (_, None) => continue,
            }
        }
        paths.sort();
        let first = paths.first().with_context(|| {
            format!("{} holds no .parquet, .jsonl or .csv file", path.display())
        })?;
        let f = format
            .or_else(|| Format::of(first))
            .unwrap_or(Format::Parquet);
        paths.retain(|p| Format::of(p) == Some(f));
        f
    } else {
        paths.push(path.to_path_buf());
        format.or_else(|| Format::of(path)).with_context(|| {
            format!(
                "{}: cannot tell the format from the name; pass --input-format",
                path.display()
            )
        })?
    };
    if format == Format::Jsonl && !keep.is_empty() {
        bail!("--keep copies columns of Parquet and CSV inputs; JSONL lines have none");
    }
    let mut files = Vec::new();
    for p in paths {
        let bytes = std::fs::metadata(&p)?.len();
        let mut delimiter = b',';
        let (schema, rows, header) = match format {
            Format::Parquet => {
                let file = File::open(&p).with_context(|| format!("opening {}", p.display()))?;
                let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                    .with_context(|| format!("{} is not a readable Parquet file", p.display()))?;
                let rows = builder.metadata().file_metadata().num_rows();
                (
                    Some(builder.schema().clone()),
                    Some(rows.max(0) as u64),
                    Vec::new(),
                )
            }
            Format::Csv => {
                delimiter = sniff_delimiter(&p)?;
                let header = csv_header(&p, delimiter)?;
                (Some(Arc::new(text_schema(&header))), None, header)
            }
            Format::Jsonl => (None, None, Vec::new()),
        };
        let plan = match &schema {
            Some(schema) => {
                let plan = Plan::new(schema).with_context(|| format!("{}", p.display()))?;
                for k in keep {
                    if !has_column(schema, k) {
                        bail!("{}: --keep {k}: no such column", p.display());
                    }
                }
                Some(Arc::new(plan))
            }
            None => None,
        };
        files.push(InputFile {
            path: p,
            rows,
            bytes,
            plan,
            schema,
            header,
            delimiter,
        });
    }
    Ok(Inputs { files, format })
}

/// Separators a CSV file may use: `;` is what Excel writes where the decimal separator is a
/// comma (pt-BR), tab and `|` what database exports often use.
const DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];

/// The separator of a CSV file: of [`DELIMITERS`], the one its header line holds most often
/// outside quotes (column names are dotted words, so the header holds nothing else of them);
/// `,` when it holds none (a single column).
fn sniff_delimiter(path: &Path) -> anyhow::Result<u8> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut first = Vec::new();
    BufReader::new(file)
        .take(1 << 16)
        .read_until(b'\n', &mut first)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(delimiter_of(&first))
}

/// [`sniff_delimiter`] of a header line.
fn delimiter_of(line: &[u8]) -> u8 {
    let mut counts = [0usize; DELIMITERS.len()];
    let mut quoted = false;
    for b in line {
        if *b == b'"' {
            quoted = !quoted;
        } else if !quoted && let Some(i) = DELIMITERS.iter().position(|d| d == b) {
            counts[i] += 1;
        }
    }
    // The first of equal counts: `,` wins a tie.
    let (best, n) = counts.iter().enumerate().fold(
        (0, 0),
        |(bi, bn), (i, &n)| if n > bn { (i, n) } else { (bi, bn) },
    );
    if n == 0 { b',' } else { DELIMITERS[best] }
}

fn csv_header(path: &Path, delimiter: u8) -> anyhow::Result<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let header = reader
        .headers()
        .with_context(|| format!("{}: reading the CSV header", path.display()))?;
    Ok(header.iter().map(str::to_string).collect())
}

/// A CSV file's columns: all text, as the file has them (the plan parses each leaf's cells).
fn text_schema(header: &[String]) -> Schema {
    Schema::new(
        header
            .iter()
            .map(|h| Field::new(h, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    )
}

/// What a chunk holds.
pub enum Data {
    /// Columns, read by the file's plan.
    Arrow {
        /// The rows.
        batch: RecordBatch,
        /// Where the leaves are.
        plan: Arc<Plan>,
        /// Rows that were broken before they were columns (a CSV record with the wrong number
        /// of fields): their row in the batch (all null there) and why.
        broken: Vec<(u32, ValidationError)>,
    },
    /// Complete JSON lines, parsed on a worker.
    Lines(Vec<u8>),
}

/// A run of consecutive rows of one file.
pub struct Chunk {
    /// Position in the job's order of chunks (0, 1, …): the output keeps it.
    pub seq: u64,
    /// Index of the file in [`Inputs::files`].
    pub file: usize,
    /// The file's row number (0-based) of the chunk's first row.
    pub first_row: u64,
    /// The rows.
    pub data: Data,
}

/// Reads every file in order, handing chunks of about `rows` rows to `send` until it refuses
/// (the job stopped).
pub fn read(
    inputs: &Inputs,
    rows: usize,
    mut send: impl FnMut(Chunk) -> bool,
) -> anyhow::Result<()> {
    let mut seq = 0u64;
    for (index, file) in inputs.files.iter().enumerate() {
        let mut first_row = 0u64;
        let mut emit = |data: Data, n: usize| {
            let chunk = Chunk {
                seq,
                file: index,
                first_row,
                data,
            };
            seq += 1;
            first_row += n as u64;
            send(chunk)
        };
        let path = &file.path;
        match inputs.format {
            Format::Parquet => {
                let plan = file.plan.clone().context("Parquet input without a plan")?;
                let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
                let reader = ParquetRecordBatchReaderBuilder::try_new(f)?
                    .with_batch_size(rows)
                    .build()?;
                for batch in reader {
                    let batch = batch.with_context(|| format!("reading {}", path.display()))?;
                    let n = batch.num_rows();
                    let data = Data::Arrow {
                        batch,
                        plan: plan.clone(),
                        broken: Vec::new(),
                    };
                    if !emit(data, n) {
                        return Ok(());
                    }
                }
            }
            Format::Csv => {
                let plan = file.plan.clone().context("CSV input without a plan")?;
                let mut reader = csv::ReaderBuilder::new()
                    .delimiter(file.delimiter)
                    .flexible(true)
                    .from_path(path)
                    .with_context(|| format!("opening {}", path.display()))?;
                let schema = Arc::new(text_schema(&file.header));
                let width = file.header.len();
                let mut record = csv::ByteRecord::new();
                loop {
                    let mut columns: Vec<StringBuilder> =
                        (0..width).map(|_| StringBuilder::new()).collect();
                    let mut broken = Vec::new();
                    let mut n = 0usize;
                    while n < rows {
                        let more = reader
                            .read_byte_record(&mut record)
                            .with_context(|| format!("reading {}", path.display()))?;
                        if !more {
                            break;
                        }
                        let fields: Option<Vec<&str>> = (record.len() == width)
                            .then(|| record.iter().map(|c| std::str::from_utf8(c).ok()).collect())
                            .flatten();
                        match fields {
                            Some(cells) => {
                                for (b, cell) in columns.iter_mut().zip(cells) {
                                    // An empty cell is an absent value, as `pixguard synth` writes them.
                                    b.append_option((!cell.is_empty()).then_some(cell));
                                }
                            }
                            None => {
                                let reason = if record.len() != width {
                                    format!("has {} fields, the header has {width}", record.len())
                                } else {
                                    "is not UTF-8".to_string()
                                };
                                broken.push((n as u32, ValidationError::new("", reason)));
                                columns.iter_mut().for_each(|b| b.append_null());
                            }
                        }
                        n += 1;
                    }
                    if n == 0 {
                        break;
                    }
                    let arrays: Vec<ArrayRef> = columns
                        .iter_mut()
                        .map(|b| Arc::new(b.finish()) as ArrayRef)
                        .collect();
                    let batch = RecordBatch::try_new(schema.clone(), arrays)?;
                    let data = Data::Arrow {
                        batch,
                        plan: plan.clone(),
                        broken,
                    };
                    if !emit(data, n) {
                        return Ok(());
                    }
                }
            }
            Format::Jsonl => {
                let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
                let mut reader = BufReader::with_capacity(1 << 20, f);
                crate::jsonl::skip_bom(&mut reader)
                    .with_context(|| format!("reading {}", path.display()))?;
                loop {
                    let mut text = Vec::with_capacity(rows * 1024);
                    let mut n = 0usize;
                    while n < rows {
                        let read = reader
                            .read_until(b'\n', &mut text)
                            .with_context(|| format!("reading {}", path.display()))?;
                        if read == 0 {
                            break;
                        }
                        if text.last() != Some(&b'\n') {
                            text.push(b'\n');
                        }
                        n += 1;
                    }
                    if n == 0 {
                        break;
                    }
                    if !emit(Data::Lines(text), n) {
                        return Ok(());
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::delimiter_of;

    #[test]
    fn the_header_line_says_the_separator() {
        assert_eq!(
            delimiter_of(b"end_to_end_id,amount_cents,payer.ispb\n"),
            b','
        );
        assert_eq!(
            delimiter_of(b"end_to_end_id;amount_cents;payer.ispb\r\n"),
            b';'
        );
        assert_eq!(delimiter_of(b"end_to_end_id\tamount_cents\n"), b'\t');
        assert_eq!(delimiter_of(b"end_to_end_id|amount_cents"), b'|');
        // Inside quotes a character is part of a name, not a separator.
        assert_eq!(
            delimiter_of(b"\"a;b;c\",end_to_end_id,amount_cents\n"),
            b','
        );
        // One column, or nothing: the default.
        assert_eq!(delimiter_of(b"end_to_end_id\n"), b',');
        assert_eq!(delimiter_of(b""), b',');
    }
}

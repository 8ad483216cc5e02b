//! Typed cells: the Spark job reads a DataFrame as `pixguard batch` reads the same Parquet file.
//! Text in a typed leaf (`"1500"` for an amount, `"false"` for a flag) is read, a cell that cannot
//! be one (`"abc"`, `"False"`, an infinite z-score) is that row's error with batch's field and
//! reason, and a column of the wrong type (a double amount) stops both before any row.

use std::fs::File;
use std::sync::Arc;

use arrow_array::{Float64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;

use super::*;

/// A cell planted into the typed file: text into a column made text, or a float.
#[derive(Clone, Copy)]
enum Plant {
    Text(&'static str),
    Float(f64),
}

/// `batch` with column `name` replaced by `array` (whose type may differ).
fn retype(batch: &RecordBatch, name: &str, array: ArrayRef) -> RecordBatch {
    let schema = batch.schema();
    let (i, _) = schema.column_with_name(name).expect("column");
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[i] = Field::new(name, array.data_type().clone(), true);
    let mut columns = batch.columns().to_vec();
    columns[i] = array;
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("same length")
}

/// Column `name` as text: each cell's own text (`true`/`false` for booleans, RFC 3339 for
/// timestamps), nulls kept.
fn as_text(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let a = batch.column_by_name(name).expect("column");
    if let DataType::Timestamp(_, _) = a.data_type() {
        let micros = arrow_cast::cast(a, &DataType::Int64).expect("timestamp as micros");
        return micros
            .as_primitive::<arrow_array::types::Int64Type>()
            .iter()
            .map(|us| {
                us.map(|us| {
                    let t = chrono::DateTime::from_timestamp_micros(us).expect("in range");
                    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                })
            })
            .collect();
    }
    let text = arrow_cast::cast(a, &DataType::Utf8).expect("castable to text");
    let text = text.as_string::<i32>();
    (0..text.len())
        .map(|i| text.is_valid(i).then(|| text.value(i).to_string()))
        .collect()
}

fn write(path: &Path, batch: &RecordBatch) {
    let mut w = ArrowWriter::try_new(File::create(path).expect("create"), batch.schema(), None)
        .expect("writer");
    w.write(batch).expect("write");
    w.close().expect("close");
}

fn read(path: &Path) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).expect("open"))
        .expect("parquet")
        .build()
        .expect("reader");
    let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
    arrow_select::concat::concat_batches(&batches[0].schema(), &batches).expect("concat")
}

/// Runs `jobs/batch_score.py` (against no server), expecting it to fail; answers its stderr.
fn failing_job(py: &Path, input: &Path, output: &Path) -> String {
    let out = python_output(
        py,
        &batch_job_args(input, output, "http://127.0.0.1:9"),
        &[],
    );
    assert!(!out.status.success(), "the job took a file batch refuses");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn the_spark_job_refuses_the_cells_pixguard_batch_rejects() {
    let Some(py) = spark_python("the Spark typed-cells test") else {
        return;
    };
    let dir = scratch("spark", "cells");
    let clean = dir.join("clean.parquet");
    pixguard_ok(&[
        "synth",
        "--rows",
        "2000",
        "--seed",
        "31",
        "--format",
        "parquet",
        "--layout",
        "flat",
        "-o",
        s(&clean),
    ]);
    let mut batch = read(&clean);

    // Four typed leaves become text columns holding each cell's text; then faults and odd but
    // valid spellings are planted, one per row. Which of them are rejects is batch's to say.
    let texts = [
        "amount_cents",
        "payer.device.registered",
        "history.payer_tx_1h",
        "payer.account_opened_at",
    ];
    let mut columns: HashMap<&str, Vec<Option<String>>> =
        texts.iter().map(|&n| (n, as_text(&batch, n))).collect();
    let zscore = "history.amount_zscore_90d";
    let mut z: Vec<Option<f64>> = batch
        .column_by_name(zscore)
        .expect("z-score")
        .as_primitive::<Float64Type>()
        .iter()
        .collect();
    let plants: [(&str, Plant); 18] = [
        ("amount_cents", Plant::Text("abc")),
        ("amount_cents", Plant::Text("1.5")),
        ("amount_cents", Plant::Text("2657.0")),
        ("amount_cents", Plant::Text("99999999999999999999")),
        ("amount_cents", Plant::Text("-5")),
        ("amount_cents", Plant::Text(" 1234 ")),
        ("payer.device.registered", Plant::Text("False")),
        ("payer.device.registered", Plant::Text("1")),
        ("payer.device.registered", Plant::Text("")),
        ("history.payer_tx_1h", Plant::Text("+3")),
        ("history.payer_tx_1h", Plant::Text("x")),
        ("history.payer_tx_1h", Plant::Text("-2")),
        ("history.payer_tx_1h", Plant::Text("4294967296")),
        (
            "payer.account_opened_at",
            Plant::Text("2026-13-01T00:00:00Z"),
        ),
        (
            "payer.account_opened_at",
            Plant::Text("2020-01-02T03:04:05-03:00"),
        ),
        (zscore, Plant::Float(f64::NAN)),
        (zscore, Plant::Float(f64::INFINITY)),
        (zscore, Plant::Float(f64::NEG_INFINITY)),
    ];
    for (k, (column, plant)) in plants.iter().enumerate() {
        let row = 7 + 97 * k;
        match plant {
            Plant::Text(t) => {
                columns.get_mut(column).expect("text column")[row] = Some(t.to_string())
            }
            Plant::Float(f) => z[row] = Some(*f),
        }
    }
    for name in texts {
        let array: ArrayRef = Arc::new(StringArray::from(columns[name].clone()));
        batch = retype(&batch, name, array);
    }
    batch = retype(&batch, zscore, Arc::new(Float64Array::from(z)));
    let typed = dir.join("typed.parquet");
    write(&typed, &batch);

    let reference = dir.join("pixguard.parquet");
    let rejects = dir.join("pixguard.rejects.jsonl");
    pixguard_ok(&[
        "batch",
        "-i",
        s(&typed),
        "-o",
        s(&reference),
        "--rejects",
        s(&rejects),
        "--no-progress",
    ]);
    let mut refused = HashMap::new();
    for line in std::fs::read_to_string(&rejects).expect("rejects").lines() {
        let v: Value = serde_json::from_str(line).expect("reject line");
        let id = v["end_to_end_id"].as_str().expect("id").to_string();
        refused.insert(
            id,
            format!(
                "{}: {}",
                v["field"].as_str().unwrap_or(""),
                v["reason"].as_str().unwrap_or("")
            ),
        );
    }
    // Every plant but the four valid spellings (" 1234 ", "False", "+3", an RFC 3339 time with an
    // offset) is a reject, as batch reads them.
    assert_eq!(refused.len(), 14, "{refused:?}");

    let server = Server::start(&[]);
    let output = dir.join("spark-out");
    let summary = batch_job(&py, &typed, &output, &server, &[]);
    assert_eq!(summary["rows"], 2000, "{summary}");
    let want = scores(&reference);
    let got = scores(&output);
    assert_eq!(got.len(), 2000);
    for (id, (score, decision, error)) in &got {
        match refused.get(id) {
            Some(reason) => assert_eq!(error.as_ref(), Some(reason), "{id}"),
            None => {
                let (s2, d2, _) = want.get(id).unwrap_or_else(|| panic!("batch lacks {id}"));
                assert_eq!(error, &None, "{id}");
                assert_eq!(decision, d2, "{id}");
                assert!((score - s2).abs() <= 1e-6, "{id}: {score} vs {s2}");
            }
        }
    }

    // A double amount: batch refuses the file naming the column, and so does the job.
    let mut doubled = read(&clean);
    let amounts = arrow_cast::cast(
        doubled.column_by_name("amount_cents").expect("amounts"),
        &DataType::Float64,
    )
    .expect("cast");
    doubled = retype(&doubled, "amount_cents", amounts);
    let double = dir.join("double.parquet");
    write(&double, &doubled);
    let batch_err = pixguard_command()
        .args([
            "batch",
            "-i",
            s(&double),
            "-o",
            s(&dir.join("never.parquet")),
        ])
        .output()
        .expect("pixguard runs");
    assert!(!batch_err.status.success());
    let batch_err = String::from_utf8_lossy(&batch_err.stderr);
    let expected = "expected an integer (or its text)";
    assert!(
        batch_err.contains(&format!("column amount_cents is Float64, {expected}")),
        "{batch_err}"
    );
    let job_err = failing_job(&py, &double, &dir.join("never"));
    assert!(
        job_err.contains(&format!("column amount_cents is double, {expected}")),
        "{job_err}"
    );
}

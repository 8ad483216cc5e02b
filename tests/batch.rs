//! `pixguard batch` end to end: the same rows as Parquet (nested and flat), CSV and JSONL give
//! the scores `pixguard score` gives; corrupted rows land in the rejects file with their field
//! and every other row is scored; a file without a required column is refused before any work.

#[path = "common/child.rs"]
mod child;
#[path = "common/cli.rs"]
mod cli;
#[path = "common/registry.rs"]
mod registry;

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int8Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_schema::DataType;
use cli::{pixguard_command, pixguard_ok, scratch, succeeded};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

fn pixguard(args: &[&str]) -> Output {
    pixguard_command()
        .args(args)
        .output()
        .expect("pixguard runs")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

const ROWS: &str = "4000";
const SEED: &str = "31";

fn synth(path: &Path, format: &str, layout: &str) {
    pixguard_ok(&[
        "synth",
        "--rows",
        ROWS,
        "--seed",
        SEED,
        "--fraud-rate",
        "0.2",
        "--format",
        format,
        "--layout",
        layout,
        "-o",
        s(path),
    ]);
}

/// One output row: score, decision, reason codes, model version, kept label.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    score: f32,
    decision: String,
    reasons: Vec<String>,
    model_version: String,
    label: Option<String>,
}

fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let file = File::open(path).expect("parquet output");
    ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader")
        .map(|b| b.expect("batch"))
        .collect()
}

fn text_at(a: &ArrayRef, i: usize) -> String {
    match a.data_type() {
        DataType::Dictionary(_, _) => {
            let d = a.as_dictionary::<arrow_array::types::Int32Type>();
            let k = d.keys().value(i) as usize;
            d.values().as_string::<i32>().value(k).to_string()
        }
        _ => a.as_string::<i32>().value(i).to_string(),
    }
}

fn scores_parquet(path: &Path) -> HashMap<String, Row> {
    let mut out = HashMap::new();
    for b in read_parquet(path) {
        let ids = b.column_by_name("end_to_end_id").expect("ids");
        let scores = b
            .column_by_name("score")
            .expect("score")
            .as_primitive::<Float32Type>()
            .clone();
        let decisions = b.column_by_name("decision").expect("decision");
        let versions = b.column_by_name("model_version").expect("version");
        let reasons = b
            .column_by_name("reasons")
            .expect("reasons")
            .as_list::<i32>()
            .clone();
        let label = b.column_by_name("label");
        for i in 0..b.num_rows() {
            let r = reasons.value(i);
            let codes = r.as_struct().column(0).as_string::<i32>();
            let row = Row {
                score: scores.value(i),
                decision: text_at(decisions, i),
                reasons: (0..codes.len())
                    .map(|j| codes.value(j).to_string())
                    .collect(),
                model_version: text_at(versions, i),
                label: label.map(|l| l.as_primitive::<Int8Type>().value(i).to_string()),
            };
            out.insert(text_at(ids, i), row);
        }
    }
    out
}

fn scores_jsonl(path: &Path) -> HashMap<String, Row> {
    std::fs::read_to_string(path)
        .expect("jsonl output")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json line");
            let reasons = v["reasons"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|r| r["code"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default();
            let row = Row {
                score: v["score"].as_f64().expect("score") as f32,
                decision: v["decision"].as_str().expect("decision").to_string(),
                reasons,
                model_version: v["model_version"].as_str().expect("version").to_string(),
                label: v.get("label").map(|l| l.to_string()),
            };
            (v["end_to_end_id"].as_str().expect("id").to_string(), row)
        })
        .collect()
}

fn scores_csv(path: &Path) -> HashMap<String, Row> {
    let mut r = csv::Reader::from_path(path).expect("csv output");
    let header: Vec<String> = r
        .headers()
        .expect("header")
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(
        header[..5],
        [
            "end_to_end_id",
            "score",
            "decision",
            "reasons",
            "model_version"
        ]
    );
    r.records()
        .map(|rec| {
            let rec = rec.expect("record");
            let row = Row {
                score: rec[1].parse().expect("score"),
                decision: rec[2].to_string(),
                reasons: rec[3]
                    .split(';')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                model_version: rec[4].to_string(),
                label: rec.get(5).map(str::to_string),
            };
            (rec[0].to_string(), row)
        })
        .collect()
}

/// `pixguard score`'s answer for every row of a JSONL file: the independent path.
fn reference(jsonl: &Path) -> HashMap<String, (f32, String)> {
    let out = pixguard_ok(&["score", s(jsonl)]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("score line");
            let id = v["end_to_end_id"].as_str().expect("id").to_string();
            (
                id,
                (
                    v["score"].as_f64().expect("score") as f32,
                    v["decision"].as_str().expect("decision").to_string(),
                ),
            )
        })
        .collect()
}

fn summary(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("summary JSON on stdout")
}

fn labels(jsonl: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(jsonl)
        .expect("synth jsonl")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("synth line");
            (
                v["transaction"]["end_to_end_id"]
                    .as_str()
                    .expect("id")
                    .to_string(),
                v["label"].to_string(),
            )
        })
        .collect()
}

#[test]
fn every_format_scores_as_pixguard_score_does() {
    let dir = scratch("batch", "formats");
    let jsonl = dir.join("tx.jsonl");
    synth(&jsonl, "jsonl", "nested");
    let want = reference(&jsonl);
    let labels = labels(&jsonl);
    assert_eq!(want.len(), 4000);
    let cases = [
        ("nested.parquet", "parquet", "nested", "out-nested.parquet"),
        ("flat.parquet", "parquet", "flat", "out-flat.jsonl"),
        ("tx.csv", "csv", "flat", "out-csv.csv"),
        ("tx.jsonl", "", "", "out-jsonl.parquet"),
    ];
    for (input, format, layout, output) in cases {
        let input = dir.join(input);
        if !format.is_empty() {
            synth(&input, format, layout);
        }
        let output = dir.join(output);
        let mut args = vec!["batch", "-i", s(&input), "-o", s(&output)];
        if !format.is_empty() {
            args.extend(["--keep", "label"]);
        }
        let sum = summary(&pixguard_ok(&args));
        assert_eq!(sum["rows"], 4000, "{input:?}: {sum}");
        assert_eq!(sum["scored"], 4000, "{input:?}: {sum}");
        assert_eq!(sum["rejected"], 0, "{input:?}: {sum}");
        let got = match output.extension().and_then(|e| e.to_str()) {
            Some("parquet") => scores_parquet(&output),
            Some("jsonl") => scores_jsonl(&output),
            _ => scores_csv(&output),
        };
        assert_eq!(got.len(), want.len(), "{output:?}");
        let mut worst = 0f32;
        let mut explained = 0;
        for (id, (score, decision)) in &want {
            let row = got
                .get(id)
                .unwrap_or_else(|| panic!("{output:?} lacks {id}"));
            worst = worst.max((row.score - score).abs());
            assert_eq!(&row.decision, decision, "{output:?} {id}");
            assert!(
                row.model_version.starts_with("pix-fraud:"),
                "{}",
                row.model_version
            );
            // Every HOLD and REJECT carries its reasons, as on /v1; ALLOW rows carry none.
            assert_eq!(
                row.reasons.is_empty(),
                decision == "ALLOW",
                "{output:?} {id}: {row:?}"
            );
            explained += usize::from(!row.reasons.is_empty());
            if !format.is_empty() {
                let label = row.label.as_deref().map(|l| l.trim_matches('"'));
                assert_eq!(
                    label,
                    Some(labels[id].as_str()),
                    "{output:?} {id}: kept label"
                );
            }
        }
        assert!(worst <= 1e-6, "{output:?}: largest difference {worst}");
        assert!(
            explained > 100,
            "{output:?}: only {explained} rows explained"
        );
        let rejects = std::fs::read_to_string(output.with_file_name(format!(
            "{}.rejects.jsonl",
            output.file_stem().and_then(|s| s.to_str()).unwrap_or("")
        )))
        .expect("a rejects file, even empty");
        assert!(rejects.is_empty());
    }
}

/// A replacement cell for [`patch`].
#[derive(Clone, Copy)]
enum Cell {
    Null,
    Text(&'static str),
    Int(i64),
    Float(f64),
    Micros(i64),
}

/// `batch` with column `name`'s cell at `row` replaced.
fn patch(batch: &RecordBatch, name: &str, row: usize, cell: Cell) -> RecordBatch {
    let (i, _) = batch.schema().column_with_name(name).expect("column");
    let a = batch.column(i);
    let n = a.len();
    let new: ArrayRef = match (a.data_type(), cell) {
        (DataType::Utf8, _) => {
            let a = a.as_string::<i32>();
            Arc::new(StringArray::from_iter((0..n).map(|j| {
                match (j == row, cell) {
                    (true, Cell::Text(t)) => Some(t.to_string()),
                    (true, _) => None,
                    _ => a.is_valid(j).then(|| a.value(j).to_string()),
                }
            })))
        }
        (DataType::Int64, _) => {
            let a = a.as_primitive::<Int64Type>();
            Arc::new(Int64Array::from_iter((0..n).map(|j| {
                match (j == row, cell) {
                    (true, Cell::Int(v)) => Some(v),
                    (true, _) => None,
                    _ => a.is_valid(j).then(|| a.value(j)),
                }
            })))
        }
        (DataType::Int32, _) => {
            let a = a.as_primitive::<arrow_array::types::Int32Type>();
            Arc::new(Int32Array::from_iter((0..n).map(|j| {
                match (j == row, cell) {
                    (true, Cell::Int(v)) => Some(v as i32),
                    (true, _) => None,
                    _ => a.is_valid(j).then(|| a.value(j)),
                }
            })))
        }
        (DataType::Float64, _) => {
            let a = a.as_primitive::<arrow_array::types::Float64Type>();
            Arc::new(Float64Array::from_iter((0..n).map(|j| {
                match (j == row, cell) {
                    (true, Cell::Float(v)) => Some(v),
                    (true, _) => None,
                    _ => a.is_valid(j).then(|| a.value(j)),
                }
            })))
        }
        (DataType::Boolean, _) => {
            let a = a.as_boolean();
            Arc::new(BooleanArray::from_iter((0..n).map(|j| match j == row {
                true => None,
                _ => a.is_valid(j).then(|| a.value(j)),
            })))
        }
        (DataType::Timestamp(_, _), _) => {
            let a = a.as_primitive::<arrow_array::types::TimestampMicrosecondType>();
            Arc::new(
                TimestampMicrosecondArray::from_iter((0..n).map(|j| match (j == row, cell) {
                    (true, Cell::Micros(v)) => Some(v),
                    (true, _) => None,
                    _ => a.is_valid(j).then(|| a.value(j)),
                }))
                .with_timezone("UTC"),
            )
        }
        (t, _) => panic!("no patch for {t}"),
    };
    let mut columns = batch.columns().to_vec();
    columns[i] = new;
    RecordBatch::try_new(batch.schema(), columns).expect("same schema")
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    let file = File::create(path).expect("create");
    let mut w = ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    w.write(batch).expect("write");
    w.close().expect("close");
}

fn one_batch(path: &Path) -> RecordBatch {
    let batches = read_parquet(path);
    arrow_select::concat::concat_batches(&batches[0].schema(), &batches).expect("concat")
}

#[test]
fn corrupted_rows_are_rejected_with_their_field_and_the_rest_scored() {
    let dir = scratch("batch", "corrupt");
    let clean = dir.join("clean.parquet");
    synth(&clean, "parquet", "flat");
    let clean_out = dir.join("clean-out.parquet");
    pixguard_ok(&["batch", "-i", s(&clean), "-o", s(&clean_out)]);
    let clean_scores = scores_parquet(&clean_out);

    let mut batch = one_batch(&clean);
    let ids: Vec<String> = {
        let a = batch
            .column_by_name("end_to_end_id")
            .expect("ids")
            .as_string::<i32>();
        (0..a.len()).map(|i| a.value(i).to_string()).collect()
    };
    let mule = batch
        .column_by_name("payee.dict_stats.mule_marker")
        .expect("mule")
        .clone();
    // (column, replacement, the field the reject must name)
    let faults: [(&str, Cell, &str); 9] = [
        ("payer.ispb", Cell::Text("1234"), "payer.ispb"),
        ("amount_cents", Cell::Int(-5), "amount_cents"),
        ("initiation_form", Cell::Text("WIRE"), "initiation_form"),
        ("end_to_end_id", Cell::Null, "end_to_end_id"),
        ("end_to_end_id", Cell::Text("E1234"), "end_to_end_id"),
        (
            "payer.account_opened_at",
            Cell::Micros(4_102_444_800_000_000),
            "payer.account_opened_at",
        ),
        ("history.payer_tx_1h", Cell::Int(-1), "history.payer_tx_1h"),
        (
            "history.amount_zscore_90d",
            Cell::Float(f64::NAN),
            "history.amount_zscore_90d",
        ),
        (
            "payee.dict_stats.mule_marker",
            Cell::Null,
            "payee.dict_stats.mule_marker",
        ),
    ];
    let mut expected: HashMap<u64, &str> = HashMap::new();
    let mut row = 3usize;
    for k in 0..180 {
        let (column, cell, field) = faults[k % faults.len()];
        if column == "payee.dict_stats.mule_marker" {
            // Only a row with DICT statistics can have one of them missing.
            while mule.is_null(row) {
                row += 1;
            }
        }
        batch = patch(&batch, column, row, cell);
        expected.insert(row as u64, field);
        row += 17;
    }
    let corrupt = dir.join("corrupt.parquet");
    write_parquet(&corrupt, &batch);
    let out = dir.join("out.parquet");
    let rejects = dir.join("rejects.jsonl");
    let sum = summary(&pixguard_ok(&[
        "batch",
        "-i",
        s(&corrupt),
        "-o",
        s(&out),
        "--rejects",
        s(&rejects),
    ]));
    assert_eq!(sum["rows"], 4000, "{sum}");
    assert_eq!(sum["rejected"], 180, "{sum}");
    assert_eq!(sum["scored"], 3820, "{sum}");
    let lines = std::fs::read_to_string(&rejects).expect("rejects");
    let mut seen = 0;
    for l in lines.lines() {
        let v: Value = serde_json::from_str(l).expect("reject line");
        let row = v["row"].as_u64().expect("row");
        let want = expected
            .get(&row)
            .unwrap_or_else(|| panic!("row {row} rejected: {v}"));
        assert_eq!(v["field"], *want, "{v}");
        assert!(!v["reason"].as_str().unwrap_or("").is_empty(), "{v}");
        assert_eq!(v["file"], s(&corrupt));
        seen += 1;
    }
    assert_eq!(seen, 180);
    let got = scores_parquet(&out);
    assert_eq!(got.len(), 3820);
    for (i, id) in ids.iter().enumerate() {
        if expected.contains_key(&(i as u64)) {
            continue;
        }
        assert_eq!(got.get(id), clean_scores.get(id), "row {i} ({id})");
    }
}

#[test]
fn a_file_without_a_required_column_is_refused_before_any_work() {
    let dir = scratch("batch", "missing");
    let clean = dir.join("clean.parquet");
    synth(&clean, "parquet", "flat");
    let batch = one_batch(&clean);
    let keep: Vec<usize> = (0..batch.num_columns())
        .filter(|&i| batch.schema().field(i).name() != "payer.ispb")
        .collect();
    let cut = batch.project(&keep).expect("projection");
    let file = dir.join("no-ispb.parquet");
    write_parquet(&file, &cut);
    let out = dir.join("out.parquet");
    let run = pixguard(&["batch", "-i", s(&file), "-o", s(&out)]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("missing required column(s): payer.ispb"),
        "{err}"
    );
    assert!(!out.exists(), "no output is started for a refused input");

    // The same refusal for a nested file, named by the same dotted path.
    let nested = dir.join("nested.parquet");
    synth(&nested, "parquet", "nested");
    let run = pixguard(&[
        "batch",
        "-i",
        s(&nested),
        "-o",
        s(&out),
        "--keep",
        "no.such",
    ]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("--keep no.such: no such column"));
}

#[test]
fn a_folder_of_part_files_and_broken_csv_records() {
    let dir = scratch("batch", "folder");
    let parts = dir.join("in");
    std::fs::create_dir_all(&parts).expect("dir");
    let whole = dir.join("whole.parquet");
    synth(&whole, "parquet", "nested");
    let batch = one_batch(&whole);
    write_parquet(&parts.join("part-00000.parquet"), &batch.slice(0, 1500));
    write_parquet(&parts.join("part-00001.parquet"), &batch.slice(1500, 2500));
    std::fs::write(parts.join("_SUCCESS"), b"").expect("marker");
    let out = dir.join("out.parquet");
    let sum = summary(&pixguard_ok(&[
        "batch",
        "-i",
        s(&parts),
        "-o",
        s(&out),
        "--chunk-rows",
        "700",
    ]));
    assert_eq!(sum["files"], 2, "{sum}");
    assert_eq!(sum["scored"], 4000, "{sum}");
    let whole_out = dir.join("whole-out.parquet");
    pixguard_ok(&["batch", "-i", s(&whole), "-o", s(&whole_out)]);
    assert_eq!(scores_parquet(&out), scores_parquet(&whole_out));
    // Output order is input order, across chunks and files.
    let ids: Vec<String> = read_parquet(&out)
        .iter()
        .flat_map(|b| {
            let a = b
                .column_by_name("end_to_end_id")
                .expect("ids")
                .as_string::<i32>()
                .clone();
            (0..a.len()).map(move |i| a.value(i).to_string())
        })
        .collect();
    let input: Vec<String> = {
        let a = batch
            .column_by_name("end_to_end_id")
            .expect("ids")
            .as_string::<i32>();
        (0..a.len()).map(|i| a.value(i).to_string()).collect()
    };
    assert_eq!(ids, input);

    let csv = dir.join("tx.csv");
    synth(&csv, "csv", "flat");
    let mut text = std::fs::read_to_string(&csv).expect("csv");
    text.push_str("E1,2026-10-01T00:00:00Z,5\n");
    std::fs::write(&csv, text).expect("csv");
    let out = dir.join("csv-out.csv");
    let sum = summary(&pixguard_ok(&["batch", "-i", s(&csv), "-o", s(&out)]));
    assert_eq!(
        (sum["rows"].as_u64(), sum["rejected"].as_u64()),
        (Some(4001), Some(1)),
        "{sum}"
    );
    let rejects = std::fs::read_to_string(dir.join("csv-out.rejects.jsonl")).expect("rejects");
    let v: Value = serde_json::from_str(rejects.trim()).expect("one reject");
    assert_eq!(v["row"], 4000);
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("has 3 fields, the header has 27"),
        "{v}"
    );
}

#[test]
fn gs_input_and_output_through_a_gcs_emulator() {
    let Some(python) = registry::python("the gs:// batch test (fake-gcs-server)") else {
        return;
    };
    let dir = scratch("batch", "gcs");
    let gcs = registry::GcsServer::start(&python, &dir, &["pix-data"]);
    let whole = dir.join("whole.parquet");
    synth(&whole, "parquet", "nested");
    let batch = one_batch(&whole);
    for (i, (offset, len)) in [(0, 2500), (2500, 1500)].into_iter().enumerate() {
        let part = dir.join(format!("part-{i}.parquet"));
        write_parquet(&part, &batch.slice(offset, len));
        gcs.put(
            "pix-data",
            &format!("in/part-{i}.parquet"),
            std::fs::read(&part).expect("part"),
        );
    }
    gcs.put("pix-data", "in/_SUCCESS", Vec::new());
    let out = succeeded(
        pixguard_command()
            .args([
                "batch",
                "-i",
                "gs://pix-data/in",
                "-o",
                "gs://pix-data/out/scores.parquet",
            ])
            .env("GOOGLE_SERVICE_ACCOUNT", &gcs.key_file),
    );
    let sum = summary(&out);
    assert_eq!(sum["files"], 2, "{sum}");
    assert_eq!(sum["scored"], 4000, "{sum}");
    assert_eq!(sum["output"], "gs://pix-data/out/scores.parquet", "{sum}");
    assert_eq!(
        sum["rejects"], "gs://pix-data/out/scores.rejects.jsonl",
        "{sum}"
    );
    let fetched = dir.join("fetched.parquet");
    std::fs::write(&fetched, gcs.get("pix-data", "out/scores.parquet")).expect("output object");
    assert!(gcs.get("pix-data", "out/scores.rejects.jsonl").is_empty());
    let local = dir.join("local.parquet");
    pixguard_ok(&["batch", "-i", s(&whole), "-o", s(&local)]);
    assert_eq!(scores_parquet(&fetched), scores_parquet(&local));
}

//! `pixguard batch` end to end: the same rows as Parquet (nested and flat), CSV and JSONL give
//! the scores `pixguard score` gives (here); corrupted rows land in the rejects file with their
//! field and every other row is scored, and a file without a required column is refused before any
//! work (`rejects`); folders of part files, broken CSV records and `gs://` paths (`sources`).

#[path = "../common/child.rs"]
mod child;
#[path = "../common/cli.rs"]
mod cli;
#[path = "../common/registry.rs"]
mod registry;

mod rejects;
mod sources;

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

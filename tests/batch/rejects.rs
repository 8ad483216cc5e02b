//! Corrupted rows and missing columns: what is refused, with which field, and what is still scored.

use super::*;

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

/// JSONL: a blank line is no row (the summary still adds up), a bad line is rejected with its line
/// index, and a line holding a JSON array is refused as one.
#[test]
fn jsonl_blank_and_bad_lines_are_accounted_for() {
    let dir = scratch("batch", "jsonl-lines");
    let clean = dir.join("clean.jsonl");
    synth(&clean, "jsonl", "nested");
    let text = std::fs::read_to_string(&clean).expect("jsonl");
    let mut lines: Vec<&str> = text.lines().collect();
    let rows = lines.len();
    let array = format!("[{}]", lines[5]);
    lines[5] = &array;
    lines[9] = "not json";
    lines[12] = "";
    lines[20] = "   ";
    let input = dir.join("lines.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").expect("write");
    let rejects = dir.join("rejects.jsonl");
    let out = dir.join("out.jsonl");
    let sum = summary(&pixguard_ok(&[
        "batch",
        "-i",
        s(&input),
        "-o",
        s(&out),
        "--rejects",
        s(&rejects),
    ]));
    assert_eq!(sum["rows"], rows - 2, "{sum}");
    assert_eq!(sum["rejected"], 2, "{sum}");
    assert_eq!(sum["scored"], rows - 4, "{sum}");
    assert_eq!(scores_jsonl(&out).len(), rows - 4);
    let rejected: Vec<Value> = std::fs::read_to_string(&rejects)
        .expect("rejects")
        .lines()
        .map(|l| serde_json::from_str(l).expect("reject line"))
        .collect();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0]["row"], 5);
    assert!(
        rejected[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("JSON array")),
        "{}",
        rejected[0]
    );
    assert_eq!(rejected[1]["row"], 9);
}

#[test]
fn a_missing_column_or_an_output_name_that_says_no_format_is_refused_before_any_work() {
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

    // An output whose extension names no format was written as Parquet under that name.
    let tsv = dir.join("scores.tsv");
    let run = pixguard(&["batch", "-i", s(&clean), "-o", s(&tsv)]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("cannot tell the output format from `.tsv`")
            && err.contains("--output-format"),
        "{err}"
    );
    assert!(!tsv.exists());
    // With the format named, or no extension at all (Parquet, Spark's default), it is written.
    let run = pixguard(&[
        "batch",
        "-i",
        s(&clean),
        "-o",
        s(&tsv),
        "--output-format",
        "csv",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        std::fs::read_to_string(&tsv)
            .unwrap()
            .starts_with("end_to_end_id,")
    );
    let bare = dir.join("scores");
    pixguard_ok(&["batch", "-i", s(&clean), "-o", s(&bare)]);
    assert_eq!(std::fs::read(&bare).unwrap()[..4], *b"PAR1");
}

#[test]
fn an_output_that_is_an_input_is_refused_and_the_input_kept() {
    let dir = scratch("batch", "in-place");
    let input = dir.join("tx.jsonl");
    synth(&input, "jsonl", "nested");
    let before = std::fs::read(&input).expect("input");
    let as_rejects = dir.join("scores.rejects.jsonl");
    std::fs::write(&as_rejects, &before).expect("copy");
    let both = dir.join("both.jsonl");
    for (args, says) in [
        (vec!["-i", s(&input), "-o", s(&input)], "the output file"),
        (
            // The same file by another name.
            vec!["-i", s(&dir), "--input-format", "jsonl", "-o", s(&input)],
            "the output file",
        ),
        (
            // The default rejects file, beside the output, is the input.
            vec!["-i", s(&as_rejects), "-o", s(&dir.join("scores.jsonl"))],
            "the rejects file",
        ),
        (
            vec!["-i", s(&input), "-o", s(&both), "--rejects", s(&both)],
            "is the output file",
        ),
    ] {
        let run = pixguard(&[&["batch"][..], &args].concat());
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?} ran");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(std::fs::read(&input).expect("input"), before, "{args:?}");
        assert_eq!(
            std::fs::read(&as_rejects).expect("input"),
            before,
            "{args:?}"
        );
        assert!(!both.exists(), "{args:?}: nothing is written");
    }
}

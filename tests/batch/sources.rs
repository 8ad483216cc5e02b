//! Inputs beyond one local file: folders of part files, broken CSV records, `gs://` through a GCS
//! emulator.

use super::*;

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

    // The same file with `;` between fields (Excel's CSV where the decimal separator is a comma,
    // as in pt-BR) scores the same, its broken record rejected the same way.
    let semi = dir.join("semi.csv");
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(false)
        .from_path(&csv)
        .expect("csv");
    let mut writer = csv::WriterBuilder::new()
        .delimiter(b';')
        .flexible(true)
        .from_path(&semi)
        .expect("semi.csv");
    for record in reader.records() {
        writer
            .write_record(&record.expect("record"))
            .expect("write");
    }
    writer.flush().expect("flush");
    let header = std::fs::read_to_string(&semi).expect("semi.csv");
    assert!(
        header.starts_with("end_to_end_id;accepted_at;"),
        "{}",
        &header[..40]
    );
    let semi_out = dir.join("semi-out.csv");
    let sum = summary(&pixguard_ok(&["batch", "-i", s(&semi), "-o", s(&semi_out)]));
    assert_eq!(
        (sum["rows"].as_u64(), sum["rejected"].as_u64()),
        (Some(4001), Some(1)),
        "{sum}"
    );
    assert_eq!(scores_csv(&semi_out), scores_csv(&out));
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
    // `pixguard batch ARGS` with the emulator's credentials.
    let batch = |args: &[&str]| {
        let mut command = pixguard_command();
        command
            .arg("batch")
            .args(args)
            .env("GOOGLE_SERVICE_ACCOUNT", &gcs.key_file);
        command
    };
    let out = succeeded(&mut batch(&[
        "-i",
        "gs://pix-data/in",
        "-o",
        "gs://pix-data/out/scores.parquet",
    ]));
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

    // An output and a rejects object of the same name in two prefixes are two files (they were
    // staged as one local file, each truncating the other).
    let out = succeeded(&mut batch(&[
        "-i",
        "gs://pix-data/in",
        "-o",
        "gs://pix-data/out/run.jsonl",
        "--rejects",
        "gs://pix-data/rejects/run.jsonl",
    ]));
    assert_eq!(summary(&out)["scored"], 4000);
    let fetched = dir.join("run.jsonl");
    std::fs::write(&fetched, gcs.get("pix-data", "out/run.jsonl")).expect("output object");
    assert_eq!(scores_jsonl(&fetched), scores_parquet(&local));
    assert!(gcs.get("pix-data", "rejects/run.jsonl").is_empty());

    // An output that is the input object is refused before anything is read or written.
    let part = gcs.get("pix-data", "in/part-0.parquet");
    let run = batch(&[
        "-i",
        "gs://pix-data/in/part-0.parquet",
        "-o",
        "gs://pix-data/in/part-0.parquet",
    ])
    .output()
    .expect("pixguard runs");
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("is the input"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(gcs.get("pix-data", "in/part-0.parquet"), part);
}

/// A CSV as pandas writes it back after reading one (`read_csv` → `to_csv`, the ISPBs read as
/// text): booleans as `True`/`False`, and an integer column with missing values as floats
/// (`2657.0`). pandas itself makes the file.
#[test]
fn a_csv_written_by_pandas_scores_as_the_original() {
    let Some(python) = registry::python("the pandas CSV test") else {
        return;
    };
    let dir = scratch("batch", "pandas");
    let original = dir.join("tx.csv");
    synth(&original, "csv", "flat");
    let original_out = dir.join("original-out.csv");
    pixguard_ok(&["batch", "-i", s(&original), "-o", s(&original_out)]);
    let want = scores_csv(&original_out);
    let (as_is, cast) = (dir.join("as-is.csv"), dir.join("cast.csv"));
    let script = r#"
import sys
import pandas as pd
df = pd.read_csv(sys.argv[1], dtype={"payer.ispb": str, "payee.ispb": str})
df.to_csv(sys.argv[2], index=False)
floats = [c for c in df.columns if df[c].dtype == "float64" and (df[c].dropna() % 1 == 0).all()]
df.astype({c: "Int64" for c in floats}).to_csv(sys.argv[3], index=False)
"#;
    let made = std::process::Command::new(&python)
        .args(["-c", script, s(&original), s(&as_is), s(&cast)])
        .status()
        .expect("python runs");
    assert!(made.success());
    let text = std::fs::read_to_string(&as_is).expect("as-is.csv");
    assert!(
        text.contains(",True,") && text.contains(".0,"),
        "pandas wrote what this test is about"
    );

    // Written as it is: the booleans read; the float-written counts are rejected with the hint.
    let out = dir.join("as-is-out.csv");
    let sum = summary(&pixguard_ok(&["batch", "-i", s(&as_is), "-o", s(&out)]));
    let rejected = sum["rejected"].as_u64().unwrap_or(0);
    assert!(
        rejected > 0 && sum["scored"].as_u64() == Some(4000 - rejected),
        "{sum}"
    );
    let rejects = std::fs::read_to_string(dir.join("as-is-out.rejects.jsonl")).expect("rejects");
    for line in rejects.lines() {
        let v: Value = serde_json::from_str(line).expect("reject");
        let reason = v["reason"].as_str().unwrap_or("");
        assert!(reason.contains("cast the column to Int64"), "{v}");
    }
    for (id, row) in scores_csv(&out) {
        assert_eq!(Some(&row), want.get(&id), "{id}");
    }
    // Cast as the hint says: every row scores as the original.
    let out = dir.join("cast-out.csv");
    let sum = summary(&pixguard_ok(&["batch", "-i", s(&cast), "-o", s(&out)]));
    assert_eq!(
        (sum["scored"].as_u64(), sum["rejected"].as_u64()),
        (Some(4000), Some(0)),
        "{sum}"
    );
    assert_eq!(scores_csv(&out), want);
}

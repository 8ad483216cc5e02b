//! Reading `pixguard bench` reports back: a local file, a folder of part folders, a gs://
//! object or prefix. `pixguard bench-merge` reads the parts of a split run with them, `pixguard
//! bench-compare` single reports.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::report::Report;
use crate::registry::Store;

/// Every report.json that `sources` name: files, folders of part folders, gs:// prefixes.
pub async fn read_parts(sources: &[String]) -> anyhow::Result<Vec<(String, Report)>> {
    let mut parts = Vec::new();
    for source in sources {
        if source.starts_with("gs://") {
            parts.extend(read_remote(source).await?);
            continue;
        }
        let path = Path::new(source);
        let own = path.join("report.json");
        // A folder without its own report holds the parts one folder below: listed, not named.
        let listed = path.is_dir() && !own.is_file();
        let files: Vec<PathBuf> = if listed {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading {source}"))?
                .filter_map(|e| e.ok().map(|e| e.path().join("report.json")))
                .filter(|p| p.is_file())
                .collect();
            found.sort();
            anyhow::ensure!(!found.is_empty(), "{source}: no report.json in it or below");
            found
        } else if path.is_dir() {
            vec![own]
        } else {
            vec![path.to_path_buf()]
        };
        for file in files {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let name = file.display().to_string();
            let report = parse(&name, &bytes)?;
            if !(listed && skipped(&name, &report)) {
                parts.push((name, report));
            }
        }
    }
    Ok(parts)
}

/// Whether a report found by listing a folder is an earlier merge's output (`--out` inside the
/// parts' folder), which is left out: said on stderr.
fn skipped(name: &str, report: &Report) -> bool {
    let merged = report.generators.is_some();
    if merged {
        eprintln!("left out {name}: an earlier merge, not a part");
    }
    merged
}

/// The report.json objects directly under a gs:// prefix or one folder below it (the layout a
/// Job's pods write with `--out gs://…/part-$(JOB_COMPLETION_INDEX)`), or the one object named.
async fn read_remote(uri: &str) -> anyhow::Result<Vec<(String, Report)>> {
    let uri = uri.trim_end_matches('/');
    if uri.ends_with(".json") {
        let (parent, name) = uri
            .rsplit_once('/')
            .with_context(|| format!("{uri}: expected gs://bucket/path"))?;
        let bytes = Store::open(parent, None)?
            .get(name)
            .await
            .with_context(|| format!("reading {uri}"))?;
        return Ok(vec![(uri.to_string(), parse(uri, &bytes)?)]);
    }
    let store = Store::open(uri, None)?;
    let mut names: Vec<String> = store
        .list()
        .await
        .with_context(|| format!("listing {uri}"))?
        .into_iter()
        .map(|f| f.path)
        .filter(|p| p == "report.json" || p.split('/').count() == 2 && p.ends_with("/report.json"))
        .collect();
    names.sort();
    anyhow::ensure!(
        !names.is_empty(),
        "{uri}: no report.json in it or one folder below"
    );
    let mut parts = Vec::new();
    for name in names {
        let bytes = store
            .get(&name)
            .await
            .with_context(|| format!("reading {uri}/{name}"))?;
        let full = format!("{uri}/{name}");
        let report = parse(&full, &bytes)?;
        if !skipped(&full, &report) {
            parts.push((full, report));
        }
    }
    Ok(parts)
}

/// One report: a local file, or a gs:// object (`pixguard bench-compare`'s inputs).
pub async fn read_report(source: &str) -> anyhow::Result<Report> {
    if source.starts_with("gs://") {
        anyhow::ensure!(
            source.ends_with(".json"),
            "{source}: name the report.json object"
        );
        let mut found = read_remote(source).await?;
        return found
            .pop()
            .map(|(_, report)| report)
            .with_context(|| format!("{source}: not found"));
    }
    let bytes = std::fs::read(source).with_context(|| format!("reading {source}"))?;
    parse(source, &bytes)
}

fn parse(name: &str, bytes: &[u8]) -> anyhow::Result<Report> {
    serde_json::from_slice(bytes).with_context(|| format!("{name} is not a pixguard bench report"))
}

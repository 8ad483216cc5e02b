//! `gs://` inputs and outputs of a batch job, staged through a local folder: the input objects
//! are streamed to disk (never held whole in memory) before the job reads them; the outputs are
//! written locally and uploaded when the job has finished.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::input::Format;
use crate::registry::Store;
use crate::registry::source::safe_relative;

/// Whether a path names an object store location rather than a local file.
pub fn is_remote(path: &Path) -> bool {
    path.to_str().is_some_and(|p| p.starts_with("gs://"))
}

fn split(uri: &str) -> anyhow::Result<(&str, &str)> {
    uri.trim_end_matches('/')
        .rsplit_once('/')
        .filter(|(parent, name)| parent.len() > "gs:/".len() && !name.is_empty())
        .with_context(|| format!("{uri}: expected gs://bucket/path"))
}

/// Downloads the input at `uri` — one object, or the data files directly under a prefix (Spark's
/// part files) — into `dir`, and answers the local file or folder to read.
pub async fn fetch_input(uri: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let store = Store::open(uri.trim_end_matches('/'), None)?;
    let listed = store
        .list()
        .await
        .with_context(|| format!("listing {uri}"))?;
    let files: Vec<_> = listed
        .iter()
        .filter(|f| !f.path.contains('/') && Format::of(Path::new(&f.path)).is_some())
        .collect();
    if files.is_empty() {
        // Not a prefix with data files under it: the object itself.
        let (parent, name) = split(uri)?;
        let dest = dir.join(safe_relative(name)?);
        let bytes = Store::open(parent, None)?
            .download(name, &dest)
            .await
            .with_context(|| format!("downloading {uri}"))?;
        tracing::info!(%uri, bytes, "batch: input downloaded");
        return Ok(dest);
    }
    let mut total = 0u64;
    for f in &files {
        let dest = dir.join(safe_relative(&f.path)?);
        total += store
            .download(&f.path, &dest)
            .await
            .with_context(|| format!("downloading {uri}/{}", f.path))?;
    }
    tracing::info!(%uri, files = files.len(), bytes = total, "batch: input downloaded");
    Ok(dir.to_path_buf())
}

/// Uploads the local file `local` to the object `uri`.
pub async fn upload(local: &Path, uri: &str) -> anyhow::Result<()> {
    let (parent, name) = split(uri)?;
    let bytes = std::fs::read(local).with_context(|| format!("reading {}", local.display()))?;
    Store::open(parent, None)?
        .put(name, bytes)
        .await
        .with_context(|| format!("uploading {uri}"))
}

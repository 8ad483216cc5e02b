//! The files of a package where they are kept: behind the MLflow artifact proxy, under a Google
//! Cloud Storage prefix, or in a local folder. Listings are recursive and relative to the package.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::gcp::{GoogleCloudStorage, GoogleCloudStorageBuilder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::RegistryError;
use super::mlflow::{Mlflow, join};
use crate::error_chain;

/// One file of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Path relative to the package root, as the store spelled it (checked before any use).
    pub path: String,
    /// Bytes, when the store says.
    pub size: Option<u64>,
}

/// Where a package's files are.
#[derive(Clone)]
pub enum Store {
    /// `mlflow-artifacts:/<path>`: the tracking server's artifact proxy.
    Proxy {
        /// The server.
        mlflow: Mlflow,
        /// Folder under the proxy's root.
        root: String,
    },
    /// `gs://bucket/prefix`.
    Gcs {
        /// The bucket.
        store: Arc<GoogleCloudStorage>,
        /// `gs://bucket`, for messages.
        bucket: String,
        /// Object prefix of the package (no trailing `/`).
        prefix: String,
    },
    /// `file:///path` or a plain folder.
    Local(PathBuf),
}

impl Store {
    /// The store an artifact URI names; `mlflow` serves `mlflow-artifacts:` URIs.
    pub fn open(uri: &str, mlflow: Option<&Mlflow>) -> Result<Store, RegistryError> {
        if let Some(rest) = uri.strip_prefix("mlflow-artifacts:") {
            // `mlflow-artifacts:/path` or `mlflow-artifacts://host:port/path`: the path is what
            // the proxy serves; the server is the one we already talk to.
            let path = match rest.strip_prefix("//") {
                Some(authority_and_path) => {
                    authority_and_path.split_once('/').map_or("", |(_, p)| p)
                }
                None => rest,
            };
            let mlflow = mlflow.ok_or_else(|| RegistryError::InvalidSource {
                source_uri: uri.into(),
                reason: "mlflow-artifacts: needs a tracking server".into(),
            })?;
            return Ok(Store::Proxy {
                mlflow: mlflow.clone(),
                root: path.trim_matches('/').to_string(),
            });
        }
        if let Some(rest) = uri.strip_prefix("gs://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            return Ok(Store::Gcs {
                store: gcs(bucket)?,
                bucket: format!("gs://{bucket}"),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if let Some(path) = uri.strip_prefix("file://") {
            return Ok(Store::Local(PathBuf::from(path)));
        }
        if uri.contains("://") || uri.contains(":/") {
            return Err(RegistryError::InvalidSource {
                source_uri: uri.into(),
                reason: "artifacts must be on mlflow-artifacts:, gs:// or file://".into(),
            });
        }
        Ok(Store::Local(PathBuf::from(uri)))
    }

    /// Where this store is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Store::Proxy { mlflow, root } => {
                format!("mlflow-artifacts:/{root} at {}", mlflow.uri())
            }
            Store::Gcs { bucket, prefix, .. } => format!("{bucket}/{prefix}"),
            Store::Local(p) => p.display().to_string(),
        }
    }

    /// Every file of the package, recursively, relative to its root.
    pub async fn list(&self) -> Result<Vec<Listed>, RegistryError> {
        match self {
            Store::Proxy { mlflow, root } => {
                let mut out = Vec::new();
                let mut dirs = vec![String::new()];
                while let Some(dir) = dirs.pop() {
                    let full = join(root, &dir);
                    for f in mlflow.list_artifacts(&full).await? {
                        // The proxy names entries by their base name; some stores by their path
                        // from the listed root.
                        let name = f
                            .path
                            .strip_prefix(&format!("{full}/"))
                            .unwrap_or(&f.path)
                            .to_string();
                        let rel = if dir.is_empty() {
                            name
                        } else {
                            format!("{dir}/{name}")
                        };
                        if f.is_dir {
                            super::source::safe_relative(&rel)?;
                            dirs.push(rel);
                        } else {
                            out.push(Listed {
                                path: rel,
                                size: f.file_size,
                            });
                        }
                    }
                }
                Ok(out)
            }
            Store::Gcs {
                store,
                bucket,
                prefix,
            } => {
                let base = ObjectPath::from(prefix.as_str());
                let objects: Vec<_> = store
                    .list(Some(&base))
                    .try_collect()
                    .await
                    .map_err(|e| storage_error(bucket, e))?;
                let mut out = Vec::new();
                for o in objects {
                    let full = o.location.as_ref();
                    let rel = if prefix.is_empty() {
                        full
                    } else {
                        full.strip_prefix(&format!("{prefix}/")).unwrap_or(full)
                    };
                    out.push(Listed {
                        path: rel.to_string(),
                        size: Some(o.size),
                    });
                }
                Ok(out)
            }
            Store::Local(dir) => {
                let mut out = Vec::new();
                let mut dirs = vec![PathBuf::new()];
                while let Some(rel) = dirs.pop() {
                    let read =
                        std::fs::read_dir(dir.join(&rel)).map_err(|source| RegistryError::Io {
                            path: dir.join(&rel),
                            source,
                        })?;
                    for entry in read.flatten() {
                        let path = rel.join(entry.file_name());
                        if entry.file_type().is_ok_and(|t| t.is_dir()) {
                            dirs.push(path);
                        } else {
                            out.push(Listed {
                                path: path.to_string_lossy().into_owned(),
                                size: entry.metadata().ok().map(|m| m.len()),
                            });
                        }
                    }
                }
                Ok(out)
            }
        }
    }

    /// The bytes of file `rel` of the package.
    pub async fn get(&self, rel: &str) -> Result<Bytes, RegistryError> {
        match self {
            Store::Proxy { mlflow, root } => mlflow.get_artifact(&join(root, rel)).await,
            Store::Gcs {
                store,
                bucket,
                prefix,
            } => gcs_get(store, bucket, prefix, rel)
                .await?
                .bytes()
                .await
                .map_err(|e| storage_error(bucket, e)),
            Store::Local(dir) => {
                let path = dir.join(rel);
                std::fs::read(&path)
                    .map(Bytes::from)
                    .map_err(|source| RegistryError::Io { path, source })
            }
        }
    }

    /// Copies file `rel` to `dest` without holding it whole in memory (GCS streams it).
    pub async fn download(&self, rel: &str, dest: &std::path::Path) -> Result<u64, RegistryError> {
        use std::io::Write;
        let io = |source| RegistryError::Io {
            path: dest.to_path_buf(),
            source,
        };
        let mut file = std::io::BufWriter::new(std::fs::File::create(dest).map_err(io)?);
        let mut written = 0u64;
        match self {
            Store::Gcs {
                store,
                bucket,
                prefix,
            } => {
                let mut stream = gcs_get(store, bucket, prefix, rel).await?.into_stream();
                while let Some(chunk) = stream
                    .try_next()
                    .await
                    .map_err(|e| storage_error(bucket, e))?
                {
                    file.write_all(&chunk).map_err(io)?;
                    written += chunk.len() as u64;
                }
            }
            _ => {
                let bytes = self.get(rel).await?;
                file.write_all(&bytes).map_err(io)?;
                written = bytes.len() as u64;
            }
        }
        file.flush().map_err(io)?;
        Ok(written)
    }

    /// Writes file `rel` of the package.
    pub async fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<(), RegistryError> {
        match self {
            Store::Proxy { mlflow, root } => mlflow.put_artifact(&join(root, rel), bytes).await,
            Store::Gcs {
                store,
                bucket,
                prefix,
            } => upload(store, bucket, &join(prefix, rel), bytes).await,
            Store::Local(dir) => {
                let path = dir.join(rel);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|source| RegistryError::Io {
                        path: parent.into(),
                        source,
                    })?;
                }
                std::fs::write(&path, bytes).map_err(|source| RegistryError::Io { path, source })
            }
        }
    }
}

/// A GCS client for `bucket`, with credentials found the way Google's libraries find them:
/// `GOOGLE_SERVICE_ACCOUNT` (a key file; `gcs_base_url` in it points at an emulator),
/// `GOOGLE_APPLICATION_CREDENTIALS`, or the GKE metadata server (Workload Identity).
fn gcs(bucket: &str) -> Result<Arc<GoogleCloudStorage>, RegistryError> {
    GoogleCloudStorageBuilder::from_env()
        .with_bucket_name(bucket)
        .build()
        .map(Arc::new)
        .map_err(|e| storage_error(&format!("gs://{bucket}"), e))
}

/// Writes one object through the GCS JSON API's media upload, with object_store's credentials.
/// object_store writes through the XML API, which GCS itself serves but the fake-gcs-server the
/// tests and local development run against does not; the JSON API both serve.
async fn upload(
    store: &GoogleCloudStorage,
    bucket: &str,
    name: &str,
    bytes: Vec<u8>,
) -> Result<(), RegistryError> {
    let bucket_name = bucket.trim_start_matches("gs://");
    let credential = store
        .credentials()
        .get_credential()
        .await
        .map_err(|e| storage_error(bucket, e))?;
    let url = format!(
        "{}/upload/storage/v1/b/{bucket_name}/o",
        gcs_base_url().trim_end_matches('/')
    );
    let mut request = reqwest::Client::new()
        .post(&url)
        .query(&[("uploadType", "media"), ("name", name)])
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(bytes);
    if !credential.bearer.is_empty() {
        request = request.bearer_auth(&credential.bearer);
    }
    let response = request
        .send()
        .await
        .map_err(|e| RegistryError::Unreachable {
            url: url.clone(),
            reason: error_chain(&e),
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    Err(RegistryError::Server {
        url: format!("{bucket}/{name}"),
        status: status.as_u16(),
        message: body.chars().take(300).collect(),
    })
}

/// GCS's endpoint: `gcs_base_url` of the service-account key object_store reads (how an emulator
/// is named), else Google's.
fn gcs_base_url() -> String {
    let key = std::env::var("GOOGLE_SERVICE_ACCOUNT_KEY")
        .ok()
        .or_else(|| {
            [
                "GOOGLE_SERVICE_ACCOUNT",
                "GOOGLE_SERVICE_ACCOUNT_PATH",
                "SERVICE_ACCOUNT",
            ]
            .iter()
            .find_map(|k| std::env::var(k).ok())
            .and_then(|path| std::fs::read_to_string(path).ok())
        });
    key.and_then(|k| serde_json::from_str::<serde_json::Value>(&k).ok())
        .and_then(|v| v.get("gcs_base_url")?.as_str().map(str::to_string))
        .unwrap_or_else(|| "https://storage.googleapis.com".into())
}

/// Starts reading object `prefix/rel` of `bucket`.
async fn gcs_get(
    store: &GoogleCloudStorage,
    bucket: &str,
    prefix: &str,
    rel: &str,
) -> Result<object_store::GetResult, RegistryError> {
    let path = ObjectPath::parse(join(prefix, rel))
        .map_err(|_| RegistryError::UnsafePath(rel.to_string()))?;
    store.get(&path).await.map_err(|e| storage_error(bucket, e))
}

fn storage_error(bucket: &str, e: object_store::Error) -> RegistryError {
    match e {
        // A listed object whose name has `..` or an empty segment: object_store refuses to parse
        // it, and so do we.
        object_store::Error::InvalidPath { source } => {
            RegistryError::UnsafePath(format!("{bucket}: {source}"))
        }
        object_store::Error::NotFound { path, .. } => {
            RegistryError::NotFound(format!("{bucket}/{path}"))
        }
        e => RegistryError::Unreachable {
            url: bucket.to_string(),
            reason: error_chain(&e),
        },
    }
}

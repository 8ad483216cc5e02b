//! Where the served package comes from and how a new version of it is found: a folder,
//! `gs://bucket/prefix`, or the MLflow Model Registry (`models:/<name>@<alias>`). Remote packages
//! are downloaded into a local cache keyed by name/version/digest, then loaded by the package
//! loader like any folder, so digests, shapes and thresholds are checked the same way.

pub mod mlflow;
pub mod publish;
pub mod source;
pub mod store;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use mlflow::Mlflow;
pub use source::{Selector, Source};
pub use store::Store;

use crate::model::PackageError;

/// Why a source could not be resolved or fetched.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// `model.source` (or an artifact URI) cannot be understood.
    #[error("model source `{source_uri}`: {reason}")]
    InvalidSource { source_uri: String, reason: String },
    /// A `models:/` source with no tracking server configured.
    #[error(
        "a models:/ source needs an MLflow tracking server: set model.registry_uri or MLFLOW_TRACKING_URI"
    )]
    NoTrackingUri,
    /// The server or bucket could not be reached.
    #[error("{url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered with an error.
    #[error("{url} answered {status}: {message}")]
    Server {
        url: String,
        status: u16,
        message: String,
    },
    /// The server answered something this client does not understand.
    #[error("registry protocol: {0}")]
    Protocol(String),
    /// An object or file that should exist does not.
    #[error("not found: {0}")]
    NotFound(String),
    /// A listing named a path outside the package.
    #[error("refusing artifact path `{0}`: it leaves the package folder")]
    UnsafePath(String),
    /// The listing has no `MLmodel`.
    #[error("{0}: no MLmodel file (not an MLflow Model)")]
    NoMlModel(String),
    /// Local disk.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The downloaded package itself is refused.
    #[error(transparent)]
    Package(#[from] PackageError),
}

impl RegistryError {
    /// The server or bucket could not be reached (as opposed to answering "no").
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RegistryError::Unreachable { .. })
            || matches!(self, RegistryError::Server { status, .. } if *status >= 500)
    }
}

/// What a source names right now; cheap to compute, so a poll can tell "unchanged" apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Changes exactly when the package behind the source changes: the registry version, or
    /// the digest of `MLmodel` (which holds every other file's digest).
    pub identity: String,
    /// The registry's version number, when the source is the registry.
    pub registry_version: Option<String>,
    /// Where the files are (`mlflow-artifacts:/…`, `gs://…`, a folder).
    pub location: String,
    /// Cache folder name (`<name>/<version>` or `gs/<bucket>/<prefix>`); none for folders.
    cache_key: Option<String>,
}

/// Resolves one configured source and fetches what it names.
pub struct Resolver {
    source: Source,
    mlflow: Option<Mlflow>,
    cache: PathBuf,
}

impl Resolver {
    /// A resolver for `source`; `registry_uri` (else `MLFLOW_TRACKING_URI`) for `models:/`.
    pub fn new(
        source: &str,
        registry_uri: Option<&str>,
        cache: &Path,
    ) -> Result<Resolver, RegistryError> {
        let source = Source::parse(source)?;
        let mlflow = match &source {
            Source::Registry { .. } => Some(Mlflow::from_env(registry_uri)?),
            _ => None,
        };
        Ok(Resolver {
            source,
            mlflow,
            cache: cache.to_path_buf(),
        })
    }

    /// The configured source.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// What the source names now: one registry call, or one small read of `MLmodel`.
    pub async fn resolve(&self) -> Result<Target, RegistryError> {
        match &self.source {
            Source::Folder(dir) => {
                let store = Store::Local(dir.clone());
                Ok(Target {
                    identity: format!("{}#{}", dir.display(), mlmodel_digest(&store).await?),
                    registry_version: None,
                    location: dir.display().to_string(),
                    cache_key: None,
                })
            }
            Source::Gcs { bucket, prefix } => {
                let location = format!("gs://{bucket}/{prefix}");
                let store = Store::open(&location, None)?;
                Ok(Target {
                    identity: format!("{location}#{}", mlmodel_digest(&store).await?),
                    registry_version: None,
                    location,
                    cache_key: Some(format!("gs/{bucket}/{}", prefix.replace('/', "_"))),
                })
            }
            Source::Registry { name, selector } => {
                let mlflow = self.mlflow.as_ref().ok_or(RegistryError::NoTrackingUri)?;
                let version = match selector {
                    Selector::Alias(alias) => mlflow.version_by_alias(name, alias).await?,
                    Selector::Version(v) => mlflow.version(name, &v.to_string()).await?,
                };
                let location = mlflow.artifact_location(name, &version.version).await?;
                Ok(Target {
                    identity: format!("models:/{name}/{}", version.version),
                    registry_version: Some(version.version.clone()),
                    location,
                    cache_key: Some(format!("{name}/{}", version.version)),
                })
            }
        }
    }

    /// A local folder holding the package `target` names: the folder itself, or a verified-path
    /// download in the cache (reused when the same name/version/digest is already there).
    pub async fn fetch(&self, target: &Target) -> Result<PathBuf, RegistryError> {
        let Some(key) = &target.cache_key else {
            return Ok(PathBuf::from(&target.location));
        };
        let store = Store::open(&target.location, self.mlflow.as_ref())?;
        let listing = store.list().await?;
        // Every path is checked before anything is written.
        let files = listing
            .iter()
            .map(|f| source::safe_relative(&f.path).map(|p| (f.path.as_str(), p)))
            .collect::<Result<Vec<_>, _>>()?;
        if !files.iter().any(|(name, _)| *name == "MLmodel") {
            return Err(RegistryError::NoMlModel(store.describe()));
        }
        let mlmodel = store.get("MLmodel").await?;
        let folder = self.cache.join(key).join(short_digest(&mlmodel));
        if folder.join("MLmodel").is_file() {
            return Ok(folder);
        }
        let partial = self.cache.join(format!(
            ".partial-{}-{}",
            std::process::id(),
            short_digest(target.identity.as_bytes())
        ));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RegistryError::Io { path, source }
        };
        let _ = std::fs::remove_dir_all(&partial);
        for (name, rel) in &files {
            let bytes = if *name == "MLmodel" {
                mlmodel.clone()
            } else {
                store.get(name).await?
            };
            let path = partial.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            std::fs::write(&path, &bytes).map_err(io(&path))?;
        }
        if let Some(parent) = folder.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        // Renamed into place whole, so a crash mid-download never leaves a half package that a
        // later start would take for a cached one.
        if let Err(e) = std::fs::rename(&partial, &folder) {
            let _ = std::fs::remove_dir_all(&partial);
            if !folder.join("MLmodel").is_file() {
                return Err(io(&folder)(e));
            }
        }
        Ok(folder)
    }

    fn last_good_file(&self) -> PathBuf {
        let name: String = self
            .source
            .to_string()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        self.cache.join(format!("{name}.last-good.json"))
    }

    /// Records that `target`, in `dir`, loaded and passed its checks.
    pub fn remember_good(&self, target: &Target, dir: &Path) {
        if target.cache_key.is_none() {
            return;
        }
        let record = serde_json::json!({"target": target, "dir": dir});
        let _ = std::fs::create_dir_all(&self.cache);
        if let Err(e) = std::fs::write(self.last_good_file(), record.to_string()) {
            tracing::warn!(error = %e, "could not record the last good model version");
        }
    }

    /// The last version of this source that loaded, when its files are still in the cache.
    pub fn last_good(&self) -> Option<(Target, PathBuf)> {
        let text = std::fs::read_to_string(self.last_good_file()).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let target: Target = serde_json::from_value(v.get("target")?.clone()).ok()?;
        let dir = PathBuf::from(v.get("dir")?.as_str()?);
        dir.join("MLmodel").is_file().then_some((target, dir))
    }
}

async fn mlmodel_digest(store: &Store) -> Result<String, RegistryError> {
    match store.get("MLmodel").await {
        Ok(bytes) => Ok(short_digest(&bytes)),
        Err(RegistryError::NotFound(_)) => Err(RegistryError::NoMlModel(store.describe())),
        // A folder that is not there is named as such, not as a folder without an MLmodel.
        Err(RegistryError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            match store {
                Store::Local(dir) if !dir.exists() => Err(RegistryError::NotFound(
                    crate::model::package::missing_folder(dir),
                )),
                _ => Err(RegistryError::NoMlModel(store.describe())),
            }
        }
        Err(e) => Err(e),
    }
}

/// The first 16 hex digits of the SHA-256 of `bytes`.
pub fn short_digest(bytes: &[u8]) -> String {
    let mut digest = crate::model::package::sha256_hex(bytes);
    digest.truncate(16);
    digest
}

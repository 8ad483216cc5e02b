//! What a release engineer (or CI/CD) does with the registry: publish a package as a new model
//! version, move an alias to it, roll an alias back, list versions. Aliases, not the stages MLflow
//! deprecated in 2.9. Each alias move records the version it replaced in a registered-model tag
//! (`pixguard.previous.<alias>`), which is what `rollback` returns to.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::mlflow::{Mlflow, ModelVersion, join};
use super::{RegistryError, Store, short_digest};
use crate::model::ModelPackage;

/// Tag prefix of pixguard's facts on a model version.
const TAG: &str = "pixguard";

/// Why a registry action failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The registry or the artifact store refused or could not be reached.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The package is not valid; nothing was published.
    #[error("the package is refused, nothing was published: {0}")]
    Package(#[from] crate::model::PackageError),
    /// The action makes no sense in the registry's current state.
    #[error("{0}")]
    State(String),
}

/// Where `publish` puts a package.
#[derive(Debug, Clone)]
pub struct PublishTo<'a> {
    /// Registered model name.
    pub name: &'a str,
    /// Alias to point at the new version, if any.
    pub alias: Option<&'a str>,
    /// MLflow experiment of the publishing run.
    pub experiment: &'a str,
    /// Artifact location of that experiment when it is created (e.g. `gs://bucket/mlflow`), so the
    /// files go straight to the bucket and servers read them from there; absent: the server's
    /// artifact proxy.
    pub artifact_location: Option<&'a str>,
}

/// Registers the package in `dir` as a new version; answers it.
pub async fn publish(
    mlflow: &Mlflow,
    dir: &Path,
    to: &PublishTo<'_>,
) -> Result<ModelVersion, PublishError> {
    // The same checks a server makes before it serves: a broken package never reaches the registry.
    let package = ModelPackage::load(dir)?;
    let experiment = mlflow
        .experiment(to.experiment, to.artifact_location)
        .await?;
    let config = &package.config;
    let (run_id, artifact_uri) = mlflow
        .create_run(
            &experiment,
            &format!("publish {} {}", config.name, config.version),
            &[
                ("mlflow.source.type", "LOCAL".into()),
                ("mlflow.source.name", "pixguard model publish".into()),
                (
                    "mlflow.user",
                    std::env::var("USER").unwrap_or_else(|_| "pixguard".into()),
                ),
            ],
        )
        .await?;
    let model_uri = join(&artifact_uri, "model");
    let store = Store::open(&model_uri, Some(mlflow))?;
    let local = Store::Local(dir.to_path_buf());
    let mut files = local.list().await?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    // MLmodel last: a reader that sees it sees every file it lists.
    files.sort_by_key(|f| f.path == "MLmodel");
    for f in &files {
        let bytes = local.get(&f.path).await?;
        store.put(&f.path, bytes.to_vec()).await?;
    }
    let metrics = flatten_metrics(&config.metrics);
    // One parameter per digest the flavor records (model_config, weights, reference, …).
    let digests: Vec<(String, String)> = package
        .flavor
        .sha256
        .iter()
        .map(|(file, digest)| (format!("sha256_{file}"), digest.clone()))
        .collect();
    let mut params = vec![
        ("package_name", config.name.clone()),
        ("package_version", config.version.clone()),
    ];
    params.extend(digests.iter().map(|(k, v)| (k.as_str(), v.clone())));
    mlflow.log_batch(&run_id, &metrics, &params).await?;
    mlflow.finish_run(&run_id).await?;
    mlflow.ensure_registered_model(to.name).await?;
    let mlmodel = std::fs::read(dir.join("MLmodel")).map_err(|source| RegistryError::Io {
        path: dir.join("MLmodel"),
        source,
    })?;
    let mut tags = vec![
        (format!("{TAG}.package_version"), config.version.clone()),
        (format!("{TAG}.mlmodel_digest"), short_digest(&mlmodel)),
    ];
    for (file, digest) in &package.flavor.sha256 {
        tags.push((format!("{TAG}.sha256.{file}"), digest.clone()));
    }
    for (key, value) in &metrics {
        tags.push((format!("{TAG}.metric.{key}"), value.to_string()));
    }
    let version = mlflow
        .create_version(
            to.name,
            &format!("runs:/{run_id}/model"),
            &run_id,
            &tags,
            &format!(
                "{} {} published by pixguard from {}",
                config.name,
                config.version,
                dir.display()
            ),
        )
        .await?;
    if let Some(alias) = to.alias {
        move_alias(mlflow, to.name, alias, &version.version).await?;
    }
    Ok(version)
}

/// What an alias move did.
#[derive(Debug, Clone, Serialize)]
pub struct AliasMove {
    /// Registered model.
    pub name: String,
    /// The alias moved.
    pub alias: String,
    /// The version it points at now.
    pub version: String,
    /// The version it pointed at before, if any.
    pub replaced: Option<String>,
}

/// Points `alias` at `version`, recording the version it replaced.
pub async fn move_alias(
    mlflow: &Mlflow,
    name: &str,
    alias: &str,
    version: &str,
) -> Result<AliasMove, PublishError> {
    let model = mlflow.registered_model(name).await?;
    let replaced = model.alias(alias).map(str::to_string);
    mlflow.set_alias(name, alias, version).await?;
    if let Some(previous) = replaced.as_deref().filter(|p| *p != version) {
        mlflow
            .set_model_tag(name, &format!("{TAG}.previous.{alias}"), previous)
            .await?;
    }
    Ok(AliasMove {
        name: name.into(),
        alias: alias.into(),
        version: version.into(),
        replaced,
    })
}

/// Points alias `to` at the version alias `from` points at.
pub async fn promote(
    mlflow: &Mlflow,
    name: &str,
    from: &str,
    to: &str,
) -> Result<AliasMove, PublishError> {
    let model = mlflow.registered_model(name).await?;
    let version = model
        .alias(from)
        .ok_or_else(|| PublishError::State(format!("model {name} has no alias `{from}`")))?
        .to_string();
    move_alias(mlflow, name, to, &version).await
}

/// Points `alias` back at the version it replaced last.
pub async fn rollback(mlflow: &Mlflow, name: &str, alias: &str) -> Result<AliasMove, PublishError> {
    let model = mlflow.registered_model(name).await?;
    let previous = model
        .tag(&format!("{TAG}.previous.{alias}"))
        .ok_or_else(|| {
            PublishError::State(format!(
                "model {name}: alias `{alias}` has no recorded previous version to roll back to"
            ))
        })?
        .to_string();
    move_alias(mlflow, name, alias, &previous).await
}

/// One version, for `list`.
#[derive(Debug, Clone, Serialize)]
pub struct VersionRow {
    /// Version number.
    pub version: String,
    /// Aliases pointing at it.
    pub aliases: Vec<String>,
    /// The package's own version.
    pub package_version: Option<String>,
    /// SHA-256 of the weights.
    pub weights_sha256: Option<String>,
    /// Hold-out metrics recorded at publication.
    pub metrics: Vec<(String, String)>,
    /// When it was registered (UTC, RFC 3339).
    pub published: Option<String>,
    /// Where its files are.
    pub source: String,
}

/// Every version of `name`, newest first.
pub async fn list(mlflow: &Mlflow, name: &str) -> Result<Vec<VersionRow>, PublishError> {
    let model = mlflow.registered_model(name).await?;
    let versions = mlflow.versions(name).await?;
    Ok(versions
        .into_iter()
        .map(|v| {
            let aliases = model
                .aliases
                .iter()
                .filter(|a| a.version == v.version)
                .map(|a| a.alias.clone())
                .collect();
            let prefix = format!("{TAG}.metric.");
            VersionRow {
                aliases,
                package_version: v.tag(&format!("{TAG}.package_version")).map(Into::into),
                weights_sha256: v.tag(&format!("{TAG}.sha256.weights")).map(Into::into),
                metrics: v
                    .tags
                    .iter()
                    .filter_map(|t| {
                        Some((t.key.strip_prefix(&prefix)?.to_string(), t.value.clone()))
                    })
                    .collect(),
                published: v.creation_timestamp.and_then(|ms| {
                    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339())
                }),
                source: v.source,
                version: v.version,
            }
        })
        .collect())
}

/// Numeric leaves of a metrics object as `a.b.c` → value (MLflow metric keys allow `.`).
fn flatten_metrics(value: &Value) -> Vec<(String, f64)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, f64)>) {
        match v {
            Value::Number(n) => {
                if let Some(x) = n.as_f64() {
                    out.push((prefix.to_string(), x));
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    let key: String = k
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || "_-./ ".contains(c) {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect();
                    let key = if prefix.is_empty() {
                        key
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&key, v, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", value, &mut out);
    out
}

//! A client of the MLflow tracking server's REST API (2.0 paths, MLflow 3.x): the Model Registry,
//! runs, and the artifact proxy (`mlflow-artifacts:`). Authenticates as MLflow's own clients do:
//! `MLFLOW_TRACKING_TOKEN` (bearer) or `MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD`.

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

mod write;

use super::RegistryError;
use crate::error_chain;

/// How requests authenticate.
#[derive(Clone)]
enum Auth {
    None,
    Bearer(String),
    Basic { user: String, password: String },
}

/// A tracking server.
#[derive(Clone)]
pub struct Mlflow {
    base: String,
    http: reqwest::Client,
    auth: Auth,
}

/// A model version as the registry describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelVersion {
    /// Registered model name.
    pub name: String,
    /// Version number (the API sends it as a string).
    pub version: String,
    /// Where its artifacts are: `runs:/…`, `mlflow-artifacts:/…`, `gs://…`.
    #[serde(default)]
    pub source: String,
    /// Run that produced it.
    #[serde(default)]
    pub run_id: Option<String>,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub creation_timestamp: Option<i64>,
    /// Key/value tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Aliases pointing at it.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `READY` once its artifacts are in place.
    #[serde(default)]
    pub status: Option<String>,
}

impl ModelVersion {
    /// The value of tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

/// A key/value tag.
#[derive(Debug, Clone, Deserialize)]
pub struct Tag {
    /// Key.
    pub key: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// One entry of an artifact listing.
#[derive(Debug, Clone, Deserialize)]
pub struct FileInfo {
    /// Name relative to the listed folder (MLflow answers the name alone, or the path from the
    /// listing root, depending on the store).
    pub path: String,
    /// A folder.
    #[serde(default)]
    pub is_dir: bool,
    /// Bytes.
    #[serde(default)]
    pub file_size: Option<u64>,
}

/// A registered model, with where its aliases point.
#[derive(Debug, Clone, Deserialize)]
pub struct RegisteredModel {
    /// Name.
    pub name: String,
    /// Alias → version.
    #[serde(default)]
    pub aliases: Vec<AliasEntry>,
    /// Key/value tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// One alias of a registered model.
#[derive(Debug, Clone, Deserialize)]
pub struct AliasEntry {
    /// `staging`, `production`, …
    pub alias: String,
    /// The version it points at.
    pub version: String,
}

impl RegisteredModel {
    /// The version `alias` points at.
    pub fn alias(&self, alias: &str) -> Option<&str> {
        self.aliases
            .iter()
            .find(|a| a.alias == alias)
            .map(|a| a.version.as_str())
    }

    /// The value of tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

impl Mlflow {
    /// The server at `uri` (else `MLFLOW_TRACKING_URI`), with credentials from the environment.
    pub fn from_env(uri: Option<&str>) -> Result<Mlflow, RegistryError> {
        let uri = match uri {
            Some(u) => u.to_string(),
            None => {
                std::env::var("MLFLOW_TRACKING_URI").map_err(|_| RegistryError::NoTrackingUri)?
            }
        };
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            return Err(RegistryError::InvalidSource {
                source_uri: uri,
                reason: "the MLflow tracking URI must be an http(s):// server".into(),
            });
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let auth = match (
            env("MLFLOW_TRACKING_TOKEN"),
            env("MLFLOW_TRACKING_USERNAME"),
            env("MLFLOW_TRACKING_PASSWORD"),
        ) {
            (Some(token), _, _) => Auth::Bearer(token),
            (None, Some(user), Some(password)) => Auth::Basic { user, password },
            _ => Auth::None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| RegistryError::Unreachable {
                url: uri.clone(),
                reason: e.to_string(),
            })?;
        Ok(Mlflow {
            base: uri.trim_end_matches('/').to_string(),
            http,
            auth,
        })
    }

    /// The server's address, for messages.
    pub fn uri(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.auth {
            Auth::None => r,
            Auth::Bearer(t) => r.bearer_auth(t),
            Auth::Basic { user, password } => r.basic_auth(user, Some(password)),
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder, what: &str) -> Result<Bytes, RegistryError> {
        let url = format!("{}{what}", self.base);
        let response = r.send().await.map_err(|e| RegistryError::Unreachable {
            url: url.clone(),
            reason: error_chain(&e),
        })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| RegistryError::Unreachable {
                url: url.clone(),
                reason: error_chain(&e),
            })?;
        if status.is_success() {
            return Ok(body);
        }
        // MLflow's errors are {"error_code": …, "message": …}; keep whatever else it sent short.
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| {
                let code = v.get("error_code")?.as_str()?.to_string();
                let message = v.get("message")?.as_str()?.to_string();
                Some(format!("{code}: {message}"))
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into());
        Err(RegistryError::Server {
            url,
            status: status.as_u16(),
            message,
        })
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, RegistryError> {
        let body = self
            .send(self.request(reqwest::Method::GET, path).query(query), path)
            .await?;
        parse(&body, path)
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, RegistryError> {
        let body = self
            .send(self.request(reqwest::Method::POST, path).json(body), path)
            .await?;
        parse(&body, path)
    }

    /// The version `alias` points at.
    pub async fn version_by_alias(
        &self,
        name: &str,
        alias: &str,
    ) -> Result<ModelVersion, RegistryError> {
        #[derive(Deserialize)]
        struct R {
            model_version: ModelVersion,
        }
        let r: R = self
            .get(
                "/api/2.0/mlflow/registered-models/alias",
                &[("name", name), ("alias", alias)],
            )
            .await?;
        Ok(r.model_version)
    }

    /// Version `version` of `name`.
    pub async fn version(&self, name: &str, version: &str) -> Result<ModelVersion, RegistryError> {
        #[derive(Deserialize)]
        struct R {
            model_version: ModelVersion,
        }
        let r: R = self
            .get(
                "/api/2.0/mlflow/model-versions/get",
                &[("name", name), ("version", version)],
            )
            .await?;
        Ok(r.model_version)
    }

    /// Every version of `name`, newest first.
    pub async fn versions(&self, name: &str) -> Result<Vec<ModelVersion>, RegistryError> {
        #[derive(Deserialize)]
        struct R {
            #[serde(default)]
            model_versions: Vec<ModelVersion>,
        }
        let filter = format!("name='{}'", name.replace('\'', "\\'"));
        let r: R = self
            .get(
                "/api/2.0/mlflow/model-versions/search",
                &[
                    ("filter", filter.as_str()),
                    ("max_results", "1000"),
                    ("order_by", "version_number DESC"),
                ],
            )
            .await?;
        Ok(r.model_versions)
    }

    /// The registered model `name`.
    pub async fn registered_model(&self, name: &str) -> Result<RegisteredModel, RegistryError> {
        #[derive(Deserialize)]
        struct R {
            registered_model: RegisteredModel,
        }
        let r: R = self
            .get("/api/2.0/mlflow/registered-models/get", &[("name", name)])
            .await?;
        Ok(r.registered_model)
    }

    /// Where version `version`'s files are, with `runs:/` resolved to the run's artifact folder.
    pub async fn artifact_location(
        &self,
        name: &str,
        version: &str,
    ) -> Result<String, RegistryError> {
        #[derive(Deserialize)]
        struct R {
            artifact_uri: String,
        }
        let r: R = self
            .get(
                "/api/2.0/mlflow/model-versions/get-download-uri",
                &[("name", name), ("version", version)],
            )
            .await?;
        match r.artifact_uri.strip_prefix("runs:/") {
            Some(rest) => {
                let (run_id, path) = rest.split_once('/').unwrap_or((rest, ""));
                let root = self.run_artifact_uri(run_id).await?;
                Ok(join(&root, path))
            }
            None => Ok(r.artifact_uri),
        }
    }

    /// The artifact folder of run `run_id`.
    pub async fn run_artifact_uri(&self, run_id: &str) -> Result<String, RegistryError> {
        let r: Value = self
            .get("/api/2.0/mlflow/runs/get", &[("run_id", run_id)])
            .await?;
        r.pointer("/run/info/artifact_uri")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| RegistryError::Protocol(format!("run {run_id} has no artifact_uri")))
    }

    /// One level of the artifact proxy's listing of `path` (relative to the artifact root).
    pub async fn list_artifacts(&self, path: &str) -> Result<Vec<FileInfo>, RegistryError> {
        #[derive(Deserialize)]
        struct R {
            #[serde(default)]
            files: Vec<FileInfo>,
        }
        let r: R = self
            .get("/api/2.0/mlflow-artifacts/artifacts", &[("path", path)])
            .await?;
        Ok(r.files)
    }

    /// One file from the artifact proxy.
    pub async fn get_artifact(&self, path: &str) -> Result<Bytes, RegistryError> {
        let route = format!("/api/2.0/mlflow-artifacts/artifacts/{}", encode_path(path));
        self.send(self.request(reqwest::Method::GET, &route), &route)
            .await
    }
}

fn parse<T: DeserializeOwned>(body: &[u8], path: &str) -> Result<T, RegistryError> {
    serde_json::from_slice(body)
        .map_err(|e| RegistryError::Protocol(format!("{path}: unexpected answer: {e}")))
}

/// `root` + `/` + `path`, without doubled slashes.
pub fn join(root: &str, path: &str) -> String {
    let path = path.trim_matches('/');
    if path.is_empty() {
        root.trim_end_matches('/').to_string()
    } else {
        format!("{}/{path}", root.trim_end_matches('/'))
    }
}

/// Percent-encodes each segment of an artifact path, keeping the `/` between them.
fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            seg.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

//! The writing half of the MLflow client, used by `pixguard model publish` and the alias
//! commands: artifact uploads, experiments and runs, registered models, versions, aliases, tags.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Mlflow, ModelVersion, encode_path};
use crate::registry::RegistryError;

impl Mlflow {
    /// Uploads one file through the artifact proxy.
    pub async fn put_artifact(&self, path: &str, bytes: Vec<u8>) -> Result<(), RegistryError> {
        let route = format!("/api/2.0/mlflow-artifacts/artifacts/{}", encode_path(path));
        self.send(
            self.request(reqwest::Method::PUT, &route).body(bytes),
            &route,
        )
        .await
        .map(|_| ())
    }

    /// The id of experiment `name`, created (with `artifact_location` when given) if absent.
    pub async fn experiment(
        &self,
        name: &str,
        artifact_location: Option<&str>,
    ) -> Result<String, RegistryError> {
        match self
            .get::<Value>(
                "/api/2.0/mlflow/experiments/get-by-name",
                &[("experiment_name", name)],
            )
            .await
        {
            Ok(v) => {
                return v
                    .pointer("/experiment/experiment_id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| RegistryError::Protocol("experiment without an id".into()));
            }
            Err(RegistryError::Server { status: 404, .. }) => {}
            Err(e) => return Err(e),
        }
        let mut body = json!({ "name": name });
        if let Some(location) = artifact_location {
            body["artifact_location"] = json!(location);
        }
        let v: Value = self
            .post("/api/2.0/mlflow/experiments/create", &body)
            .await?;
        v.get("experiment_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| RegistryError::Protocol("experiments/create answered no id".into()))
    }

    /// Starts a run; answers its id and artifact folder.
    pub async fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        tags: &[(&str, String)],
    ) -> Result<(String, String), RegistryError> {
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        let v: Value = self
            .post(
                "/api/2.0/mlflow/runs/create",
                &json!({
                    "experiment_id": experiment_id,
                    "run_name": run_name,
                    "start_time": now_ms(),
                    "tags": tags,
                }),
            )
            .await?;
        let id = v.pointer("/run/info/run_id").and_then(Value::as_str);
        let uri = v.pointer("/run/info/artifact_uri").and_then(Value::as_str);
        match (id, uri) {
            (Some(id), Some(uri)) => Ok((id.to_string(), uri.to_string())),
            _ => Err(RegistryError::Protocol(
                "runs/create answered no run id or artifact_uri".into(),
            )),
        }
    }

    /// Logs metrics and params on a run.
    pub async fn log_batch(
        &self,
        run_id: &str,
        metrics: &[(String, f64)],
        params: &[(&str, String)],
    ) -> Result<(), RegistryError> {
        let ts = now_ms();
        let metrics: Vec<Value> = metrics
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v, "timestamp": ts, "step": 0}))
            .collect();
        let params: Vec<Value> = params
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        self.post::<Value>(
            "/api/2.0/mlflow/runs/log-batch",
            &json!({"run_id": run_id, "metrics": metrics, "params": params}),
        )
        .await
        .map(|_| ())
    }

    /// Marks a run finished.
    pub async fn finish_run(&self, run_id: &str) -> Result<(), RegistryError> {
        self.post::<Value>(
            "/api/2.0/mlflow/runs/update",
            &json!({"run_id": run_id, "status": "FINISHED", "end_time": now_ms()}),
        )
        .await
        .map(|_| ())
    }

    /// Creates registered model `name` unless it exists.
    pub async fn ensure_registered_model(&self, name: &str) -> Result<(), RegistryError> {
        match self
            .post::<Value>(
                "/api/2.0/mlflow/registered-models/create",
                &json!({ "name": name }),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(RegistryError::Server { message, .. })
                if message.starts_with("RESOURCE_ALREADY_EXISTS") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Registers a new version of `name` from `source` (produced by `run_id`).
    pub async fn create_version(
        &self,
        name: &str,
        source: &str,
        run_id: &str,
        tags: &[(String, String)],
        description: &str,
    ) -> Result<ModelVersion, RegistryError> {
        #[derive(Deserialize)]
        struct R {
            model_version: ModelVersion,
        }
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        let r: R = self
            .post(
                "/api/2.0/mlflow/model-versions/create",
                &json!({
                    "name": name, "source": source, "run_id": run_id,
                    "tags": tags, "description": description,
                }),
            )
            .await?;
        Ok(r.model_version)
    }

    /// Points `alias` of `name` at `version`.
    pub async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: &str,
    ) -> Result<(), RegistryError> {
        self.post::<Value>(
            "/api/2.0/mlflow/registered-models/alias",
            &json!({"name": name, "alias": alias, "version": version}),
        )
        .await
        .map(|_| ())
    }

    /// Sets a tag on the registered model `name`.
    pub async fn set_model_tag(
        &self,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<(), RegistryError> {
        self.post::<Value>(
            "/api/2.0/mlflow/registered-models/set-tag",
            &json!({"name": name, "key": key, "value": value}),
        )
        .await
        .map(|_| ())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

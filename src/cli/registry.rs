//! `pixguard model publish | promote | rollback | list`: the MLflow Model Registry from a release
//! engineer's shell or a CI/CD job. The tracking server is `--registry-uri` or
//! `MLFLOW_TRACKING_URI`; credentials as MLflow's clients read them.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::registry::Mlflow;
use crate::registry::publish::{self, PublishTo};

/// Where the registry is.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// MLflow tracking server (default: MLFLOW_TRACKING_URI).
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    pub registry_uri: Option<String>,
    /// Registered model name.
    #[arg(long, default_value = "pix-fraud")]
    pub name: String,
}

impl RegistryArgs {
    fn client(&self) -> anyhow::Result<Mlflow> {
        Ok(Mlflow::from_env(self.registry_uri.as_deref())?)
    }
}

/// `pixguard model publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Package folder.
    pub package: PathBuf,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Point this alias at the new version (e.g. staging).
    #[arg(long)]
    pub alias: Option<String>,
    /// MLflow experiment of the publishing run.
    #[arg(long, default_value = "pixguard-releases")]
    pub experiment: String,
    /// Artifact location given to the experiment when it is created, e.g. gs://bucket/mlflow:
    /// the files go straight to the bucket (default: the server's artifact proxy).
    #[arg(long)]
    pub artifact_location: Option<String>,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Registers a package as a new version; prints it as JSON.
pub fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let mlflow = args.registry.client()?;
    let to = PublishTo {
        name: &args.registry.name,
        alias: args.alias.as_deref(),
        experiment: &args.experiment,
        artifact_location: args.artifact_location.as_deref(),
    };
    let version = runtime()?
        .block_on(publish::publish(&mlflow, &args.package, &to))
        .with_context(|| format!("publishing {}", args.package.display()))?;
    println!(
        "{}",
        serde_json::json!({
            "name": version.name,
            "version": version.version,
            "source": version.source,
            "alias": args.alias,
        })
    );
    Ok(())
}

/// Points alias `to` at the version of alias `from`; prints the move.
pub fn promote(registry: RegistryArgs, from: String, to: String) -> anyhow::Result<()> {
    let mlflow = registry.client()?;
    let moved = runtime()?.block_on(publish::promote(&mlflow, &registry.name, &from, &to))?;
    println!("{}", serde_json::to_string(&moved)?);
    Ok(())
}

/// Points `alias` back at the version it replaced; prints the move.
pub fn rollback(registry: RegistryArgs, alias: String) -> anyhow::Result<()> {
    let mlflow = registry.client()?;
    let moved = runtime()?.block_on(publish::rollback(&mlflow, &registry.name, &alias))?;
    println!("{}", serde_json::to_string(&moved)?);
    Ok(())
}

/// Prints every version, newest first: a table, or JSON lines with `--json`.
pub fn list(registry: RegistryArgs, json: bool) -> anyhow::Result<()> {
    let mlflow = registry.client()?;
    let rows = runtime()?.block_on(publish::list(&mlflow, &registry.name))?;
    if json {
        for row in &rows {
            println!("{}", serde_json::to_string(row)?);
        }
        return Ok(());
    }
    println!(
        "{:<8} {:<22} {:<16} {:<14} {:<10} {:<26}",
        "VERSION", "ALIASES", "PACKAGE", "WEIGHTS", "PR-AUC", "PUBLISHED"
    );
    for r in rows {
        let pr_auc = r
            .metrics
            .iter()
            .find(|(k, _)| k == "dcn_v2.pr_auc")
            .map_or("-".to_string(), |(_, v)| {
                v.parse::<f64>().map_or(v.clone(), |x| format!("{x:.4}"))
            });
        println!(
            "{:<8} {:<22} {:<16} {:<14} {:<10} {:<26}",
            r.version,
            if r.aliases.is_empty() {
                "-".into()
            } else {
                r.aliases.join(",")
            },
            r.package_version.as_deref().unwrap_or("-"),
            r.weights_sha256
                .as_deref()
                .map_or("-", |d| &d[..d.len().min(12)]),
            pr_auc,
            r.published.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}

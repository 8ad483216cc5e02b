//! The model package: an MLflow Model folder with the `pixguard` flavor.
//!
//! `MLmodel` names `model.json` (architecture, feature spec, thresholds) and `model.safetensors`
//! with the SHA-256 of each. Loading checks every digest, every tensor's presence, dtype, shape and
//! values, and the thresholds, and refuses the package with the precise reason otherwise.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::features::{FeatureSpec, SpecError};

/// Why a package was refused.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The package folder is not there ([`missing_folder`] says where it was looked for).
    #[error("not found: {0}")]
    Missing(String),
    /// `MLmodel` is not valid YAML of the expected shape.
    #[error("MLmodel: {0}")]
    MlModel(String),
    /// `MLmodel` has no `pixguard` flavor.
    #[error("MLmodel has no `pixguard` flavor (flavors present: {0})")]
    NoFlavor(String),
    /// A path in the flavor leaves the package folder.
    #[error("MLmodel flavors.pixguard.{field}: `{path}` must be a file name inside the package")]
    UnsafePath { field: &'static str, path: String },
    /// A file's SHA-256 differs from the one `MLmodel` records.
    #[error(
        "{file}: SHA-256 is {actual}, MLmodel says {expected} (the file was changed or corrupted)"
    )]
    Digest {
        file: String,
        expected: String,
        actual: String,
    },
    /// `model.json` is not valid.
    #[error("model.json: {0}")]
    Config(String),
    /// The feature spec in `model.json` is not valid.
    #[error("model.json features: {0}")]
    Spec(#[from] SpecError),
    /// The architecture does not fit the feature spec.
    #[error("model.json architecture: {0}")]
    Architecture(String),
    /// The explanations do not fit the feature spec.
    #[error("model.json explanations: {0}")]
    Explanations(String),
    /// The training reference does not fit the feature spec.
    #[error("{file}: {reason}")]
    Reference { file: String, reason: String },
    /// The decision thresholds are not ordered.
    #[error("model.json thresholds: need 0 < hold < reject < 1, got hold {hold}, reject {reject}")]
    Thresholds { hold: f64, reject: f64 },
    /// The weights file is not valid safetensors.
    #[error("{file}: not a valid safetensors file: {reason}")]
    Safetensors { file: String, reason: String },
    /// A tensor the architecture needs is absent.
    #[error("weights: tensor `{0}` is missing")]
    MissingTensor(String),
    /// A tensor the architecture does not use is present.
    #[error("weights: unexpected tensor `{0}` (not part of this architecture)")]
    UnexpectedTensor(String),
    /// A tensor is not f32.
    #[error("weights: tensor `{name}` is {dtype:?}, expected F32")]
    WrongDtype { name: String, dtype: Dtype },
    /// A tensor's shape differs from what model.json implies.
    #[error("weights: tensor `{name}` has shape {actual:?}, model.json implies {expected:?}")]
    WrongShape {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    /// A tensor holds NaN or infinity.
    #[error("weights: tensor `{name}` has a non-finite value at flat index {index}")]
    NonFinite { name: String, index: usize },
}

/// The network's shape, from `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// Always `dcn_v2`.
    pub kind: ArchitectureKind,
    /// Number of full-rank cross layers.
    pub cross_layers: usize,
    /// Widths of the ReLU MLP after the cross layers.
    pub mlp: Vec<usize>,
    /// Embedding width of each categorical feature, in spec order.
    pub embedding_dims: Vec<usize>,
}

/// The architectures pixguard implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchitectureKind {
    /// Embeddings + numeric → DCN-v2 cross layers → MLP → logit.
    DcnV2,
}

/// Score cut-offs: below `hold` ALLOW, below `reject` HOLD, else REJECT.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Lowest score that is held for review.
    pub hold: f64,
    /// Lowest score that is rejected.
    pub reject: f64,
}

/// What to do with a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Decision {
    /// Let it through.
    Allow,
    /// Hold it for review (Pix allows a PSP to hold a suspect payment).
    Hold,
    /// Reject it.
    Reject,
}

impl Decision {
    /// Every decision, from the mildest.
    pub const ALL: [Decision; 3] = [Decision::Allow, Decision::Hold, Decision::Reject];

    /// The wire spelling: `ALLOW`, `HOLD` or `REJECT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "ALLOW",
            Decision::Hold => "HOLD",
            Decision::Reject => "REJECT",
        }
    }
}

impl Thresholds {
    /// The decision for a score.
    pub fn decide(&self, score: f64) -> Decision {
        if score >= self.reject {
            Decision::Reject
        } else if score >= self.hold {
            Decision::Hold
        } else {
            Decision::Allow
        }
    }
}

/// `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Model name.
    pub name: String,
    /// The package's own version (a registry may assign another).
    pub version: String,
    /// Network shape.
    pub architecture: Architecture,
    /// Feature spec: what the network's inputs are.
    pub features: FeatureSpec,
    /// Decision thresholds.
    pub thresholds: Thresholds,
    /// How the model's scores are explained (reason codes); absent: no reasons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanations: Option<super::explain::ExplanationSpec>,
    /// Holdout metrics, free-form.
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// Training provenance, free-form.
    #[serde(default)]
    pub training: serde_json::Value,
}

impl ModelConfig {
    /// Width of the network input: numeric features plus every embedding.
    pub fn input_width(&self) -> usize {
        self.features.numeric.len() + self.architecture.embedding_dims.iter().sum::<usize>()
    }

    /// Every tensor the architecture needs, with its shape, in a stable order.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let d0 = self.input_width();
        let mut out = Vec::new();
        for (f, &dim) in self
            .features
            .categorical
            .iter()
            .zip(&self.architecture.embedding_dims)
        {
            out.push((
                format!("embeddings.{}.weight", f.name),
                vec![f.cardinality(), dim],
            ));
        }
        for l in 0..self.architecture.cross_layers {
            out.push((format!("cross.{l}.weight"), vec![d0, d0]));
            out.push((format!("cross.{l}.bias"), vec![d0]));
        }
        let mut prev = d0;
        for (j, &w) in self.architecture.mlp.iter().enumerate() {
            out.push((format!("mlp.{j}.weight"), vec![w, prev]));
            out.push((format!("mlp.{j}.bias"), vec![w]));
            prev = w;
        }
        out.push(("head.weight".into(), vec![1, prev]));
        out.push(("head.bias".into(), vec![1]));
        out
    }

    fn validate(&self) -> Result<(), PackageError> {
        self.features.validate()?;
        let arch = &self.architecture;
        if arch.embedding_dims.len() != self.features.categorical.len() {
            return Err(PackageError::Architecture(format!(
                "{} embedding_dims for {} categorical features",
                arch.embedding_dims.len(),
                self.features.categorical.len()
            )));
        }
        if arch.embedding_dims.contains(&0) || arch.mlp.contains(&0) || self.input_width() == 0 {
            return Err(PackageError::Architecture(
                "every width must be positive".into(),
            ));
        }
        let Thresholds { hold, reject } = self.thresholds;
        if !(0.0 < hold && hold < reject && reject < 1.0) {
            return Err(PackageError::Thresholds { hold, reject });
        }
        if let Some(e) = &self.explanations {
            e.compile(&self.features)?;
        }
        Ok(())
    }
}

/// The `pixguard` flavor of `MLmodel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PixguardFlavor {
    /// File name of model.json.
    pub model_config: String,
    /// File name of the safetensors weights.
    pub weights: String,
    /// SHA-256 (hex) of each, keyed `model_config` and `weights`.
    pub sha256: BTreeMap<String, String>,
    /// File name of the ONNX export, if any.
    #[serde(default)]
    pub onnx: Option<String>,
    /// File name of the golden scores, if any.
    #[serde(default)]
    pub golden: Option<String>,
    /// File name of the training reference monitoring compares with, if any.
    #[serde(default)]
    pub reference: Option<String>,
}

/// The parts of `MLmodel` pixguard reads.
#[derive(Debug, Clone, Deserialize)]
pub struct MlModel {
    /// Flavors by name; pixguard needs `pixguard`.
    pub flavors: BTreeMap<String, serde_yaml_ng::Value>,
    /// MLflow version that wrote the file.
    #[serde(default)]
    pub mlflow_version: Option<String>,
    /// MLflow's model UUID.
    #[serde(default)]
    pub model_uuid: Option<String>,
    /// Creation time as MLflow writes it.
    #[serde(default)]
    pub utc_time_created: Option<String>,
    /// Free-form metadata (training seed and rows, holdout metrics).
    #[serde(default)]
    pub metadata: Option<serde_yaml_ng::Value>,
}

/// A validated package, with the weights memory-mapped.
#[derive(Debug)]
pub struct ModelPackage {
    /// The package folder.
    pub dir: PathBuf,
    /// `MLmodel`.
    pub mlmodel: MlModel,
    /// The `pixguard` flavor of `MLmodel`.
    pub flavor: PixguardFlavor,
    /// `model.json`.
    pub config: ModelConfig,
    /// The training reference (`reference.json`), when the package has one.
    pub reference: Option<super::training_reference::Reference>,
    weights: Mmap,
}

/// A package folder that is not there, named so that a relative one says where it was looked
/// for: the default `models/pix-fraud` is found from the repository root only, and a binary run
/// from anywhere else needs `--model`.
pub fn missing_folder(dir: &Path) -> String {
    match std::env::current_dir() {
        Ok(cwd) if dir.is_relative() => format!(
            "{} (a relative path, looked for in {}; set --model or model.source)",
            dir.display(),
            cwd.display()
        ),
        _ => dir.display().to_string(),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PackageError + '_ {
    move |source| PackageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A flavor path must name a file inside the package: no absolute paths, no `..`.
fn inside(dir: &Path, field: &'static str, name: &str) -> Result<PathBuf, PackageError> {
    let rel = Path::new(name);
    if name.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(PackageError::UnsafePath {
            field,
            path: name.to_string(),
        });
    }
    Ok(dir.join(rel))
}

/// The SHA-256 of `bytes` in lowercase hex, as `flavors.pixguard.sha256` records it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(64);
    crate::traces::context::push_hex(&mut hex, &Sha256::digest(bytes));
    hex
}

fn check_digest(file: &str, bytes: &[u8], expected: Option<&String>) -> Result<(), PackageError> {
    let actual = sha256_hex(bytes);
    match expected {
        Some(e) if e.eq_ignore_ascii_case(&actual) => Ok(()),
        Some(e) => Err(PackageError::Digest {
            file: file.to_string(),
            expected: e.clone(),
            actual,
        }),
        None => Err(PackageError::MlModel(format!(
            "flavors.pixguard.sha256 has no entry for {file}"
        ))),
    }
}

/// Reads the training reference `file`, checks its digest and that it fits the feature spec.
fn load_reference(
    dir: &Path,
    file: &str,
    flavor: &PixguardFlavor,
    config: &ModelConfig,
) -> Result<super::training_reference::Reference, PackageError> {
    let path = inside(dir, "reference", file)?;
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    check_digest(file, &bytes, flavor.sha256.get("reference"))?;
    let reference: super::training_reference::Reference =
        serde_json::from_slice(&bytes).map_err(|e| PackageError::Reference {
            file: file.to_string(),
            reason: e.to_string(),
        })?;
    reference
        .check(&config.features)
        .map_err(|reason| PackageError::Reference {
            file: file.to_string(),
            reason,
        })?;
    Ok(reference)
}

impl ModelPackage {
    /// Loads and validates the package in `dir`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, PackageError> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.exists() {
            return Err(PackageError::Missing(missing_folder(&dir)));
        }
        let mlmodel_path = dir.join("MLmodel");
        let text = std::fs::read_to_string(&mlmodel_path).map_err(io_err(&mlmodel_path))?;
        let mlmodel: MlModel =
            serde_yaml_ng::from_str(&text).map_err(|e| PackageError::MlModel(e.to_string()))?;
        let flavor_value = mlmodel.flavors.get("pixguard").ok_or_else(|| {
            PackageError::NoFlavor(
                mlmodel
                    .flavors
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })?;
        let flavor: PixguardFlavor = serde_yaml_ng::from_value(flavor_value.clone())
            .map_err(|e| PackageError::MlModel(format!("flavors.pixguard: {e}")))?;

        let config_path = inside(&dir, "model_config", &flavor.model_config)?;
        let config_bytes = std::fs::read(&config_path).map_err(io_err(&config_path))?;
        check_digest(
            &flavor.model_config,
            &config_bytes,
            flavor.sha256.get("model_config"),
        )?;
        let config: ModelConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| PackageError::Config(e.to_string()))?;
        config.validate()?;

        let weights_path = inside(&dir, "weights", &flavor.weights)?;
        let file = File::open(&weights_path).map_err(io_err(&weights_path))?;
        // SAFETY: the package is read-only input; a concurrent writer would be caught by the digest
        // check below only if it finished first, which is the same risk any loader has.
        let weights = unsafe { Mmap::map(&file) }.map_err(io_err(&weights_path))?;
        check_digest(&flavor.weights, &weights, flavor.sha256.get("weights"))?;
        let reference = match &flavor.reference {
            None => None,
            Some(file) => Some(load_reference(&dir, file, &flavor, &config)?),
        };
        let package = ModelPackage {
            dir,
            mlmodel,
            flavor,
            config,
            reference,
            weights,
        };
        package.check_tensors()?;
        Ok(package)
    }

    /// The safetensors view of the weights.
    pub fn tensors(&self) -> Result<SafeTensors<'_>, PackageError> {
        SafeTensors::deserialize(&self.weights).map_err(|e| PackageError::Safetensors {
            file: self.flavor.weights.clone(),
            reason: e.to_string(),
        })
    }

    /// The path of the weights file.
    pub fn weights_path(&self) -> PathBuf {
        self.dir.join(&self.flavor.weights)
    }

    fn check_tensors(&self) -> Result<(), PackageError> {
        let tensors = self.tensors()?;
        let expected = self.config.expected_tensors();
        let names: HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        let mut present: Vec<String> = tensors.names().into_iter().map(str::to_string).collect();
        present.sort();
        if let Some(extra) = present.iter().find(|n| !names.contains(n.as_str())) {
            return Err(PackageError::UnexpectedTensor(extra.clone()));
        }
        for (name, shape) in expected {
            let view = tensors
                .tensor(&name)
                .map_err(|_| PackageError::MissingTensor(name.clone()))?;
            if view.dtype() != Dtype::F32 {
                return Err(PackageError::WrongDtype {
                    name,
                    dtype: view.dtype(),
                });
            }
            if view.shape() != shape.as_slice() {
                return Err(PackageError::WrongShape {
                    name,
                    expected: shape,
                    actual: view.shape().to_vec(),
                });
            }
            let bad = view
                .data()
                .chunks_exact(4)
                .position(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite());
            if let Some(index) = bad {
                return Err(PackageError::NonFinite { name, index });
            }
        }
        Ok(())
    }

    /// The f32 values of a tensor that `load` has checked.
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>, PackageError> {
        let tensors = self.tensors()?;
        let view = tensors
            .tensor(name)
            .map_err(|_| PackageError::MissingTensor(name.to_string()))?;
        Ok(view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}

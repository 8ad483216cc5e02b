//! The fraud model: the package on disk ([`package`]), the DCN-v2 ([`dcn`]) with its candle-nn
//! layers ([`reference`](mod@reference)), its fused CPU pass ([`fused`]) and its GPU pass (`cuda`,
//! with the `cuda` feature, behind [`Pipelined`], uploading blocks laid out by [`staging`]), and
//! the device choice ([`device`]), tied together by [`Scorer`].

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod dcn;
pub mod device;
pub mod explain;
pub mod fused;
pub mod package;
pub mod pipelined;
pub mod reference;
pub mod staging;
pub mod training_reference;

use candle_core::Device;
use serde::Serialize;

pub use dcn::{DcnModel, RunOptions, Runner};
pub use package::{Decision, ModelConfig, ModelPackage, PackageError, Thresholds};
pub use pipelined::Pipelined;

use crate::features::{FeatureBatch, FeatureExtractor};
use crate::transaction::Transaction;

/// One scored transaction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored {
    /// The payment's end-to-end id.
    pub end_to_end_id: String,
    /// Fraud probability.
    pub score: f32,
    /// What to do with it under the package's thresholds.
    pub decision: Decision,
    /// `name:version` of the model that scored it.
    pub model_version: String,
}

/// A loaded package ready to score: feature extractor, model and thresholds.
pub struct Scorer {
    /// The package it came from.
    pub package: ModelPackage,
    extractor: FeatureExtractor,
    model: DcnModel,
}

impl Scorer {
    /// Loads and validates the package in `dir` onto `device`.
    pub fn load(dir: impl AsRef<std::path::Path>, device: &Device) -> Result<Self, PackageError> {
        let package = ModelPackage::load(dir)?;
        let extractor = FeatureExtractor::new(package.config.features.clone())?;
        let model = DcnModel::from_package(&package, device)?;
        Ok(Scorer {
            package,
            extractor,
            model,
        })
    }

    /// The feature extractor of the package's spec.
    pub fn extractor(&self) -> &FeatureExtractor {
        &self.extractor
    }

    /// The model.
    pub fn model(&self) -> &DcnModel {
        &self.model
    }

    /// `name:version`.
    pub fn model_version(&self) -> String {
        format!(
            "{}:{}",
            self.package.config.name, self.package.config.version
        )
    }

    /// Scores a batch of transactions, reusing `batch` for the features.
    pub fn score(
        &self,
        txs: &[Transaction],
        batch: &mut FeatureBatch,
    ) -> candle_core::Result<Vec<Scored>> {
        self.extractor.extract_into(txs, batch);
        let mut scores = vec![0.0f32; txs.len()];
        self.model
            .score_host(&batch.numeric, &batch.categorical, txs.len(), &mut scores)?;
        let version = self.model_version();
        let thresholds = self.package.config.thresholds;
        Ok(txs
            .iter()
            .zip(scores)
            .map(|(tx, score)| Scored {
                end_to_end_id: tx.end_to_end_id.to_string(),
                score,
                decision: thresholds.decide(f64::from(score)),
                model_version: version.clone(),
            })
            .collect())
    }
}

/// Where one batch's time went, to see what bounds a batch size.
#[derive(Debug, Clone, Copy)]
pub struct BatchTimings {
    /// Host, until the upload is issued: id bounds check, the slot's previous upload (if still
    /// running), writing the pinned staging buffer.
    pub stage_us: f64,
    /// GPU: the host→device copy (CUDA events on the copy stream).
    pub upload_us: Option<f64>,
    /// GPU: the forward alone, from the upload's landing to the last kernel (CUDA events).
    pub forward_us: Option<f64>,
}

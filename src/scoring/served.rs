//! One served version of the model and what scoring with it answers: features extracted by its
//! own spec, scored by its own engine, decided under its thresholds, explained by its reason codes.

use std::sync::Arc;
use std::time::Instant;

use super::{Limits, ScoreError};
use crate::config::Config;
use crate::engine::{Engine, Lane};
use crate::features::{FeatureBatch, FeatureExtractor};
use crate::model::explain::Reasons;
use crate::model::{Decision, ModelPackage, Thresholds};
use crate::monitoring::Monitor;
use crate::protocol::oip::{Answers, Output, Signature};
use crate::protocol::v1::{ModelRef, ReasonOut};
use crate::protocol::{Payload, ProtocolError};
use crate::transaction::Transaction;

/// Scores of one request, with their decisions and where the time went.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// One probability per row, in request order.
    pub scores: Vec<f32>,
    /// The decision for each score.
    pub decisions: Vec<Decision>,
    /// Per row, its reasons when it got them (see [`Served::reason`]); empty when none did.
    pub reasons: Vec<Option<Reasons>>,
    /// Enqueue to dispatch of the request's last part, µs.
    pub queue_us: u64,
    /// Longest compute of the batches the request rode in, µs.
    pub compute_us: u64,
    /// When the rows joined the engine's queue (the engine's own reading).
    pub enqueued: Instant,
}

impl Scores {
    /// The OIP outputs' rows, with `reasons` from [`Served::reason_texts`].
    pub fn answers<'a>(&'a self, reasons: &'a [String]) -> Answers<'a> {
        Answers {
            scores: &self.scores,
            decisions: &self.decisions,
            reasons,
        }
    }
}

/// One version of the model as it serves: its feature spec, thresholds, signature, reason codes
/// and its own engine (batcher and replicas). Swapping versions swaps the whole of it, so a
/// request never mixes one version's features with another's weights or thresholds.
pub struct Served {
    extractor: FeatureExtractor,
    thresholds: Thresholds,
    model: ModelRef,
    signature: Signature,
    engine: Arc<Engine>,
    monitor: Option<Arc<Monitor>>,
    limits: Limits,
    /// Reason codes by group, when the package explains its scores and reasons are on.
    reason_codes: Option<Vec<String>>,
    /// What its decision-log records name it by.
    logged_as: Arc<super::decision_log::Version>,
    /// How the requests that took it ended (its Triton statistics).
    requests: Arc<super::metrics::VersionRequests>,
    /// Where it came from and how it was checked.
    pub origin: Origin,
}

/// Where a served version came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Origin {
    /// The slot it was loaded for: the champion, the canary or the shadow's challenger.
    pub role: crate::monitoring::Role,
    /// The configured source (`models:/pix-fraud@production`, a folder, `gs://…`).
    pub source: String,
    /// Where its files were (`mlflow-artifacts:/…`, `gs://…`, a folder).
    pub location: String,
    /// What changes exactly when the package changes (registry version or MLmodel digest).
    pub identity: String,
    /// SHA-256 of the weights.
    pub weights_sha256: String,
    /// Largest |score − golden score| of the self-test on the serving device.
    pub self_test_max_error: Option<f64>,
    /// When it started serving (RFC 3339).
    pub loaded_at: String,
}

impl Served {
    /// `package` served by a started `engine`, named `name:version` (the registry's version when
    /// it came from one), deciding under `thresholds` ([`Served::thresholds_in_force`]).
    pub fn new(
        package: &ModelPackage,
        version: String,
        engine: Arc<Engine>,
        monitor: Option<Arc<Monitor>>,
        thresholds: Thresholds,
        config: &Config,
        origin: Origin,
    ) -> anyhow::Result<Self> {
        let features = package.config.features.clone();
        let reason_codes = package
            .config
            .explanations
            .as_ref()
            .filter(|_| config.decisions.reasons)
            .map(|e| e.groups.iter().map(|g| g.code.clone()).collect());
        let model = ModelRef {
            name: package.config.name.clone(),
            version,
        };
        Ok(Served {
            logged_as: Arc::new(super::decision_log::Version::new(
                &model,
                origin.role,
                reason_codes.as_deref(),
                &features,
            )),
            reason_codes,
            requests: Arc::default(),
            signature: Signature::new(&features),
            extractor: FeatureExtractor::new(features)?,
            thresholds,
            model,
            engine,
            monitor,
            limits: Limits::from_config(config),
            origin,
        })
    }

    /// The package's thresholds, or `config.decisions`' where it sets them; refused unless
    /// 0 < hold < reject < 1.
    pub fn thresholds_in_force(
        package: &ModelPackage,
        config: &Config,
    ) -> anyhow::Result<Thresholds> {
        let mut thresholds = package.config.thresholds;
        if let Some(hold) = config.decisions.hold {
            thresholds.hold = hold;
        }
        if let Some(reject) = config.decisions.reject {
            thresholds.reject = reject;
        }
        anyhow::ensure!(
            0.0 < thresholds.hold && thresholds.hold < thresholds.reject && thresholds.reject < 1.0,
            "decisions: hold {} and reject {} must satisfy 0 < hold < reject < 1",
            thresholds.hold,
            thresholds.reject
        );
        Ok(thresholds)
    }

    /// The slot it serves in.
    pub fn role(&self) -> crate::monitoring::Role {
        self.origin.role
    }

    /// This version's monitor (feature and score drift), unless monitoring is off.
    pub fn monitor(&self) -> Option<&Arc<Monitor>> {
        self.monitor.as_ref()
    }

    /// The model every answer names.
    pub fn model(&self) -> &ModelRef {
        &self.model
    }

    /// What its decision-log records name it by.
    pub fn logged_as(&self) -> &Arc<super::decision_log::Version> {
        &self.logged_as
    }

    /// The model's Open Inference Protocol signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// How the requests that took this version ended.
    pub fn requests(&self) -> &Arc<super::metrics::VersionRequests> {
        &self.requests
    }

    /// The engine the rows go to.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The package's feature extractor.
    pub fn extractor(&self) -> &FeatureExtractor {
        &self.extractor
    }

    /// The thresholds decisions are made under.
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// Refuses a model name (or version) this server does not serve.
    pub fn check_model(&self, name: &str, version: Option<&str>) -> Result<(), ScoreError> {
        if name != self.model.name {
            return Err(ScoreError::UnknownModel(format!("unknown model '{name}'")));
        }
        match version {
            Some(v) if !v.is_empty() && v != self.model.version => {
                Err(ScoreError::UnknownModel(format!(
                    "unknown version '{v}' of model '{name}' (serving '{}')",
                    self.model.version
                )))
            }
            _ => Ok(()),
        }
    }

    /// Scores what a request carries; with `explain`, every row gets its reasons, not only the
    /// held and rejected ones.
    pub async fn score(
        &self,
        payload: Payload,
        deadline: Instant,
        explain: bool,
    ) -> Result<Scores, ScoreError> {
        match payload {
            Payload::Transactions(txs) => {
                self.score_transactions(&txs, deadline, explain, Lane::Interactive)
                    .await
            }
            Payload::Features(batch) => {
                self.score_features(batch, deadline, explain, Lane::Interactive)
                    .await
            }
        }
    }

    /// Scores validated transactions, extracting their features with the package's spec.
    pub async fn score_transactions(
        &self,
        txs: &[Transaction],
        deadline: Instant,
        explain: bool,
        lane: Lane,
    ) -> Result<Scores, ScoreError> {
        self.check_rows(txs.len())?;
        let features = self.extractor.extract_with(txs, crate::parallel::global());
        self.score_features(features, deadline, explain, lane).await
    }

    /// Scores feature rows (in the package's order, checked against its tables).
    pub async fn score_features(
        &self,
        batch: FeatureBatch,
        deadline: Instant,
        explain: bool,
        lane: Lane,
    ) -> Result<Scores, ScoreError> {
        self.check_rows(batch.rows)?;
        // Reasons from the HOLD threshold up (`Thresholds::decide`'s own comparison), or for all.
        let explain_from = self.reason_codes.as_ref().map(|_| {
            if explain {
                f64::NEG_INFINITY
            } else {
                self.thresholds.hold
            }
        });
        let scored = self
            .engine
            .score_in(lane, batch, deadline, explain_from)
            .await?;
        let decisions = scored
            .scores
            .iter()
            .map(|&s| self.thresholds.decide(f64::from(s)))
            .collect();
        Ok(Scores {
            scores: scored.scores,
            decisions,
            reasons: scored.reasons,
            queue_us: scored.queue_us,
            compute_us: scored.compute_us,
            enqueued: scored.enqueued,
        })
    }

    /// Row `row`'s reasons as (code, contribution), largest first; `None` when it got none.
    pub fn reason<'a>(&'a self, scores: &'a Scores, row: usize) -> Option<Vec<ReasonOut<'a>>> {
        let codes = self.reason_codes.as_ref()?;
        let reasons = scores.reasons.get(row)?.as_ref()?;
        Some(ReasonOut::named(codes, reasons))
    }

    /// Each row's reasons as JSON text (`[]` when it got none) for the OIP `reasons` output, when
    /// `outputs` selects it; no text is built otherwise.
    pub fn reason_texts(&self, scores: &Scores, outputs: &[(Output, bool)]) -> Vec<String> {
        if !outputs.iter().any(|(o, _)| *o == Output::Reasons)
            || scores.reasons.iter().all(Option::is_none)
        {
            // Rows past the end of the list render as `[]`: most answers need no allocation.
            return Vec::new();
        }
        (0..scores.scores.len())
            .map(|row| {
                let reasons = self.reason(scores, row).unwrap_or_default();
                // A list of plain structs of a string and a float always serialises.
                serde_json::to_string(&reasons).unwrap_or_else(|_| "[]".into())
            })
            .collect()
    }

    fn check_rows(&self, rows: usize) -> Result<(), ScoreError> {
        let limit = self.limits.max_rows_per_request;
        if rows > limit {
            return Err(ProtocolError::TooManyRows {
                rows,
                limit,
                field: None,
            }
            .into());
        }
        Ok(())
    }
}

impl Drop for Served {
    /// The last request on this version has finished: stop its engine (its queue is empty) and
    /// free its replicas, off the async runtime.
    fn drop(&mut self) {
        let engine = self.engine.clone();
        let _ = std::thread::Builder::new()
            .name("pixguard-retire".into())
            .spawn(move || engine.shutdown());
    }
}

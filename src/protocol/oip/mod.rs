//! The Open Inference Protocol (KServe v2): the model's signature, defined once and read by the
//! metadata, the model configuration and both `infer`s; the request and response of `infer`; and
//! the decoding of its input tensors, whatever their encoding, into what the scoring layer takes.
//!
//! Two input modes, both in the signature: the transaction's flattened fields as named inputs
//! (validated exactly like `/v1/score`), or precomputed `features` and `categories` tensors for
//! callers with their own feature store.

mod binary;
mod fields;
mod request;
mod response;
mod tensor;

pub use binary::{HEADER_LENGTH, encode_bytes, nan_literals_to_null, split_body};
pub use request::{InferRequest, RequestInput, RequestedOutput};
pub use response::{Answers, grpc_message, grpc_outputs, http_body};
pub use tensor::{Column, Datatype, Tensor, TensorData, call_tensors, decode};

use super::{Payload, ProtocolError};
use crate::features::{FeatureBatch, FeatureSpec};
use crate::parallel::Parallel;

/// The protocol extensions served, as `GET /v2` and gRPC ServerMetadata list them.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data", "model_configuration", "statistics"];

/// The platform name the metadata and the configuration report.
pub const PLATFORM: &str = "pixguard_candle_dcn_v2";

/// The server's name in the metadata.
pub const SERVER_NAME: &str = "pixguard";

/// The flattened transaction fields as inputs: name, datatype, optional.
/// Absent per row: "" for BYTES, NaN for FP64, -1 for the INT64 DICT counts (which makes the whole
/// `payee.dict_stats` group absent); an optional input may also be left out entirely.
pub const FIELD_INPUTS: &[(&str, Datatype, bool)] = &[
    ("end_to_end_id", Datatype::Bytes, false),
    ("accepted_at", Datatype::Bytes, false),
    ("amount_cents", Datatype::Int64, false),
    ("initiation_form", Datatype::Bytes, false),
    ("purpose", Datatype::Bytes, false),
    ("payer.ispb", Datatype::Bytes, false),
    ("payer.account_type", Datatype::Bytes, false),
    ("payer.person_type", Datatype::Bytes, false),
    ("payer.account_opened_at", Datatype::Bytes, false),
    ("payer.device.registered", Datatype::Bool, false),
    ("payer.device.first_seen_at", Datatype::Bytes, true),
    ("payee.ispb", Datatype::Bytes, false),
    ("payee.account_type", Datatype::Bytes, false),
    ("payee.person_type", Datatype::Bytes, false),
    ("payee.key_type", Datatype::Bytes, true),
    ("payee.key_created_at", Datatype::Bytes, true),
    ("payee.account_opened_at", Datatype::Bytes, true),
    ("payee.dict_stats.settlements_90d", Datatype::Int64, true),
    ("payee.dict_stats.fraud_markers_30d", Datatype::Int64, true),
    ("payee.dict_stats.infractions_open", Datatype::Int64, true),
    ("payee.dict_stats.mule_marker", Datatype::Bool, true),
    ("history.payee_first_time", Datatype::Bool, false),
    ("history.payer_tx_1h", Datatype::Int64, false),
    ("history.payer_amount_24h_cents", Datatype::Int64, false),
    ("history.amount_zscore_90d", Datatype::Fp64, true),
];

/// The precomputed numeric features input: FP32 `[N, numeric features]`.
pub const FEATURES: &str = "features";
/// The precomputed categorical indices input: INT64 `[N, categorical features]`.
pub const CATEGORIES: &str = "categories";

/// An output of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Fraud probability, FP32 `[N, 1]`.
    Score,
    /// ALLOW, HOLD or REJECT, BYTES `[N, 1]`.
    Decision,
    /// The row's reasons as JSON text (`[{"code", "contribution"}, …]`, `[]` for none), BYTES `[N, 1]`.
    Reasons,
}

impl Output {
    /// Every output, in the order an unselective request gets them.
    pub const ALL: [Output; 3] = [Output::Score, Output::Decision, Output::Reasons];

    /// The output's name.
    pub fn name(self) -> &'static str {
        match self {
            Output::Score => "score",
            Output::Decision => "decision",
            Output::Reasons => "reasons",
        }
    }

    /// Its element type.
    pub fn datatype(self) -> Datatype {
        match self {
            Output::Score => Datatype::Fp32,
            Output::Decision | Output::Reasons => Datatype::Bytes,
        }
    }

    /// The output called `name`, if the model has one.
    pub fn named(name: &str) -> Option<Output> {
        Output::ALL.into_iter().find(|o| o.name() == name)
    }
}

/// One tensor of the signature.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// Name.
    pub name: String,
    /// Element type.
    pub datatype: Datatype,
    /// Shape, batch dimension first (`-1`: variable).
    pub shape: Vec<i64>,
    /// Whether a request may leave it out (inputs only; the two modes are alternatives).
    pub optional: bool,
}

/// How a request in features mode (`features` and `categories`, column by column) built for a
/// version with feature spec `before` would fare with one whose spec is `ours`, when the columns
/// differ: refused for a width or a category index past a table, or scored on values it does not
/// mean (columns renamed or reordered, or encoded otherwise: a retrained version's
/// standardisation, a vocabulary's order). `None` when the specs are the same.
pub fn features_mode_change(ours: &FeatureSpec, before: &FeatureSpec) -> Option<String> {
    if ours == before {
        return None;
    }
    let (n, their_n) = (ours.numeric.len(), before.numeric.len());
    let (c, their_c) = (ours.categorical.len(), before.categorical.len());
    let same_widths = n == their_n && c == their_c;
    let same_tables = (ours.categorical.iter().map(|f| f.cardinality()))
        .eq(before.categorical.iter().map(|f| f.cardinality()));
    let same_names = (ours.numeric.iter().map(|f| &f.name))
        .eq(before.numeric.iter().map(|f| &f.name))
        && (ours.categorical.iter().map(|f| &f.name))
            .eq(before.categorical.iter().map(|f| &f.name));
    let recoded;
    let meets = match (same_widths, same_tables, same_names) {
        (false, _, _) => ": a request shaped for the other is refused",
        (true, false, _) => {
            ", a category table resized: some indices valid for the other are not for this one, \
             or mean another value"
        }
        (true, true, false) => {
            ", a column renamed or moved: the same tensors now mean other features"
        }
        (true, true, true) => {
            recoded = format!(
                ", {}: the same tensors now mean other values",
                ours.recoded_since(before)
            );
            &recoded
        }
    };
    Some(format!(
        "`features` {their_n} → {n} columns, `categories` {their_c} → {c} columns{meets}"
    ))
}

/// The served model's signature: both input modes and the outputs, built from its feature spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    /// Inputs of both modes: the transaction fields, then `features` and `categories`.
    pub inputs: Vec<TensorSpec>,
    /// Outputs.
    pub outputs: Vec<TensorSpec>,
    /// Names of the numeric features, in the order of the `features` columns.
    pub numeric_features: Vec<String>,
    /// Names of the categorical features, in the order of the `categories` columns.
    pub categorical_features: Vec<String>,
    /// Embedding table sizes, one per categorical feature.
    pub cardinalities: Vec<usize>,
}

impl Signature {
    /// The signature of a model with feature spec `spec`.
    pub fn new(spec: &FeatureSpec) -> Signature {
        let mut inputs: Vec<TensorSpec> = FIELD_INPUTS
            .iter()
            .map(|&(name, datatype, optional)| TensorSpec {
                name: name.into(),
                datatype,
                shape: vec![-1, 1],
                optional,
            })
            .collect();
        for (name, datatype, width) in [
            (FEATURES, Datatype::Fp32, spec.numeric.len()),
            (CATEGORIES, Datatype::Int64, spec.categorical.len()),
        ] {
            inputs.push(TensorSpec {
                name: name.into(),
                datatype,
                shape: vec![-1, width as i64],
                optional: true,
            });
        }
        let outputs = Output::ALL
            .iter()
            .map(|o| TensorSpec {
                name: o.name().into(),
                datatype: o.datatype(),
                shape: vec![-1, 1],
                optional: false,
            })
            .collect();
        Signature {
            inputs,
            outputs,
            numeric_features: spec.numeric.iter().map(|f| f.name.clone()).collect(),
            categorical_features: spec.categorical.iter().map(|f| f.name.clone()).collect(),
            cardinalities: spec.categorical.iter().map(|f| f.cardinality()).collect(),
        }
    }

    /// Checks the requested outputs (name, binary) before any work is done; none requested: all.
    pub fn select_outputs<'a>(
        &self,
        requested: Option<impl Iterator<Item = (&'a str, bool)>>,
        default_binary: bool,
    ) -> Result<Vec<(Output, bool)>, ProtocolError> {
        let Some(requested) = requested else {
            return Ok(Output::ALL.map(|o| (o, default_binary)).to_vec());
        };
        requested
            .enumerate()
            .map(|(i, (name, binary))| {
                Output::named(name).map(|o| (o, binary)).ok_or_else(|| {
                    ProtocolError::invalid(
                        format!("outputs[{i}]"),
                        format!(
                            "unknown output '{name}' (the model has 'score', 'decision' and \
                             'reasons')"
                        ),
                    )
                })
            })
            .collect()
    }

    /// Decodes a request's inputs into the rows it carries, refusing more than `limit` rows before
    /// decoding any element; on the caller's thread.
    pub fn decode_inputs(
        &self,
        tensors: &[Tensor<'_>],
        limit: usize,
    ) -> Result<Payload, ProtocolError> {
        self.decode_inputs_with(tensors, limit, &Parallel::serial())
    }

    /// [`Signature::decode_inputs`] with a large request's fields decoded and validated on
    /// `parallel`'s threads: the same rows and the same errors.
    pub fn decode_inputs_with(
        &self,
        tensors: &[Tensor<'_>],
        limit: usize,
        parallel: &Parallel,
    ) -> Result<Payload, ProtocolError> {
        for t in tensors {
            if let Some(&rows) = t.shape.first()
                && rows > limit as i64
            {
                return Err(ProtocolError::TooManyRows {
                    rows: usize::try_from(rows).unwrap_or(usize::MAX),
                    limit,
                    field: None,
                });
            }
        }
        if tensors
            .iter()
            .any(|t| t.name == FEATURES || t.name == CATEGORIES)
        {
            return self.precomputed(tensors).map(Payload::Features);
        }
        fields::transactions(tensors, parallel).map(Payload::Transactions)
    }

    fn precomputed(&self, tensors: &[Tensor<'_>]) -> Result<FeatureBatch, ProtocolError> {
        let (nn, nc) = (self.numeric_features.len(), self.cardinalities.len());
        let mut numeric: Option<Vec<f32>> = None;
        let mut categorical: Option<Vec<u32>> = None;
        for t in tensors {
            let (width, datatype) = match t.name {
                FEATURES => (nn, Datatype::Fp32),
                CATEGORIES => (nc, Datatype::Int64),
                other => {
                    return Err(ProtocolError::invalid(
                        other,
                        format!(
                            "unknown input '{other}': with precomputed features only \
                             '{FEATURES}' and '{CATEGORIES}' are taken"
                        ),
                    ));
                }
            };
            if t.shape.len() != 2 || t.shape[1] != width as i64 {
                return Err(ProtocolError::invalid(
                    t.name,
                    format!("shape {:?} must be [N, {width}]", t.shape),
                ));
            }
            match decode(t, datatype)? {
                Column::Float(v) => {
                    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                        return Err(ProtocolError::invalid(
                            FEATURES,
                            format!("element {i} is not finite"),
                        ));
                    }
                    numeric = Some(v.into_iter().map(|x| x as f32).collect());
                }
                Column::Int(v) => {
                    let mut out = Vec::with_capacity(v.len());
                    for (i, x) in v.into_iter().enumerate() {
                        let card = self.cardinalities[i % nc];
                        if x < 0 || x as u64 >= card as u64 {
                            return Err(ProtocolError::invalid(
                                CATEGORIES,
                                format!(
                                    "element {i} is {x}, outside 0..{card} for feature '{}'",
                                    self.categorical_features[i % nc]
                                ),
                            ));
                        }
                        out.push(x as u32);
                    }
                    categorical = Some(out);
                }
                _ => {
                    return Err(ProtocolError::invalid(t.name, "unexpected element type"));
                }
            }
        }
        let numeric = numeric.ok_or_else(|| {
            ProtocolError::invalid(FEATURES, "missing input (required with categories)")
        })?;
        let categorical = categorical.ok_or_else(|| {
            ProtocolError::invalid(CATEGORIES, "missing input (required with features)")
        })?;
        let rows = numeric.len() / nn.max(1);
        if categorical.len() / nc.max(1) != rows {
            return Err(ProtocolError::invalid(
                CATEGORIES,
                format!(
                    "has {} rows, '{FEATURES}' has {rows}",
                    categorical.len() / nc.max(1)
                ),
            ));
        }
        Ok(FeatureBatch {
            rows,
            n_numeric: nn,
            n_categorical: nc,
            numeric,
            categorical,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{FIELD_INPUTS, features_mode_change};
    use crate::transaction::CSV_COLUMNS;

    #[test]
    fn field_inputs_are_the_flattened_columns() {
        let names: Vec<&str> = FIELD_INPUTS.iter().map(|f| f.0).collect();
        assert_eq!(names, CSV_COLUMNS);
    }

    #[test]
    fn a_features_mode_change_says_what_a_request_built_for_the_other_meets() {
        let spec = crate::features::default_spec();
        assert_eq!(features_mode_change(&spec, &spec.clone()), None);
        let (n, c) = (spec.numeric.len(), spec.categorical.len());

        let mut wider = spec.clone();
        let mut again = wider.numeric[0].clone();
        again.name = "amount_log_again".into();
        wider.numeric.push(again);
        let why = features_mode_change(&wider, &spec).unwrap();
        assert_eq!(
            why,
            format!(
                "`features` {n} → {} columns, `categories` {c} → {c} columns: a request shaped for the other is refused",
                n + 1
            )
        );

        let mut moved = spec.clone();
        moved.numeric.swap(0, 1);
        let why = features_mode_change(&moved, &spec).unwrap();
        assert!(
            why.ends_with("a column renamed or moved: the same tensors now mean other features"),
            "{why}"
        );

        let mut resized = spec.clone();
        resized.categorical[0].oov_index += 1;
        let why = features_mode_change(&resized, &spec).unwrap();
        assert!(why.contains("a category table resized"), "{why}");

        // A retrained version: the same columns, standardised with new statistics, and a
        // vocabulary of the same size in another order (the indices mean other tokens).
        let mut retrained = spec.clone();
        retrained.numeric[0].mean += 0.5;
        retrained.numeric[0].std *= 2.0;
        let vocabulary = &mut retrained.categorical[1].vocabulary;
        vocabulary.swap(0, 1);
        let why = features_mode_change(&retrained, &spec).unwrap();
        assert_eq!(
            why,
            format!(
                "`features` {n} → {n} columns, `categories` {c} → {c} columns, 2 columns encoded \
                 otherwise (`{}` (mean, std), `{}` (vocabulary)): the same tensors now mean other \
                 values",
                spec.numeric[0].name, spec.categorical[1].name
            )
        );
        let mut all = spec.clone();
        for f in &mut all.numeric {
            f.mean += 1.0;
        }
        let why = features_mode_change(&all, &spec).unwrap();
        assert!(
            why.contains(&format!(
                "{n} columns encoded otherwise (`{}` (mean), ",
                spec.numeric[0].name
            )) && why.contains(&format!(" and {} more)", n - 4)),
            "{why}"
        );
    }
}

#[cfg(test)]
#[path = "parallel_tests.rs"]
mod parallel_tests;

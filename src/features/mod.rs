//! The feature pipeline: a [`FeatureSpec`] from the model package, compiled into a
//! [`FeatureExtractor`] that fills contiguous numeric and categorical blocks for a batch.

mod extract;
mod fit;
mod spec;

pub use extract::{FeatureBatch, FeatureExtractor, categorical_token};
pub use fit::{FitOptions, default_spec, fit};
pub use spec::{
    CategoricalFeature, CategoricalSource, FeatureSpec, NO_KEY_TOKEN, NumericFeature,
    NumericSource, SpecError, Transform,
};

//! Triton's model configuration (`GET /v2/models/{m}/config`, gRPC `ModelConfig`): what Triton
//! clients such as perf_analyzer read to learn the batch dimension and which inputs are optional.

use crate::model::device::DeviceKind;
use crate::protocol::oip::{Datatype, PLATFORM, TensorSpec};
use crate::scoring::Served;
use crate::server::AppState;

/// One input or output as the configuration describes it (dims exclude the batch dimension).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigTensor {
    /// Tensor name.
    pub name: String,
    /// Element type: Triton's `TYPE_FP32`, `TYPE_STRING`, … and its model_config.proto value.
    pub datatype: Datatype,
    /// Shape without the batch dimension.
    pub dims: Vec<i64>,
    /// Whether a request may leave it out.
    pub optional: bool,
}

/// The served model's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Model name.
    pub name: String,
    /// Most rows one request may carry.
    pub max_batch_size: i64,
    /// Longest a batch waits to fill while every worker is busy, µs.
    pub max_queue_delay_us: u64,
    /// Worker replicas.
    pub instances: i64,
    /// Where they run: Triton's instance kind, `KIND_CPU` or `KIND_GPU`.
    pub instance_kind: &'static str,
    /// Inputs of both modes.
    pub inputs: Vec<ConfigTensor>,
    /// Outputs.
    pub outputs: Vec<ConfigTensor>,
    /// Feature names in the order of the precomputed inputs' columns.
    pub parameters: Vec<(&'static str, String)>,
}

/// The configuration of the model `state` serves. Every input is optional because the two input
/// modes are alternatives; which inputs a request must carry is checked at inference.
pub fn model_config(state: &AppState, served: &Served) -> ModelConfig {
    let scoring = &state.scoring;
    let tensor = |t: &TensorSpec, optional: bool| ConfigTensor {
        name: t.name.clone(),
        datatype: t.datatype,
        dims: t.shape[1..].to_vec(),
        optional,
    };
    let signature = served.signature();
    ModelConfig {
        name: served.model().name.clone(),
        max_batch_size: scoring.limits().max_rows_per_request as i64,
        max_queue_delay_us: state.config.engine.max_queue_delay_us,
        instances: state.config.engine.workers as i64,
        instance_kind: match served.engine().device() {
            DeviceKind::Cuda => "KIND_GPU",
            DeviceKind::Cpu => "KIND_CPU",
        },
        inputs: signature.inputs.iter().map(|t| tensor(t, true)).collect(),
        outputs: signature.outputs.iter().map(|t| tensor(t, false)).collect(),
        parameters: vec![
            ("numeric_features", signature.numeric_features.join(",")),
            (
                "categorical_features",
                signature.categorical_features.join(","),
            ),
        ],
    }
}

impl ModelConfig {
    /// The JSON form Triton serves (protobuf field names).
    pub fn to_json(&self) -> serde_json::Value {
        let tensor = |t: &ConfigTensor, input: bool| {
            let mut v = serde_json::json!({
                "name": t.name,
                "data_type": t.datatype.triton_name(),
                "dims": t.dims,
            });
            if input {
                v["format"] = "FORMAT_NONE".into();
                v["optional"] = t.optional.into();
            }
            v
        };
        serde_json::json!({
            "name": self.name,
            "platform": PLATFORM,
            "backend": "pixguard",
            "max_batch_size": self.max_batch_size,
            "input": self.inputs.iter().map(|t| tensor(t, true)).collect::<Vec<_>>(),
            "output": self.outputs.iter().map(|t| tensor(t, false)).collect::<Vec<_>>(),
            "dynamic_batching": {
                "max_queue_delay_microseconds": self.max_queue_delay_us,
            },
            "parameters": self
                .parameters
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::json!({"string_value": v})))
                .collect::<serde_json::Map<_, _>>(),
            "instance_group": [{"name": format!("{}_0", self.name), "kind": self.instance_kind, "count": self.instances}],
        })
    }
}

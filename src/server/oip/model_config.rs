//! Triton's model configuration (`GET /v2/models/{m}/config`, gRPC `ModelConfig`): what Triton
//! clients such as perf_analyzer read to learn the batch dimension and which inputs are optional.

use super::{CATEGORIES, FEATURES, FIELD_INPUTS, PLATFORM};
use crate::server::AppState;

/// One input or output as the configuration describes it (dims exclude the batch dimension).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigTensor {
    /// Tensor name.
    pub name: String,
    /// Triton's `DataType` enum name (`TYPE_FP32`, `TYPE_STRING`, …).
    pub data_type: &'static str,
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
}

/// Triton's `DataType` name for an OIP datatype.
pub fn triton_type(datatype: &str) -> &'static str {
    match datatype {
        "BOOL" => "TYPE_BOOL",
        "INT64" => "TYPE_INT64",
        "FP32" => "TYPE_FP32",
        "FP64" => "TYPE_FP64",
        "BYTES" => "TYPE_STRING",
        _ => "TYPE_INVALID",
    }
}

/// Triton's `DataType` enum value (model_config.proto) for a name from [`triton_type`].
pub fn triton_type_value(name: &str) -> i32 {
    match name {
        "TYPE_BOOL" => 1,
        "TYPE_INT64" => 9,
        "TYPE_FP32" => 11,
        "TYPE_FP64" => 12,
        "TYPE_STRING" => 13,
        _ => 0,
    }
}

/// The configuration of the model `state` serves. Every input is optional because the two input
/// modes are alternatives; which inputs a request must carry is checked at inference.
pub fn model_config(state: &AppState) -> ModelConfig {
    let scalar = |name: &str, datatype: &str| ConfigTensor {
        name: name.into(),
        data_type: triton_type(datatype),
        dims: vec![1],
        optional: true,
    };
    let mut inputs: Vec<ConfigTensor> = FIELD_INPUTS
        .iter()
        .map(|(name, datatype, _)| scalar(name, datatype.as_str()))
        .collect();
    for (name, datatype, width) in [
        (FEATURES, "FP32", state.extractor.n_numeric()),
        (CATEGORIES, "INT64", state.extractor.n_categorical()),
    ] {
        inputs.push(ConfigTensor {
            name: name.into(),
            data_type: triton_type(datatype),
            dims: vec![width as i64],
            optional: true,
        });
    }
    let output = |name: &str, datatype: &str| ConfigTensor {
        optional: false,
        ..scalar(name, datatype)
    };
    ModelConfig {
        name: state.model.name.clone(),
        max_batch_size: state.config.server.max_transactions_per_request as i64,
        max_queue_delay_us: state.config.engine.max_queue_delay_us,
        instances: state.config.engine.workers as i64,
        instance_kind: if state
            .metrics
            .device
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_str()
            == "cuda"
        {
            "KIND_GPU"
        } else {
            "KIND_CPU"
        },
        inputs,
        outputs: vec![output("score", "FP32"), output("decision", "BYTES")],
    }
}

impl ModelConfig {
    /// The JSON form Triton serves (protobuf field names).
    pub fn to_json(&self) -> serde_json::Value {
        let tensor = |t: &ConfigTensor, input: bool| {
            let mut v = serde_json::json!({
                "name": t.name,
                "data_type": t.data_type,
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
            "instance_group": [{"name": format!("{}_0", self.name), "kind": self.instance_kind, "count": self.instances}],
        })
    }
}

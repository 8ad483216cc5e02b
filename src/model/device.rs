//! Picks the device a model runs on from `engine.device` (`auto`, `cuda`, `cpu`).
//!
//! Probing never panics: cudarc panics when it cannot use the driver, so the `cuda` build asks the
//! driver through `cuda::probe` first (which also catches panics) and only then lets
//! Candle create its device.

use candle_core::Device;

use crate::config::DeviceChoice;

/// The kind of device a model computes on: the label of `pixguard_device_info{device}` and
/// Triton's instance kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// The host CPU.
    Cpu,
    /// An NVIDIA GPU.
    Cuda,
}

impl DeviceKind {
    /// The kind of a Candle device.
    pub fn of(device: &Device) -> DeviceKind {
        if device.is_cpu() {
            DeviceKind::Cpu
        } else {
            DeviceKind::Cuda
        }
    }

    /// `cpu` or `cuda`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }
}

/// The device chosen, and why.
pub struct Selected {
    /// Where the model runs.
    pub device: Device,
    /// Human-readable description, e.g. `cuda:0 (NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB)`.
    pub description: String,
    /// Set when `auto` wanted CUDA and fell back to the CPU: the reason.
    pub fallback: Option<String>,
}

impl Selected {
    fn cpu(fallback: Option<String>) -> Self {
        Selected {
            device: Device::Cpu,
            description: "cpu".into(),
            fallback,
        }
    }
}

/// Resolves `choice`; `cuda` without a usable GPU is an error, `auto` falls back to the CPU.
pub fn select(choice: DeviceChoice) -> Result<Selected, String> {
    match choice {
        DeviceChoice::Cpu => Ok(Selected::cpu(None)),
        DeviceChoice::Cuda => cuda(0),
        DeviceChoice::Auto => Ok(cuda(0).unwrap_or_else(|reason| Selected::cpu(Some(reason)))),
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> Result<Selected, String> {
    let info = super::cuda::probe(ordinal).map_err(|e| e.to_string())?;
    let device = std::panic::catch_unwind(|| Device::new_cuda(ordinal))
        .map_err(|_| format!("creating the Candle device on cuda:{ordinal} panicked"))?
        .map_err(|e| format!("creating the Candle device on cuda:{ordinal}: {e}"))?;
    Ok(Selected {
        device,
        description: format!(
            "cuda:{ordinal} ({}, sm_{}{}, {:.1} GiB)",
            info.name,
            info.compute_capability.0,
            info.compute_capability.1,
            info.total_memory as f64 / (1u64 << 30) as f64
        ),
        fallback: None,
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda(_ordinal: usize) -> Result<Selected, String> {
    Err("this binary was built without the `cuda` feature (kernels/build-cuda.sh builds it)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_available() {
        let s = select(DeviceChoice::Cpu).unwrap();
        assert!(s.device.is_cpu());
        assert!(s.fallback.is_none());
    }

    #[test]
    fn auto_falls_back_with_a_reason_when_cuda_is_unusable() {
        let s = select(DeviceChoice::Auto).unwrap();
        if s.device.is_cpu() {
            let reason = s
                .fallback
                .expect("a CPU pick under auto carries the reason");
            assert!(!reason.is_empty());
            assert!(
                select(DeviceChoice::Cuda).is_err(),
                "cuda must refuse what auto fell back from"
            );
        } else {
            assert!(s.description.starts_with("cuda:0 ("), "{}", s.description);
        }
    }
}

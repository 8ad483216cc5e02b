//! The DCN-v2 fraud model, the reimplementation of `models/train/model.py`: the candle-nn layers
//! ([`super::reference`]) and the runner that scores batches on the model's device, chosen once at
//! load — the fused CPU pass ([`super::fused`]), pixguard's CUDA kernels (`super::cuda`), or the
//! reference layers themselves on any other device.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::explain::Occlusion;
use super::fused::{FusedDcn, FusedDcnOp};
use super::package::{ModelConfig, ModelPackage, PackageError};
use super::reference::Reference;

/// How the runner is set up beyond its device.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// On a GPU, replay the forward as CUDA graphs per batch-size bucket (`engine.cuda_graphs`).
    pub cuda_graphs: bool,
}

/// How batches are scored, by device.
pub enum Runner {
    /// The reference layers on a device pixguard has no runner of its own for.
    Reference,
    /// One fused pass over host buffers, on the CPU.
    Fused(FusedDcn),
    /// Weights resident on a GPU with a two-slot pipeline; one worker thread owns it.
    #[cfg(feature = "cuda")]
    Cuda(Box<std::sync::Mutex<super::cuda::CudaDcn>>),
}

/// The network, its runner, and how its scores are explained.
pub struct DcnModel {
    reference: Reference,
    runner: Runner,
    device: Device,
    occlusion: Option<Occlusion>,
}

/// Rows the GPU buffers are sized for at load; they grow for larger batches.
#[cfg(feature = "cuda")]
const GPU_INITIAL_ROWS: usize = 1024;

impl DcnModel {
    /// Builds the model from a var builder laid out as `model.py` names its tensors, with the
    /// runner for the var builder's device.
    pub fn load(vb: VarBuilder, config: &ModelConfig) -> Result<Self> {
        Self::load_with(vb, config, RunOptions::default())
    }

    /// [`Self::load`], with the runner set up as `options` say.
    pub fn load_with(vb: VarBuilder, config: &ModelConfig, options: RunOptions) -> Result<Self> {
        #[cfg(not(feature = "cuda"))]
        let _ = options;
        let device = vb.device().clone();
        let reference = Reference::load(vb, config)?;
        let runner = match device.location() {
            candle_core::DeviceLocation::Cpu => Runner::Fused(reference.to_fused()?),
            #[cfg(feature = "cuda")]
            candle_core::DeviceLocation::Cuda { gpu_id } => {
                let gpu = super::cuda::CudaDcn::with_options(
                    gpu_id,
                    &reference.to_fused()?,
                    GPU_INITIAL_ROWS,
                    super::cuda::GpuOptions {
                        graphs: options.cuda_graphs,
                    },
                )
                .map_err(|e| candle_core::Error::msg(e.to_string()))?;
                Runner::Cuda(Box::new(std::sync::Mutex::new(gpu)))
            }
            _ => Runner::Reference,
        };
        let occlusion = match &config.explanations {
            Some(spec) => Some(
                spec.compile(&config.features)
                    .map_err(|e| candle_core::Error::msg(e.to_string()))?,
            ),
            None => None,
        };
        Ok(DcnModel {
            reference,
            runner,
            device,
            occlusion,
        })
    }

    /// Loads a validated package's weights, memory-mapped, onto `device`.
    pub fn from_package(
        package: &ModelPackage,
        device: &Device,
    ) -> std::result::Result<Self, PackageError> {
        Self::from_package_with(package, device, RunOptions::default())
    }

    /// [`Self::from_package`], with the runner set up as `options` say.
    pub fn from_package_with(
        package: &ModelPackage,
        device: &Device,
        options: RunOptions,
    ) -> std::result::Result<Self, PackageError> {
        let file = package.weights_path();
        let err = |e: candle_core::Error| PackageError::Safetensors {
            file: file.display().to_string(),
            reason: e.to_string(),
        };
        // SAFETY: the file was digest-checked by `ModelPackage::load` and is not written while mapped.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&file], DType::F32, device) }
            .map_err(err)?;
        Self::load_with(vb, &package.config, options).map_err(err)
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// How reasons are computed, when the package describes it.
    pub fn occlusion(&self) -> Option<&Occlusion> {
        self.occlusion.as_ref()
    }

    /// Whether the forward runs as CUDA graphs (asked for, on a GPU, and captured).
    pub fn cuda_graphs_on(&self) -> bool {
        match &self.runner {
            #[cfg(feature = "cuda")]
            Runner::Cuda(gpu) => gpu.lock().unwrap_or_else(|p| p.into_inner()).graphs_on(),
            _ => false,
        }
    }

    /// How this model scores batches.
    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// Fraud probabilities `[B]` for numeric `[B, n]` f32 and categorical `[B, c]` u32 features:
    /// on the CPU one fused custom op, elsewhere the reference layers.
    pub fn forward(&self, numeric: &Tensor, categorical: &Tensor) -> Result<Tensor> {
        match &self.runner {
            Runner::Fused(fused) => numeric.apply_op2_no_bwd(categorical, &FusedDcnOp(fused)),
            _ => self.reference.forward(numeric, categorical),
        }
    }

    /// The same network as plain candle-nn layers, whatever the runner: the cross-check of the
    /// fused op and of the GPU kernels.
    pub fn forward_unfused(&self, numeric: &Tensor, categorical: &Tensor) -> Result<Tensor> {
        self.reference.forward(numeric, categorical)
    }

    /// The logits of host feature blocks (before the sigmoid), for reason codes. On a GPU they are
    /// recovered from the kernels' f32 probabilities, so there a score within ~1e-7 of 0 or 1 loses
    /// the contributions below that resolution.
    pub fn logits_host(
        &self,
        numeric: &[f32],
        categorical: &[u32],
        rows: usize,
        out: &mut [f32],
    ) -> Result<()> {
        self.host(numeric, categorical, rows, out, true)
    }

    fn tensors(
        &self,
        numeric: &[f32],
        categorical: &[u32],
        rows: usize,
    ) -> Result<(Tensor, Tensor)> {
        let n = Tensor::from_slice(numeric, (rows, numeric.len() / rows.max(1)), &self.device)?;
        let c = Tensor::from_slice(
            categorical,
            (rows, categorical.len() / rows.max(1)),
            &self.device,
        )?;
        Ok((n, c))
    }

    /// Scores host feature blocks directly (no tensors): the serving hot path.
    pub fn score_host(
        &self,
        numeric: &[f32],
        categorical: &[u32],
        rows: usize,
        out: &mut [f32],
    ) -> Result<()> {
        self.host(numeric, categorical, rows, out, false)
    }

    /// Probabilities, or with `logits` the logits, of host feature blocks on the runner.
    fn host(
        &self,
        numeric: &[f32],
        categorical: &[u32],
        rows: usize,
        out: &mut [f32],
        logits: bool,
    ) -> Result<()> {
        match &self.runner {
            Runner::Fused(fused) if logits => fused.run_logits(numeric, categorical, rows, out),
            Runner::Fused(fused) => fused.run(numeric, categorical, rows, out),
            #[cfg(feature = "cuda")]
            Runner::Cuda(gpu) => {
                // A poisoned lock means a batch panicked mid-way; the next submit starts clean.
                let mut gpu = gpu.lock().unwrap_or_else(|p| p.into_inner());
                if logits {
                    super::Pipelined::logits(&mut *gpu, numeric, categorical, rows, out)
                } else {
                    gpu.run(numeric, categorical, rows, out)
                        .map_err(|e| e.to_string())
                }
            }
            Runner::Reference => {
                let (n, c) = self.tensors(numeric, categorical, rows)?;
                let t = if logits {
                    self.reference.logits(&n, &c)?
                } else {
                    self.reference.forward(&n, &c)?
                };
                out.copy_from_slice(&t.to_vec1::<f32>()?);
                return Ok(());
            }
        }
        .map_err(candle_core::Error::msg)
    }
}

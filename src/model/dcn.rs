//! The DCN-v2 fraud model in Candle, the reimplementation of `models/train/model.py`.
//!
//! `forward` takes the feature blocks the extractor produces (numeric f32 `[B, n]`, categorical u32
//! `[B, c]`) and returns fraud probabilities `[B]`. On the CPU it runs as one fused custom op
//! ([`super::fused`]); on a GPU `score_host` runs pixguard's fused kernels (`super::cuda`), while
//! `forward`/`forward_unfused` stay plain candle-nn layers — the reference the kernels are checked
//! against.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};

use super::fused::{DenseT, EmbeddingTable, FusedDcn, FusedDcnOp};
use super::package::{ModelConfig, ModelPackage, PackageError};

/// The network: embeddings, cross layers, MLP, head.
pub struct DcnModel {
    embeddings: Vec<Embedding>,
    cross: Vec<Linear>,
    mlp: Vec<Linear>,
    head: Linear,
    device: Device,
    fused: Option<FusedDcn>,
    #[cfg(feature = "cuda")]
    gpu: Option<std::sync::Mutex<super::cuda::CudaDcn>>,
}

/// Rows the GPU buffers are sized for at load; they grow for larger batches.
#[cfg(feature = "cuda")]
const GPU_INITIAL_ROWS: usize = 1024;

impl DcnModel {
    /// Builds the model from a var builder laid out as `model.py` names its tensors.
    pub fn load(vb: VarBuilder, config: &ModelConfig) -> Result<Self> {
        let d0 = config.input_width();
        let embeddings = config
            .features
            .categorical
            .iter()
            .zip(&config.architecture.embedding_dims)
            .map(|(f, &dim)| {
                candle_nn::embedding(f.cardinality(), dim, vb.pp("embeddings").pp(&f.name))
            })
            .collect::<Result<Vec<_>>>()?;
        let cross = (0..config.architecture.cross_layers)
            .map(|l| candle_nn::linear(d0, d0, vb.pp("cross").pp(l)))
            .collect::<Result<Vec<_>>>()?;
        let mut prev = d0;
        let mut mlp = Vec::new();
        for (j, &width) in config.architecture.mlp.iter().enumerate() {
            mlp.push(candle_nn::linear(prev, width, vb.pp("mlp").pp(j))?);
            prev = width;
        }
        let head = candle_nn::linear(prev, 1, vb.pp("head"))?;
        let device = vb.device().clone();
        let mut model = DcnModel {
            embeddings,
            cross,
            mlp,
            head,
            device,
            fused: None,
            #[cfg(feature = "cuda")]
            gpu: None,
        };
        if model.device.is_cpu() {
            model.fused = Some(model.build_fused(config.features.numeric.len())?);
        }
        #[cfg(feature = "cuda")]
        if let candle_core::DeviceLocation::Cuda { gpu_id } = model.device.location() {
            let host = model.build_fused(config.features.numeric.len())?;
            let gpu = super::cuda::CudaDcn::new(gpu_id, &host, GPU_INITIAL_ROWS)
                .map_err(|e| candle_core::Error::msg(e.to_string()))?;
            model.gpu = Some(std::sync::Mutex::new(gpu));
        }
        Ok(model)
    }

    /// Loads a validated package's weights, memory-mapped, onto `device`.
    pub fn from_package(
        package: &ModelPackage,
        device: &Device,
    ) -> std::result::Result<Self, PackageError> {
        let file = package.weights_path();
        let err = |e: candle_core::Error| PackageError::Safetensors {
            file: file.display().to_string(),
            reason: e.to_string(),
        };
        // SAFETY: the file was digest-checked by `ModelPackage::load` and is not written while mapped.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&file], DType::F32, device) }
            .map_err(err)?;
        Self::load(vb, &package.config).map_err(err)
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The GPU pipeline, when the model was loaded onto a CUDA device.
    #[cfg(feature = "cuda")]
    pub fn gpu(&self) -> Option<&std::sync::Mutex<super::cuda::CudaDcn>> {
        self.gpu.as_ref()
    }

    fn build_fused(&self, n_numeric: usize) -> Result<FusedDcn> {
        let dense = |l: &Linear| -> Result<DenseT> {
            let (output, input) = l.weight().dims2()?;
            let weight = l.weight().flatten_all()?.to_vec1::<f32>()?;
            let bias = match l.bias() {
                Some(b) => b.to_vec1::<f32>()?,
                None => vec![0.0; output],
            };
            Ok(DenseT::from_torch(&weight, bias, input, output))
        };
        let embeddings = self
            .embeddings
            .iter()
            .map(|e| {
                let (cardinality, dim) = e.embeddings().dims2()?;
                Ok(EmbeddingTable {
                    weight: e.embeddings().flatten_all()?.to_vec1::<f32>()?,
                    cardinality,
                    dim,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let head = dense(&self.head)?;
        Ok(FusedDcn::new(
            n_numeric,
            embeddings,
            self.cross.iter().map(dense).collect::<Result<_>>()?,
            self.mlp.iter().map(dense).collect::<Result<_>>()?,
            head.weight_t,
            head.bias[0],
        ))
    }

    /// Fraud probabilities `[B]` for numeric `[B, n]` f32 and categorical `[B, c]` u32 features.
    pub fn forward(&self, numeric: &Tensor, categorical: &Tensor) -> Result<Tensor> {
        match &self.fused {
            Some(fused) => numeric.apply_op2_no_bwd(categorical, &FusedDcnOp(fused)),
            None => self.forward_unfused(numeric, categorical),
        }
    }

    /// The same network as plain candle-nn layers (the GPU path, and a cross-check of the fused op).
    pub fn forward_unfused(&self, numeric: &Tensor, categorical: &Tensor) -> Result<Tensor> {
        let mut parts = vec![numeric.clone()];
        for (i, embedding) in self.embeddings.iter().enumerate() {
            // Contiguous: Candle 0.11's CUDA index_select reads the ids as if they were (it applies
            // their strides to the table instead), so a column view gathers another column's ids.
            let ids = categorical.narrow(1, i, 1)?.squeeze(1)?.contiguous()?;
            parts.push(embedding.forward(&ids)?);
        }
        let x0 = Tensor::cat(&parts, 1)?;
        let mut x = x0.clone();
        for layer in &self.cross {
            x = ((&x0 * layer.forward(&x)?)? + &x)?;
        }
        for layer in &self.mlp {
            x = layer.forward(&x)?.relu()?;
        }
        candle_nn::ops::sigmoid(&self.head.forward(&x)?)?.squeeze(1)
    }

    /// Scores host feature blocks directly (no tensors): the serving hot path on the CPU.
    pub fn score_host(
        &self,
        numeric: &[f32],
        categorical: &[u32],
        rows: usize,
        out: &mut [f32],
    ) -> Result<()> {
        #[cfg(feature = "cuda")]
        if let Some(gpu) = &self.gpu {
            // A poisoned lock means a batch panicked mid-way; the next submit starts clean.
            let mut gpu = gpu.lock().unwrap_or_else(|p| p.into_inner());
            return gpu
                .run(numeric, categorical, rows, out)
                .map_err(|e| candle_core::Error::msg(e.to_string()));
        }
        match &self.fused {
            Some(fused) => fused
                .run(numeric, categorical, rows, out)
                .map_err(candle_core::Error::msg),
            None => {
                let n =
                    Tensor::from_slice(numeric, (rows, numeric.len() / rows.max(1)), &self.device)?;
                let c = Tensor::from_slice(
                    categorical,
                    (rows, categorical.len() / rows.max(1)),
                    &self.device,
                )?;
                out.copy_from_slice(&self.forward(&n, &c)?.to_vec1::<f32>()?);
                Ok(())
            }
        }
    }
}

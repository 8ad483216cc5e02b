//! The DCN-v2 as plain candle-nn layers, laid out and named as `models/train/model.py` names its
//! tensors: the reference every faster pass (fused CPU, CUDA kernels) is checked against, and the
//! pass of a device pixguard has no runner of its own for.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};

use super::fused::{DenseT, EmbeddingTable, FusedDcn};
use super::package::ModelConfig;

/// The network: embeddings, cross layers, MLP, head.
pub struct Reference {
    embeddings: Vec<Embedding>,
    cross: Vec<Linear>,
    mlp: Vec<Linear>,
    head: Linear,
    n_numeric: usize,
}

impl Reference {
    /// Builds the layers from a var builder laid out as `model.py` names its tensors.
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
        Ok(Reference {
            embeddings,
            cross,
            mlp,
            head,
            n_numeric: config.features.numeric.len(),
        })
    }

    /// Fraud probabilities `[B]` for numeric `[B, n]` f32 and categorical `[B, c]` u32 features.
    pub fn forward(&self, numeric: &Tensor, categorical: &Tensor) -> Result<Tensor> {
        candle_nn::ops::sigmoid(&self.logits(numeric, categorical)?)
    }

    /// The logits `[B]` the probabilities are the sigmoid of.
    pub fn logits(&self, numeric: &Tensor, categorical: &Tensor) -> Result<Tensor> {
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
        self.head.forward(&x)?.squeeze(1)
    }

    /// The same weights copied to the host, in the layout the fused passes (CPU and CUDA) read.
    pub fn to_fused(&self) -> Result<FusedDcn> {
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
            self.n_numeric,
            embeddings,
            self.cross.iter().map(dense).collect::<Result<_>>()?,
            self.mlp.iter().map(dense).collect::<Result<_>>()?,
            head.weight_t,
            head.bias[0],
        ))
    }
}

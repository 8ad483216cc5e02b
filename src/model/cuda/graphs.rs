//! The forward as CUDA graphs ([`super::GpuOptions::graphs`]): captured per pipeline slot and
//! batch-size bucket (`model::staging::bucket`) whenever the buffers are (re)allocated, replayed as
//! one launch per batch, and given up for kernel-by-kernel launches if a capture fails.

use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaGraph, CudaSlice, CudaStream, DevicePtr};

use super::super::staging;
use super::{CudaDcn, CudaError, cudarc};

/// A captured forward, owned by one replica.
pub(super) struct Graph(CudaGraph);

// SAFETY: CUDA graphs may be used from any thread as long as calls on one graph are serialised
// (CUDA's "graph thread safety"); a replica is used by one thread at a time (`&mut self` for every
// launch, behind the model's mutex) and its graphs never leave it.
unsafe impl Send for Graph {}

/// cuBLAS's workspace for a replica with graphs: NVIDIA's recommended size on Hopper. Without a
/// workspace of its own, cuBLAS 12.2+ allocates one inside every captured graph (a few dozen here).
const BLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// A workspace of cuBLAS's own on `compute`, its handle's stream, for a replica with graphs.
pub(super) fn blas_workspace(
    blas: &CudaBlas,
    compute: &Arc<CudaStream>,
) -> Result<CudaSlice<u8>, CudaError> {
    let workspace = compute.alloc_zeros::<u8>(BLAS_WORKSPACE_BYTES)?;
    let ptr = workspace.device_ptr(compute).0;
    // SAFETY: the caller keeps the buffer as long as the handle (`CudaDcn`'s field order) and it is
    // used only on `compute`, the handle's stream, where every graph and product runs in order.
    unsafe {
        cudarc::cublas::sys::cublasSetWorkspace_v2(
            *blas.handle(),
            ptr as *mut std::ffi::c_void,
            BLAS_WORKSPACE_BYTES,
        )
        .result()?
    };
    Ok(workspace)
}

impl CudaDcn {
    /// Captures every slot's graph for every bucket up to the capacity, so that no batch pays a
    /// capture. A failed capture turns graphs off for this replica (logged): it then launches
    /// kernel by kernel, as without them. Only a sticky error (the context is lost) is returned.
    pub(super) fn capture_all(&mut self) -> Result<(), CudaError> {
        if self.graphs.is_none() {
            return Ok(());
        }
        match self.warm_up_and_capture() {
            Err(e) if e.is_sticky() => Err(e),
            Err(e) => {
                self.graphs_failed(&e);
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// Runs the forward once per bucket, launched kernel by kernel, then captures every graph.
    /// The eager run comes first because a library's first call for a shape may do work that a
    /// capture forbids (cuBLAS choosing and loading its kernel, the driver loading a kernel
    /// lazily); PyTorch's CUDA graph users warm up the same way. The input buffers were allocated
    /// on the copy stream, and with event tracking off nothing orders the compute stream after
    /// that, so the copy stream is waited for first; their zeros are valid rows (id 0 is in every
    /// table).
    fn warm_up_and_capture(&mut self) -> Result<(), CudaError> {
        let buckets: Vec<usize> = staging::buckets(self.capacity).collect();
        self.copy.synchronize()?;
        for &bucket in &buckets {
            self.forward(0, bucket)?;
        }
        self.compute.synchronize()?;
        for index in 0..self.slots.len() {
            for &bucket in &buckets {
                self.graph(index, bucket)?;
            }
        }
        Ok(())
    }

    fn graphs_failed(&mut self, error: &CudaError) {
        tracing::warn!(%error, "capturing the forward as a CUDA graph failed; launching its kernels one by one");
        self.graphs = None;
    }

    /// Whether the forward runs as CUDA graphs (asked for, and every capture so far worked).
    pub fn graphs_on(&self) -> bool {
        self.graphs.is_some()
    }

    /// Slot `index`'s graph for `bucket` rows, captured now if it is not yet.
    fn graph(&mut self, index: usize, bucket: usize) -> Result<&CudaGraph, CudaError> {
        let key = (index, bucket);
        if !self.graphs.as_ref().is_some_and(|g| g.contains_key(&key)) {
            self.compute
                .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
            let queued = self.forward(index, bucket);
            // The capture ends whatever happened: a stream left capturing refuses all later work.
            let ended = self.compute.end_capture(CUgraphInstantiate_flags(0));
            queued?;
            let graph = ended?.ok_or_else(|| {
                CudaError::Input("capturing the forward gave an empty graph".into())
            })?;
            graph.upload()?;
            if let Some(graphs) = self.graphs.as_mut() {
                graphs.insert(key, Graph(graph));
            }
        }
        self.graphs
            .as_ref()
            .and_then(|g| g.get(&key))
            .map(|g| &g.0)
            .ok_or_else(|| CudaError::Input("CUDA graphs are off for this replica".into()))
    }

    /// Queues slot `index`'s forward over `bucket` rows: one graph launch, or kernel by kernel
    /// (also when a capture fails now).
    pub(super) fn launch(&mut self, index: usize, bucket: usize) -> Result<(), CudaError> {
        if self.graphs.is_some() {
            match self.graph(index, bucket) {
                Ok(graph) => return Ok(graph.launch()?),
                Err(e) if e.is_sticky() => return Err(e),
                Err(e) => self.graphs_failed(&e),
            }
        }
        self.forward(index, bucket)
    }
}

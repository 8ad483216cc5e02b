//! The DCN-v2 forward on an NVIDIA GPU: weights resident, cuBLAS for the products, pixguard's own
//! kernels (`kernels/dcn.cu`) for everything between them, and a two-slot pipeline so the copy of
//! batch N+1 overlaps the compute of batch N.
//!
//! Per batch: the caller's rows go into a pinned staging buffer (numeric f32 bits, then categorical
//! ids, as one block of 32-bit words), one host→device copy on the copy stream, the forward on the
//! compute stream (which waits for that copy through cudarc's event tracking), and one
//! device→host copy of the scores into pinned memory. Two slots each own their staging, input,
//! scores and output buffers, so a slot can be filled while the other computes.
//!
//! With [`GpuOptions::graphs`] the forward's ~10 dependent launches are captured once per slot and
//! batch-size bucket (`model::staging::bucket`) as CUDA graphs and replayed as one launch, the
//! batch padded to its bucket (`graphs.rs`). Capture needs cudarc's per-buffer event tracking off
//! (a capture may not wait on events recorded outside it), so such a replica orders its streams by
//! its own events alone: the upload's `uploaded` event before the forward, and a slot's `done`
//! before its reuse.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use candle_core::cuda_backend::cudarc;
use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{
    CudaContext, CudaEvent, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, PinnedHostSlice, result,
};
use cudarc::nvrtc::Ptx;

use super::super::BatchTimings;
use super::super::fused::{DenseT, FusedDcn};
use super::super::staging::{self, PartRows};
use super::forward::{DeviceDense, Kernels, PTX, to_i32};
use super::graphs::{self, Graph};
use super::{CudaError, probe};

/// One pipeline slot: everything a batch owns between submit and wait.
pub(super) struct Slot {
    staging: PinnedHostSlice<u32>,
    pub(super) input: CudaSlice<u32>,
    pub(super) scores: CudaSlice<f32>,
    out: PinnedHostSlice<f32>,
    /// Recorded on the copy stream before the upload (timing only).
    upload_start: CudaEvent,
    /// Recorded on the copy stream after the upload: the staging buffer is free again.
    uploaded: CudaEvent,
    /// Recorded on the compute stream after the scores' download.
    done: CudaEvent,
    /// Timing events around the forward on the compute stream (after the upload has landed).
    forward_start: CudaEvent,
    forward_end: CudaEvent,
    /// Rows of the batch in flight, if any.
    rows: Option<usize>,
    /// Host time spent checking ids and filling the staging buffer for that batch, µs.
    stage_us: f64,
}

/// How a replica runs its forward.
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuOptions {
    /// Replay the forward as CUDA graphs captured per slot and batch-size bucket, rather than
    /// launching its kernels one by one.
    pub graphs: bool,
}

/// A submitted batch; hand it back to [`CudaDcn::wait`].
#[derive(Debug)]
#[must_use]
pub struct Ticket(usize);

/// The network resident on one GPU, with its two-slot pipeline.
pub struct CudaDcn {
    pub(super) copy: Arc<CudaStream>,
    pub(super) compute: Arc<CudaStream>,
    pub(super) blas: CudaBlas,
    pub(super) kernels: Kernels,
    pub(super) tables: CudaSlice<f32>,
    pub(super) meta: CudaSlice<i32>,
    pub(super) cardinalities: Vec<u32>,
    pub(super) n_numeric: usize,
    pub(super) width: usize,
    pub(super) widest: usize,
    pub(super) cross: Vec<DeviceDense>,
    pub(super) mlp: Vec<DeviceDense>,
    pub(super) head_weight: CudaSlice<f32>,
    pub(super) head_bias: f32,
    /// Shared activations: the compute stream runs one batch at a time.
    pub(super) x0: CudaSlice<f32>,
    pub(super) act: [CudaSlice<f32>; 2],
    pub(super) capacity: usize,
    pub(super) slots: Vec<Slot>,
    pub(super) next: usize,
    pub(super) last_timings: Option<BatchTimings>,
    /// The first sticky error seen: the context can take no more work.
    pub(super) broken: Option<String>,
    /// The forward's graphs by (slot, bucket) when graphs are on; `None` launches kernel by kernel.
    pub(super) graphs: Option<HashMap<(usize, usize), Graph>>,
    /// cuBLAS's workspace when graphs are on (declared after `blas`, so freed after the handle).
    _workspace: Option<CudaSlice<u8>>,
}

impl CudaDcn {
    /// Uploads the network to device `ordinal`, with buffers for batches of up to `capacity` rows
    /// (they grow if a larger batch comes).
    pub fn new(ordinal: usize, net: &FusedDcn, capacity: usize) -> Result<Self, CudaError> {
        Self::with_options(ordinal, net, capacity, GpuOptions::default())
    }

    /// [`Self::new`], running the forward as `options` say.
    pub fn with_options(
        ordinal: usize,
        net: &FusedDcn,
        capacity: usize,
        options: GpuOptions,
    ) -> Result<Self, CudaError> {
        // Named errors rather than a panic inside cudarc when the device is unusable.
        probe(ordinal)?;
        let ctx = CudaContext::new(ordinal)?;
        if options.graphs {
            // SAFETY: every buffer below is allocated after this, on this replica's own context
            // handle; its streams are ordered by its own events (module docs).
            unsafe { ctx.disable_event_tracking() };
        }
        let copy = ctx.new_stream()?;
        let compute = ctx.new_stream()?;
        let blas = CudaBlas::new(compute.clone())?;
        let workspace = if options.graphs {
            Some(graphs::blas_workspace(&blas, &compute)?)
        } else {
            None
        };
        let module = ctx.load_module(Ptx::from_src(PTX))?;
        let kernels = Kernels {
            gather_concat: module.load_function("gather_concat")?,
            cross_finish: module.load_function("cross_finish")?,
            bias_relu: module.load_function("bias_relu")?,
            head_sigmoid: module.load_function("head_sigmoid")?,
        };
        let mut flat = Vec::new();
        let mut meta = Vec::new();
        for table in &net.embeddings {
            meta.push(to_i32(flat.len(), "embedding tables")?);
            meta.push(to_i32(table.dim, "embedding dim")?);
            flat.extend_from_slice(&table.weight);
        }
        let upload_dense = |d: &DenseT| -> Result<DeviceDense, CudaError> {
            Ok(DeviceDense {
                weight_t: compute.clone_htod(&d.weight_t)?,
                bias: compute.clone_htod(&d.bias)?,
                input: d.input,
                output: d.output,
            })
        };
        let width = net.input_width();
        let cross = net
            .cross
            .iter()
            .map(upload_dense)
            .collect::<Result<_, _>>()?;
        let mlp: Vec<DeviceDense> = net.mlp.iter().map(upload_dense).collect::<Result<_, _>>()?;
        let widest = mlp.iter().map(|l| l.output).max().unwrap_or(0).max(width);
        let mut model = CudaDcn {
            tables: compute.clone_htod(&flat)?,
            meta: compute.clone_htod(&meta)?,
            cardinalities: net
                .embeddings
                .iter()
                .map(|t| u32::try_from(t.cardinality).unwrap_or(u32::MAX))
                .collect(),
            n_numeric: net.n_numeric,
            width,
            widest,
            cross,
            mlp,
            head_weight: compute.clone_htod(&net.head_weight)?,
            head_bias: net.head_bias,
            x0: compute.alloc_zeros(1)?,
            act: [compute.alloc_zeros(1)?, compute.alloc_zeros(1)?],
            capacity: 0,
            slots: Vec::new(),
            next: 0,
            last_timings: None,
            broken: None,
            graphs: options.graphs.then(HashMap::new),
            _workspace: workspace,
            copy,
            compute,
            blas,
            kernels,
        };
        model.reserve(capacity.max(1))?;
        model.compute.synchronize()?;
        Ok(model)
    }

    /// Remembers a sticky error from `result` (see [`CudaError::is_sticky`]) and passes it on:
    /// every public call that touches the device goes through here, so no caller has to.
    fn note<T>(&mut self, result: Result<T, CudaError>) -> Result<T, CudaError> {
        if let Err(e) = &result
            && e.is_sticky()
            && self.broken.is_none()
        {
            self.broken = Some(e.to_string());
        }
        result
    }

    /// Why this replica can take no more work, once a call has failed with a sticky error.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// Where the last waited-for batch's time went.
    pub fn last_timings(&self) -> Option<BatchTimings> {
        self.last_timings
    }

    /// Largest batch the current buffers take without growing.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// (Re)allocates every batch-sized buffer for `rows` rows. Refused while a batch is in flight:
    /// its buffers would go with the old allocation.
    pub fn reserve(&mut self, rows: usize) -> Result<(), CudaError> {
        let result = self.grow(rows);
        self.note(result)
    }

    fn grow(&mut self, rows: usize) -> Result<(), CudaError> {
        if rows <= self.capacity {
            return Ok(());
        }
        if self.slots.iter().any(|slot| slot.rows.is_some()) {
            return Err(CudaError::Input(format!(
                "a batch of {rows} rows needs larger buffers than the {} allocated; wait for the batches in flight first",
                self.capacity
            )));
        }
        // The graphs point at the buffers about to be freed.
        if let Some(graphs) = self.graphs.as_mut() {
            graphs.clear();
        }
        let ctx = self.compute.context().clone();
        let words = rows * (self.n_numeric + self.cardinalities.len());
        self.x0 = self.compute.alloc_zeros(rows * self.width)?;
        self.act = [
            self.compute.alloc_zeros(rows * self.widest)?,
            self.compute.alloc_zeros(rows * self.widest)?,
        ];
        self.slots = (0..2)
            .map(|_| -> Result<Slot, CudaError> {
                Ok(Slot {
                    // SAFETY: both pinned buffers are written before they are read.
                    staging: unsafe { ctx.alloc_pinned::<u32>(words)? },
                    // Not write-combined: the host reads the scores back.
                    out: unsafe { ctx.alloc_pinned_with_flags::<f32>(rows, 0)? },
                    input: self.copy.alloc_zeros(words)?,
                    scores: self.compute.alloc_zeros(rows)?,
                    upload_start: ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?,
                    uploaded: ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?,
                    done: ctx.new_event(None)?,
                    forward_start: ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?,
                    forward_end: ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?,
                    rows: None,
                    stage_us: 0.0,
                })
            })
            .collect::<Result<_, _>>()?;
        self.capacity = rows;
        self.capture_all()
    }

    /// Whether another batch can be submitted without waiting for one first.
    pub fn has_free_slot(&self) -> bool {
        self.slots
            .get(self.next)
            .is_some_and(|slot| slot.rows.is_none())
    }

    /// Starts a batch of contiguous rows; see [`Self::submit_parts`].
    pub fn submit(
        &mut self,
        numeric: &[f32],
        categorical: &[u32],
        rows: usize,
    ) -> Result<Ticket, CudaError> {
        self.submit_parts(std::iter::once((numeric, categorical)), rows)
    }

    /// Starts a batch of `rows` rows held in `parts`: writes them straight into the slot's pinned
    /// staging buffer and uploads it, queues the forward and the download of the scores, and
    /// returns at once. Fails if both slots are in flight (call [`Self::wait`] first), if the
    /// parts do not hold `rows` whole rows, or if a categorical id is outside its table.
    pub fn submit_parts<'a>(
        &mut self,
        parts: impl IntoIterator<Item = PartRows<'a>>,
        rows: usize,
    ) -> Result<Ticket, CudaError> {
        let result = self.try_submit(parts, rows);
        self.note(result)
    }

    fn try_submit<'a>(
        &mut self,
        parts: impl IntoIterator<Item = PartRows<'a>>,
        rows: usize,
    ) -> Result<Ticket, CudaError> {
        let (nn, nc) = (self.n_numeric, self.cardinalities.len());
        if rows == 0 {
            return Err(CudaError::Input("empty batch".into()));
        }
        if rows > self.capacity {
            self.grow(rows.next_power_of_two())?;
        }
        let index = self.next;
        if self.slots[index].rows.is_some() {
            return Err(CudaError::Input(
                "both pipeline slots are in flight; wait for one first".into(),
            ));
        }
        // A graph runs a fixed batch size: the batch is laid out and padded for its bucket.
        let bucket = if self.graphs.is_some() {
            staging::bucket(rows, self.capacity)
        } else {
            rows
        };
        let words = bucket * (nn + nc);
        {
            let slot = &mut self.slots[index];
            // Staging time as `BatchTimings` defines it: from here, so a buffer growth above is out.
            let staged = Instant::now();
            // The previous upload from this staging buffer must be over before it is rewritten.
            slot.uploaded.synchronize()?;
            let staging_words = slot.staging.as_mut_slice()?;
            // The kernel indexes tables without bounds checks; the check is in here, as on the CPU
            // path, and before `rows` is set, so a rejected batch leaves the slot free.
            staging::stage(staging_words, parts, rows, bucket, nn, &self.cardinalities)
                .map_err(CudaError::Input)?;
            slot.stage_us = staged.elapsed().as_secs_f64() * 1e6;
            slot.upload_start.record(&self.copy)?;
            let (dst, _record) = slot.input.device_ptr_mut(&self.copy);
            // SAFETY: `staging` is pinned and stays untouched until `uploaded` completes (checked
            // above before the next write); `input` holds at least `words` words.
            unsafe {
                result::memcpy_htod_async(dst, &staging_words[..words], self.copy.cu_stream())?
            };
        }
        {
            let slot = &self.slots[index];
            slot.uploaded.record(&self.copy)?;
            // The forward's clock starts once the upload has landed: it times the kernels alone.
            self.compute.wait(&slot.uploaded)?;
            slot.forward_start.record(&self.compute)?;
        }
        self.launch(index, bucket)?;
        let slot = &mut self.slots[index];
        slot.forward_end.record(&self.compute)?;
        {
            let out = slot.out.as_mut_slice()?;
            let (src, _record) = slot.scores.device_ptr(&self.compute);
            // SAFETY: `out` is pinned and is only read after `done` completes.
            unsafe { result::memcpy_dtoh_async(&mut out[..rows], src, self.compute.cu_stream())? };
        }
        slot.done.record(&self.compute)?;
        slot.rows = Some(rows);
        self.next = (index + 1) % self.slots.len();
        Ok(Ticket(index))
    }

    /// Whether a submitted batch has finished, without waiting (an error counts as finished:
    /// [`Self::wait`] reports it).
    pub fn is_done(&self, ticket: &Ticket) -> bool {
        self.slots
            .get(ticket.0)
            .is_none_or(|slot| slot.rows.is_none() || slot.done.try_is_complete().unwrap_or(true))
    }

    /// Waits for a submitted batch and copies its scores into `out` (`rows` long).
    pub fn wait(&mut self, ticket: Ticket, out: &mut [f32]) -> Result<(), CudaError> {
        let result = self.try_wait(ticket, out);
        self.note(result)
    }

    fn try_wait(&mut self, ticket: Ticket, out: &mut [f32]) -> Result<(), CudaError> {
        let slot = &mut self.slots[ticket.0];
        let rows = slot.rows.take().unwrap_or(0);
        slot.done.synchronize()?;
        if out.len() != rows {
            return Err(CudaError::Input(format!(
                "{} outputs for a batch of {rows} rows",
                out.len()
            )));
        }
        out.copy_from_slice(&slot.out.as_slice()?[..rows]);
        let micros = |from: &CudaEvent, to: &CudaEvent| {
            from.elapsed_ms(to).ok().map(|ms| f64::from(ms) * 1e3)
        };
        self.last_timings = Some(BatchTimings {
            stage_us: slot.stage_us,
            upload_us: micros(&slot.upload_start, &slot.uploaded),
            forward_us: micros(&slot.forward_start, &slot.forward_end),
        });
        Ok(())
    }

    /// Scores one batch synchronously.
    pub fn run(
        &mut self,
        numeric: &[f32],
        categorical: &[u32],
        rows: usize,
        out: &mut [f32],
    ) -> Result<(), CudaError> {
        if rows == 0 {
            return Ok(());
        }
        let ticket = self.submit(numeric, categorical, rows)?;
        self.wait(ticket, out)
    }
}

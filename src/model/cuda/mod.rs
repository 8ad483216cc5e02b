//! pixguard on an NVIDIA GPU: whether a device is usable ([`probe`]), the errors of the GPU path,
//! and the network resident on a device ([`CudaDcn`], in `runner.rs`).

mod forward;
mod graphs;
mod runner;

use candle_core::cuda_backend::cudarc;
use cudarc::driver::{CudaContext, DriverError, result};

use super::staging::PartRows;

pub use runner::{CudaDcn, GpuOptions, Ticket};

/// Errors of the GPU path.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// A CUDA driver call failed.
    #[error("CUDA driver: {0}")]
    Driver(#[from] DriverError),
    /// A cuBLAS call failed.
    #[error("cuBLAS: {0}")]
    Blas(#[from] cudarc::cublas::result::CublasError),
    /// The input does not fit the model.
    #[error("{0}")]
    Input(String),
    /// The driver library panicked (cudarc does when it cannot load libcuda).
    #[error("CUDA unavailable: {0}")]
    Unavailable(String),
}

impl CudaError {
    /// Whether the error leaves the CUDA context unusable: CUDA reports these "sticky" errors again
    /// on every later call in the process, and only a new process recovers.
    pub fn is_sticky(&self) -> bool {
        use cudarc::driver::sys::CUresult as R;
        matches!(
            self,
            CudaError::Driver(DriverError(
                R::CUDA_ERROR_ILLEGAL_ADDRESS
                    | R::CUDA_ERROR_LAUNCH_TIMEOUT
                    | R::CUDA_ERROR_ASSERT
                    | R::CUDA_ERROR_HARDWARE_STACK_ERROR
                    | R::CUDA_ERROR_ILLEGAL_INSTRUCTION
                    | R::CUDA_ERROR_MISALIGNED_ADDRESS
                    | R::CUDA_ERROR_INVALID_ADDRESS_SPACE
                    | R::CUDA_ERROR_INVALID_PC
                    | R::CUDA_ERROR_LAUNCH_FAILED
                    | R::CUDA_ERROR_ECC_UNCORRECTABLE
                    | R::CUDA_ERROR_CONTEXT_IS_DESTROYED
            ))
        )
    }
}

/// What the probe found on a device.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// Device ordinal.
    pub ordinal: usize,
    /// Marketing name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Device memory in bytes.
    pub total_memory: usize,
}

/// Whether CUDA device `ordinal` can be used, without panicking when there is no driver: a stub
/// libcuda answers `CUDA_ERROR_STUB_LIBRARY`, a machine without GPUs reports none, and any panic
/// inside cudarc is caught and reported as an error.
pub fn probe(ordinal: usize) -> Result<DeviceInfo, CudaError> {
    let attempt = std::panic::catch_unwind(|| -> Result<DeviceInfo, CudaError> {
        result::init().map_err(unavailable)?;
        let count = result::device::get_count().map_err(unavailable)?;
        if ordinal >= count.max(0) as usize {
            return Err(CudaError::Unavailable(format!(
                "no CUDA device {ordinal} ({count} found)"
            )));
        }
        let ctx = CudaContext::new(ordinal)?;
        Ok(DeviceInfo {
            ordinal,
            name: ctx.name()?,
            compute_capability: ctx.compute_capability()?,
            total_memory: ctx.total_mem()?,
        })
    });
    match attempt {
        Ok(r) => r,
        Err(panic) => Err(CudaError::Unavailable(panic_message(&*panic))),
    }
}

/// The driver's answer in words; a stub cannot even name its own error.
fn unavailable(e: DriverError) -> CudaError {
    use cudarc::driver::sys::CUresult;
    let reason = match e.0 {
        CUresult::CUDA_ERROR_STUB_LIBRARY => {
            "libcuda is the link stub, not a driver (no NVIDIA driver on this machine)".to_string()
        }
        CUresult::CUDA_ERROR_NO_DEVICE => "the driver sees no CUDA device".to_string(),
        CUresult::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH => {
            "libcuda and the NVIDIA kernel driver are different versions".to_string()
        }
        _ => return CudaError::Driver(e),
    };
    CudaError::Unavailable(reason)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic in the CUDA driver wrapper".into())
}

impl super::pipelined::Pipelined for CudaDcn {
    type Ticket = Ticket;

    fn reserve(&mut self, rows: usize) -> Result<(), String> {
        CudaDcn::reserve(self, rows).map_err(|e| e.to_string())
    }

    fn has_free_slot(&self) -> bool {
        CudaDcn::has_free_slot(self)
    }

    fn submit<'a>(
        &mut self,
        parts: impl IntoIterator<Item = PartRows<'a>>,
        rows: usize,
    ) -> Result<Ticket, String> {
        CudaDcn::submit_parts(self, parts, rows).map_err(|e| e.to_string())
    }

    fn is_done(&self, ticket: &Ticket) -> bool {
        CudaDcn::is_done(self, ticket)
    }

    fn wait(&mut self, ticket: Ticket, out: &mut [f32]) -> Result<(), String> {
        CudaDcn::wait(self, ticket, out).map_err(|e| e.to_string())
    }

    fn broken(&self) -> Option<String> {
        CudaDcn::broken(self).map(str::to_owned)
    }
}

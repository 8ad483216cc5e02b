//! Named threads at a scheduling priority: the engines' batcher and workers, and the drift
//! monitor beside them: a module of its own so that both use it without either depending on
//! the other.

use std::thread::JoinHandle;

/// How a background thread is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Like every other thread: the serving engine, the drift monitor.
    Normal,
    /// Linux `SCHED_IDLE`: only when a core has nothing else to run — work that must never
    /// delay serving (a challenger scored in the shadow). Elsewhere, as `Normal`.
    Idle,
}

/// Starts a named thread at `priority`.
pub(crate) fn spawn(
    name: &str,
    priority: Priority,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if priority == Priority::Idle {
                idle_priority();
            }
            f()
        })
}

#[cfg(target_os = "linux")]
fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sets the calling thread's policy (pid 0); `param` outlives the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not lower a background thread to SCHED_IDLE"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn idle_priority() {}

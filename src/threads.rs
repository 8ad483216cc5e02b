//! Named threads at a scheduling priority: the engines' batcher and workers, and the drift
//! monitor beside them: a module of its own so that both use it without either depending on
//! the other. Also the front end's lower priority (`server.front_end_nice`): on a node whose
//! cores are all busy the engine's single batcher and GPU worker threads then go before the many
//! threads that parse and answer requests, whose work they wait on anyway.

use std::sync::OnceLock;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

/// How a background thread is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Like every other thread: the serving engine, the drift monitor.
    Normal,
    /// Linux `SCHED_IDLE`: only when a core has nothing else to run — work that must never
    /// delay serving (a challenger scored in the shadow). Elsewhere, as `Normal`.
    Idle,
}

type Body = Box<dyn FnOnce() + Send + 'static>;

/// One thread to start: its name, its priority, what it runs, and where its handle goes.
struct Start {
    name: String,
    priority: Priority,
    body: Body,
    started: Sender<std::io::Result<JoinHandle<()>>>,
}

/// The thread that starts every [`spawn`]ed thread once [`start_spawner`] has run. A Linux thread
/// inherits its creator's nice value and may not lower it again without privilege, and engines
/// are built on the front end's (niced) blocking threads: started there, a version's batcher and
/// workers would run at the front end's priority for good.
static SPAWNER: OnceLock<Sender<Start>> = OnceLock::new();

/// The nice value the spawner runs at: the process's own, which the front end's is counted from.
static BASE_NICE: OnceLock<i32> = OnceLock::new();

/// Starts the thread that `spawn` hands its threads to, at the calling thread's priority: call it
/// before any thread is niced.
pub fn start_spawner() -> std::io::Result<()> {
    if SPAWNER.get().is_some() {
        return Ok(());
    }
    let _ = BASE_NICE.set(nice_value().unwrap_or(0));
    let (tx, rx) = crossbeam_channel::unbounded::<Start>();
    std::thread::Builder::new()
        .name("pixguard-spawner".into())
        .spawn(move || {
            for start in rx {
                let _ = start
                    .started
                    .send(start_here(&start.name, start.priority, start.body));
            }
        })?;
    // A second caller racing this one started a spare spawner, which exits with its channel.
    let _ = SPAWNER.set(tx);
    Ok(())
}

/// Starts a named thread at `priority` — through the spawner when there is one, so that it does
/// not inherit the calling thread's nice value.
pub(crate) fn spawn(
    name: &str,
    priority: Priority,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    let body: Body = Box::new(f);
    let Some(spawner) = SPAWNER.get() else {
        return start_here(name, priority, body);
    };
    let (started, handle) = crossbeam_channel::bounded(1);
    let start = Start {
        name: name.into(),
        priority,
        body,
        started,
    };
    match spawner.send(start) {
        Ok(()) => handle
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the thread spawner stopped"))),
        // The spawner has gone (it never does while the process runs): start the thread here.
        Err(crossbeam_channel::SendError(start)) => start_here(name, priority, start.body),
    }
}

fn start_here(name: &str, priority: Priority, body: Body) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if priority == Priority::Idle {
                idle_priority();
            }
            body()
        })
}

/// Sets the calling thread's nice value `by` above the process's (the spawner's, else the
/// thread's own); on Linux a per-thread value, capped at 19. Front-end threads call it as they
/// start; a thread that inherited the value already keeps it.
pub fn lower_priority(by: u8) {
    if by > 0 {
        let base = BASE_NICE.get().copied().or_else(nice_value).unwrap_or(0);
        set_nice((base + i32::from(by)).min(19));
    }
}

#[cfg(target_os = "linux")]
fn set_nice(value: i32) {
    if nice_value() == Some(value) {
        return;
    }
    // SAFETY: plain system call on integers. On Linux PRIO_PROCESS with `who` 0 is the calling
    // thread, not the whole process.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, value) };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not lower a front-end thread's priority"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn set_nice(_value: i32) {}

/// The calling thread's nice value, where the platform has one per thread (Linux).
#[cfg(target_os = "linux")]
pub fn nice_value() -> Option<i32> {
    // `/proc/thread-self/stat`'s 19th field.
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    crate::process::stat_field(&stat, 19)?.parse().ok()
}

/// The calling thread's nice value, where the platform has one per thread (Linux).
#[cfg(not(target_os = "linux"))]
pub fn nice_value() -> Option<i32> {
    None
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn threads_started_from_a_niced_thread_keep_the_spawners_priority() {
        start_spawner().expect("spawner");
        let base = nice_value().expect("this thread's nice value");
        // A front-end thread, lowered by 3, starts an engine-like thread and an ordinary one.
        let (through_spawner, inherited, front_end) = std::thread::spawn(move || {
            lower_priority(3);
            let front_end = nice_value();
            let through_spawner = spawn("pixguard-test", Priority::Normal, move || {
                assert_eq!(nice_value(), Some(base));
            })
            .expect("spawned")
            .join();
            let inherited = std::thread::spawn(nice_value).join();
            (through_spawner, inherited, front_end)
        })
        .join()
        .expect("front-end thread");
        assert_eq!(front_end, Some((base + 3).min(19)));
        through_spawner.expect("the spawned thread ran at the spawner's nice value");
        // Without the spawner a thread inherits its creator's value: what the spawner is for.
        assert_eq!(inherited.expect("plain thread"), Some((base + 3).min(19)));
    }
}

//! Children that die with the test process. A test binary killed from outside (a CI timeout, a
//! Ctrl-C, SIGKILL) used to leave its servers, brokers and `pixguard stream`s running. Each child
//! now asks the kernel for SIGKILL when its parent goes (PR_SET_PDEATHSIG). The kernel ties that
//! to the *thread* that forked it, and a test's thread ends with the test while a fixture it
//! started may serve the next one, so every child is forked by one thread that lives as long as
//! the process.
#![allow(dead_code)]

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};

type Job = (Command, Sender<io::Result<Child>>);

/// Spawns `command` (taken, leaving an empty command behind) from the process's forking thread,
/// the child set to be killed when this process dies.
pub fn spawn(command: &mut Command) -> io::Result<Child> {
    static FORKER: OnceLock<Sender<Job>> = OnceLock::new();
    let forker = FORKER.get_or_init(|| {
        let (jobs, queue) = channel::<Job>();
        std::thread::Builder::new()
            .name("child-forker".into())
            .spawn(move || {
                for (mut command, reply) in queue {
                    let _ = reply.send(tied(&mut command).spawn());
                }
            })
            .expect("the forking thread starts");
        jobs
    });
    let command = std::mem::replace(command, Command::new("true"));
    let (reply, answer) = channel();
    forker
        .send((command, reply))
        .map_err(|_| io::Error::other("the forking thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the forking thread did not answer"))?
}

fn tied(command: &mut Command) -> &mut Command {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and calls only prctl(2), getppid(2)
    // and reads errno, all async-signal-safe; it touches no memory of the parent's.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between the fork and the prctl.
            if libc::getppid() != parent {
                return Err(io::Error::other("the test process is gone"));
            }
            Ok(())
        })
    }
}

//! How a batch's answers reach their callers. A caller awaiting on tokio's current-thread runtime
//! (the HTTP front ends on a small machine) is woken from the engine's thread through the
//! runtime's I/O driver: one `eventfd` write, and often a context switch, per woken request —
//! tokio does not coalesce them. The answers of one batch for one such runtime are therefore
//! handed over by a single task spawned on it, which completes them there, where waking a request
//! is a local queue push. Callers on a multi-thread runtime (whose idle workers are tracked, so a
//! busy runtime is not signalled) or outside tokio are answered directly, as is a lone answer.
//!
//! The hand-over runs when the runtime's scheduler runs it, so a current-thread runtime must be
//! driven (`Runtime::block_on` on some thread) while its callers wait — as its timers and sockets
//! already require; `Handle::block_on` alone does not drive one.

use std::thread::ThreadId;

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::oneshot;

use super::{EngineError, Scored};

/// Where a job's answer is sent.
pub(super) type Reply = oneshot::Sender<Result<Scored, EngineError>>;

/// The current-thread runtime a caller waits on.
#[derive(Clone)]
pub(super) struct Home {
    /// The thread driving it: answers for one thread go in one hand-over.
    thread: ThreadId,
    runtime: Handle,
}

impl Home {
    /// The caller's runtime, when it is a current-thread one.
    pub(super) fn current() -> Option<Home> {
        let runtime = Handle::try_current().ok()?;
        (runtime.runtime_flavor() == RuntimeFlavor::CurrentThread).then(|| Home {
            thread: std::thread::current().id(),
            runtime,
        })
    }
}

/// The answers of one batch, gathered per home runtime and sent by [`Delivery::deliver`].
#[derive(Default)]
pub(super) struct Delivery {
    by_home: Vec<(Home, Vec<(Reply, Scored)>)>,
}

impl Delivery {
    /// Sends `scored` to `reply` now, or with the rest of the batch's answers for `home`.
    pub(super) fn send(&mut self, home: Option<&Home>, reply: Reply, scored: Scored) {
        let Some(home) = home else {
            let _ = reply.send(Ok(scored));
            return;
        };
        match self
            .by_home
            .iter_mut()
            .find(|(h, _)| h.thread == home.thread)
        {
            Some((_, answers)) => answers.push((reply, scored)),
            None => self.by_home.push((home.clone(), vec![(reply, scored)])),
        }
    }

    /// Hands every gathered answer over: one wake-up per home runtime.
    pub(super) fn deliver(self) {
        for (home, mut answers) in self.by_home {
            if answers.len() == 1 {
                // A spawned task would cost the same wake-up plus the task.
                if let Some((reply, scored)) = answers.pop() {
                    let _ = reply.send(Ok(scored));
                }
                continue;
            }
            // On a runtime that is shutting down the task is dropped unrun, and with it the
            // replies: their callers see the engine's "shutting down", as for any dropped reply.
            home.runtime.spawn(async move {
                for (reply, scored) in answers {
                    let _ = reply.send(Ok(scored));
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(score: f32) -> Scored {
        Scored {
            scores: vec![score],
            reasons: Vec::new(),
            queue_us: 0,
            compute_us: 0,
            enqueued: std::time::Instant::now(),
        }
    }

    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_current_thread_caller_has_a_home_and_a_multi_thread_one_none() {
        assert!(Home::current().is_none(), "outside any runtime");
        assert!(
            current_thread()
                .block_on(async { Home::current() })
                .is_some()
        );
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("runtime");
        assert!(multi.block_on(async { Home::current() }).is_none());
    }

    #[test]
    fn answers_for_one_runtime_travel_together_and_all_arrive() {
        let runtime = current_thread();
        let home = runtime.block_on(async { Home::current() });
        let (replies, answers): (Vec<_>, Vec<_>) = (0..5).map(|_| oneshot::channel()).unzip();
        // From another thread, as the engine's batcher sends them.
        let delivery = std::thread::spawn(move || {
            let mut delivery = Delivery::default();
            for (i, reply) in replies.into_iter().enumerate() {
                delivery.send(home.as_ref(), reply, scored(i as f32));
            }
            let groups: Vec<usize> = delivery.by_home.iter().map(|(_, a)| a.len()).collect();
            delivery.deliver();
            groups
        })
        .join()
        .expect("delivery thread");
        assert_eq!(
            delivery,
            vec![5],
            "one hand-over for the runtime's five answers"
        );
        let got = runtime.block_on(async {
            let mut got = Vec::new();
            for answer in answers {
                got.push(answer.await.expect("answered").expect("ok").scores[0]);
            }
            got
        });
        assert_eq!(got, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn callers_of_two_runtimes_get_a_hand_over_each_and_others_are_answered_at_once() {
        let (a, b) = (current_thread(), current_thread());
        let home_a = a.block_on(async { Home::current() });
        let home_b = std::thread::spawn(move || b.block_on(async { Home::current() }))
            .join()
            .expect("thread");
        let mut delivery = Delivery::default();
        let (direct, mut direct_answer) = oneshot::channel();
        delivery.send(None, direct, scored(9.0));
        assert_eq!(
            direct_answer
                .try_recv()
                .expect("sent at once")
                .expect("ok")
                .scores,
            vec![9.0]
        );
        let mut answers = Vec::new();
        for home in [&home_a, &home_b, &home_a] {
            let (reply, answer) = oneshot::channel();
            delivery.send(home.as_ref(), reply, scored(1.0));
            answers.push(answer);
        }
        let groups: Vec<usize> = delivery.by_home.iter().map(|(_, a)| a.len()).collect();
        assert_eq!(groups, vec![2, 1]);
    }

    #[test]
    fn answers_for_a_runtime_that_is_gone_are_dropped_not_lost_in_a_hang() {
        let runtime = current_thread();
        let home = runtime.block_on(async { Home::current() });
        drop(runtime);
        let mut delivery = Delivery::default();
        let (mut replies, mut answers) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            let (reply, answer) = oneshot::channel();
            replies.push(reply);
            answers.push(answer);
        }
        for reply in replies {
            delivery.send(home.as_ref(), reply, scored(1.0));
        }
        delivery.deliver();
        for mut answer in answers {
            assert!(matches!(
                answer.try_recv(),
                Err(oneshot::error::TryRecvError::Closed)
            ));
        }
    }
}

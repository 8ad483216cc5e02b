//! One gRPC (HTTP/2) connection's life: closed when the client never sends the HTTP/2 preface
//! (`server.grpc_preface_timeout_ms`), sent GOAWAY when no call has been open on it for
//! `server.grpc_idle_timeout_ms`, and when it is older than `server.grpc_max_connection_age_ms`
//! (calls still open then get `server.grpc_max_connection_age_grace_ms` to finish); hyper's own
//! keepalive closes one whose peer answers no PING (`server.grpc_keepalive_time_ms`,
//! `server.grpc_keepalive_timeout_ms`), and this counts it.
//!
//! hyper's HTTP/2 server has none of these: a client that connected and sent nothing held a
//! descriptor and a task for ever. The age limit is what grpc-go's `MaxConnectionAge` is for: a
//! gRPC client keeps one connection for its whole life, so behind an L4 load balancer (a
//! Kubernetes Service, GCP's passthrough load balancer) the replicas an autoscaler adds get no
//! calls from clients that connected before them. A GOAWAY makes the client open a new
//! connection, which the balancer places afresh; calls on the old one finish first, and a call
//! that has not started on it is retried by the client on the new one (the GOAWAY names the last
//! stream the server took).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::calls::{Calls, Counted};
use crate::config::ServerConfig;
use crate::histogram::write_samples;
use crate::server::http::{Draining, limit};
use crate::server::socket::{Arrivals, Noted};

/// The HTTP/2 client preface (`PRI * HTTP/2.0…`): its length in bytes.
const PREFACE_LEN: u64 = 24;

/// A gRPC connection's limits, each `None` for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From accept to the whole client preface.
    pub preface: Option<Duration>,
    /// With no call open, from the last call's end (or accept) to a GOAWAY.
    pub idle: Option<Duration>,
    /// From accept to a GOAWAY, whatever the connection is doing (±10 % per connection, so
    /// connections opened together are not all renewed together).
    pub max_age: Option<Duration>,
    /// After an age GOAWAY, how long open calls may still run before the connection is closed.
    pub age_grace: Option<Duration>,
    /// With nothing read for this long, a PING; unanswered for the second, the connection closes.
    pub keepalive: Option<(Duration, Duration)>,
}

impl Limits {
    /// The four values of `server`.
    pub fn of(server: &ServerConfig) -> Limits {
        Limits {
            preface: limit(server.grpc_preface_timeout_ms),
            idle: limit(server.grpc_idle_timeout_ms),
            max_age: limit(server.grpc_max_connection_age_ms),
            age_grace: limit(server.grpc_max_connection_age_grace_ms),
            keepalive: limit(server.grpc_keepalive_time_ms).map(|time| {
                (
                    time,
                    Duration::from_millis(server.grpc_keepalive_timeout_ms),
                )
            }),
        }
    }

    /// Sets the keepalive on `http2`, the one limit hyper itself enforces.
    pub fn apply(&self, http2: &mut hyper::server::conn::http2::Builder<TokioExecutor>) {
        if let Some((time, timeout)) = self.keepalive {
            http2
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(time)
                .keep_alive_timeout(timeout);
        }
    }
}

/// Connections the gRPC port closed or sent away, by why.
#[derive(Debug, Default)]
pub struct Closed {
    preface: AtomicU64,
    idle: AtomicU64,
    age: AtomicU64,
    age_cut: AtomicU64,
    keepalive: AtomicU64,
}

impl Closed {
    fn count(&self, why: Why) {
        let counter = match why {
            Why::Preface => &self.preface,
            Why::Idle => &self.idle,
            Why::Age => &self.age,
            Why::AgeCut => &self.age_cut,
            Why::Keepalive => &self.keepalive,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends `pixguard_grpc_connections_closed_total` to a Prometheus exposition.
    pub fn prometheus(&self, out: &mut String) {
        let samples = [
            ("preface", &self.preface),
            ("idle", &self.idle),
            ("age", &self.age),
            ("age_grace", &self.age_cut),
            ("keepalive", &self.keepalive),
        ]
        .map(|(reason, n)| {
            (
                format!("{{reason=\"{reason}\"}}"),
                n.load(Ordering::Relaxed),
            )
        });
        write_samples(
            out,
            "pixguard_grpc_connections_closed_total",
            "gRPC connections the server ended: no HTTP/2 preface within \
             server.grpc_preface_timeout_ms (preface, closed), no call open for \
             server.grpc_idle_timeout_ms (idle, GOAWAY), older than \
             server.grpc_max_connection_age_ms (age, GOAWAY), and of those, calls still open \
             after server.grpc_max_connection_age_grace_ms (age_grace, closed under them), no \
             answer to a PING within server.grpc_keepalive_timeout_ms (keepalive, closed).",
            "counter",
            &samples,
        );
    }
}

/// Why the server ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Preface,
    Idle,
    Age,
    AgeCut,
    /// hyper's keepalive: a PING went unanswered (not a verdict: hyper ends the connection).
    Keepalive,
}

/// What the connection's supervisor does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Drop the connection (its socket closes; open calls, if any, are reset).
    Close(Why),
    /// Send GOAWAY: no new calls, open ones finish.
    GoAway(Why),
    /// Nothing yet; look again then (`None`: only when something else happens).
    Wait(Option<Instant>),
}

/// What the supervisor sees of its connection when its timer fires.
#[derive(Debug, Clone, Copy)]
struct Seen {
    now: Instant,
    accepted: Instant,
    /// The whole client preface has arrived.
    prefaced: bool,
    open_calls: usize,
    /// When the last call ended (accept while none has).
    idle_since: Instant,
    /// The connection's own age limit (`max_age` with its jitter), from accept.
    max_age: Option<Duration>,
    /// Whether an age GOAWAY has been sent, and when.
    aged_at: Option<Instant>,
}

/// The rules, as a function of what is seen, so they can be tested without a clock.
fn verdict(limits: &Limits, s: &Seen) -> Verdict {
    if let Some(aged_at) = s.aged_at {
        // Sent away for its age: the calls still open get the grace, then are cut.
        return match limits.age_grace {
            Some(grace) if s.now >= aged_at + grace => Verdict::Close(Why::AgeCut),
            Some(grace) => Verdict::Wait(Some(aged_at + grace)),
            None => Verdict::Wait(None),
        };
    }
    let mut next: Option<Instant> = None;
    let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
    if !s.prefaced
        && let Some(preface) = limits.preface
    {
        if s.now >= s.accepted + preface {
            return Verdict::Close(Why::Preface);
        }
        at(s.accepted + preface);
    }
    if let Some(age) = s.max_age {
        if s.now >= s.accepted + age {
            return Verdict::GoAway(Why::Age);
        }
        at(s.accepted + age);
    }
    if let Some(idle) = limits.idle {
        if s.open_calls == 0 {
            if s.now >= s.idle_since + idle {
                return Verdict::GoAway(Why::Idle);
            }
            at(s.idle_since + idle);
        } else {
            // A call ending is not a wake-up; the earliest it could be idle enough is `idle` on.
            at(s.now + idle);
        }
    }
    Verdict::Wait(next)
}

/// Serves one accepted connection with `http2` and `service` to its end, under `limits`.
pub(super) async fn serve<S, B>(
    tcp: tokio::net::TcpStream,
    http2: &hyper::server::conn::http2::Builder<TokioExecutor>,
    service: S,
    limits: Limits,
    closed: Arc<Closed>,
    mut draining: Draining,
) where
    S: Service<hyper::Request<Incoming>, Response = hyper::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let accepted = Instant::now();
    let calls = Arc::new(Calls::new(accepted));
    let prefaced = Arc::new(AtomicBool::new(false));
    let io = Noted {
        tcp,
        arrivals: Preface {
            read: 0,
            whole: prefaced.clone(),
        },
    };
    let service = Counted {
        inner: service,
        calls: calls.clone(),
    };
    let connection = http2.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let max_age = limits.max_age.map(crate::server::age::jittered);
    let mut aged_at = None;
    let mut going_away = false;
    let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(accepted));
    tokio::pin!(sleep);
    let mut armed = true;
    loop {
        tokio::select! {
            ended = connection.as_mut() => {
                match ended {
                    // hyper's one timer on an HTTP/2 server connection is the keepalive's.
                    Err(e) if e.is_timeout() => {
                        closed.count(Why::Keepalive);
                        tracing::debug!("grpc connection closed: no answer to a keepalive ping");
                    }
                    Err(e) => tracing::debug!(error = %e, "grpc connection ended with an error"),
                    Ok(()) => {}
                }
                return;
            }
            () = draining.started(), if !going_away => {
                // The server's own drain (and its hard stop) governs from here.
                going_away = true;
                armed = false;
                connection.as_mut().graceful_shutdown();
            }
            () = sleep.as_mut(), if armed => {
                let seen = Seen {
                    now: Instant::now(),
                    accepted,
                    prefaced: prefaced.load(Ordering::Relaxed),
                    open_calls: calls.open(),
                    idle_since: calls.idle_since(),
                    max_age,
                    aged_at,
                };
                match verdict(&limits, &seen) {
                    Verdict::Close(why) => {
                        closed.count(why);
                        tracing::debug!(reason = ?why, "grpc connection closed");
                        return;
                    }
                    Verdict::GoAway(why) => {
                        closed.count(why);
                        if why == Why::Age {
                            aged_at = Some(seen.now);
                        } else {
                            armed = false;
                        }
                        if !going_away {
                            going_away = true;
                            connection.as_mut().graceful_shutdown();
                        }
                    }
                    Verdict::Wait(Some(at)) => {
                        sleep.as_mut().reset(tokio::time::Instant::from_std(at));
                    }
                    Verdict::Wait(None) => armed = false,
                }
            }
        }
    }
}

/// Counts the bytes read until the client preface has all arrived.
struct Preface {
    read: u64,
    whole: Arc<AtomicBool>,
}

impl Arrivals for Preface {
    fn arrived(&mut self, bytes: usize) {
        if self.read < PREFACE_LEN {
            self.read += bytes as u64;
            if self.read >= PREFACE_LEN {
                self.whole.store(true, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn limits() -> Limits {
        Limits {
            preface: Some(MS(300)),
            idle: Some(MS(2_000)),
            max_age: Some(MS(10_000)),
            age_grace: Some(MS(1_000)),
            keepalive: Some((MS(5_000), MS(1_000))),
        }
    }

    fn seen(accepted: Instant, after_ms: u64) -> Seen {
        Seen {
            now: accepted + MS(after_ms),
            accepted,
            prefaced: true,
            open_calls: 0,
            idle_since: accepted,
            max_age: Some(MS(10_000)),
            aged_at: None,
        }
    }

    #[test]
    fn a_connection_without_its_preface_is_closed_at_the_preface_limit() {
        let t0 = Instant::now();
        let silent = Seen {
            prefaced: false,
            ..seen(t0, 100)
        };
        assert_eq!(
            verdict(&limits(), &silent),
            Verdict::Wait(Some(t0 + MS(300)))
        );
        let late = Seen {
            now: t0 + MS(300),
            ..silent
        };
        assert_eq!(verdict(&limits(), &late), Verdict::Close(Why::Preface));
        // Once prefaced the preface clock no longer applies: the idle one is next.
        assert_eq!(
            verdict(&limits(), &seen(t0, 300)),
            Verdict::Wait(Some(t0 + MS(2_000)))
        );
    }

    #[test]
    fn idle_counts_from_the_last_calls_end_and_not_while_a_call_is_open() {
        let t0 = Instant::now();
        assert_eq!(
            verdict(&limits(), &seen(t0, 2_000)),
            Verdict::GoAway(Why::Idle)
        );
        let busy = Seen {
            open_calls: 1,
            ..seen(t0, 5_000)
        };
        assert_eq!(
            verdict(&limits(), &busy),
            Verdict::Wait(Some(t0 + MS(7_000)))
        );
        let ended = Seen {
            idle_since: t0 + MS(4_500),
            ..seen(t0, 5_000)
        };
        assert_eq!(
            verdict(&limits(), &ended),
            Verdict::Wait(Some(t0 + MS(6_500)))
        );
    }

    #[test]
    fn an_old_connection_is_sent_away_then_cut_after_the_grace() {
        let t0 = Instant::now();
        let busy = |after| Seen {
            open_calls: 3,
            ..seen(t0, after)
        };
        // Busy, so never idle: the age comes first.
        assert_eq!(
            verdict(&limits(), &busy(9_999)),
            Verdict::Wait(Some(t0 + MS(10_000)))
        );
        assert_eq!(verdict(&limits(), &busy(10_000)), Verdict::GoAway(Why::Age));
        let aged = |after| Seen {
            aged_at: Some(t0 + MS(10_000)),
            ..busy(after)
        };
        assert_eq!(
            verdict(&limits(), &aged(10_500)),
            Verdict::Wait(Some(t0 + MS(11_000)))
        );
        assert_eq!(
            verdict(&limits(), &aged(11_000)),
            Verdict::Close(Why::AgeCut)
        );
        // Without a grace the calls may run on; the connection ends with the last of them.
        let no_grace = Limits {
            age_grace: None,
            ..limits()
        };
        assert_eq!(verdict(&no_grace, &aged(60_000)), Verdict::Wait(None));
    }

    #[test]
    fn limits_set_to_zero_do_not_apply() {
        let none = Limits::of(&ServerConfig {
            grpc_preface_timeout_ms: 0,
            grpc_idle_timeout_ms: 0,
            grpc_max_connection_age_ms: 0,
            grpc_max_connection_age_grace_ms: 0,
            grpc_keepalive_time_ms: 0,
            ..ServerConfig::default()
        });
        assert_eq!(
            none,
            Limits {
                preface: None,
                idle: None,
                max_age: None,
                age_grace: None,
                keepalive: None,
            }
        );
        let t0 = Instant::now();
        let s = Seen {
            prefaced: false,
            max_age: None,
            ..seen(t0, 1_000_000)
        };
        assert_eq!(verdict(&none, &s), Verdict::Wait(None));
    }
}

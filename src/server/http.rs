//! The HTTP port's accept loop: HTTP/1.1 connections onto the router, closed when a client is too
//! slow to send a request (`server.http_header_timeout_ms`) or leaves a connection idle too long
//! (`server.http_idle_timeout_ms`).
//!
//! `axum::serve` has neither: a connection that sent half a request head, or nothing, was held
//! open for as long as the client liked — one file descriptor and one task each, enough of them
//! and the process runs out. hyper's own `header_read_timeout` runs from the moment a connection
//! starts waiting for a head, so it is an idle timeout too: one value cannot both close a slow
//! head within seconds and keep a load balancer's pooled connection for the 600 s GCLB expects.
//! Here the head's clock starts at its first byte (or at accept, for a connection's first
//! request), and the idle clock at the end of the previous answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::rt::{Sleep, Timer};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

use crate::config::ServerConfig;
use crate::histogram::write_samples;
use crate::server::age::{Aging, jittered};
use crate::server::socket::{Arrivals, Noted};

/// How long a client may take, and a connection may last, each `None` for no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From a request head's first byte (a new connection's: from accept) to its last.
    pub header: Option<Duration>,
    /// From an answer to the next request's first byte on a kept-alive connection.
    pub idle: Option<Duration>,
    /// From accept (±10 % per connection) to the answer that closes the connection.
    pub max_age: Option<Duration>,
}

impl Timeouts {
    /// The three values of `server`.
    pub fn of(server: &ServerConfig) -> Timeouts {
        Timeouts {
            header: limit(server.http_header_timeout_ms),
            idle: limit(server.http_idle_timeout_ms),
            max_age: limit(server.http_max_connection_age_ms),
        }
    }
}

/// A connection limit from its `server.*_ms` key: 0 means none.
pub(super) fn limit(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// Connections the server closed: for a slow client, by which clock ran out, and for their age.
#[derive(Debug, Default)]
pub struct TimedOut {
    header: AtomicU64,
    idle: AtomicU64,
    aged: Arc<AtomicU64>,
}

impl TimedOut {
    /// Appends `pixguard_http_timeouts_total` to a Prometheus exposition.
    pub fn prometheus(&self, out: &mut String) {
        write_samples(
            out,
            "pixguard_http_timeouts_total",
            "HTTP connections closed because the client was too slow: a request head not complete \
             within server.http_header_timeout_ms (header), or no next request within \
             server.http_idle_timeout_ms (idle).",
            "counter",
            &[
                (
                    "{clock=\"header\"}".into(),
                    self.header.load(Ordering::Relaxed),
                ),
                ("{clock=\"idle\"}".into(), self.idle.load(Ordering::Relaxed)),
            ],
        );
        write_samples(
            out,
            "pixguard_http_connections_aged_total",
            "HTTP connections closed for their age (server.http_max_connection_age_ms): the answer \
             to their next request carried Connection: close.",
            "counter",
            &[(String::new(), self.aged.load(Ordering::Relaxed))],
        );
    }
}

/// Serves `router` over HTTP/1.1 on `listener` until `stop` is notified; then stops accepting,
/// lets each connection finish the request it is on, and returns once they have closed.
///
/// HTTP/1.1 only: gRPC has its own port, and hyper's HTTP/2 server has no head or idle timeout
/// to close a silent connection with (`axum::serve` also took HTTP/2 with prior knowledge here;
/// nothing in pixguard used it).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    timeouts: Timeouts,
    timed_out: Arc<TimedOut>,
    stop: Arc<tokio::sync::Notify>,
) {
    accept_until(listener, &stop, Port::Http, |tcp, mut draining| {
        let clock = Arc::new(Clock::new(timeouts));
        let mut http1 = hyper::server::conn::http1::Builder::new();
        if timeouts.header.is_some() || timeouts.idle.is_some() {
            // hyper arms the timer whenever it starts waiting for a head; the value is unused
            // (the clock's `HeadWait` sets the deadline) but must be there to turn it on.
            http1
                .timer(ConnectionTimer(clock.clone()))
                .header_read_timeout(Duration::from_secs(3600));
        } else {
            http1.header_read_timeout(None);
        }
        let io = TokioIo::new(Noted {
            tcp,
            arrivals: clock.clone(),
        });
        let service = Aging {
            inner: TowerToHyperService::new(router.clone()),
            close_after: timeouts.max_age.map(|age| Instant::now() + jittered(age)),
            closing: AtomicBool::new(false),
            aged: timed_out.aged.clone(),
        };
        let connection = http1.serve_connection(io, service);
        let timed_out = timed_out.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = draining.started() => {
                    // Finishes the request it is on, then closes.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            match ended {
                Ok(()) => {}
                Err(e) if e.is_timeout() => {
                    let counter = match clock.fired.load(Ordering::Relaxed) {
                        IDLE => &timed_out.idle,
                        _ => &timed_out.header,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "http connection timed out");
                }
                Err(e) => tracing::debug!(error = %e, "http connection ended with an error"),
            }
        });
    })
    .await;
}

/// Hands each connection accepted on `listener` to `start` (which spawns its task, holding the
/// `Draining` until the connection has closed) until `stop` is notified; then stops accepting,
/// tells every connection to finish what it is on, and waits until they all have closed. The
/// HTTP and gRPC ports' one loop.
pub(super) async fn accept_until(
    listener: tokio::net::TcpListener,
    stop: &tokio::sync::Notify,
    port: Port,
    mut start: impl FnMut(tokio::net::TcpStream, Draining),
) {
    let drain = Drain::new();
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        let tcp = tokio::select! {
            () = &mut stopped => break,
            tcp = accept(&listener, port) => tcp,
        };
        start(tcp, drain.watch());
    }
    drop(listener);
    drain.finish().await;
}

/// Tells a port's connections that the server is stopping, and learns when they have all closed.
struct Drain(tokio::sync::watch::Sender<bool>);

impl Drain {
    fn new() -> Drain {
        Drain(tokio::sync::watch::channel(false).0)
    }

    /// A new connection's handle.
    fn watch(&self) -> Draining {
        Draining(self.0.subscribe())
    }

    /// Tells every connection, and returns once each has dropped its handle.
    async fn finish(self) {
        self.0.send_replace(true);
        self.0.closed().await;
    }
}

/// One connection's view of its port's drain: held until the connection has closed.
pub(super) struct Draining(tokio::sync::watch::Receiver<bool>);

impl Draining {
    /// Ready once the server is stopping (at once ever after).
    pub(super) async fn started(&mut self) {
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

/// The server's two ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Port {
    Http,
    Grpc,
}

/// Accepts that failed for the listener rather than for one connection, by port.
static ACCEPT_FAILED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

impl Port {
    fn as_str(self) -> &'static str {
        match self {
            Port::Http => "http",
            Port::Grpc => "grpc",
        }
    }
}

/// Appends `pixguard_accept_failures_total{port}` to a Prometheus exposition.
pub(super) fn accept_failures(out: &mut String) {
    let samples = [Port::Http, Port::Grpc].map(|port| {
        (
            format!("{{port=\"{}\"}}", port.as_str()),
            ACCEPT_FAILED[port as usize].load(Ordering::Relaxed),
        )
    });
    crate::histogram::write_samples(
        out,
        "pixguard_accept_failures_total",
        "Times a port could not accept a connection waiting for it (out of file descriptors or \
         memory); it waits 50 ms and tries again, and the client waits in the listen backlog.",
        "counter",
        &samples,
    );
}

/// The next connection on `listener`, with Nagle's algorithm off: small answers must leave at
/// once, and it held some for 40 ms.
async fn accept(listener: &tokio::net::TcpListener, port: Port) -> tokio::net::TcpStream {
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                return tcp;
            }
            // The peer gave up between SYN and accept: nothing to wait for.
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                // Out of descriptors or the like: wait instead of spinning on accept.
                ACCEPT_FAILED[port as usize].fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, port = port.as_str(), "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Errors `accept` returns for one connection, not for the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

const HEADER: u8 = 1;
const IDLE: u8 = 2;

/// One connection's view of its client's pace, shared by its IO (which notes bytes arriving) and
/// its timer (which turns that into a deadline). Both run on the connection's task.
#[derive(Debug)]
struct Clock {
    timeouts: Timeouts,
    /// When the connection was accepted: what the `at` values count from.
    accepted: Instant,
    /// Nanoseconds after `accepted`, plus one, of the first byte read since hyper began waiting
    /// for the current head; 0 while none has come.
    first_byte: AtomicU64,
    /// Whether hyper has waited for a head on this connection before.
    waited: AtomicBool,
    /// Which clock ran out (`HEADER` or `IDLE`), once one has.
    fired: AtomicU8,
}

impl Clock {
    fn new(timeouts: Timeouts) -> Clock {
        Clock {
            timeouts,
            accepted: Instant::now(),
            first_byte: AtomicU64::new(0),
            waited: AtomicBool::new(false),
            fired: AtomicU8::new(0),
        }
    }

    fn bytes_arrived(&self) {
        if self.first_byte.load(Ordering::Relaxed) == 0 {
            let at = self.accepted.elapsed().as_nanos() as u64 + 1;
            self.first_byte.store(at, Ordering::Relaxed);
        }
    }

    fn first_byte(&self) -> Option<Instant> {
        match self.first_byte.load(Ordering::Relaxed) {
            0 => None,
            at => Some(self.accepted + Duration::from_nanos(at - 1)),
        }
    }
}

/// What hyper waits on while it reads a head: the connection's own deadline, not the fixed one
/// hyper computes.
#[derive(Debug)]
struct ConnectionTimer(Arc<Clock>);

impl Timer for ConnectionTimer {
    /// Anything else hyper might time: a plain sleep.
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        TokioTimer::new().sleep(duration)
    }

    /// hyper calls this, and only this, when it starts waiting for a request head.
    fn sleep_until(&self, _deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let clock = self.0.clone();
        let first = !clock.waited.swap(true, Ordering::Relaxed);
        clock.first_byte.store(0, Ordering::Relaxed);
        let since = if first {
            clock.accepted
        } else {
            Instant::now()
        };
        Box::pin(HeadWait {
            clock,
            first,
            since,
            deadline: None,
            sleep: tokio::time::sleep_until(tokio::time::Instant::from_std(since)),
        })
    }
}

pin_project_lite::pin_project! {
    /// Ready when the head hyper is waiting for is late: `header` after its first byte (after
    /// accept for a connection's first request), or `idle` after the wait began while no byte has
    /// come. Polled by hyper each time the head is still incomplete, so a first byte moves the
    /// deadline as soon as it is read.
    struct HeadWait {
        clock: Arc<Clock>,
        first: bool,
        since: Instant,
        deadline: Option<(Instant, u8)>,
        #[pin]
        sleep: tokio::time::Sleep,
    }
}

impl HeadWait {
    /// The deadline now, and the clock it belongs to; `None`: no limit applies.
    fn deadline(first: bool, since: Instant, clock: &Clock) -> Option<(Instant, u8)> {
        let t = &clock.timeouts;
        let head_started = if first {
            Some(since)
        } else {
            clock.first_byte()
        };
        match (head_started, t.header) {
            (Some(at), Some(header)) => Some((at + header, HEADER)),
            // No byte yet after an answer, or no header limit: the idle clock from the wait's start.
            _ => t.idle.map(|idle| (since + idle, IDLE)),
        }
    }
}

impl Future for HeadWait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let now = Self::deadline(*this.first, *this.since, this.clock);
        if now != *this.deadline {
            *this.deadline = now;
            match now {
                Some((at, _)) => this
                    .sleep
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(at)),
                None => return Poll::Pending,
            }
        }
        let Some((_, which)) = *this.deadline else {
            return Poll::Pending;
        };
        match this.sleep.poll(cx) {
            Poll::Ready(()) => {
                this.clock.fired.store(which, Ordering::Relaxed);
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Sleep for HeadWait {}

impl Arrivals for Arc<Clock> {
    fn arrived(&mut self, _bytes: usize) {
        self.bytes_arrived();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(header_ms: Option<u64>, idle_ms: Option<u64>) -> Clock {
        Clock::new(Timeouts {
            header: header_ms.map(Duration::from_millis),
            idle: idle_ms.map(Duration::from_millis),
            max_age: None,
        })
    }

    #[test]
    fn a_heads_clock_starts_at_accept_first_then_at_its_first_byte() {
        let ms = Duration::from_millis;
        let c = clock(Some(300), Some(2_000));
        // A new connection's first request: the header clock from accept, bytes or not.
        let accepted = c.accepted;
        assert_eq!(
            HeadWait::deadline(true, accepted, &c),
            Some((accepted + ms(300), HEADER))
        );
        // Between requests, no byte yet: the idle clock from the wait's start.
        let since = accepted + ms(5_000);
        assert_eq!(
            HeadWait::deadline(false, since, &c),
            Some((since + ms(2_000), IDLE))
        );
        // The next head's first byte starts the header clock, wherever the idle one stood.
        c.bytes_arrived();
        let first = c.first_byte().unwrap();
        assert_eq!(
            HeadWait::deadline(false, since, &c),
            Some((first + ms(300), HEADER))
        );
        // Later bytes do not move it.
        std::thread::sleep(ms(2));
        c.bytes_arrived();
        assert_eq!(c.first_byte(), Some(first));
    }

    #[test]
    fn a_clock_set_to_zero_leaves_the_other() {
        let ms = Duration::from_millis;
        let no_header = clock(None, Some(2_000));
        let at = no_header.accepted;
        // Without a header limit even a new connection is held to the idle one.
        assert_eq!(
            HeadWait::deadline(true, at, &no_header),
            Some((at + ms(2_000), IDLE))
        );
        no_header.bytes_arrived();
        assert_eq!(
            HeadWait::deadline(false, at, &no_header),
            Some((at + ms(2_000), IDLE))
        );
        let no_idle = clock(Some(300), None);
        assert_eq!(HeadWait::deadline(false, at, &no_idle), None);
        assert_eq!(
            HeadWait::deadline(true, at, &no_idle),
            Some((at + ms(300), HEADER))
        );
        assert_eq!(HeadWait::deadline(false, at, &clock(None, None)), None);
        let server = ServerConfig {
            http_header_timeout_ms: 0,
            http_idle_timeout_ms: 7,
            http_max_connection_age_ms: 60_000,
            ..ServerConfig::default()
        };
        assert_eq!(
            Timeouts::of(&server),
            Timeouts {
                header: None,
                idle: Some(ms(7)),
                max_age: Some(ms(60_000)),
            }
        );
    }
}

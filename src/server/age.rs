//! Connection age limits, for clients that keep one connection for their whole life: behind an
//! L4 balancer (a Kubernetes Service, GCP's passthrough load balancer) such a client never
//! reaches the replicas an autoscaler adds. An old HTTP/1.1 connection's next answer carries
//! `Connection: close`, after which hyper closes it and the client opens a new one, which the
//! balancer places afresh (the gRPC port sends GOAWAY instead, `grpc/connection.rs`).

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue};
use hyper::service::Service;

/// `age` moved by up to ±10 %, differently for each connection, so that connections opened
/// together are not all renewed together.
pub(super) fn jittered(age: Duration) -> Duration {
    let draw = RandomState::new().hash_one(0u8) % 2_001; // 0..=2000 → -10.00 %..=+10.00 %
    age.mul_f64(0.9 + draw as f64 / 10_000.0)
}

/// An HTTP/1.1 connection's service: once the connection is older than its limit, the answer to
/// the next request closes it.
pub(super) struct Aging<S> {
    pub inner: S,
    /// When the connection reaches its age limit; `None`: never.
    pub close_after: Option<Instant>,
    /// Whether an answer has been marked to close the connection.
    pub closing: AtomicBool,
    /// Connections closed for their age, all of the port's.
    pub aged: Arc<AtomicU64>,
}

impl<S, B> Service<hyper::Request<Incoming>> for Aging<S>
where
    S: Service<hyper::Request<Incoming>, Response = hyper::Response<B>>,
{
    type Response = hyper::Response<B>;
    type Error = S::Error;
    type Future = Closing<S::Future>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        // Decided at the request's arrival: the answer to it is the connection's last.
        let close = self.close_after.is_some_and(|at| Instant::now() >= at);
        if close && !self.closing.swap(true, Ordering::Relaxed) {
            self.aged.fetch_add(1, Ordering::Relaxed);
        }
        Closing {
            inner: self.inner.call(request),
            close,
        }
    }
}

pin_project_lite::pin_project! {
    /// An answer on its way, given `Connection: close` when its connection is too old.
    pub(super) struct Closing<F> {
        #[pin]
        inner: F,
        close: bool,
    }
}

impl<F, B, E> Future for Closing<F>
where
    F: Future<Output = Result<hyper::Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut answer = std::task::ready!(this.inner.poll(cx))?;
        if *this.close {
            // hyper closes the connection once an answer saying so is written.
            answer
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        Poll::Ready(Ok(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        let age = Duration::from_secs(1_000);
        let draws: Vec<Duration> = (0..200).map(|_| jittered(age)).collect();
        assert!(
            draws
                .iter()
                .all(|d| *d >= Duration::from_secs(900) && *d <= Duration::from_secs(1_100)),
            "{draws:?}"
        );
        // Not one value for every connection.
        assert!(draws.iter().any(|d| *d != draws[0]));
    }
}

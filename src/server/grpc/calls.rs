//! The calls open on one gRPC connection, counted so that its idle clock
//! (`server.grpc_idle_timeout_ms`) runs only while none is: a call is open from its request's
//! arrival until hyper drops its answer's body, after the last frame or a reset.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::Service;

/// The calls open on one connection, and since when none has been.
#[derive(Debug)]
pub(super) struct Calls {
    accepted: Instant,
    open: AtomicUsize,
    /// Nanoseconds after `accepted` at which the last call ended.
    idle_since: AtomicU64,
}

impl Calls {
    /// A connection accepted at `accepted`, no call yet.
    pub fn new(accepted: Instant) -> Calls {
        Calls {
            accepted,
            open: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
        }
    }

    /// Calls open now; a caller seeing 0 also sees the last one's end in `idle_since`.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// When the last call ended (`accepted` while none has).
    pub fn idle_since(&self) -> Instant {
        self.accepted + Duration::from_nanos(self.idle_since.load(Ordering::Relaxed))
    }
}

/// One open call: from the request's arrival until its answer's last frame is sent (or the call
/// is reset), so a streaming call (the health `Watch`) keeps its connection from being idle.
struct OpenCall(Arc<Calls>);

impl OpenCall {
    fn new(calls: &Arc<Calls>) -> OpenCall {
        calls.open.fetch_add(1, Ordering::AcqRel);
        OpenCall(calls.clone())
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        // The time first, then the count: whoever sees no call open sees this end's time.
        let calls = &self.0;
        let at = calls.accepted.elapsed().as_nanos() as u64;
        calls.idle_since.fetch_max(at, Ordering::Relaxed);
        calls.open.fetch_sub(1, Ordering::Release);
    }
}

/// The port's service, counting its calls.
pub(super) struct Counted<S> {
    pub inner: S,
    pub calls: Arc<Calls>,
}

impl<S, B> Service<hyper::Request<Incoming>> for Counted<S>
where
    S: Service<hyper::Request<Incoming>, Response = hyper::Response<B>>,
{
    type Response = hyper::Response<Tracked<B>>;
    type Error = S::Error;
    type Future = Answering<S::Future>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        Answering {
            open: Some(OpenCall::new(&self.calls)),
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// A call's answer on its way, holding the call open; the answer's body takes it over.
    pub(super) struct Answering<F> {
        open: Option<OpenCall>,
        #[pin]
        inner: F,
    }
}

impl<F, B, E> Future for Answering<F>
where
    F: Future<Output = Result<hyper::Response<B>, E>>,
{
    type Output = Result<hyper::Response<Tracked<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = std::task::ready!(this.inner.poll(cx))?;
        let open = this.open.take();
        Poll::Ready(Ok(answer.map(|body| Tracked { body, _open: open })))
    }
}

pin_project_lite::pin_project! {
    /// An answer's body, holding its call open until hyper drops it.
    pub(super) struct Tracked<B> {
        #[pin]
        body: B,
        _open: Option<OpenCall>,
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

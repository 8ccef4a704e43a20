//! `--max-connections`: a semaphore on accept. The accept loop asks the
//! make-service for readiness before taking each connection, so once every
//! permit is held, new connections wait in the kernel's listen backlog
//! instead of being accepted and starved. A permit lives as long as the
//! connection's service (hyper drops it when the connection closes).

use axum::Router;
use std::convert::Infallible;
use std::future::Ready;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;
use tower_service::Service;

/// Makes one [`PermitRouter`] per accepted connection, at most `limit` at a time.
pub(crate) struct ConnectionLimit {
    router: Router,
    semaphore: PollSemaphore,
    /// Acquired by `poll_ready`, handed to the next connection by `call`.
    ready: Option<OwnedSemaphorePermit>,
}

impl ConnectionLimit {
    pub(crate) fn new(router: Router, limit: usize) -> Self {
        Self {
            router,
            semaphore: PollSemaphore::new(Arc::new(Semaphore::new(limit.max(1)))),
            ready: None,
        }
    }
}

impl<Target> Service<Target> for ConnectionLimit {
    type Response = PermitRouter;
    type Error = Infallible;
    type Future = Ready<Result<PermitRouter, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.ready.is_none() {
            match self.semaphore.poll_acquire(cx) {
                Poll::Ready(Some(permit)) => self.ready = Some(permit),
                // The semaphore is never closed.
                Poll::Ready(None) => unreachable!("the connection semaphore was closed"),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _target: Target) -> Self::Future {
        let permit = self.ready.take().expect("poll_ready is called before call");
        std::future::ready(Ok(PermitRouter {
            router: self.router.clone(),
            _permit: Arc::new(permit),
        }))
    }
}

/// The router for one connection, holding its connection permit.
#[derive(Clone)]
pub(crate) struct PermitRouter {
    router: Router,
    _permit: Arc<OwnedSemaphorePermit>,
}

impl<B> Service<axum::http::Request<B>> for PermitRouter
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = <Router as Service<axum::http::Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<axum::http::Request<B>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        self.router.call(request)
    }
}

//! Which request opened a connection, and how long the connect took, from the client side.
//!
//! A tower layer around reqwest's connector (`ClientBuilder::connector_layer`) times every
//! connect and reports it to the run whose request future drove it: each run is wrapped in
//! `scoped`, a tokio task-local that the connect future finds while that run's future polls it.
//! hyper-util starts a connect only when the pool has no idle connection for the request, so a
//! run that reused one sees none. A connect that hyper finishes in the background after the
//! pool gave the request another connection reaches no run, as it should.
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

tokio::task_local! {
    static CONNECT_MS: Cell<Option<f64>>;
}

/// Runs `fut` with its own connect slot; returns its output and the connect time (ms) of the
/// connection its request opened, or None when it reused one.
pub async fn scoped<F: Future>(fut: F) -> (F::Output, Option<f64>) {
    CONNECT_MS
        .scope(Cell::new(None), async {
            let out = fut.await;
            (out, CONNECT_MS.with(Cell::get))
        })
        .await
}

#[derive(Clone, Copy, Default)]
pub struct TimeConnects;

impl<S> Layer<S> for TimeConnects {
    type Service = Timed<S>;
    fn layer(&self, inner: S) -> Timed<S> {
        Timed { inner }
    }
}

#[derive(Clone)]
pub struct Timed<S> {
    inner: S,
}

impl<S, R> Service<R> for Timed<S>
where
    S: Service<R>,
    S::Future: Send + 'static,
    S::Response: 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let out = fut.await;
            if out.is_ok() {
                let ms = start.elapsed().as_secs_f64() * 1e3;
                let _ = CONNECT_MS.try_with(|c| c.set(Some(ms)));
            }
            out
        })
    }
}

//! A small HTTP server for `/metrics`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// The content type of the Prometheus text exposition format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `GET /metrics` (HTTP/1.1) from a [`Metrics`] registry.
///
/// ```no_run
/// # async fn demo() -> kars_backup_notify::Result<()> {
/// use kars_backup_notify::{Metrics, MetricsServer};
/// let metrics = Metrics::new();
/// let server = MetricsServer::bind("127.0.0.1:9898".parse().unwrap(), metrics.clone()).await?;
/// let shutdown = tokio_util::sync::CancellationToken::new();
/// tokio::spawn(server.serve(shutdown.clone()));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    metrics: Metrics,
}

impl MetricsServer {
    /// Listens on `addr` (port 0 picks a free port; see [`local_addr`](Self::local_addr)).
    ///
    /// # Errors
    /// [`Error::Bind`].
    pub async fn bind(addr: SocketAddr, metrics: Metrics) -> Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        Ok(MetricsServer {
            listener,
            local_addr,
            metrics,
        })
    }

    /// The address actually listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled; open connections are closed gracefully.
    ///
    /// # Errors
    /// None in practice: accept errors (e.g. too many open files) are logged and retried.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        tracing::info!(addr = %self.local_addr, "serving /metrics");
        loop {
            let (stream, _) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics server: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let metrics = self.metrics.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let metrics = metrics.clone();
                    async move { Ok::<_, Infallible>(handle(&req, &metrics)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                let result = tokio::select! {
                    r = conn.as_mut() => r,
                    () = shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "metrics server: connection error");
                }
            });
        }
        tracing::info!("metrics server stopped");
        Ok(())
    }
}

fn handle(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(v) = content_type.parse() {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, v);
        }
        response
    };
    let text = "text/plain; charset=utf-8";
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            reply(StatusCode::OK, TEXT_FORMAT, metrics.render())
        }
        (&Method::GET | &Method::HEAD, "/") => reply(
            StatusCode::OK,
            text,
            "kars-backup daemon: metrics at /metrics\n".into(),
        ),
        (_, "/metrics" | "/") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            "only GET is supported\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            text,
            "not found; try /metrics\n".into(),
        ),
    }
}

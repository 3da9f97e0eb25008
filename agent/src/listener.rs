//! One port, two protocols: a connection whose first byte is a TLS
//! handshake record (0x16) gets RA-TLS, anything else plain HTTP. So
//! validators that speak RA-TLS and Targon's validators (plain HTTP on 8080,
//! then 8980) both reach the agent on its default port.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tower_service::Service;

/// TLS records of type handshake start with this byte; no HTTP method does.
const TLS_HANDSHAKE: u8 = 0x16;
/// A client that sends nothing (or no complete handshake) this long is dropped.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);
/// ...and one that takes this long to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 2048;

/// Serve `app`: RA-TLS and plain HTTP told apart by the first byte, or
/// plain HTTP only when `tls` is `None` (the optional second port).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return Ok(());
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let mut first = [0u8; 1];
            match tokio::time::timeout(FIRST_BYTES_TIMEOUT, stream.peek(&mut first)).await {
                Ok(Ok(1)) => {}
                _ => return,
            }
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                app.clone().call(req)
            });
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10));
            let tls = acceptor.filter(|_| first[0] == TLS_HANDSHAKE);
            let result = if let Some(acceptor) = tls {
                match tokio::time::timeout(FIRST_BYTES_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        builder
                            .serve_connection_with_upgrades(TokioIo::new(tls), service)
                            .await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                }
            } else {
                builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

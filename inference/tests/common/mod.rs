//! What the inference tests share: a model server on loopback, and a
//! request sent to it as the validator sends one, its stream read as the
//! validator reads it.

use std::time::Instant;

use tvm_inference::check::Request;
use tvm_inference::server::{serve, ToyConfig};
use tvm_inference::stream::{Observed, StreamReader};

pub async fn start(cfg: ToyConfig) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(serve(l, cfg));
    url
}

/// `req`, streamed to its endpoint at `url`.
pub async fn ask(url: &str, req: &Request) -> Observed {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let t = Instant::now();
    let mut resp = reqwest::Client::new()
        .post(format!("{url}{}", req.endpoint.path()))
        .header("content-type", "application/json")
        .body(req.body().to_string())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let mut r = StreamReader::default();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        r.feed(&chunk, t.elapsed().as_secs_f64()).unwrap();
    }
    r.observed
}

//! A loopback HTTPS server playing Intel PCS, AMD KDS and NVIDIA's RIM and
//! OCSP services, serving the real vector collateral in the services' own
//! response formats.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::testdata;

pub struct Pcs {
    collateral: dcap_qvl::QuoteCollateralV3,
    vcek: Vec<u8>,
    pub requests: AtomicUsize,
    pub ocsp_requests: AtomicUsize,
    rate_limited: bool,
    /// What an operator's manifest URL answers (`/manifests.json`).
    pub manifests: std::sync::Mutex<Vec<u8>>,
}

fn chain(v: &str) -> HeaderValue {
    let enc =
        percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string();
    HeaderValue::from_str(&enc).unwrap()
}

/// PCS's signed-JSON answer: `{"<field>": <doc>, "signature": "<hex>"}`, with
/// the issuer chain URL-encoded in a header.
fn signed_doc(field: &str, doc: &str, sig: &[u8], header: &'static str, issuers: &str) -> Response {
    let body = format!(r#"{{"{field}":{doc},"signature":"{}"}}"#, hex::encode(sig));
    let mut h = HeaderMap::new();
    h.insert(header, chain(issuers));
    (h, body).into_response()
}

async fn tcb(State(s): State<Arc<Pcs>>) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let c = &s.collateral;
    signed_doc(
        "tcbInfo",
        &c.tcb_info,
        &c.tcb_info_signature,
        "TCB-Info-Issuer-Chain",
        &c.tcb_info_issuer_chain,
    )
}

async fn qe(State(s): State<Arc<Pcs>>) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let c = &s.collateral;
    signed_doc(
        "enclaveIdentity",
        &c.qe_identity,
        &c.qe_identity_signature,
        "SGX-Enclave-Identity-Issuer-Chain",
        &c.qe_identity_issuer_chain,
    )
}

async fn pck_crl(State(s): State<Arc<Pcs>>) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let mut h = HeaderMap::new();
    h.insert(
        "SGX-PCK-CRL-Issuer-Chain",
        chain(&s.collateral.pck_crl_issuer_chain),
    );
    (h, s.collateral.pck_crl.clone()).into_response()
}

async fn root_crl(State(s): State<Arc<Pcs>>) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    s.collateral.root_ca_crl.clone().into_response()
}

async fn vcek(
    State(s): State<Arc<Pcs>>,
    Path((product, _hwid)): Path<(String, String)>,
) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    if s.rate_limited {
        let mut h = HeaderMap::new();
        h.insert("Retry-After", HeaderValue::from_static("60"));
        return (StatusCode::TOO_MANY_REQUESTS, h, "slow down").into_response();
    }
    if _hwid == "crl" {
        // No real AMD CRL is public here: serve one AMD did not sign (Intel's).
        return s.collateral.root_ca_crl.clone().into_response();
    }
    if product != "Milan" {
        return StatusCode::NOT_FOUND.into_response();
    }
    s.vcek.clone().into_response()
}

pub struct Server {
    pub addr: SocketAddr,
    pub cert_der: Vec<u8>,
    pub handle: axum_server::Handle<SocketAddr>,
    pub state: Arc<Pcs>,
}

/// NVIDIA's RIM service, holding NV-1's driver and VBIOS RIMs.
async fn rim(State(s): State<Arc<Pcs>>, Path(id): Path<String>) -> Response {
    use base64::Engine as _;
    s.requests.fetch_add(1, Ordering::SeqCst);
    let file = match id.as_str() {
        "NV_GPU_DRIVER_GH100_550.90.07" => "nvidia/gonv_NV_GPU_DRIVER_GH100_550.90.07.xml",
        "NV_GPU_VBIOS_1010_0200_882_96009F0001" => {
            "nvidia/gonv_NV_GPU_VBIOS_1010_0200_882_96009F0001.xml"
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(testdata(file));
    format!(r#"{{"id":"{id}","rim":"{b64}","rim_format":"TCG","sha256":"","last_updated":"","request_id":"t"}}"#)
        .into_response()
}

/// An OCSP responder that is busy: OCSPResponse { responseStatus tryLater }.
async fn ocsp(State(s): State<Arc<Pcs>>) -> Response {
    s.ocsp_requests.fetch_add(1, Ordering::SeqCst);
    vec![0x30u8, 0x03, 0x0a, 0x01, 0x03].into_response()
}

async fn manifests(State(s): State<Arc<Pcs>>) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    s.manifests.lock().unwrap().clone().into_response()
}

pub async fn serve(rate_limited: bool) -> Server {
    let state = Arc::new(Pcs {
        collateral: tvm_certs::intel::parse_collateral(&testdata(
            "tdx/dcapqvl_tdx_quote_v4_collateral.json",
        ))
        .unwrap(),
        vcek: testdata("snp/virtee_milan_vcek.der"),
        requests: AtomicUsize::new(0),
        ocsp_requests: AtomicUsize::new(0),
        rate_limited,
        manifests: std::sync::Mutex::new(b"[]".to_vec()),
    });
    let app = Router::new()
        .route("/tdx/certification/v4/tcb", get(tcb))
        .route("/tdx/certification/v4/qe/identity", get(qe))
        .route("/sgx/certification/v4/pckcrl", get(pck_crl))
        .route("/root.crl", get(root_crl))
        .route("/vcek/v1/{product}/{hwid}", get(vcek))
        .route("/v1/rim/{id}", get(rim))
        .route("/ocsp", post(ocsp))
        .route("/manifests.json", get(manifests))
        .route(
            "/moved.json",
            get(|| async {
                (
                    StatusCode::FOUND,
                    [("location", "http://203.0.113.7/manifests.json")],
                )
                    .into_response()
            }),
        )
        .with_state(state.clone());
    let key =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert_der = key.cert.der().to_vec();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![key.cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.signing_key.serialize_der()).unwrap(),
    )
    .unwrap();
    let handle = axum_server::Handle::new();
    let h2 = handle.clone();
    tokio::spawn(async move {
        axum_server::bind_rustls(
            "127.0.0.1:0".parse().unwrap(),
            axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls)),
        )
        .handle(h2)
        .serve(app.into_make_service())
        .await
        .unwrap();
    });
    let addr = handle.listening().await.unwrap();
    Server {
        addr,
        cert_der,
        handle,
        state,
    }
}

//! The validator's side of RA-TLS. An agent's certificate is self-signed:
//! what vouches for its key is the TEE quote, whose claims carry the SHA-256
//! of the key's SubjectPublicKeyInfo. So the client accepts any certificate
//! *but* still checks the handshake signature (the server holds the key), and
//! hands the key's hash to `bundle::appraise_bundle`, which compares it with
//! the attested one.
//!
//! DANGER: on its own this client authenticates no server. An HTTPS answer
//! from it means something only after `tls.key` compared [`tls_spki_sha256`]
//! with the key the quote attests; nothing that skips that check may trust
//! who answered. (The attester also fetches node lists with it, over plain
//! HTTP from the miner's axon, where no certificate is involved: a node list
//! only names addresses to attest.)

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Accepts any server certificate; checks only that the server signed the
/// handshake with the certificate's key. Sound only together with `tls.key`.
#[derive(Debug)]
struct DangerousAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for DangerousAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Deferred: the key is checked against the quote's claims.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// An HTTP client for agents' evidence: any certificate accepted (see the
/// module's DANGER note), the given per-request timeout, TLS details kept on
/// each response for [`tls_spki_sha256`], no redirects, no proxy.
pub fn dangerous_any_certificate_client(timeout: Duration) -> Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(DangerousAnyCertificate { provider }))
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .tls_info(true)
        // A redirect could move the request off the attested connection
        // (e.g. to plain HTTP, where the key is not compared): follow none.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// SHA-256 of the SubjectPublicKeyInfo the server presented, if the
/// response came over TLS.
pub fn tls_spki_sha256(
    resp: &reqwest::Response,
) -> Option<Result<[u8; 32], tvm_verifier::bundle::CertificateError>> {
    let info = resp.extensions().get::<reqwest::tls::TlsInfo>()?;
    let cert = info.peer_certificate()?;
    Some(tvm_verifier::bundle::spki_sha256(cert))
}

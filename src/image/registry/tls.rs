//! One HTTP client per endpoint host, with that host's TLS settings: the system's and
//! Mozilla's roots plus its `ca_file`, an optional client certificate, or no verification at
//! all when `insecure_skip_verify` is set.

use super::RegistryError;
use crate::config::RegistryTls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for any single read; a stalled blob download fails instead of hanging.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_REDIRECTS: usize = 10;
const USER_AGENT: &str = concat!("crius/", env!("CARGO_PKG_VERSION"));

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Mozilla's roots plus whatever the system trusts, loaded once.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!(error = %e, "loading system CA certificates");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, ignored, "system CA certificates");
        roots
    })
}

fn config_err(host: &str, reason: String) -> RegistryError {
    RegistryError::Config {
        host: host.to_string(),
        reason,
    }
}

fn read_certs(host: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, RegistryError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| config_err(host, format!("reading {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(config_err(
            host,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

/// Build the HTTP client for `host` with `tls` (None: defaults).
pub fn http_client(
    host: &str,
    tls: Option<&RegistryTls>,
) -> Result<reqwest::Client, RegistryError> {
    let mut roots = system_roots().clone();
    let default_tls = RegistryTls::default();
    let tls = tls.unwrap_or(&default_tls);
    if let Some(ca) = &tls.ca_file {
        for c in read_certs(host, ca)? {
            roots
                .add(c)
                .map_err(|e| config_err(host, format!("{}: {e}", ca.display())))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err(host, e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(host, cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| config_err(host, format!("reading {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| config_err(host, format!("client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    if tls.insecure_skip_verify {
        tracing::warn!(
            host,
            "TLS certificate verification disabled by configuration"
        );
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(NoVerification(provider())));
    }
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        // Blob GETs are redirected to object storage; reqwest drops the Authorization
        // header when a redirect leaves the host.
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .user_agent(USER_AGENT)
        .build()
        .map_err(|e| config_err(host, format!("building the HTTP client: {e}")))
}

/// `insecure_skip_verify`: any certificate is accepted, signatures are still checked so the
/// handshake itself stays well-formed.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_file_names_host_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, b"no certs here").unwrap();
        for ca in [dir.path().join("missing.pem"), empty] {
            let tls = RegistryTls {
                ca_file: Some(ca.clone()),
                ..Default::default()
            };
            let e = http_client("mirror.example", Some(&tls))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("mirror.example") && e.contains(&*ca.to_string_lossy()),
                "{e}"
            );
        }
        let tls = RegistryTls {
            insecure_skip_verify: true,
            ..Default::default()
        };
        http_client("x", Some(&tls)).unwrap();
    }
}

//! TLS for connections to TiKV and PD: rustls, HTTP/2 negotiated by ALPN, optional client
//! certificates (mutual TLS).
//!
//! Certificates and keys are read from their files on every new connection, as client-go
//! does, so rotated certificates are picked up without restarting the client. Failures say
//! what went wrong in the words of the cause: an unreadable file (with its path), a server
//! certificate the CA does not vouch for, an expired certificate, a missing client certificate
//! the server demanded.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tikv_core::{Delivery, GrpcCode};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::grpc::{CallError, Status};
use crate::runtime::Io;

/// Where the TLS material lives (PEM files): the client configuration's `security`.
pub use tikv_core::config::Security as SecurityConfig;

fn tls_error(message: String) -> CallError {
    CallError {
        delivery: Delivery::NotSent,
        status: Status::new(GrpcCode::Unavailable, message),
        from_server: false,
    }
}

/// Reads the files of `security` and builds a rustls configuration offering HTTP/2.
pub fn client_config(security: &SecurityConfig) -> Result<ClientConfig, CallError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca_path = security.ca.display();
    let mut roots = rustls::RootCertStore::empty();
    let cas = CertificateDer::pem_file_iter(&security.ca)
        .map_err(|e| tls_error(format!("cannot read CA file {ca_path}: {e}")))?;
    for ca in cas {
        let ca = ca.map_err(|e| tls_error(format!("bad certificate in CA file {ca_path}: {e}")))?;
        roots
            .add(ca)
            .map_err(|e| tls_error(format!("unusable CA certificate in {ca_path}: {e}")))?;
    }
    if roots.is_empty() {
        return Err(tls_error(format!("CA file {ca_path} holds no certificate")));
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(format!("TLS setup: {e}")))?
        .with_root_certificates(roots);
    let mut config = match (&security.cert, &security.key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| {
                    tls_error(format!(
                        "cannot read certificate file {}: {e}",
                        cert.display()
                    ))
                })?
                .collect::<Result<_, _>>()
                .map_err(|e| tls_error(format!("bad certificate in {}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                tls_error(format!(
                    "cannot read private key file {}: {e}",
                    key.display()
                ))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_error(format!("client certificate and key do not match: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(tls_error(
                "a client certificate needs its key, and a key its certificate".into(),
            ));
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Wraps an established connection to `address` (`host:port`) in TLS per `security`.
pub async fn connect<T: Io>(
    security: &SecurityConfig,
    io: T,
    address: &str,
) -> Result<TlsStream<T>, CallError> {
    let config = client_config(security)?;
    let host = host_of(address);
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| tls_error(format!("{host} is not a valid TLS server name: {e}")))?;
    TlsConnector::from(Arc::new(config))
        .connect(name, io)
        .await
        .map_err(|e| tls_error(format!("TLS handshake with {address} failed: {e}")))
}

/// The host part of `host:port` (IPv6 brackets removed).
fn host_of(address: &str) -> &str {
    let host = match address.rfind(':') {
        Some(i) if !address[i + 1..].contains(']') => &address[..i],
        _ => address,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host_of("pd:2379"), "pd");
        assert_eq!(host_of("127.0.0.1:20160"), "127.0.0.1");
        assert_eq!(host_of("[::1]:2379"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn missing_files_say_which() {
        let c = SecurityConfig::new("/nonexistent/ca.pem");
        let e = client_config(&c).unwrap_err();
        assert!(e.status.message.contains("/nonexistent/ca.pem"), "{e}");
    }
}

//! gRPC over TLS on loopback: mutual TLS succeeds; a wrong CA and a missing client certificate
//! fail with errors that say so.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tikv_core::GrpcCode;
use tikv_driver::grpc::server::boxed;
use tikv_driver::grpc::{
    Channel, ChannelConfig, Requests, Responses, ServerConfig, Service, Status, codec,
    serve_connection,
};
use tikv_driver::runtime::BoxFuture;
use tikv_driver::tls::SecurityConfig;
use tikv_proto::method::MethodKind;
use tikv_tokio::{Runtime, TokioRuntime};
use tokio::net::TcpListener;

#[derive(Clone)]
struct Echo;

impl Service for Echo {
    fn kind(&self, _: &str) -> Option<MethodKind> {
        Some(MethodKind::Unary)
    }
    fn unary(&self, _: &str, request: Bytes) -> BoxFuture<'static, Result<Bytes, Status>> {
        boxed(async move { codec::frame(&request) })
    }
    fn streaming(
        &self,
        _: &str,
        _: Requests,
        _: Responses,
    ) -> BoxFuture<'static, Result<(), Status>> {
        boxed(async { Err(Status::new(GrpcCode::Unimplemented, "")) })
    }
}

struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tls-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    /// Issues a certificate for `names`; writes `<file>.pem` and `<file>-key.pem`.
    fn issue(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (c, k) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}-key.pem")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

/// A TLS echo server requiring client certificates signed by `pki`'s CA.
async fn tls_server(pki: &Pki) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = pki.issue("server", &["localhost", "127.0.0.1"]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.ca_path()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_file(cert).unwrap()],
            PrivateKeyDer::from_pem_file(key).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let rt = TokioRuntime::current();
    tokio::spawn(async move {
        loop {
            let (io, _) = listener.accept().await.unwrap();
            let (acceptor, rt) = (acceptor.clone(), rt.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(io).await {
                    serve_connection(rt.clone(), tls, Echo, ServerConfig::default()).await;
                }
            });
        }
    });
    address
}

async fn connect(
    address: &str,
    tls: SecurityConfig,
) -> Result<Channel, tikv_driver::grpc::CallError> {
    let config = ChannelConfig {
        tls: Some(tls),
        ..Default::default()
    };
    Channel::connect(&TokioRuntime::current(), address, &config).await
}

#[tokio::test]
async fn mutual_tls_round_trip() {
    let pki = Pki::new("ok");
    let address = tls_server(&pki).await;
    let (cert, key) = pki.issue("client", &["client"]);
    let ch = connect(
        &address,
        SecurityConfig::new(pki.ca_path()).with_client_cert(cert, key),
    )
    .await
    .unwrap();
    let rt = TokioRuntime::current();
    let reply = ch
        .unary(
            &rt,
            "/echo.Echo/Unary",
            codec::frame(b"secret").unwrap(),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert_eq!(&reply[..], b"secret");
    let _ = rt.now();
}

#[tokio::test]
async fn wrong_ca_is_reported() {
    let pki = Pki::new("server-side");
    let address = tls_server(&pki).await;
    let other = Pki::new("other");
    let (cert, key) = other.issue("client", &["client"]);
    let e = connect(
        &address,
        SecurityConfig::new(other.ca_path()).with_client_cert(cert, key),
    )
    .await
    .unwrap_err();
    assert!(e.status.message.contains("invalid peer certificate"), "{e}");
    assert_eq!(e.delivery, tikv_core::Delivery::NotSent);
}

#[tokio::test]
async fn missing_client_certificate_is_refused() {
    let pki = Pki::new("mtls");
    let address = tls_server(&pki).await;
    let result = async {
        let ch = connect(&address, SecurityConfig::new(pki.ca_path())).await?;
        ch.unary(
            &TokioRuntime::current(),
            "/echo.Echo/Unary",
            codec::frame(b"x").unwrap(),
            Duration::from_secs(2),
        )
        .await
    }
    .await;
    // TLS 1.3 reports the missing certificate after the handshake: the call fails either way.
    let e = result.unwrap_err();
    assert!(
        e.status.message.contains("certificate") || e.status.message.contains("connection"),
        "{e}"
    );
}

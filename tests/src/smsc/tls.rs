//! A throwaway CA and a server certificate for `localhost` / `127.0.0.1`,
//! so the TLS path is tested without files in the repository.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

pub(crate) struct Tls {
    pub acceptor: TlsAcceptor,
    pub ca_file: PathBuf,
}

impl Tls {
    pub fn generate() -> Result<Tls, Box<dyn std::error::Error>> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate()?;
        let ca = ca_params.self_signed(&ca_key)?;
        let server_key = KeyPair::generate()?;
        let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
            .signed_by(&server_key, &ca, &ca_key)?;
        let ca_file = std::env::temp_dir().join(format!(
            "smsbus-smsc-ca-{}-{}.pem",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&ca_file, ca.pem())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![server.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )?;
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            ca_file,
        })
    }
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

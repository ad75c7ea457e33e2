//! TLS for smsbus's own listeners (the SMPP server's, the HTTP API's):
//! a certificate chain and its key from PEM files, served with rustls.

use std::sync::Arc;

use anyhow::{bail, Context as _};
use rustls::pki_types::PrivateKeyDer;
use tokio_rustls::TlsAcceptor;

/// The TLS acceptor for a certificate chain and key in PEM files; errors
/// name the setting and the file at fault.
pub fn acceptor(
    (cert_setting, cert_file): (&str, &str),
    (key_setting, key_file): (&str, &str),
) -> anyhow::Result<TlsAcceptor> {
    let pem = std::fs::read(cert_file)
        .with_context(|| format!("{cert_setting}: cannot read {cert_file}"))?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{cert_setting}: {cert_file} is not PEM"))?;
    if chain.is_empty() {
        bail!("{cert_setting}: {cert_file} holds no certificate");
    }
    let pem = std::fs::read(key_file)
        .with_context(|| format!("{key_setting}: cannot read {key_file}"))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
        .with_context(|| format!("{key_setting}: {key_file} is not PEM"))?
        .with_context(|| format!("{key_setting}: {key_file} holds no private key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("tls: no usable protocol version")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("tls: the certificate and the key do not go together")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

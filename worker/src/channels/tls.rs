//! TLS to providers (rustls on the ring provider), for SMPP links and
//! HTTP channels alike: the provider's certificate is checked against
//! `tls_ca` (a PEM file) or, by default, the system's roots.

use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::{ClientConfig, RootCertStore};

/// The client side of TLS for a channel; errors name the setting at fault.
pub fn client_config(tls_ca: Option<&str>) -> anyhow::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    match tls_ca {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("tls_ca: cannot read {path}"))?;
            let mut added = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.with_context(|| format!("tls_ca: {path} is not PEM"))?;
                roots
                    .add(cert)
                    .with_context(|| format!("tls_ca: a certificate in {path} is invalid"))?;
                added += 1;
            }
            if added == 0 {
                bail!("tls_ca: {path} holds no certificate");
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system root rustls cannot parse is skipped, not fatal:
                // the provider's chain may well end at another one.
                if let Err(e) = roots.add(cert) {
                    tracing::debug!("tls: skipping a system root certificate: {e}");
                }
            }
            if roots.is_empty() {
                bail!("tls: the system has no CA certificates; set tls_ca");
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("tls: no usable protocol version")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

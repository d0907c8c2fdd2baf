//! TLS for `wss://`: the listener's certificate and key, the dialler's
//! trusted roots. rustls with the ring provider, chosen explicitly (no
//! process-wide default needed).

use std::sync::Arc;

use oscloud_core::Error;
use oscloud_core::address::Address;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::{PARAM_CA, PARAM_CERT, PARAM_KEY, invalid};

/// ring, as the rest of the workspace uses (aws-lc-rs would need a C
/// toolchain with CMake); it has no post-quantum key exchange, which
/// rustls marks by deprecating it.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bad_file(what: &'static str, path: &str, reason: impl std::fmt::Display) -> Error {
    Error::BadKeyFile {
        what,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn certificates(what: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad_file(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_file(what, path, e))?;
    if certs.is_empty() {
        return Err(bad_file(what, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The TLS side of a `wss://` listener, from its `cert` and `key` files.
pub(crate) fn server(addr: &Address) -> Result<TlsAcceptor, Error> {
    let need = |key: &str| {
        addr.param(key).ok_or_else(|| {
            invalid(
                addr,
                format!(
                    "a wss listener needs {PARAM_CERT}=<PEM chain>&{PARAM_KEY}=<PEM key>; \
                     {key} is missing"
                ),
            )
        })
    };
    acceptor(need(PARAM_CERT)?, need(PARAM_KEY)?)
}

/// A TLS acceptor from PEM files: a certificate chain and its private key.
pub(crate) fn acceptor(cert_path: &str, key_path: &str) -> Result<TlsAcceptor, Error> {
    let chain = certificates("TLS certificate", cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| bad_file("TLS private key", key_path, e))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad_file("TLS certificate", cert_path, e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad_file("TLS certificate", cert_path, e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The TLS side of a `wss://` dialler: the server name to check and the
/// roots to check it with (`ca`, or the built-in web roots).
pub(crate) fn client(addr: &Address) -> Result<(TlsConnector, ServerName<'static>), Error> {
    let mut roots = RootCertStore::empty();
    match addr.param(PARAM_CA) {
        Some(path) => {
            for cert in certificates("CA certificate", path)? {
                roots
                    .add(cert)
                    .map_err(|e| bad_file("CA certificate", path, e))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(addr, e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(addr.host().to_owned())
        .map_err(|e| invalid(addr, format!("not a TLS server name: {e}")))?;
    Ok((TlsConnector::from(Arc::new(config)), name))
}

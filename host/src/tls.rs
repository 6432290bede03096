//! TLS with rustls (ring provider; TLS 1.2 and 1.3 only, rustls's safe defaults): the
//! server side, with a certificate that can be reloaded without a restart, and the client
//! side towards https origins, verifying against the platform's roots and optionally a
//! private CA.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::Error;

/// The server certificate, read from a PEM chain and key, swappable while serving:
/// handshakes after [`CertStore::reload`] get the new one; connections already up keep
/// theirs.
#[derive(Debug)]
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// The store for a configured pair, `None` if neither is configured.
    pub fn configured(
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Option<Arc<CertStore>>, Error> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(CertStore::load(cert, key)?)),
            (None, None) => Ok(None),
            _ => Err(Error::Config(
                "TLS needs both a certificate (tls_cert) and its key (tls_key)".into(),
            )),
        }
    }

    /// Reads and checks the certificate chain and key.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertStore>, Error> {
        let current = RwLock::new(read_certified_key(cert, key)?);
        Ok(Arc::new(CertStore {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current,
        }))
    }

    /// Reads the files again; on any error the current certificate stays in use.
    pub fn reload(&self) -> Result<(), Error> {
        let fresh = read_certified_key(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// A server configuration using this store, offering `alpn` (e.g. `h2`, `http/1.1`;
    /// none for ICAPS).
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Config(format!("{}: {what}", path.display()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, e))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn read_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, Error> {
    let chain = read_certs(cert)?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_error(key, e))?;
    let certified = CertifiedKey::from_der(chain, der, &provider())
        .map_err(|e| tls_error(cert, format!("certificate and key do not go together: {e}")))?;
    Ok(Arc::new(certified))
}

/// `url` parsed as the address of a peer this host connects to (an origin, a feed, a
/// confirmation or feedback endpoint); `what` names the setting in the error.
///
/// Fails when it is not an `http://` or `https://` URL with a host.
pub fn peer_url(what: &str, url: &str) -> Result<hyper::Uri, Error> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| Error::Config(format!("{what} {url:?}: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(Error::Config(format!(
            "{what} {url:?} must be an http:// or https:// URL with a host"
        )));
    }
    Ok(uri)
}

/// A connector for a client of `url`'s scheme: https verified against the platform's
/// roots plus `extra_ca`; plain http needs no roots at all. `TCP_NODELAY` on, connecting
/// given up after `connect_timeout`.
pub fn connector(
    url: &hyper::Uri,
    extra_ca: Option<&Path>,
    connect_timeout: std::time::Duration,
) -> Result<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Error>
{
    let config = if url.scheme_str() == Some("https") {
        client_config(extra_ca)?
    } else {
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the defaults")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    };
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// The client configuration for https origins: the platform's trust roots, plus the
/// certificates in `extra_ca` (a private CA) if given. Server names and certificates are
/// always verified.
pub fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A platform root rustls cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca {
        for cert in read_certs(path)? {
            roots.add(cert).map_err(|e| tls_error(path, e))?;
        }
    }
    if roots.is_empty() {
        return Err(Error::Config(
            "no trust roots for https origins (install ca-certificates or give --origin-ca)".into(),
        ));
    }
    // ALPN is left to the connector (hyper-rustls sets it from the enabled versions).
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth())
}

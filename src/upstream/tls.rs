//! TLS to an `https://` origin: rustls (no OpenSSL), verification always on, the system's roots
//! or a private CA (`upstream.ca_file`), SNI from the URL's host or `upstream.tls_server_name`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// What the client trusts and which name it checks, built once at startup.
#[derive(Clone)]
pub struct TlsOptions {
    pub config: Arc<ClientConfig>,
    /// Checked in the origin's certificate (and sent as SNI) instead of the URL's host.
    pub server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// The trust anchors: every certificate in `ca_file` (PEM) when it is set, the system's roots
/// otherwise. The error names what to change.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "{} holds no PEM certificate; give the CA that signed the origin's certificate",
                    path.display()
                ));
            }
            for cert in certs {
                store.add(cert).map_err(|e| {
                    format!(
                        "{}: a certificate is not usable as a CA: {e}",
                        path.display()
                    )
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no system root certificates were found (install the ca-certificates package) and upstream.ca_file is not set".into());
            }
        }
    }
    Ok(store)
}

/// A name to check in the origin's certificate: a DNS name or an IP address.
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_owned())
        .map_err(|_| format!("'{name}' is not a DNS name or an IP address"))
}

/// The client configuration for `https://` origins.
pub fn options(
    roots: RootCertStore,
    server_name: Option<ServerName<'static>>,
) -> Result<TlsOptions, String> {
    Ok(TlsOptions {
        config: client_config(roots)?,
        server_name,
    })
}

/// A client configuration for plain `http://` origins: the connector wants one, and it trusts
/// nothing, so it could never complete a handshake.
pub fn unused() -> Result<TlsOptions, String> {
    Ok(TlsOptions {
        config: client_config(RootCertStore::empty())?,
        server_name: None,
    })
}

fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

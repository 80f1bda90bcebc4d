//! `--web.config.file`: the YAML file Prometheus exporters read through exporter-toolkit,
//! so one file can serve node_exporter and kaprobe (scripts/deploy/README.md, "Prometheus").
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # relative paths are relative to this file's directory
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # or VerifyClientCertIfGiven, NoClientCert
//!   client_ca_file: clients-ca.crt
//!   min_version: TLS12             # TLS12 or TLS13
//!   max_version: TLS13
//! http_server_config:
//!   headers: { X-Frame-Options: deny }
//! basic_auth_users:
//!   prometheus: $2y$10$...         # bcrypt hashes (htpasswd -nBC 10)
//! ```
//!
//! The file is read once, at start, while kaprobe still has the privileges that may be
//! needed to read a key (before `--user`). A key it does not know is an error, as in
//! exporter-toolkit; so is a setting rustls cannot honour (TLS 1.0/1.1, Go cipher-suite
//! names, `RequireAnyClientCert`): a security setting is never silently ignored.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// What the endpoint does with a web config: TLS, basic auth, extra response headers.
#[derive(Clone, Default)]
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub auth: Option<Arc<BasicAuth>>,
    /// Checked when the file is read, ready to add to every answer.
    pub headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth.is_some())
            .field("headers", &self.headers)
            .finish()
    }
}

impl WebConfig {
    /// Reads and checks `path`. Every problem is one line naming the file (exit 2).
    pub fn load(path: &Path) -> Result<WebConfig> {
        let bad =
            |what: String| Error::Usage(format!("--web.config.file {}: {what}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        WebConfig::parse(&text, dir).map_err(bad)
    }

    /// Parses the YAML `text`; relative file names are taken from `dir`.
    pub fn parse(text: &str, dir: &Path) -> std::result::Result<WebConfig, String> {
        // An empty file is a valid, empty config (as in exporter-toolkit).
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?
        };
        let tls = match file.tls_server_config {
            Some(t) => Some(Arc::new(tls_config(t, dir)?)),
            None => None,
        };
        let auth = if file.basic_auth_users.is_empty() {
            None
        } else {
            Some(Arc::new(BasicAuth::new(file.basic_auth_users)?))
        };
        let mut headers = Vec::new();
        if let Some(http) = file.http_server_config {
            if http.http2 == Some(true) {
                log::info!("--web.config.file: http2 is ignored: kaprobe serves HTTP/1.1");
            }
            for (name, value) in http.headers {
                let n = hyper::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    format!("http_server_config.headers: '{name}' is not a header name")
                })?;
                let v = hyper::header::HeaderValue::from_str(&value).map_err(|_| {
                    format!("http_server_config.headers: the value of {name} is not a header value")
                })?;
                headers.push((n, v));
            }
        }
        Ok(WebConfig { tls, auth, headers })
    }
}

/// The versions rustls speaks, oldest first.
const VERSIONS: [&rustls::SupportedProtocolVersion; 2] =
    [&rustls::version::TLS12, &rustls::version::TLS13];

/// `v`'s index in `VERSIONS`.
fn tls_version(v: &str, key: &str) -> std::result::Result<usize, String> {
    match v {
        "TLS12" => Ok(0),
        "TLS13" => Ok(1),
        "TLS10" | "TLS11" => Err(format!(
            "tls_server_config.{key}: {v} is not offered (rustls speaks TLS12 and TLS13)"
        )),
        _ => Err(format!(
            "tls_server_config.{key}: '{v}' is not a TLS version (TLS12 or TLS13)"
        )),
    }
}

fn read_certs(path: &Path, key: &str) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| format!("tls_server_config.{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_server_config.{key} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

fn tls_config(t: TlsFile, dir: &Path) -> std::result::Result<rustls::ServerConfig, String> {
    for (key, set) in [
        ("cipher_suites", t.cipher_suites.is_some()),
        ("curve_preferences", t.curve_preferences.is_some()),
        ("client_allowed_sans", t.client_allowed_sans.is_some()),
    ] {
        if set {
            return Err(format!(
                "tls_server_config.{key} is not supported by kaprobe (rustls offers only its \
                 own safe choices); remove it"
            ));
        }
    }
    let min = tls_version(t.min_version.as_deref().unwrap_or("TLS12"), "min_version")?;
    let max = tls_version(t.max_version.as_deref().unwrap_or("TLS13"), "max_version")?;
    let (Some(cert), Some(key)) = (t.cert_file, t.key_file) else {
        return Err("tls_server_config needs both cert_file and key_file".into());
    };
    let at = |p: PathBuf| if p.is_absolute() { p } else { dir.join(p) };
    let (cert, key, ca) = (at(cert), at(key), t.client_ca_file.map(at));
    let chain = read_certs(&cert, "cert_file")?;
    let key = PrivateKeyDer::from_pem_file(&key)
        .map_err(|e| format!("tls_server_config.key_file {}: {e}", key.display()))?;

    let Some(versions) = VERSIONS.get(min..=max) else {
        return Err("tls_server_config: min_version is above max_version".into());
    };

    // ring, not aws-lc-rs: it builds with the C compiler alone. rustls now marks it
    // deprecated because ring has no post-quantum key exchange; classic X25519/P-256
    // suits a metrics endpoint.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let auth_type = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let roots = |ca: Option<PathBuf>| -> std::result::Result<Arc<rustls::RootCertStore>, String> {
        let Some(ca) = ca else {
            return Err(format!(
                "tls_server_config: client_auth_type {auth_type} needs client_ca_file"
            ));
        };
        let mut store = rustls::RootCertStore::empty();
        for c in read_certs(&ca, "client_ca_file")? {
            store
                .add(c)
                .map_err(|e| format!("tls_server_config.client_ca_file {}: {e}", ca.display()))?;
        }
        Ok(Arc::new(store))
    };
    let builder = match auth_type {
        "NoClientCert" => builder.with_no_client_auth(),
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider);
            let verifier = if auth_type == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(format!(
                "tls_server_config.client_auth_type {auth_type} is not supported: kaprobe \
                 verifies every client certificate it accepts (use VerifyClientCertIfGiven \
                 or RequireAndVerifyClientCert with client_ca_file)"
            ));
        }
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type: '{other}' is not one of NoClientCert, \
                 VerifyClientCertIfGiven, RequireAndVerifyClientCert"
            ));
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "tls_server_config: {} and {}: {e}",
            cert.display(),
            "key_file"
        )
    })?;
    config.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Basic auth against bcrypt hashes. bcrypt is slow on purpose (tens of ms at cost 10), so
/// a pair that verified once is remembered (as exporter-toolkit does): a scraper pays the
/// cost once, not on every scrape.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    verified: Mutex<HashMap<String, Vec<u8>>>,
}

/// Pairs remembered at most; beyond it the cache starts again (an attacker cannot grow it:
/// only correct pairs enter).
const VERIFIED_MAX: usize = 64;

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> std::result::Result<BasicAuth, String> {
        for (user, hash) in &users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(format!(
                    "basic_auth_users.{user}: not a bcrypt hash (make one with htpasswd -nBC 10 {user})"
                ));
            }
        }
        Ok(BasicAuth {
            users,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Whether the `Authorization` header's value names a user and the right password.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some((user, password)) = authorization.and_then(decode_basic) else {
            return false;
        };
        let Some(hash) = self.users.get(&user) else {
            // The same work as for a known user, so timing does not tell which users exist.
            if let Some(any) = self.users.values().next() {
                let _ = bcrypt::verify(&password, any);
            }
            return false;
        };
        if self
            .verified()
            .get(&user)
            .is_some_and(|known| equal_in_constant_time(known, &password))
        {
            return true;
        }
        if !bcrypt::verify(&password, hash).unwrap_or(false) {
            return false;
        }
        let mut verified = self.verified();
        if verified.len() >= VERIFIED_MAX {
            verified.clear();
        }
        verified.insert(user, password);
        true
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `Basic base64(user:password)` → (user, password bytes).
fn decode_basic(value: &[u8]) -> Option<(String, Vec<u8>)> {
    use base64::Engine;
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let colon = raw.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(raw[..colon].to_vec()).ok()?;
    Some((user, raw[colon + 1..].to_vec()))
}

fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn basic(user: &str, password: &str) -> Vec<u8> {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {token}").into_bytes()
    }

    #[test]
    fn empty_and_unknown_keys() {
        let c = WebConfig::parse("", Path::new(".")).unwrap();
        assert!(c.tls.is_none() && c.auth.is_none() && c.headers.is_empty());
        let e = WebConfig::parse("basic_auth_user:\n  a: b\n", Path::new(".")).unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        let e =
            WebConfig::parse("tls_server_config:\n  cert_fil: x\n", Path::new(".")).unwrap_err();
        assert!(e.contains("cert_fil"), "{e}");
    }

    #[test]
    fn settings_rustls_cannot_honour_are_refused() {
        for (yaml, want) in [
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n",
                "TLS10",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [X]\n",
                "cipher_suites",
            ),
            (
                "tls_server_config:\n  cert_file: a\n",
                "both cert_file and key_file",
            ),
            (
                "tls_server_config:\n  cert_file: /nonexistent/a.crt\n  key_file: b\n",
                "/nonexistent/a.crt",
            ),
        ] {
            let e = WebConfig::parse(yaml, Path::new("/tmp")).unwrap_err();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn basic_auth_checks_bcrypt_and_remembers_only_right_pairs() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let yaml = format!("basic_auth_users:\n  prometheus: '{hash}'\n");
        let c = WebConfig::parse(&yaml, Path::new(".")).unwrap();
        let auth = c.auth.unwrap();
        assert!(auth.allows(Some(&basic("prometheus", "s3cret"))));
        // Remembered, and still exact.
        assert!(auth.allows(Some(&basic("prometheus", "s3cret"))));
        assert!(!auth.allows(Some(&basic("prometheus", "s3cre"))));
        assert!(!auth.allows(Some(&basic("prometheus", "s3cret "))));
        assert!(!auth.allows(Some(&basic("root", "s3cret"))));
        assert!(!auth.allows(None));
        assert!(!auth.allows(Some(b"Bearer abc")));
        assert!(!auth.allows(Some(b"Basic !!!")));
        assert_eq!(auth.verified.lock().unwrap().len(), 1);

        let e = WebConfig::parse("basic_auth_users:\n  a: plain\n", Path::new(".")).unwrap_err();
        assert!(e.contains("not a bcrypt hash"), "{e}");
    }

    #[test]
    fn headers_are_checked() {
        let c = WebConfig::parse(
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
            Path::new("."),
        )
        .unwrap();
        let got: Vec<(&str, &[u8])> = c
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        assert_eq!(got, vec![("x-frame-options", &b"deny"[..])]);
        let e = WebConfig::parse(
            "http_server_config:\n  headers:\n    'bad name': x\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.contains("bad name"), "{e}");
    }
}

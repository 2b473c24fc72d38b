//! [`RegistryClient`] (HTTP clients per endpoint host) and [`Session`] (one repository on one
//! endpoint, with its credentials and the token it earned).

use super::auth::{self, Challenge, Credentials};
use super::tls::http_client;
use super::{Endpoint, RegistryError};
use crate::config::RegistryConfig;
use crate::image::media_type;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Error bodies are read only this far.
const MAX_ERROR_BODY: usize = 64 << 10;

pub struct RegistryClient {
    config: RegistryConfig,
    clients: Mutex<HashMap<String, reqwest::Client>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// HTTP clients are built on first use, so a broken `ca_file` fails the pulls that need
    /// it with a clear error rather than the daemon start. [`RegistryClient::check`] reports
    /// such problems up front.
    pub fn new(config: RegistryConfig) -> RegistryClient {
        RegistryClient {
            config,
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Build the client of every configured host, returning the first problem.
    pub fn check(&self) -> Result<(), RegistryError> {
        for host in self.config.configs.keys() {
            self.http(host)?;
        }
        Ok(())
    }

    fn http(&self, host: &str) -> Result<reqwest::Client, RegistryError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(host) {
            return Ok(c.clone());
        }
        let tls = self.config.configs.get(host).and_then(|c| c.tls.as_ref());
        let c = http_client(host, tls)?;
        clients.insert(host.to_string(), c.clone());
        Ok(c)
    }

    /// Endpoints for images of `domain`, mirrors first.
    pub fn endpoints(&self, domain: &str) -> Result<Vec<Endpoint>, RegistryError> {
        super::endpoints(&self.config, domain)
    }

    /// Credentials configured for an endpoint host, if any.
    pub fn configured_credentials(&self, host: &str) -> Result<Option<Credentials>, RegistryError> {
        match self.config.configs.get(host).and_then(|c| c.auth.as_ref()) {
            None => Ok(None),
            Some(a) => {
                Credentials::from_config(a)
                    .map(Some)
                    .map_err(|reason| RegistryError::Config {
                        host: host.to_string(),
                        reason: format!("auth: {reason}"),
                    })
            }
        }
    }

    pub fn session(
        &self,
        endpoint: Endpoint,
        repository: &str,
        creds: Credentials,
    ) -> Result<Session, RegistryError> {
        Ok(Session {
            http: self.http(&endpoint.host)?,
            endpoint,
            repository: repository.to_string(),
            creds,
            authorization: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }
}

/// A manifest or other small document read fully.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    /// The Content-Type the registry sent ("" if none).
    pub media_type: String,
    /// `sha256:` of `bytes`.
    pub digest: String,
}

#[derive(Debug, Clone)]
pub struct Session {
    http: reqwest::Client,
    endpoint: Endpoint,
    repository: String,
    creds: Credentials,
    /// The Authorization header earned by the last challenge, shared by clones so parallel
    /// blob downloads ask for a token once.
    authorization: Arc<tokio::sync::Mutex<Option<String>>>,
}

impl Session {
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn scope(&self) -> String {
        format!("repository:{}:pull", self.repository)
    }

    /// GET `url`, answering one 401 challenge; non-2xx replies become errors naming `what`.
    async fn get(
        &self,
        url: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<Response, RegistryError> {
        let send = |auth: Option<String>| {
            let mut r = self.http.get(url);
            if let Some(a) = accept {
                r = r.header(ACCEPT, a);
            }
            if let Some(h) = auth {
                r = r.header(AUTHORIZATION, h);
            }
            r.send()
        };
        let current = self.authorization.lock().await.clone();
        let mut resp = send(current.clone())
            .await
            .map_err(|e| RegistryError::transport(&self.endpoint, what, &e))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let challenges = challenges_of(&resp);
            let header = {
                let mut slot = self.authorization.lock().await;
                // Another download may have refreshed the token meanwhile.
                if slot.is_some() && *slot != current {
                    slot.clone().expect("checked")
                } else {
                    let h = auth::authorize(
                        &self.http,
                        &self.endpoint,
                        &challenges,
                        &self.creds,
                        &self.scope(),
                    )
                    .await?;
                    *slot = Some(h.clone());
                    h
                }
            };
            resp = send(Some(header))
                .await
                .map_err(|e| RegistryError::transport(&self.endpoint, what, &e))?;
        }
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let resp_challenges = challenges_of(&resp);
        let body = read_limited(resp, MAX_ERROR_BODY, &self.endpoint, what)
            .await
            .unwrap_or_default();
        let mut reply = summarize_reply(&body);
        if status == StatusCode::UNAUTHORIZED {
            // Still 401 after answering the challenge: say what was refused, and why if
            // the registry told (Bearer `error="insufficient_scope"` / `"invalid_token"`).
            let why = resp_challenges
                .iter()
                .find_map(|c| c.param("error").map(str::to_string));
            reply.push_str("; ");
            reply.push_str(auth::refusal_note(&self.creds));
            if let Some(why) = why {
                reply.push_str(&format!(" ({why})"));
            }
        }
        let endpoint = self.endpoint.to_string();
        Err(match status {
            StatusCode::NOT_FOUND => RegistryError::NotFound {
                endpoint,
                what: what.to_string(),
                reply,
            },
            StatusCode::UNAUTHORIZED => RegistryError::Unauthorized { endpoint, reply },
            StatusCode::FORBIDDEN => RegistryError::Denied { endpoint, reply },
            s => RegistryError::Status {
                endpoint,
                what: what.to_string(),
                status: s.as_u16(),
                reply,
            },
        })
    }

    /// The manifest (or index) `reference` (a tag or `sha256:` digest) of this repository,
    /// refused above `limit` bytes. The digest is computed, not taken from the registry.
    pub async fn manifest(&self, reference: &str, limit: usize) -> Result<Fetched, RegistryError> {
        let what = format!("manifest {}:{reference}", self.repository);
        let url = self
            .endpoint
            .url(&format!("{}/manifests/{reference}", self.repository));
        let accept = media_type::MANIFESTS.join(", ");
        let resp = self.get(&url, Some(&accept), &what).await?;
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_string())
            .unwrap_or_default();
        let bytes = read_limited(resp, limit, &self.endpoint, &what).await?;
        let digest = crate::image::content::sha256_digest(&bytes);
        Ok(Fetched {
            bytes,
            media_type,
            digest,
        })
    }

    /// A small blob (an image config) read fully, refused above `limit` bytes. The caller
    /// verifies the digest.
    pub async fn small_blob(&self, digest: &str, limit: usize) -> Result<Vec<u8>, RegistryError> {
        let what = format!("blob {digest} of {}", self.repository);
        let resp = self.blob(digest).await?;
        read_limited(resp, limit, &self.endpoint, &what).await
    }

    /// Start downloading blob `digest`; the caller streams the body.
    pub async fn blob(&self, digest: &str) -> Result<Response, RegistryError> {
        let what = format!("blob {digest} of {}", self.repository);
        let url = self
            .endpoint
            .url(&format!("{}/blobs/{digest}", self.repository));
        self.get(&url, None, &what).await
    }
}

fn challenges_of(resp: &Response) -> Vec<Challenge> {
    resp.headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Challenge::parse)
        .collect()
}

/// Read a whole body, failing past `limit` bytes (never buffers more than that).
pub(crate) async fn read_limited(
    mut resp: Response,
    limit: usize,
    endpoint: &Endpoint,
    what: &str,
) -> Result<Vec<u8>, RegistryError> {
    if let Some(len) = resp.content_length()
        && len > limit as u64
    {
        return Err(too_large(endpoint, what, limit));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| RegistryError::transport(endpoint, what, &e))?
    {
        if out.len() + chunk.len() > limit {
            return Err(too_large(endpoint, what, limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn too_large(endpoint: &Endpoint, what: &str, limit: usize) -> RegistryError {
    RegistryError::BadResponse {
        endpoint: endpoint.to_string(),
        what: what.to_string(),
        reason: format!("larger than the {limit}-byte limit"),
    }
}

/// A one-line account of an error body: the distribution spec's `errors[].code: message`, or
/// the start of the text.
pub(crate) fn summarize_reply(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body)
        && !e.errors.is_empty()
    {
        return e
            .errors
            .iter()
            .map(|x| format!("{}: {}", x.code, x.message))
            .collect::<Vec<_>>()
            .join("; ");
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty reply)".into();
    }
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::summarize_reply;

    #[test]
    fn summarizes_distribution_errors() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        assert_eq!(summarize_reply(body), "MANIFEST_UNKNOWN: manifest unknown");
        assert_eq!(summarize_reply(b""), "(empty reply)");
        assert_eq!(
            summarize_reply(b" 404 page not found\n"),
            "404 page not found"
        );
    }
}

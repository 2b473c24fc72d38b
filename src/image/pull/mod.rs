//! PullImage: resolve a reference on the registry's endpoints (mirrors first), pick this
//! node's manifest from an index, stream the config and layers into the content store
//! (each blob once, even for concurrent pulls), then record and unpack the image through
//! [`ImageStore::commit_image`]. Every blob and snapshot a pull touches is leased until its
//! record is written, so GC and RemoveImage leave them alone; a failed pull collects what it
//! (and any earlier failure) left behind before it answers.

mod fetch;
mod flight;
pub(crate) mod manifest;
pub mod platform;

use crate::config::RegistryConfig;
use crate::image::archive::{MAX_METADATA_BYTES, ResolvedImage};
use crate::image::content::sha256_digest;
use crate::image::leases::Lease;
use crate::image::registry::{
    Credentials, Endpoint, ErrorKind, Fetched, RegistryClient, RegistryError, Session,
};
use crate::image::{ImageError, ImageRecord, ImageStore, reference};
use flight::KeyedLocks;
use futures_util::{StreamExt, TryStreamExt};
use manifest::{Descriptor, Document};
pub use platform::Platform;
use std::sync::Arc;

/// Layers downloaded at once per pull.
const PARALLEL_LAYERS: usize = 3;
/// Nested indexes followed at most (an index pointing at an index is legal but rare).
const MAX_INDEX_DEPTH: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Reference(ImageError),
    #[error("pulling {image}: {source}")]
    Registry {
        image: String,
        #[source]
        source: RegistryError,
    },
    /// Every endpoint failed; each one's reply is listed, the most telling decides the kind.
    #[error("pulling {image}: {}", .attempts.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; then "))]
    Endpoints {
        image: String,
        attempts: Vec<RegistryError>,
    },
    #[error("pulling {image}: {endpoint}: {what}: {reason}")]
    BadContent {
        image: String,
        endpoint: String,
        what: String,
        reason: String,
    },
    #[error(
        "pulling {image}: {endpoint}: {what}: digest mismatch: expected {expected}, got {actual}"
    )]
    DigestMismatch {
        image: String,
        endpoint: String,
        what: String,
        expected: String,
        actual: String,
    },
    #[error("pulling {image}: no manifest for {platform} (the image has: {available})")]
    NoPlatform {
        image: String,
        platform: String,
        available: String,
    },
    #[error("pulling {image}: storing the image: {source}")]
    Store {
        image: String,
        #[source]
        source: ImageError,
    },
    #[error("pulling {image}: {what}")]
    Internal { image: String, what: String },
}

/// What a pull failure means to the caller (the server maps it to a gRPC code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullErrorKind {
    InvalidArgument,
    NotFound,
    Unauthenticated,
    PermissionDenied,
    /// The registry is unreachable or misbehaving; retrying may help.
    Unavailable,
    /// Content did not match its digest.
    DataLoss,
    /// The image exists but has nothing this node can run.
    FailedPrecondition,
    Internal,
}

impl PullErrorKind {
    /// The gRPC code of a failed PullImage.
    pub fn grpc_code(self) -> tonic::Code {
        use tonic::Code;
        match self {
            PullErrorKind::InvalidArgument => Code::InvalidArgument,
            PullErrorKind::NotFound => Code::NotFound,
            PullErrorKind::Unauthenticated => Code::Unauthenticated,
            PullErrorKind::PermissionDenied => Code::PermissionDenied,
            PullErrorKind::Unavailable => Code::Unavailable,
            PullErrorKind::DataLoss => Code::DataLoss,
            PullErrorKind::FailedPrecondition => Code::FailedPrecondition,
            PullErrorKind::Internal => Code::Unknown,
        }
    }
}

fn registry_kind(k: ErrorKind) -> PullErrorKind {
    match k {
        ErrorKind::NotFound => PullErrorKind::NotFound,
        ErrorKind::Unauthenticated => PullErrorKind::Unauthenticated,
        ErrorKind::PermissionDenied => PullErrorKind::PermissionDenied,
        ErrorKind::Unavailable => PullErrorKind::Unavailable,
        ErrorKind::Config => PullErrorKind::FailedPrecondition,
    }
}

impl PullError {
    pub fn kind(&self) -> PullErrorKind {
        match self {
            PullError::Reference(_) => PullErrorKind::InvalidArgument,
            PullError::Registry { source, .. } => registry_kind(source.kind()),
            PullError::Endpoints { attempts, .. } => {
                // An answer from a registry says more than a mirror that was down: prefer
                // auth failures, then not-found, over transport errors.
                let kinds: Vec<ErrorKind> = attempts.iter().map(RegistryError::kind).collect();
                let pick = [
                    ErrorKind::Config,
                    ErrorKind::Unauthenticated,
                    ErrorKind::PermissionDenied,
                    ErrorKind::NotFound,
                ]
                .into_iter()
                .find(|k| kinds.contains(k))
                .unwrap_or(ErrorKind::Unavailable);
                registry_kind(pick)
            }
            PullError::BadContent { .. } => PullErrorKind::Unavailable,
            PullError::DigestMismatch { .. } => PullErrorKind::DataLoss,
            PullError::NoPlatform { .. } => PullErrorKind::FailedPrecondition,
            PullError::Store {
                source: ImageError::DigestMismatch { .. },
                ..
            } => PullErrorKind::DataLoss,
            PullError::Store { .. } | PullError::Internal { .. } => PullErrorKind::Internal,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Credentials for the image's own registry (CRI AuthConfig). Mirrors only ever get
    /// the credentials configured for them.
    pub credentials: Option<Credentials>,
    /// Never garbage-collect the image (the sandbox image).
    pub pinned: bool,
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullReport {
    pub image: ImageRecord,
    /// Where the manifest came from.
    pub endpoint: String,
    /// Layer blobs downloaded by this pull, and their bytes.
    pub layers_fetched: usize,
    pub bytes_fetched: u64,
    /// Layer blobs already in the content store (or fetched by a concurrent pull).
    pub layers_present: usize,
}

#[derive(Debug, Clone)]
pub struct Puller {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: ImageStore,
    registry: RegistryClient,
    platform: Platform,
    blobs: KeyedLocks,
}

impl Puller {
    /// A puller for this node's platform.
    pub fn new(store: ImageStore, config: RegistryConfig) -> Puller {
        Puller::for_platform(store, config, Platform::host())
    }

    /// A puller choosing `platform` from image indexes (tests, cross-platform preloading).
    pub fn for_platform(store: ImageStore, config: RegistryConfig, platform: Platform) -> Puller {
        Puller {
            inner: Arc::new(Inner {
                store,
                registry: RegistryClient::new(config),
                platform,
                blobs: KeyedLocks::default(),
            }),
        }
    }

    pub fn registry(&self) -> &RegistryClient {
        &self.inner.registry
    }

    pub fn platform(&self) -> &Platform {
        &self.inner.platform
    }

    /// Pull `image` (any reference form: `busybox`, `host:5000/a/b:tag`, `name@sha256:...`)
    /// and record it. The record keeps the upstream name whichever endpoint served it.
    #[tracing::instrument(name = "pull", skip(self, opts), fields(platform = %self.inner.platform))]
    pub async fn pull(&self, image: &str, opts: &PullOptions) -> Result<PullReport, PullError> {
        let lease = Arc::new(self.inner.store.lease());
        let result = self.pull_leased(image, opts, &lease).await;
        drop(lease);
        if result.is_err() {
            // Blobs of a refused or cut-off pull are referenced by nothing: collect them now
            // (leases keep those of concurrent pulls), so they neither linger nor count.
            let store = self.inner.store.clone();
            match tokio::task::spawn_blocking(move || store.gc()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "collecting after a failed pull"),
                Err(e) => tracing::warn!(error = %e, "collecting after a failed pull"),
            }
        }
        result
    }

    async fn pull_leased(
        &self,
        image: &str,
        opts: &PullOptions,
        lease: &Arc<Lease>,
    ) -> Result<PullReport, PullError> {
        let started = std::time::Instant::now();
        let r = reference::parse(image).map_err(PullError::Reference)?;
        let name = r.to_string();
        let target = r
            .digest
            .clone()
            .or_else(|| r.tag.clone())
            .expect("parse gives a tag or a digest");

        let (session, top) = self.resolve(&name, &r, &target, opts).await?;
        if let Some(d) = &r.digest
            && &top.digest != d
        {
            return Err(PullError::DigestMismatch {
                image: name,
                endpoint: session.endpoint().to_string(),
                what: format!("manifest {target}"),
                expected: d.clone(),
                actual: top.digest,
            });
        }
        let (manifest, config, layers) = self.platform_manifest(&name, &session, &top).await?;

        // Manifest and config: small, read into memory, stored in the content store.
        let config_bytes = session
            .small_blob(&config.digest, MAX_METADATA_BYTES as usize)
            .await
            .map_err(|source| PullError::Registry {
                image: name.clone(),
                source,
            })?;
        let actual = sha256_digest(&config_bytes);
        if actual != config.digest {
            return Err(PullError::DigestMismatch {
                image: name,
                endpoint: session.endpoint().to_string(),
                what: "image config".into(),
                expected: config.digest,
                actual,
            });
        }
        lease.add(&manifest.digest);
        lease.add(&config.digest);
        let content = self.inner.store.content().clone();
        let manifest_bytes = manifest.bytes.clone();
        blocking(&name, move || {
            content.ingest_bytes(&manifest_bytes)?;
            content.ingest_bytes(&config_bytes)?;
            Ok(())
        })
        .await?;

        // Owned values per future: the stream runs inside spawned tasks, where borrowed
        // closures trip higher-ranked lifetime inference.
        let downloads = layers.iter().cloned().map(|l| {
            let (this, name, session) = (self.clone(), name.clone(), session.clone());
            let lease = lease.clone();
            async move {
                lease.add(&l.digest);
                this.layer(&name, &session, &l).await
            }
        });
        let results: Vec<Option<u64>> = futures_util::stream::iter(downloads)
            .buffer_unordered(PARALLEL_LAYERS)
            .try_collect()
            .await?;
        let layers_fetched = results.iter().flatten().count();
        let bytes_fetched = results.iter().flatten().sum();

        let resolved = ResolvedImage {
            manifest_digest: manifest.digest.clone(),
            config_digest: config.digest.clone(),
            layer_digests: layers.iter().map(|l| l.digest.clone()).collect(),
            tags: r.tagged().into_iter().collect(),
            // The digest the reference resolved to (the index for a multi-platform image),
            // as containerd reports it: pulling by it gets this image again.
            repo_digests: vec![format!("{}@{}", r.name(), top.digest)],
        };
        let store = self.inner.store.clone();
        let pinned = opts.pinned;
        let lease = lease.clone();
        let image = blocking(&name, move || store.commit_image(&resolved, pinned, &lease)).await?;
        let report = PullReport {
            image,
            endpoint: session.endpoint().to_string(),
            layers_fetched,
            bytes_fetched,
            layers_present: results.len() - layers_fetched,
        };
        tracing::info!(
            image = %name,
            id = %report.image.id,
            endpoint = %report.endpoint,
            layers_fetched = report.layers_fetched,
            layers_present = report.layers_present,
            bytes = report.bytes_fetched,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "image pulled"
        );
        Ok(report)
    }

    /// The first endpoint that serves the manifest, with its session.
    async fn resolve(
        &self,
        name: &str,
        r: &reference::Reference,
        target: &str,
        opts: &PullOptions,
    ) -> Result<(Session, Fetched), PullError> {
        let registry_err = |source| PullError::Registry {
            image: name.to_string(),
            source,
        };
        let endpoints = self
            .inner
            .registry
            .endpoints(&r.domain)
            .map_err(registry_err)?;
        let mut attempts = Vec::new();
        for ep in endpoints {
            let creds = self
                .credentials_for(&ep, &r.domain, opts)
                .map_err(registry_err)?;
            let session = self
                .inner
                .registry
                .session(ep, &r.path, creds)
                .map_err(registry_err)?;
            match session.manifest(target, MAX_METADATA_BYTES as usize).await {
                Ok(f) => return Ok((session, f)),
                Err(e) => {
                    tracing::warn!(image = name, endpoint = %session.endpoint(), error = %e, "endpoint failed");
                    attempts.push(e);
                }
            }
        }
        Err(PullError::Endpoints {
            image: name.to_string(),
            attempts,
        })
    }

    /// Credentials for one endpoint: the request's for the image's own registry, otherwise
    /// those configured for the endpoint host.
    fn credentials_for(
        &self,
        ep: &Endpoint,
        domain: &str,
        opts: &PullOptions,
    ) -> Result<Credentials, RegistryError> {
        let own_registry = !ep.mirror
            || ep.host == domain
            || ep.host == crate::image::registry::upstream_host(domain);
        if own_registry
            && let Some(c) = &opts.credentials
            && *c != Credentials::Anonymous
        {
            return Ok(c.clone());
        }
        Ok(self
            .inner
            .registry
            .configured_credentials(&ep.host)?
            .unwrap_or_default())
    }

    /// Follow indexes down to this platform's manifest: (manifest, config, layers).
    async fn platform_manifest(
        &self,
        name: &str,
        session: &Session,
        top: &Fetched,
    ) -> Result<(Fetched, Descriptor, Vec<Descriptor>), PullError> {
        let mut current = top.clone();
        for _ in 0..=MAX_INDEX_DEPTH {
            let bad = |reason: String| PullError::BadContent {
                image: name.to_string(),
                endpoint: session.endpoint().to_string(),
                what: format!("manifest {}", current.digest),
                reason,
            };
            match manifest::parse(&current.bytes, &current.media_type).map_err(bad)? {
                Document::Manifest { config, layers } => return Ok((current, config, layers)),
                Document::Index(list) => {
                    let platforms: Vec<Option<Platform>> =
                        list.iter().map(|d| d.platform.clone()).collect();
                    let pick = match platform::select(&self.inner.platform, &platforms) {
                        Some(i) => &list[i],
                        // One entry without a platform: take it (single-image indexes).
                        None if list.len() == 1 && list[0].platform.is_none() => &list[0],
                        None => {
                            let available = platforms
                                .iter()
                                .map(|p| p.as_ref().map_or("unknown".into(), |p| p.to_string()))
                                .collect::<Vec<_>>()
                                .join(", ");
                            return Err(PullError::NoPlatform {
                                image: name.to_string(),
                                platform: self.inner.platform.to_string(),
                                available,
                            });
                        }
                    };
                    let next = session
                        .manifest(&pick.digest, MAX_METADATA_BYTES as usize)
                        .await
                        .map_err(|source| PullError::Registry {
                            image: name.to_string(),
                            source,
                        })?;
                    if next.digest != pick.digest {
                        return Err(PullError::DigestMismatch {
                            image: name.to_string(),
                            endpoint: session.endpoint().to_string(),
                            what: format!("manifest {}", pick.digest),
                            expected: pick.digest.clone(),
                            actual: next.digest,
                        });
                    }
                    current = next;
                }
            }
        }
        Err(PullError::BadContent {
            image: name.to_string(),
            endpoint: session.endpoint().to_string(),
            what: format!("manifest {}", top.digest),
            reason: "image indexes nested too deeply".into(),
        })
    }

    /// Make sure layer `l` is in the content store. Some(bytes) if this call downloaded it.
    /// The caller has leased it already, so a present blob stays present.
    async fn layer(
        &self,
        name: &str,
        session: &Session,
        l: &Descriptor,
    ) -> Result<Option<u64>, PullError> {
        let content = self.inner.store.content();
        if crate::util::blocking(|| content.contains(&l.digest)) {
            return Ok(None);
        }
        let _flight = self.inner.blobs.lock(&l.digest).await;
        // A concurrent pull may have fetched it while we waited.
        if crate::util::blocking(|| content.contains(&l.digest)) {
            return Ok(None);
        }
        let n = fetch::fetch_blob(name, session, content, l).await?;
        tracing::debug!(image = name, layer = %l.digest, bytes = n, "layer downloaded");
        Ok(Some(n))
    }
}

async fn blocking<T: Send + 'static>(
    image: &str,
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, PullError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PullError::Internal {
            image: image.to_string(),
            what: format!("store task: {e}"),
        })?
        .map_err(|source| PullError::Store {
            image: image.to_string(),
            source,
        })
}

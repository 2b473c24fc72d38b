//! CRI ImageService adapter over the local image store.

use crate::error::CriError;
use crate::image::{Credentials, ImageError, ImageRecord, PullError, PullOptions};
use crate::sandbox::Context;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct Images {
    ctx: Arc<Context>,
}

impl Images {
    pub fn new(ctx: Arc<Context>) -> Self {
        Images { ctx }
    }

    /// Ids of the pod sandboxes (and, once they exist, containers) whose rootfs is built on
    /// `image_id`: their overlay mounts use the image's snapshots as lower directories, so
    /// the image must outlive them.
    /// Pods and containers whose overlay rootfs stacks on this image's snapshots: removing the
    /// snapshots under them would break them, so the image stays until they are removed.
    fn users_of(&self, image_id: &str) -> Vec<String> {
        let pods = self
            .ctx
            .sandboxes
            .list()
            .into_iter()
            .filter(|s| s.image_id == image_id)
            .map(|s| format!("pod sandbox {}", s.id));
        let containers = self
            .ctx
            .containers
            .list()
            .into_iter()
            .filter(|c| c.image_id == image_id)
            .map(|c| format!("container {}", c.id));
        pods.chain(containers).collect()
    }

    /// Image store calls touch the disk: keep them off the async workers.
    async fn blocking<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&crate::image::ImageStore) -> Result<T, ImageError> + Send + 'static,
    {
        super::on_blocking_pool(&self.ctx.images, f)
            .await?
            .map_err(|e| image_status(e).into())
    }
}

/// The gRPC code of a failed pull; the message names the image and each endpoint's reply.
fn pull_status(e: PullError) -> Status {
    // A pull that filled the disk is ResourceExhausted, as everywhere else.
    crate::error::refine(Status::new(e.kind().grpc_code(), e.to_string()))
}

fn cri_credentials(a: &cri::AuthConfig) -> Result<Credentials, Status> {
    Credentials::from_fields(
        &a.username,
        &a.password,
        &a.auth,
        &a.identity_token,
        &a.registry_token,
    )
    .map_err(|reason| CriError::InvalidArgument(format!("pull credentials: {reason}")).into())
}

/// `configured` in normalised form, for comparing with repo tags.
fn normalized(configured: &str) -> String {
    crate::image::reference::normalize(configured).unwrap_or_else(|_| configured.to_string())
}

fn image_status(e: ImageError) -> CriError {
    match e {
        ImageError::NotFound(what) => CriError::NotFound(format!("image {what} not found")),
        ImageError::InvalidReference { .. } => CriError::InvalidArgument(e.to_string()),
        other => CriError::internal("image store", other),
    }
}

/// uid or user name from the image config's User ("uid", "uid:gid", "name", "name:group").
fn image_user(user: &str) -> (Option<cri::Int64Value>, String) {
    let user = user.split(':').next().unwrap_or_default();
    if user.is_empty() {
        return (None, String::new());
    }
    match user.parse::<i64>() {
        Ok(uid) => (Some(cri::Int64Value { value: uid }), String::new()),
        Err(_) => (None, user.to_string()),
    }
}

fn to_cri(image: &ImageRecord, sandbox_image: &str) -> cri::Image {
    let user = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.user().clone())
        .unwrap_or_default();
    let (uid, username) = image_user(&user);
    cri::Image {
        id: image.id.clone(),
        repo_tags: image.repo_tags.clone(),
        repo_digests: image.repo_digests.clone(),
        size: image.size,
        uid,
        username,
        spec: Some(cri::ImageSpec {
            image: image.id.clone(),
            ..Default::default()
        }),
        // The sandbox image must never be garbage collected by kubelet.
        pinned: image.pinned
            || image
                .repo_tags
                .iter()
                .any(|t| *t == normalized(sandbox_image)),
    }
}

fn requested(spec: Option<cri::ImageSpec>) -> Result<String, Status> {
    let image = spec.map(|s| s.image).unwrap_or_default();
    if image.is_empty() {
        return Err(CriError::InvalidArgument("image reference is empty".into()).into());
    }
    Ok(image)
}

#[tonic::async_trait]
impl ImageService for Images {
    #[tracing::instrument(name = "ListImages", level = "debug", skip_all)]
    async fn list_images(
        &self,
        req: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let filter = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let sandbox_image = self.ctx.config.sandbox_image.clone();
        let images = self
            .blocking(move |store| match filter {
                Some(r) => Ok(store.get(&r)?.into_iter().collect()),
                None => store.list(),
            })
            .await?;
        Ok(Response::new(cri::ListImagesResponse {
            images: images.iter().map(|i| to_cri(i, &sandbox_image)).collect(),
        }))
    }

    #[tracing::instrument(name = "ImageStatus", level = "debug", skip_all)]
    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let req = req.into_inner();
        let reference = requested(req.image)?;
        let sandbox_image = self.ctx.config.sandbox_image.clone();
        // An absent image is not an error for ImageStatus: kubelet expects an empty reply.
        let image = self
            .blocking(move |store| match store.get(&reference) {
                Err(ImageError::InvalidReference { .. }) => Ok(None),
                other => other,
            })
            .await?;
        let mut info = std::collections::HashMap::new();
        if req.verbose
            && let Some(i) = &image
        {
            info.insert(
                "info".to_string(),
                serde_json::json!({
                    "id": i.id, "manifestDigest": i.manifest_digest,
                    "chainIds": i.chain_ids, "layerDigests": i.layer_digests,
                    "pinned": i.pinned, "imageSpec": i.config,
                })
                .to_string(),
            );
        }
        Ok(Response::new(cri::ImageStatusResponse {
            image: image.as_ref().map(|i| to_cri(i, &sandbox_image)),
            info,
        }))
    }

    #[tracing::instrument(name = "PullImage", skip_all)]
    async fn pull_image(
        &self,
        req: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let req = req.into_inner();
        let reference = requested(req.image)?;
        // The built-in image exists only here; there is no registry to ask.
        if reference == crate::image::builtin::REFERENCE {
            let image = self.blocking(|s| s.ensure_builtin()).await?;
            return Ok(Response::new(cri::PullImageResponse {
                image_ref: image.id,
            }));
        }
        let credentials = req.auth.as_ref().map(cri_credentials).transpose()?;
        let pinned = normalized(&reference) == normalized(&self.ctx.config.sandbox_image);
        let opts = PullOptions {
            credentials,
            pinned,
        };
        let puller = self.ctx.puller.clone();
        // tonic drops this future if kubelet gives up; the pull finishes (or cleans up) on
        // its own task so no half-written state depends on the client staying.
        let report = tokio::spawn(async move { puller.pull(&reference, &opts).await })
            .await
            .map_err(|e| Status::internal(format!("pull task: {e}")))?
            .map_err(pull_status)?;
        Ok(Response::new(cri::PullImageResponse {
            image_ref: report.image.id,
        }))
    }

    #[tracing::instrument(name = "RemoveImage", skip_all)]
    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let reference = requested(req.into_inner().image)?;
        // A tag moving to another image between our lookup and the removal sends us round
        // again; more than a few moves during one call is not worth waiting for.
        for _ in 0..3 {
            let lookup = reference.clone();
            let found = self
                .blocking(move |store| match store.get(&lookup) {
                    Err(ImageError::InvalidReference { .. }) => Ok(None),
                    other => other,
                })
                .await?;
            // Removing an absent image succeeds (CRI: idempotent).
            let Some(image) = found else {
                return Ok(Response::new(cri::RemoveImageResponse {}));
            };
            let only_a_tag = normalized(&reference) != image.id
                && image.repo_tags.len() > 1
                && image.repo_tags.contains(&normalized(&reference));
            // Held over the in-use check and the removal: a CreateContainer that looked the
            // image up holds it shared until its record names the image, so either it is
            // listed as a user below or it finds the image gone.
            let _removal = match only_a_tag {
                true => None,
                false => Some(self.ctx.images.hold_for_removal(&image.id).await),
            };
            if !only_a_tag {
                let users = self.users_of(&image.id);
                if !users.is_empty() {
                    return Err(CriError::FailedPrecondition(format!(
                        "image {reference} ({}) is in use by {}",
                        image.id,
                        users.join(", ")
                    ))
                    .into());
                }
            }
            let (r, id) = (reference.clone(), image.id.clone());
            let removed = self
                .blocking(move |store| match store.remove_if(&r, Some(&id)) {
                    Err(ImageError::NotFound(_)) => Ok(None),
                    Err(ImageError::Changed { .. }) => Ok(Some(false)),
                    Ok(_) => Ok(Some(true)),
                    Err(e) => Err(e),
                })
                .await?;
            if removed != Some(false) {
                return Ok(Response::new(cri::RemoveImageResponse {}));
            }
        }
        Err(CriError::Unavailable(format!(
            "image {reference} kept changing while it was being removed; retry"
        ))
        .into())
    }

    async fn image_fs_info(
        &self,
        _req: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let usage = self.blocking(|store| store.fs_usage_cached()).await?;
        let fs = cri::FilesystemUsage {
            timestamp: crate::util::now_nanos(),
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: usage.mountpoint.to_string_lossy().into_owned(),
            }),
            used_bytes: Some(cri::UInt64Value {
                value: usage.used_bytes,
            }),
            inodes_used: Some(cri::UInt64Value {
                value: usage.inodes_used,
            }),
        };
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![fs.clone()],
            container_filesystems: vec![fs],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::image_user;

    #[test]
    fn user_forms() {
        assert_eq!(image_user("").0, None);
        assert_eq!(image_user("1000:100").0.unwrap().value, 1000);
        assert_eq!(image_user("nobody").1, "nobody");
        assert_eq!(image_user("www:www").1, "www");
    }
}

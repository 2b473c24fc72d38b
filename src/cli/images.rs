//! Image verbs over CRI: images, pull, rmi, inspecti, imagefsinfo. (`crius image
//! import|export` work on the store directly; see image.rs.)

use k8s_cri::v1::{
    AuthConfig, Image, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest,
    PullImageRequest, RemoveImageRequest,
};
use serde_json::json;

use super::connect::{Client, Deadline};
use super::error::CliError;
use super::output::{self, ListOutput, Table};

#[derive(clap::Args, Debug)]
pub struct ImagesArgs {
    /// Only images matching this reference (repository, repository:tag or id).
    pub reference: Option<String>,
    #[command(flatten)]
    pub list: ListOutput,
}

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// The image to pull, e.g. docker.io/library/busybox:latest.
    pub reference: String,
    /// Registry credentials as USERNAME[:PASSWORD].
    #[arg(long)]
    pub creds: Option<String>,
    /// Registry credentials as base64 of USERNAME:PASSWORD.
    #[arg(long)]
    pub auth: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct RmiArgs {
    /// Images to remove (tag, digest or id).
    pub references: Vec<String>,
    /// Remove every image.
    #[arg(long, short)]
    pub all: bool,
}

/// `name:tag` split as docker does: the tag is after the last ':' that follows the last '/'
/// (a ':' before it belongs to a registry port).
pub fn split_repo_tag(reference: &str) -> (String, String) {
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[slash..].rfind(':') {
        Some(i) => (
            reference[..slash + i].to_string(),
            reference[slash + i + 1..].to_string(),
        ),
        None => (reference.to_string(), "<none>".to_string()),
    }
}

/// The (repository, tag) rows an image shows up as: one per tag, or its digests' repository
/// with no tag, or `<none>` twice.
pub fn repo_tag_rows(image: &Image) -> Vec<(String, String)> {
    if !image.repo_tags.is_empty() {
        return image.repo_tags.iter().map(|t| split_repo_tag(t)).collect();
    }
    let mut rows: Vec<(String, String)> = image
        .repo_digests
        .iter()
        .filter_map(|d| d.split_once('@'))
        .map(|(repo, _)| (repo.to_string(), "<none>".to_string()))
        .collect();
    rows.dedup();
    if rows.is_empty() {
        rows.push(("<none>".to_string(), "<none>".to_string()));
    }
    rows
}

fn matches(image: &Image, reference: &str) -> bool {
    let id = image.id.strip_prefix("sha256:").unwrap_or(&image.id);
    let wanted = reference.strip_prefix("sha256:").unwrap_or(reference);
    id.starts_with(wanted)
        || image
            .repo_tags
            .iter()
            .any(|t| t == reference || split_repo_tag(t).0 == reference)
        || image.repo_digests.iter().any(|d| d == reference)
}

async fn list_all(c: &Client) -> Result<Vec<Image>, CliError> {
    Ok(c.call(
        "ListImages",
        Deadline::Normal,
        c.image
            .clone()
            .list_images(ListImagesRequest { filter: None }),
    )
    .await?
    .images)
}

pub async fn images(c: &Client, args: &ImagesArgs) -> Result<(), CliError> {
    let mut images = list_all(c).await?;
    if let Some(r) = &args.reference {
        images.retain(|i| matches(i, r));
    }
    images.sort_by(|a, b| a.repo_tags.first().cmp(&b.repo_tags.first()));
    let ids = images.iter().map(|i| i.id.as_str());
    if let Some(done) = args
        .list
        .print_ids_or_json(ids, || json!({ "images": images }))
    {
        return done;
    }
    let mut t = Table::new(&["IMAGE", "TAG", "IMAGE ID", "SIZE"]);
    for i in &images {
        let id = args.list.id(&i.id);
        for (repo, tag) in repo_tag_rows(i) {
            t.row(vec![repo, tag, id.clone(), output::human_size(i.size)]);
        }
    }
    t.print()
}

fn auth_config(args: &PullArgs) -> Result<Option<AuthConfig>, CliError> {
    match (&args.creds, &args.auth) {
        (Some(_), Some(_)) => Err(CliError::Usage(
            "give either --creds or --auth, not both".into(),
        )),
        (Some(creds), None) => {
            let (username, password) = creds.split_once(':').unwrap_or((creds, ""));
            if username.is_empty() {
                return Err(CliError::Usage(
                    "--creds needs a username: USERNAME[:PASSWORD]".into(),
                ));
            }
            Ok(Some(AuthConfig {
                username: username.to_string(),
                password: password.to_string(),
                ..Default::default()
            }))
        }
        (None, Some(auth)) => Ok(Some(AuthConfig {
            auth: auth.clone(),
            ..Default::default()
        })),
        (None, None) => Ok(None),
    }
}

pub async fn pull(c: &Client, args: &PullArgs) -> Result<(), CliError> {
    let resp = c
        .call(
            "PullImage",
            Deadline::Long,
            c.image.clone().pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: args.reference.clone(),
                    ..Default::default()
                }),
                auth: auth_config(args)?,
                sandbox_config: None,
            }),
        )
        .await?;
    println!("Image is up to date for {}", resp.image_ref);
    Ok(())
}

/// ImageStatus of `reference`; an unknown image is an error naming it.
async fn status(
    c: &Client,
    reference: &str,
    verbose: bool,
) -> Result<(Image, serde_json::Map<String, serde_json::Value>), CliError> {
    let resp = c
        .call(
            "ImageStatus",
            Deadline::Normal,
            c.image.clone().image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: reference.to_string(),
                    ..Default::default()
                }),
                verbose,
            }),
        )
        .await?;
    let info = output::info_json(&resp.info);
    let image = resp.image.ok_or_else(|| CliError::Answer {
        what: "image",
        id: reference.to_string(),
        reason: "no such image".into(),
    })?;
    Ok((image, info))
}

pub async fn rmi(c: &Client, args: &RmiArgs) -> Result<(), CliError> {
    let images: Vec<Image> = if args.all {
        list_all(c).await?
    } else if args.references.is_empty() {
        return Err(CliError::Usage("name at least one image, or use -a".into()));
    } else {
        let mut v = Vec::new();
        for r in &args.references {
            v.push(status(c, r, false).await?.0);
        }
        v
    };
    for image in images {
        c.call(
            "RemoveImage",
            Deadline::Normal,
            c.image.clone().remove_image(RemoveImageRequest {
                image: Some(ImageSpec {
                    image: image.id.clone(),
                    ..Default::default()
                }),
            }),
        )
        .await?;
        if image.repo_tags.is_empty() {
            println!("Deleted: {}", image.id);
        }
        for t in &image.repo_tags {
            println!("Deleted: {t}");
        }
    }
    Ok(())
}

pub async fn inspecti(c: &Client, references: &[String]) -> Result<(), CliError> {
    for r in references {
        let (image, info) = status(c, r, true).await?;
        output::print_json(&json!({ "status": image, "info": info }))?;
    }
    Ok(())
}

pub async fn imagefsinfo(c: &Client) -> Result<(), CliError> {
    let resp = c
        .call(
            "ImageFsInfo",
            Deadline::Normal,
            c.image.clone().image_fs_info(ImageFsInfoRequest {}),
        )
        .await?;
    output::print_json(&resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_and_tag_split_like_docker() {
        let s = |r: &str| {
            let (a, b) = split_repo_tag(r);
            (a, b)
        };
        assert_eq!(s("busybox:1"), ("busybox".into(), "1".into()));
        assert_eq!(
            s("localhost:5000/x/y:v2"),
            ("localhost:5000/x/y".into(), "v2".into())
        );
        assert_eq!(
            s("localhost:5000/x"),
            ("localhost:5000/x".into(), "<none>".into())
        );
    }

    #[test]
    fn untagged_images_show_their_digest_repository() {
        let mut i = Image {
            id: "sha256:abc".into(),
            repo_digests: vec!["docker.io/library/a@sha256:1".into()],
            ..Default::default()
        };
        assert_eq!(
            repo_tag_rows(&i),
            [("docker.io/library/a".to_string(), "<none>".to_string())]
        );
        i.repo_digests.clear();
        assert_eq!(
            repo_tag_rows(&i),
            [("<none>".to_string(), "<none>".to_string())]
        );
        assert!(matches(&i, "abc") && matches(&i, "sha256:ab") && !matches(&i, "b"));
    }

    #[test]
    fn credentials_become_auth_config() {
        let args = |creds: Option<&str>, auth: Option<&str>| PullArgs {
            reference: "x".into(),
            creds: creds.map(String::from),
            auth: auth.map(String::from),
        };
        let a = auth_config(&args(Some("me:se:cret"), None))
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.username.as_str(), a.password.as_str()),
            ("me", "se:cret")
        );
        assert!(auth_config(&args(Some(":x"), None)).is_err());
        assert!(auth_config(&args(Some("a"), Some("b"))).is_err());
        assert!(auth_config(&args(None, None)).unwrap().is_none());
    }
}

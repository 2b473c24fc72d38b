//! The ImageService over CRI against a real daemon: PullImage through a mirror entry,
//! ImageStatus / ListImages / RemoveImage / ImageFsInfo, and pull error codes.

mod common;
mod image_support;

use common::{DaemonOpts, TestDaemon};
use image_support::*;
use k8s_cri::v1::{
    ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest, PullImageRequest,
    RemoveImageRequest,
};

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_status_list_remove_over_cri() {
    require_tools();
    let reg = Registry::start(None);
    let layout = Layout::new();
    let desc = layout.image(
        &[(layer_tar(&busybox_entries()), Comp::Gzip)],
        "amd64",
        "1000:1000",
    );
    reg.push(&layout, &desc, "foo:1").await;

    let d = mirrored_daemon(&reg, DaemonOpts::default()).await;
    let mut images = d.image();

    let id = images
        .pull_image(PullImageRequest {
            image: spec("registry.k8s.io/foo:1"),
            ..Default::default()
        })
        .await
        .expect("PullImage")
        .into_inner()
        .image_ref;
    assert!(id.starts_with("sha256:"), "{id}");

    let status = images
        .image_status(ImageStatusRequest {
            image: spec("registry.k8s.io/foo:1"),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let img = status.image.expect("image present");
    assert_eq!(img.id, id);
    assert_eq!(img.repo_tags, vec!["registry.k8s.io/foo:1"]);
    assert_eq!(
        img.repo_digests,
        vec![format!(
            "registry.k8s.io/foo@{}",
            desc["digest"].as_str().unwrap()
        )]
    );
    assert_eq!(img.uid.map(|u| u.value), Some(1000));
    assert!(!img.pinned);
    assert!(img.size > 0);
    assert!(status.info["info"].contains("chainIds"));

    let listed = images
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(listed.iter().any(|i| i.id == id));

    // Errors carry the right code and name the image.
    let e = images
        .pull_image(PullImageRequest {
            image: spec("registry.k8s.io/nothere:1"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("registry.k8s.io/nothere:1"), "{e:?}");
    let e = images
        .pull_image(PullImageRequest {
            image: spec("Not A Ref"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    let before = fs_used(&mut images).await;
    images
        .remove_image(RemoveImageRequest {
            image: spec("registry.k8s.io/foo:1"),
        })
        .await
        .expect("RemoveImage");
    let after = fs_used(&mut images).await;
    assert!(after < before, "{after} !< {before}");
    let status = images
        .image_status(ImageStatusRequest {
            image: spec(&id),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.is_none());
    // Idempotent.
    images
        .remove_image(RemoveImageRequest { image: spec(&id) })
        .await
        .expect("RemoveImage of an absent image");
}

async fn fs_used(images: &mut common::daemon::Images) -> u64 {
    images
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner()
        .image_filesystems[0]
        .used_bytes
        .as_ref()
        .unwrap()
        .value
}

/// A daemon started with `opts` whose registry.k8s.io is the local registry `reg` (plain HTTP).
async fn mirrored_daemon(reg: &Registry, opts: DaemonOpts) -> TestDaemon {
    TestDaemon::start_mirrored(opts, &reg.host()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_configured_sandbox_image_is_pulled_on_first_use() {
    require_tools();
    let reg = Registry::start(None);
    // The built-in pause image, pushed as registry.k8s.io/pause:3.10 would be.
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("pause.tar");
    std::fs::write(&archive, crius::image::builtin::archive()).unwrap();
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{}/pause:3.10", reg.host()))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy: {out:?}");

    let d = mirrored_daemon(
        &reg,
        DaemonOpts::default().sandbox_image("registry.k8s.io/pause:3.10"),
    )
    .await;
    let mut images = d.image();
    let before = images
        .image_status(ImageStatusRequest {
            image: spec("registry.k8s.io/pause:3.10"),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(before.image.is_none(), "not pulled before the first pod");
    let id = d.run_pod(d.host_network_pod_config("first")).await;
    let status = images
        .image_status(ImageStatusRequest {
            image: spec("registry.k8s.io/pause:3.10"),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    let img = status.image.expect("pulled by RunPodSandbox");
    assert!(img.pinned, "the sandbox image is pinned");
    assert!(
        reg.log().contains("pause/manifests/3.10"),
        "fetched from the mirror:\n{}",
        reg.log()
    );
    d.stop_and_remove(&id).await;
    common::assert_no_leaks(&d).await;

    // A sandbox image the registry does not have: a clear error, nothing left behind.
    let d = mirrored_daemon(
        &reg,
        DaemonOpts::default().sandbox_image("registry.k8s.io/pause:missing"),
    )
    .await;
    let (code, msg) = common::code_of(
        d.runtime()
            .run_pod_sandbox(k8s_cri::v1::RunPodSandboxRequest {
                config: Some(d.host_network_pod_config("nopause")),
                runtime_handler: String::new(),
            })
            .await,
    );
    assert_eq!(code, tonic::Code::FailedPrecondition, "{msg}");
    assert!(
        msg.contains("pulling the sandbox image registry.k8s.io/pause:missing"),
        "{msg}"
    );
    assert!(d.list_pods(None).await.is_empty());
    common::assert_no_leaks(&d).await;
}

/// A client's gRPC deadline (`grpc-timeout`) ends the call with DEADLINE_EXCEEDED, as gRPC
/// specifies and as kubelet and critest expect, not CANCELLED. tonic's client would act on the
/// deadline itself, so this sends the call over a raw HTTP/2 connection and reads the server's
/// own grpc-status.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_deadline_answers_deadline_exceeded() {
    use prost::Message;
    // A "registry" that accepts connections and never answers: the pull can only hang.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || silent.incoming().take(4).collect::<Vec<_>>());
    let d = TestDaemon::start(DaemonOpts::default()).await;
    let image = format!("127.0.0.1:{port}/silent/img:1");

    let io = tokio::net::UnixStream::connect(d.socket()).await.unwrap();
    let (mut client, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let request = http::Request::post("http://localhost/runtime.v1.ImageService/PullImage")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        .body(())
        .unwrap();
    let message = PullImageRequest {
        image: spec(&image),
        ..Default::default()
    }
    .encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let started = std::time::Instant::now();
    let (response, mut send) = client.send_request(request, false).unwrap();
    send.send_data(body.into(), true).unwrap();
    let response = tokio::time::timeout(std::time::Duration::from_secs(30), response)
        .await
        .expect("the server answers once the deadline passed")
        .unwrap();
    // A trailers-only answer carries grpc-status in the headers; otherwise in the trailers.
    let mut status = response.headers().get("grpc-status").cloned();
    if status.is_none() {
        let mut body = response.into_body();
        while body.data().await.is_some() {}
        status = body
            .trailers()
            .await
            .unwrap()
            .and_then(|t| t.get("grpc-status").cloned());
    }
    assert_eq!(
        status.as_ref().and_then(|s| s.to_str().ok()),
        Some("4"), // DEADLINE_EXCEEDED
        "after {:?}",
        started.elapsed()
    );

    // The daemon still serves, and the abandoned pull left no image behind.
    let status = d
        .image()
        .image_status(ImageStatusRequest {
            image: spec(&image),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.is_none());
    drop(held);
}

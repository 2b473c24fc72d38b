//! The Bearer token flow end to end: Debian's docker-registry with `auth: token`, a token
//! server in the test (tests/image_support/token.rs) and the pull client, with every kind
//! of CRI AuthConfig credential, their failures, mirrors, and one pull over CRI.
//! Root only (unpacking sets owners).

mod common;
mod image_support;

use crius::image::{Credentials, ImageStore, PullErrorKind, PullOptions, Puller};
use image_support::token::{SERVICE, TokenServer, TokenSigner};
use image_support::*;
use std::sync::Arc;
use std::time::Duration;

const REPO: &str = "private/img";
/// Anyone may pull this one: anonymous tokens grant it.
const PUBLIC_REPO: &str = "public/img";

/// A token-auth registry holding `private/img:1` and its token server, which knows
/// alice/s3cret (pull, push), bob/hunter2 (pull) and the identity token `refresh-alice`.
/// Dropping it kills both, also when a test fails.
struct Fixture {
    // Field order is drop order: the registry goes first, then its token server.
    reg: Registry,
    tokens: TokenServer,
    signer: Arc<TokenSigner>,
}

impl Fixture {
    async fn start() -> Fixture {
        let signer = Arc::new(TokenSigner::new());
        let tokens = TokenServer::start(signer.clone());
        tokens.add_user("alice", "s3cret", &["pull", "push"]);
        tokens.add_user("bob", "hunter2", &["pull"]);
        tokens.add_refresh_token("refresh-alice", "alice");
        tokens.add_public_repo(PUBLIC_REPO);
        let mut reg = Registry::start_with(RegistryAuth::Token {
            realm: tokens.realm(),
            signer: &signer,
        });
        // Several layers, so a pull downloads in parallel with one shared token.
        let layout = Layout::new();
        let desc = layout.image(
            &[
                (layer_tar(&[file("secret", b"bearer")]), Comp::Gzip),
                (layer_tar(&[file("two", b"2")]), Comp::Zstd),
                (layer_tar(&[file("three", b"3")]), Comp::None),
            ],
            "amd64",
            "",
        );
        // Push with tokens from our own token server, as any client would.
        for repo in [REPO, PUBLIC_REPO] {
            reg.push_token = Some(
                tokens
                    .fetch_token("alice", "s3cret", &format!("repository:{repo}:pull,push"))
                    .await,
            );
            reg.push(&layout, &desc, &format!("{repo}:1")).await;
        }
        tokens.clear_seen();
        Fixture {
            reg,
            tokens,
            signer,
        }
    }

    fn image(&self) -> String {
        format!("{}/{REPO}:1", self.reg.host())
    }

    /// A puller reaching the registry over plain HTTP, with a fresh store (so every pull
    /// fetches blobs too, each needing the token).
    fn puller(&self) -> (tempfile::TempDir, ImageStore, Puller) {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let p = Puller::new(store.clone(), plain_http(&[&self.reg.host()]));
        (dir, store, p)
    }

    async fn pull(&self, creds: Credentials) -> Result<(), crius::image::pull::PullError> {
        let (_dir, store, p) = self.puller();
        let opts = PullOptions {
            credentials: Some(creds),
            ..Default::default()
        };
        let r = p.pull(&self.image(), &opts).await?;
        // The layer really arrived.
        let dirs = store.snapshot_dirs(&r.image).unwrap();
        assert_eq!(dirs.len(), 3);
        assert!(dirs.iter().any(|d| d.join("secret").exists()));
        Ok(())
    }
}

fn cri(
    username: &str,
    password: &str,
    auth: &str,
    identity_token: &str,
    registry_token: &str,
) -> Credentials {
    Credentials::from_fields(username, password, auth, identity_token, registry_token).unwrap()
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_password_through_the_token_server() {
    require_tools();
    let f = Fixture::start().await;
    let scope = format!("repository:{REPO}:pull");

    f.pull(cri("alice", "s3cret", "", "", "")).await.unwrap();
    let seen = f.tokens.seen();
    assert!(!seen.is_empty(), "the token server was never asked");
    for s in &seen {
        assert_eq!(s.method, "GET", "{s:?}");
        assert_eq!(s.basic, Some(("alice".into(), "s3cret".into())), "{s:?}");
        assert_eq!(s.param("service"), Some(SERVICE), "{s:?}");
        assert_eq!(s.param("scope"), Some(scope.as_str()), "{s:?}");
        assert_eq!(s.status, 200, "{s:?}");
    }
    // One token serves the manifest, config and layer requests of a pull.
    assert_eq!(seen.len(), 1, "{seen:?}");

    // The base64 `auth` field is the same credential.
    f.tokens.clear_seen();
    f.pull(cri("", "", &b64("bob:hunter2"), "", ""))
        .await
        .unwrap();
    assert_eq!(
        f.tokens.seen()[0].basic,
        Some(("bob".into(), "hunter2".into()))
    );

    // No credentials: an anonymous token that grants nothing, then the registry's refusal.
    f.tokens.clear_seen();
    let e = f.pull(Credentials::Anonymous).await.unwrap_err();
    let msg = e.to_string();
    eprintln!("anonymous: {msg}");
    assert_eq!(e.kind(), PullErrorKind::Unauthenticated, "{msg}");
    assert!(msg.contains(&f.image()), "{msg}");
    assert!(msg.contains("no credentials"), "{msg}");
    assert!(f.tokens.seen().iter().all(|s| s.authorization.is_none()));

    // A wrong password: the token server says 401, and so does the pull.
    f.tokens.clear_seen();
    let e = f.pull(cri("alice", "nope", "", "", "")).await.unwrap_err();
    let msg = e.to_string();
    eprintln!("wrong password: {msg}");
    assert_eq!(e.kind(), PullErrorKind::Unauthenticated, "{msg}");
    assert!(msg.contains("incorrect username or password"), "{msg}");
    assert!(
        !msg.contains("nope"),
        "the password leaked into the error: {msg}"
    );
    assert_eq!(f.tokens.seen()[0].status, 401);

    // The token server down: the registry is unusable for now, not the credentials wrong.
    let Fixture { reg, tokens, .. } = f;
    let realm = tokens.realm();
    drop(tokens);
    let dir = tempfile::tempdir().unwrap();
    let p = Puller::new(
        ImageStore::open(dir.path()).unwrap(),
        plain_http(&[&reg.host()]),
    );
    let opts = PullOptions {
        credentials: Some(cri("alice", "s3cret", "", "", "")),
        ..Default::default()
    };
    let e = p
        .pull(&format!("{}/{REPO}:1", reg.host()), &opts)
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.kind(), PullErrorKind::Unavailable, "{msg}");
    assert!(msg.contains(&realm), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_token_for_a_public_repository() {
    require_tools();
    let f = Fixture::start().await;
    // Docker Hub's public images work this way: an anonymous token, then the pull.
    let (_dir, _store, p) = f.puller();
    let image = format!("{}/{PUBLIC_REPO}:1", f.reg.host());
    let r = p.pull(&image, &PullOptions::default()).await.unwrap();
    assert_eq!(r.layers_fetched, 3);
    let seen = f.tokens.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "GET");
    assert!(seen[0].authorization.is_none(), "{seen:?}");
    assert_eq!(
        seen[0].param("scope"),
        Some(format!("repository:{PUBLIC_REPO}:pull").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_token_and_registry_token() {
    require_tools();
    let f = Fixture::start().await;
    let scope = format!("repository:{REPO}:pull");

    // An identity token is an OAuth2 refresh token: POSTed as a refresh_token grant.
    f.pull(cri("ignored", "ignored", "", "refresh-alice", ""))
        .await
        .unwrap();
    let seen = f.tokens.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let s = &seen[0];
    assert_eq!(s.method, "POST", "{s:?}");
    assert_eq!(s.param("grant_type"), Some("refresh_token"), "{s:?}");
    assert_eq!(s.param("refresh_token"), Some("refresh-alice"), "{s:?}");
    assert_eq!(s.param("service"), Some(SERVICE), "{s:?}");
    assert_eq!(s.param("scope"), Some(scope.as_str()), "{s:?}");
    assert!(s.param("client_id").is_some_and(|c| !c.is_empty()), "{s:?}");
    assert!(s.authorization.is_none(), "{s:?}");

    // An unknown identity token: OAuth2's 400 invalid_grant means bad credentials.
    f.tokens.clear_seen();
    let e = f.pull(cri("", "", "", "stale", "")).await.unwrap_err();
    let msg = e.to_string();
    eprintln!("stale identity token: {msg}");
    assert_eq!(e.kind(), PullErrorKind::Unauthenticated, "{msg}");
    assert!(msg.contains("invalid_grant"), "{msg}");
    assert!(
        !msg.contains("stale"),
        "the token leaked into the error: {msg}"
    );

    // A registry token goes to the registry as is; the token server is never asked.
    f.tokens.clear_seen();
    let minted = f
        .signer
        .mint("carol", REPO, &["pull"], Duration::from_secs(60));
    f.pull(cri("", "", "", "", &minted)).await.unwrap();
    assert!(f.tokens.seen().is_empty(), "{:?}", f.tokens.seen());

    // One the registry refuses (grants nothing here) is Unauthenticated, not retried forever.
    let useless = f
        .signer
        .mint("carol", "other/repo", &["pull"], Duration::from_secs(60));
    let e = f.pull(cri("", "", "", "", &useless)).await.unwrap_err();
    eprintln!("useless registry token: {e}");
    assert_eq!(e.kind(), PullErrorKind::Unauthenticated, "{e}");
    assert!(f.tokens.seen().is_empty(), "{:?}", f.tokens.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_reach_a_mirror() {
    require_tools();
    let f = Fixture::start().await;
    // The image's own registry is a local port nobody listens on; the token-auth registry
    // is its mirror. Everything stays on 127.0.0.1.
    let upstream = format!("127.0.0.1:{}", free_port());
    let image = format!("{upstream}/{REPO}:1");
    let mirror_only = format!(
        "[registry.mirrors.\"{upstream}\"]\nendpoint = [\"http://{}\"]\n",
        f.reg.host()
    );
    let alice = PullOptions {
        credentials: Some(cri("alice", "s3cret", "", "", "")),
        ..Default::default()
    };

    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let e = Puller::new(store.clone(), registry_config(&mirror_only))
        .pull(&image, &alice)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), PullErrorKind::Unauthenticated, "{e}");
    let seen = f.tokens.seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|s| s.authorization.is_none()),
        "the request's credentials went to a mirror: {seen:?}"
    );

    // Credentials configured for the mirror host are its own to use.
    f.tokens.clear_seen();
    let with_config = format!(
        "{mirror_only}[registry.configs.\"{}\".auth]\nusername = \"bob\"\npassword = \"hunter2\"\n",
        f.reg.host()
    );
    let r = Puller::new(store, registry_config(&with_config))
        .pull(&image, &alice)
        .await
        .unwrap();
    assert_eq!(r.image.repo_tags, vec![image.clone()]);
    let seen = f.tokens.seen();
    assert!(
        !seen.is_empty()
            && seen
                .iter()
                .all(|s| s.basic == Some(("bob".into(), "hunter2".into()))),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_image_over_cri_with_auth_config() {
    require_tools();
    use k8s_cri::v1::{AuthConfig, ImageSpec, PullImageRequest};
    let f = Fixture::start().await;
    let d = common::TestDaemon::start(common::DaemonOpts::default()).await;
    std::fs::write(
        d.dir().join("crius.toml"),
        format!(
            "[registry.mirrors.\"{h}\"]\nendpoint = [\"http://{h}\"]\n",
            h = f.reg.host()
        ),
    )
    .unwrap();
    d.restart().await;
    let mut images = d.image();
    let request = |auth: Option<AuthConfig>| PullImageRequest {
        image: Some(ImageSpec {
            image: f.image(),
            ..Default::default()
        }),
        auth,
        ..Default::default()
    };

    let e = images.pull_image(request(None)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains(&f.image()), "{e:?}");

    f.tokens.clear_seen();
    let id = images
        .pull_image(request(Some(AuthConfig {
            username: "alice".into(),
            password: "s3cret".into(),
            ..Default::default()
        })))
        .await
        .expect("PullImage with AuthConfig")
        .into_inner()
        .image_ref;
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(
        f.tokens.seen()[0].basic,
        Some(("alice".into(), "s3cret".into()))
    );
    let log = std::fs::read_to_string(d.log_file()).unwrap();
    assert!(log.contains("image pulled"), "{log}");
    assert!(!log.contains("s3cret"), "the password is in the daemon log");
}

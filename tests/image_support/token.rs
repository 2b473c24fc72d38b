//! A Docker token-auth server for the image tests: the registry (configured with
//! `auth: token`) sends clients here to trade credentials for a JWT it can verify.
//!
//! Implements the two flows of Docker's token spec, on 127.0.0.1 in a thread:
//! - `GET /token?service=..&scope=repository:NAME:pull[,push]` with optional Basic
//!   credentials: bad credentials get 401; no credentials get an anonymous token that grants
//!   pull on public repositories and nothing elsewhere (as Docker Hub does).
//! - `POST /token` (OAuth2 form): `grant_type=refresh_token` (an identity token) or
//!   `grant_type=password`; a bad grant gets 400 `invalid_grant`, as RFC 6749 says.
//!
//! Tokens are ES256 JWTs whose `x5c` header carries a self-signed certificate; the registry
//! trusts it through `rootcertbundle` ([`TokenSigner::cert_pem`]). Every request is recorded
//! so tests can assert what the client sent.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const SERVICE: &str = "crius-test";
pub const ISSUER: &str = "crius-test-issuer";
/// Requests larger than this are refused (tokens and forms are tiny).
const MAX_REQUEST: usize = 64 << 10;

/// The signing key and its self-signed certificate, made fresh for each test.
pub struct TokenSigner {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    pub cert_pem: String,
    rng: SystemRandom,
    serial: AtomicU64,
}

impl TokenSigner {
    pub fn new() -> TokenSigner {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["crius-test-token-signer".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let rng = SystemRandom::new();
        let signing =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.serialize_der(), &rng)
                .unwrap();
        TokenSigner {
            key: signing,
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            rng,
            serial: AtomicU64::new(0),
        }
    }

    /// A JWT for `sub` granting `actions` on repository `name` (no grant if `actions` is
    /// empty), valid for `ttl` from now.
    pub fn mint(&self, sub: &str, name: &str, actions: &[&str], ttl: Duration) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [STANDARD.encode(&self.cert_der)],
        });
        let access: Vec<serde_json::Value> = if actions.is_empty() {
            Vec::new()
        } else {
            vec![serde_json::json!({"type": "repository", "name": name, "actions": actions})]
        };
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": sub,
            "aud": SERVICE,
            "exp": now + ttl.as_secs(),
            "nbf": now.saturating_sub(10),
            "iat": now,
            "jti": format!("crius-test-{}", self.serial.fetch_add(1, Ordering::Relaxed)),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        let sig = self.key.sign(&self.rng, signing_input.as_bytes()).unwrap();
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// Write the certificate the registry's `rootcertbundle` points at.
    pub fn write_cert(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("token-cert.pem");
        std::fs::write(&path, &self.cert_pem).unwrap();
        path
    }
}

/// One request the token server answered.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Query parameters of a GET, form fields of a POST.
    pub params: Vec<(String, String)>,
    /// Basic credentials, if the request carried any.
    pub basic: Option<(String, String)>,
    /// The raw Authorization header, if any.
    pub authorization: Option<String>,
    pub status: u16,
}

impl Seen {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Who may get what.
#[derive(Default)]
struct Accounts {
    /// user -> (password, actions granted on every repository).
    users: HashMap<String, (String, Vec<String>)>,
    /// refresh (identity) token -> user.
    refresh: HashMap<String, String>,
    /// Repositories anyone may pull, credentials or not.
    public: Vec<String>,
}

struct Shared {
    signer: Arc<TokenSigner>,
    accounts: Mutex<Accounts>,
    seen: Mutex<Vec<Seen>>,
    stop: AtomicBool,
}

/// The running server; stopped and joined on drop.
pub struct TokenServer {
    pub port: u16,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl TokenServer {
    pub fn start(signer: Arc<TokenSigner>) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            signer,
            accounts: Mutex::new(Accounts::default()),
            seen: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = conn {
                    // One connection at a time is plenty for token requests; a stuck client
                    // cannot hold the server for long.
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = serve(&s, stream);
                }
            }
        });
        TokenServer {
            port,
            shared,
            thread: Some(thread),
        }
    }

    /// The `realm` for the registry config.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// Allow `user` with `password` to do `actions` on every repository.
    pub fn add_user(&self, user: &str, password: &str, actions: &[&str]) {
        self.shared.accounts.lock().unwrap().users.insert(
            user.to_string(),
            (
                password.to_string(),
                actions.iter().map(|a| a.to_string()).collect(),
            ),
        );
    }

    /// Accept `token` as an OAuth2 refresh token (a CRI identity token) for `user`.
    pub fn add_refresh_token(&self, token: &str, user: &str) {
        self.shared
            .accounts
            .lock()
            .unwrap()
            .refresh
            .insert(token.to_string(), user.to_string());
    }

    /// Let anonymous clients pull `repository`.
    pub fn add_public_repo(&self, repository: &str) {
        self.shared
            .accounts
            .lock()
            .unwrap()
            .public
            .push(repository.to_string());
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    pub fn clear_seen(&self) {
        self.shared.seen.lock().unwrap().clear();
    }

    /// A token for `scope` fetched over HTTP like a client would (used to push).
    pub async fn fetch_token(&self, user: &str, password: &str, scope: &str) -> String {
        let resp = reqwest::Client::new()
            .get(self.realm())
            .query(&[("service", SERVICE), ("scope", scope)])
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{resp:?}");
        let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        body["token"].as_str().unwrap().to_string()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().ok_or_else(|| bad("no method"))?.to_string();
    let target = parts.next().ok_or_else(|| bad("no target"))?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = HashMap::new();
    let mut total = line.len();
    loop {
        let mut h = String::new();
        let n = reader.read_line(&mut h)?;
        total += n;
        if n == 0 || total > MAX_REQUEST {
            return Err(bad("truncated or oversized headers"));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .map(|v| v.parse().map_err(|_| bad("content-length")))
        .transpose()?
        .unwrap_or(0);
    if len > MAX_REQUEST {
        return Err(bad("body too large"));
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    Ok(Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body,
    })
}

fn serve(s: &Shared, mut stream: TcpStream) -> std::io::Result<()> {
    let req = read_request(&stream)?;
    let params = match req.method.as_str() {
        "POST" => parse_form(&String::from_utf8_lossy(&req.body)),
        _ => parse_form(&req.query),
    };
    let authorization = req.headers.get("authorization").cloned();
    let basic = authorization.as_deref().and_then(parse_basic);
    let (status, body) = answer(s, &req, &params, basic.as_ref());
    s.seen.lock().unwrap().push(Seen {
        method: req.method.clone(),
        path: req.path.clone(),
        params,
        basic,
        authorization,
        status,
    });
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let body = body.to_string();
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// The token server's decision: (status, JSON body).
fn answer(
    s: &Shared,
    req: &Request,
    params: &[(String, String)],
    basic: Option<&(String, String)>,
) -> (u16, serde_json::Value) {
    if req.path != "/token" {
        return (404, serde_json::json!({"details": "not found"}));
    }
    let param = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    if param("service") != Some(SERVICE) {
        return (400, serde_json::json!({"details": "unknown service"}));
    }
    let accounts = s.accounts.lock().unwrap();
    let user = match req.method.as_str() {
        "GET" => match basic {
            None => None,
            Some((u, p)) => match accounts.users.get(u) {
                Some((pw, _)) if pw == p => Some(u.clone()),
                _ => {
                    return (
                        401,
                        serde_json::json!({"details": "incorrect username or password"}),
                    );
                }
            },
        },
        "POST" => {
            let user = match param("grant_type") {
                Some("refresh_token") => param("refresh_token")
                    .and_then(|t| accounts.refresh.get(t))
                    .cloned(),
                Some("password") => match (param("username"), param("password")) {
                    (Some(u), Some(p)) => accounts
                        .users
                        .get(u)
                        .filter(|(pw, _)| pw == p)
                        .map(|_| u.to_string()),
                    _ => None,
                },
                _ => None,
            };
            if user.is_none() {
                return (
                    400,
                    serde_json::json!({"error": "invalid_grant", "error_description": "unknown refresh token or bad credentials"}),
                );
            }
            user
        }
        _ => return (405, serde_json::json!({"details": "method not allowed"})),
    };
    // The first requested repository scope decides the grant; clients ask for one.
    let (name, wanted) = param("scope")
        .and_then(|sc| sc.strip_prefix("repository:"))
        .and_then(|sc| sc.rsplit_once(':'))
        .map(|(n, a)| (n.to_string(), a.split(',').collect::<Vec<_>>()))
        .unwrap_or_default();
    let allowed: Vec<&str> = match &user {
        Some(u) => wanted
            .iter()
            .copied()
            .filter(|a| accounts.users[u].1.iter().any(|x| x == a))
            .collect(),
        // Anonymous clients: pull on public repositories, nothing elsewhere (the registry
        // then refuses the token, as Docker Hub's does for private repositories).
        None if accounts.public.contains(&name) => {
            wanted.iter().copied().filter(|a| *a == "pull").collect()
        }
        None => Vec::new(),
    };
    let token = s.signer.mint(
        user.as_deref().unwrap_or(""),
        &name,
        &allowed,
        Duration::from_secs(300),
    );
    if req.method == "POST" {
        (
            200,
            serde_json::json!({"access_token": token, "expires_in": 300, "scope": param("scope")}),
        )
    } else {
        (
            200,
            serde_json::json!({"token": token, "access_token": token, "expires_in": 300}),
        )
    }
}

fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, rest) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let text = String::from_utf8(STANDARD.decode(rest.trim()).ok()?).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// `application/x-www-form-urlencoded` (also a query string) into pairs.
fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

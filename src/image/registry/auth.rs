//! Registry credentials and the two challenge flows a registry can ask for on HTTP 401:
//! `Basic` (send the user and password on every request) and `Bearer` (trade the credentials
//! for a token at `realm`, for `service` and `scope`, then send the token).

use super::{Endpoint, RegistryError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

const CLIENT_ID: &str = "crius";
/// Token replies are small JSON documents.
const MAX_TOKEN_REPLY: usize = 1 << 20;

/// What we can present to a registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken` / CRI `identity_token`), traded at the
    /// token realm for an access token.
    IdentityToken(String),
    /// A bearer token to send as is (CRI `registry_token`).
    RegistryToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => write!(f, "Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credentials::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
            Credentials::RegistryToken(_) => write!(f, "RegistryToken(<redacted>)"),
        }
    }
}

impl Credentials {
    /// From the fields CRI's AuthConfig and containerd's `registry.configs.*.auth` share.
    /// Precedence: a registry token, an identity token, username/password, then `auth`.
    pub fn from_fields(
        username: &str,
        password: &str,
        auth: &str,
        identity_token: &str,
        registry_token: &str,
    ) -> Result<Credentials, String> {
        if !registry_token.is_empty() {
            return Ok(Credentials::RegistryToken(registry_token.to_string()));
        }
        if !identity_token.is_empty() {
            return Ok(Credentials::IdentityToken(identity_token.to_string()));
        }
        if !username.is_empty() {
            return Ok(Credentials::Basic {
                username: username.to_string(),
                password: password.to_string(),
            });
        }
        if !auth.is_empty() {
            let decoded = BASE64
                .decode(auth.trim())
                .map_err(|e| format!("auth is not base64: {e}"))?;
            let text = String::from_utf8(decoded).map_err(|_| "auth is not UTF-8".to_string())?;
            let Some((u, p)) = text.split_once(':') else {
                return Err("auth must encode \"username:password\"".into());
            };
            return Ok(Credentials::Basic {
                username: u.to_string(),
                password: p.to_string(),
            });
        }
        Ok(Credentials::Anonymous)
    }

    pub fn from_config(a: &crate::config::RegistryAuth) -> Result<Credentials, String> {
        Credentials::from_fields(&a.username, &a.password, &a.auth, &a.identitytoken, "")
    }

    fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                BASE64.encode(format!("{username}:{password}"))
            )),
            _ => None,
        }
    }
}

/// One parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercased scheme: "basic" or "bearer".
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Parse every challenge in one header value (`Bearer realm="x",service="y", Basic
    /// realm="z"`). Quoted strings may contain commas and `\"`.
    pub fn parse(header: &str) -> Vec<Challenge> {
        let mut out: Vec<Challenge> = Vec::new();
        let mut rest = header.trim();
        while !rest.is_empty() {
            let token_end = rest
                .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
                .unwrap_or(rest.len());
            let token = &rest[..token_end];
            let after = rest[token_end..].trim_start();
            if let Some(value_part) = after.strip_prefix('=') {
                // key=value of the current challenge.
                let (value, remaining) = parse_value(value_part.trim_start());
                if let Some(c) = out.last_mut() {
                    c.params.push((token.to_ascii_lowercase(), value));
                }
                rest = remaining.trim_start().trim_start_matches(',').trim_start();
            } else {
                if !token.is_empty() {
                    out.push(Challenge {
                        scheme: token.to_ascii_lowercase(),
                        params: Vec::new(),
                    });
                }
                rest = after.trim_start_matches(',').trim_start();
                if token.is_empty() && after.is_empty() {
                    break;
                }
            }
        }
        out
    }
}

/// A quoted string or a bare token; returns (value, rest after it).
fn parse_value(s: &str) -> (String, &str) {
    if let Some(q) = s.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = q.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                }
                '"' => return (value, &q[i + 1..]),
                c => value.push(c),
            }
        }
        (value, "")
    } else {
        let end = s.find(',').unwrap_or(s.len());
        (s[..end].trim().to_string(), &s[end..])
    }
}

/// RFC 6749 §5.2: an OAuth2 token endpoint answers a bad refresh token or password with
/// HTTP 400 and one of these codes; they mean "bad credentials", not a broken server.
fn is_oauth_credential_error(status: reqwest::StatusCode, body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
    }
    status == reqwest::StatusCode::BAD_REQUEST
        && serde_json::from_slice::<OAuthError>(body).is_ok_and(|e| {
            matches!(
                e.error.as_str(),
                "invalid_grant" | "invalid_client" | "unauthorized_client"
            )
        })
}

/// What was refused, for messages about a 401 we could not get past. Never the secret.
pub(super) fn refusal_note(creds: &Credentials) -> &'static str {
    match creds {
        Credentials::Anonymous => "no credentials were given for this registry",
        Credentials::Basic { .. } => "the username and password were refused",
        Credentials::IdentityToken(_) => "the identity token was refused",
        Credentials::RegistryToken(_) => "the registry token was refused",
    }
}

#[derive(Deserialize)]
struct TokenReply {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
}

/// The Authorization header value answering `challenges` for `scope`
/// (`repository:<path>:pull`).
pub async fn authorize(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    challenges: &[Challenge],
    creds: &Credentials,
    scope: &str,
) -> Result<String, RegistryError> {
    let unauthorized = |reply: String| RegistryError::Unauthorized {
        endpoint: endpoint.to_string(),
        reply,
    };
    if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
        if let Credentials::RegistryToken(t) = creds {
            return Ok(format!("Bearer {t}"));
        }
        let Some(realm) = bearer.param("realm") else {
            return Err(unauthorized("Bearer challenge without a realm".into()));
        };
        let service = bearer.param("service").unwrap_or_default();
        // The challenge's scope is what this request needs; ours is the fallback.
        let scope = bearer.param("scope").unwrap_or(scope);
        let url = reqwest::Url::parse(realm)
            .map_err(|e| unauthorized(format!("token realm {realm:?}: {e}")))?;
        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(unauthorized(format!(
                "token realm {realm:?} is not http(s)"
            )));
        }
        let request = match creds {
            Credentials::IdentityToken(refresh) => http.post(url).form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("service", service),
                ("scope", scope),
                ("client_id", CLIENT_ID),
            ]),
            _ => {
                let mut q = vec![("scope", scope), ("client_id", CLIENT_ID)];
                if !service.is_empty() {
                    q.push(("service", service));
                }
                let r = http.get(url).query(&q);
                match creds.basic_header() {
                    Some(h) => r.header(reqwest::header::AUTHORIZATION, h),
                    None => r,
                }
            }
        };
        let what = format!("token from {realm}");
        let resp = request
            .send()
            .await
            .map_err(|e| RegistryError::transport(endpoint, &what, &e))?;
        let status = resp.status();
        let body = super::client::read_limited(resp, MAX_TOKEN_REPLY, endpoint, &what).await?;
        if status == reqwest::StatusCode::UNAUTHORIZED
            || status == reqwest::StatusCode::FORBIDDEN
            || is_oauth_credential_error(status, &body)
        {
            return Err(unauthorized(format!(
                "{what}: HTTP {}: {}; {}",
                status.as_u16(),
                super::client::summarize_reply(&body),
                refusal_note(creds)
            )));
        }
        if !status.is_success() {
            return Err(RegistryError::Status {
                endpoint: endpoint.to_string(),
                what,
                status: status.as_u16(),
                reply: super::client::summarize_reply(&body),
            });
        }
        let reply: TokenReply =
            serde_json::from_slice(&body).map_err(|e| RegistryError::BadResponse {
                endpoint: endpoint.to_string(),
                what: what.clone(),
                reason: format!("invalid token reply: {e}"),
            })?;
        let token = if reply.token.is_empty() {
            reply.access_token
        } else {
            reply.token
        };
        if token.is_empty() {
            return Err(unauthorized(format!("{what}: reply holds no token")));
        }
        return Ok(format!("Bearer {token}"));
    }
    if challenges.iter().any(|c| c.scheme == "basic") {
        return creds.basic_header().ok_or_else(|| {
            unauthorized("the registry asks for a username and password and none were given".into())
        });
    }
    Err(unauthorized(
        "HTTP 401 without a Basic or Bearer challenge".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository:library/busybox:pull,push")
        );
        let c = Challenge::parse(r#"Basic realm="a \"b\" c", Bearer realm=x,service=y"#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].param("realm"), Some(r#"a "b" c"#));
        assert_eq!(
            (c[1].scheme.as_str(), c[1].param("service")),
            ("bearer", Some("y"))
        );
        assert_eq!(Challenge::parse("Basic")[0].scheme, "basic");
        assert!(Challenge::parse("").is_empty());
    }

    #[test]
    fn oauth_credential_errors_are_auth_failures() {
        let bad = reqwest::StatusCode::BAD_REQUEST;
        assert!(is_oauth_credential_error(
            bad,
            br#"{"error":"invalid_grant","error_description":"x"}"#
        ));
        assert!(is_oauth_credential_error(
            bad,
            br#"{"error":"invalid_client"}"#
        ));
        assert!(!is_oauth_credential_error(
            bad,
            br#"{"error":"invalid_scope"}"#
        ));
        assert!(!is_oauth_credential_error(bad, b"bad request"));
        assert!(!is_oauth_credential_error(
            reqwest::StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"error":"invalid_grant"}"#
        ));
    }

    #[test]
    fn credentials_from_cri_fields() {
        assert_eq!(
            Credentials::from_fields("", "", "", "", "").unwrap(),
            Credentials::Anonymous
        );
        let basic = Credentials::Basic {
            username: "u".into(),
            password: "p:q".into(),
        };
        assert_eq!(
            Credentials::from_fields("u", "p:q", "", "", "").unwrap(),
            basic
        );
        assert_eq!(
            Credentials::from_fields("", "", &BASE64.encode("u:p:q"), "", "").unwrap(),
            basic
        );
        assert!(Credentials::from_fields("", "", "!!", "", "").is_err());
        assert!(Credentials::from_fields("", "", &BASE64.encode("nocolon"), "", "").is_err());
        assert_eq!(
            Credentials::from_fields("u", "p", "", "id", "").unwrap(),
            Credentials::IdentityToken("id".into())
        );
        assert_eq!(
            Credentials::from_fields("u", "p", "", "id", "rt").unwrap(),
            Credentials::RegistryToken("rt".into())
        );
        assert!(!format!("{basic:?}").contains("p:q"));
        assert_eq!(
            basic.basic_header().unwrap(),
            format!("Basic {}", BASE64.encode("u:p:q"))
        );
    }
}

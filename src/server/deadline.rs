//! gRPC deadlines answered the way gRPC specifies: DEADLINE_EXCEEDED.
//!
//! A client's `grpc-timeout` reaches us renamed (see `authority.rs`, which keeps it from tonic's
//! own timeout, whose expiry answers CANCELLED). [`DeadlineLayer`] drops the call's future when the
//! deadline passes, as tonic would, so the handler stops at its next await and its rollback runs,
//! and answers DEADLINE_EXCEEDED. Go clients (kubelet, crictl, critest) then see the code they
//! also see when their own deadline fires first, whichever side notices first.

use super::authority::DEADLINE_HEADER;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for Deadline<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let limit = req
            .headers()
            .get(DEADLINE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_timeout);
        let call = self.inner.call(req);
        Box::pin(async move {
            let Some(limit) = limit else {
                return call.await;
            };
            match tokio::time::timeout(limit, call).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::debug!(?limit, "client deadline passed; call dropped");
                    Ok(tonic::Status::deadline_exceeded("deadline exceeded").into_http())
                }
            }
        })
    }
}

/// A `grpc-timeout` value: at most 8 ASCII digits and a unit (H, M, S, m, u, n), per the gRPC
/// HTTP/2 protocol. Anything else is ignored, as if no deadline were set.
fn parse_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_per_the_grpc_spec() {
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_timeout("999m"), Some(Duration::from_millis(999)));
        assert_eq!(parse_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(
            parse_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "m", "123456789m", "1x", "-1S", "1.5S", " 1S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }
}

//! Single-use tokens: the path component of a streaming URL, bound to the request that the
//! CRI call validated. A token is taken (removed) by its first use and expires unused after
//! [`TOKEN_TTL`], as in kubelet's and containerd's streaming servers.

use base64::Engine as _;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Most tokens outstanding at once (a flood of CRI calls must not grow memory unbounded).
const MAX_TOKENS: usize = 4096;

pub struct Tokens<T> {
    ttl: Duration,
    map: Mutex<HashMap<String, (Instant, T)>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("too many streaming requests outstanding ({MAX_TOKENS}); try again later")]
pub struct TooMany;

impl<T> Tokens<T> {
    pub fn new(ttl: Duration) -> Self {
        Tokens {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `value` under a fresh random token (128 bits, URL-safe base64).
    pub fn insert(&self, value: T) -> Result<String, TooMany> {
        let mut map = self.map.lock().expect("token map");
        let now = Instant::now();
        map.retain(|_, (expires, _)| *expires > now);
        if map.len() >= MAX_TOKENS {
            return Err(TooMany);
        }
        loop {
            let bytes: [u8; 16] = rand::random();
            let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            if let std::collections::hash_map::Entry::Vacant(e) = map.entry(token.clone()) {
                e.insert((now + self.ttl, value));
                return Ok(token);
            }
        }
    }

    /// Takes the value of `token` if it exists and has not expired. A token works once.
    pub fn take(&self, token: &str) -> Option<T> {
        let mut map = self.map.lock().expect("token map");
        let (expires, value) = map.remove(token)?;
        (expires > Instant::now()).then_some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_random_and_expire() {
        let t = Tokens::new(Duration::from_secs(60));
        let a = t.insert(1).unwrap();
        let b = t.insert(2).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert_eq!(t.take(&a), Some(1));
        assert_eq!(t.take(&a), None);
        assert_eq!(t.take("nope"), None);
        assert_eq!(t.take(&b), Some(2));
        let short = Tokens::new(Duration::from_millis(1));
        let c = short.insert(3).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(short.take(&c), None);
    }
}

//! SPDY/3 header blocks: the name/value encoding and its zlib compression.
//!
//! Every header block on a connection is part of one zlib stream per direction, primed with
//! the SPDY/3 dictionary and flushed (Z_SYNC_FLUSH) at the end of each block, so a block can
//! only be decoded by the context that decoded all blocks before it. Names are lowercase (the
//! Go framer rejects anything else); several values of one name are joined with NUL.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Most bytes one decoded header block may take (a bomb guard; real blocks are < 1 KiB).
pub const MAX_HEADER_BLOCK: usize = 256 << 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("header block does not inflate: {0}")]
    Inflate(String),
    #[error("header block expects dictionary {found:#x}, not SPDY/3's {expected:#x}")]
    Dictionary { found: u32, expected: u32 },
    #[error("header block larger than {MAX_HEADER_BLOCK} bytes")]
    TooLarge,
    #[error("malformed header block: {0}")]
    Malformed(&'static str),
}

/// Header names and values in arrival order; names lowercase.
pub type Headers = Vec<(String, String)>;

/// The first value of `name` (names are compared lowercase).
pub fn get<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.split('\0').next().unwrap_or_default())
}

/// The SPDY/3 zlib dictionary (spec section 2.6.10.1): these words, each with a 4-byte
/// big-endian length, then the text of common values.
pub fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
        "501 Not Implemented503 Service Unavailable",
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
        "application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
        "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

/// Encodes blocks for one direction of one connection.
pub struct Encoder {
    z: Compress,
}

impl Encoder {
    pub fn new() -> Self {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(&dictionary())
            .expect("zlib accepts a dictionary before the first byte");
        Encoder { z }
    }

    /// The compressed block for `headers` (names must already be lowercase).
    pub fn encode(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut plain = Vec::new();
        plain.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (n, v) in headers {
            plain.extend_from_slice(&(n.len() as u32).to_be_bytes());
            plain.extend_from_slice(n.as_bytes());
            plain.extend_from_slice(&(v.len() as u32).to_be_bytes());
            plain.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input = &plain[..];
        loop {
            out.reserve(256);
            let before = self.z.total_in();
            // Sync flush: all of the block is emitted and byte-aligned, the context is kept.
            let _ = self
                .z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("deflate of an in-memory buffer cannot fail");
            input = &input[(self.z.total_in() - before) as usize..];
            // Done once the input is consumed and the flush left spare output room.
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Decodes blocks of one direction of one connection.
pub struct Decoder {
    z: Decompress,
    dict: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            z: Decompress::new(true),
            dict: dictionary(),
        }
    }

    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, HeaderError> {
        let mut plain = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            if plain.len() == plain.capacity() {
                if plain.len() >= MAX_HEADER_BLOCK {
                    return Err(HeaderError::TooLarge);
                }
                plain.reserve(plain.len().max(1024));
            }
            let before = self.z.total_in();
            let res = self
                .z
                .decompress_vec(input, &mut plain, FlushDecompress::Sync);
            input = &input[(self.z.total_in() - before) as usize..];
            match res {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    if input.is_empty() && plain.len() < plain.capacity() {
                        break;
                    }
                }
                Err(e) => match e.needs_dictionary() {
                    Some(found) => {
                        let expected = adler32(&self.dict);
                        if found != expected {
                            return Err(HeaderError::Dictionary { found, expected });
                        }
                        self.z
                            .set_dictionary(&self.dict)
                            .map_err(|e| HeaderError::Inflate(e.to_string()))?;
                    }
                    None => return Err(HeaderError::Inflate(e.to_string())),
                },
            }
        }
        if plain.len() > MAX_HEADER_BLOCK {
            return Err(HeaderError::TooLarge);
        }
        parse(&plain)
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

fn parse(mut b: &[u8]) -> Result<Headers, HeaderError> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], HeaderError> {
        if b.len() < n {
            return Err(HeaderError::Malformed("truncated"));
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    fn len(b: &mut &[u8]) -> Result<usize, HeaderError> {
        let raw = take(b, 4)?;
        Ok(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize)
    }
    let count = len(&mut b)?;
    // Each pair takes at least 8 bytes: a count beyond that is a lie, not a reason to allocate.
    if count > b.len() / 8 {
        return Err(HeaderError::Malformed("more pairs than bytes"));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let n = len(&mut b)?;
        let name = take(&mut b, n)?;
        let n = len(&mut b)?;
        let value = take(&mut b, n)?;
        let name = std::str::from_utf8(name).map_err(|_| HeaderError::Malformed("name"))?;
        let value = String::from_utf8_lossy(value).into_owned();
        out.push((name.to_ascii_lowercase(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // The DICTID Go's and Chromium's SPDY/3 framers put in their zlib header.
        assert_eq!(adler32(&d), 0xe3c6_a7c2);
    }

    #[test]
    fn blocks_round_trip_through_one_context_per_direction() {
        let mut enc = Encoder::new();
        let mut dec = Decoder::new();
        for i in 0..5 {
            let port = format!("{}", 8000 + i);
            let block = enc.encode(&[("streamtype", "data"), ("port", &port)]);
            let h = dec.decode(&block).unwrap();
            assert_eq!(get(&h, "streamtype"), Some("data"));
            assert_eq!(get(&h, "port"), Some(port.as_str()));
        }
        // A fresh decoder cannot read a later block of the same stream.
        let block = enc.encode(&[("a", "b")]);
        assert!(Decoder::new().decode(&block).is_err());
        assert!(!enc.encode(&[]).is_empty());
    }

    #[test]
    fn garbage_and_lies_are_errors() {
        assert!(Decoder::new().decode(b"not zlib at all").is_err());
        assert!(parse(&[0, 0, 0, 9, 0, 0]).is_err());
        assert!(parse(&[0, 0, 0, 1, 0, 0, 0, 5, b'a']).is_err());
        assert_eq!(parse(&[0, 0, 0, 0]).unwrap(), Vec::new());
    }

    #[test]
    fn a_zlib_bomb_is_refused() {
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(&dictionary()).unwrap();
        let plain = vec![0u8; 4 << 20];
        let mut out = Vec::with_capacity(1 << 20);
        z.compress_vec(&plain, &mut out, FlushCompress::Sync)
            .unwrap();
        assert_eq!(Decoder::new().decode(&out), Err(HeaderError::TooLarge));
    }
}

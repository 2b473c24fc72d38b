//! Layer compression, detected by magic bytes rather than trusted media types (archives from
//! `docker save` call every layer a plain tar; registries mislabel now and then).

use std::io::{BufRead, BufReader, Read};

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wrap `reader` in the decompressor its first bytes call for. Streams; nothing is buffered
/// beyond the decoders' own windows.
pub fn decompress<'a, R: Read + 'a>(
    reader: R,
) -> std::io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut buf = BufReader::with_capacity(64 * 1024, reader);
    let kind = Compression::detect(buf.fill_buf()?);
    let out: Box<dyn Read + 'a> = match kind {
        // MultiGzDecoder: concatenated gzip members are valid gzip (pigz, some registries).
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buf)?),
        Compression::None => Box::new(buf),
    };
    Ok((kind, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn detects_and_decompresses() {
        let data = b"hello layer".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::encode_all(&data[..], 3).unwrap();
        for (input, kind) in [
            (gz, Compression::Gzip),
            (zs, Compression::Zstd),
            (data.clone(), Compression::None),
        ] {
            let (k, mut r) = decompress(&input[..]).unwrap();
            assert_eq!(k, kind);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
    }
}

//! Stream one blob from a registry into the content store: chunks go from the async reader to
//! a blocking writer thread over a small bounded channel (so at most a few chunks are in
//! memory), the writer hashes as it writes and renames into place only if the digest and size
//! match. An aborted download (error, cancelled pull, daemon killed) leaves only a temp file
//! in the ingest area, which the writer or the next `ImageStore::open` removes.

use super::PullError;
use super::manifest::Descriptor;
use crate::image::ImageError;
use crate::image::content::ContentStore;
use crate::image::registry::{RegistryError, Session};
use std::io::Write;

const CHANNEL_CHUNKS: usize = 8;

enum Msg {
    Data(bytes::Bytes),
    Done,
}

/// Download `desc` into `content`; returns the bytes transferred.
pub async fn fetch_blob(
    image: &str,
    session: &Session,
    content: &ContentStore,
    desc: &Descriptor,
) -> Result<u64, PullError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(CHANNEL_CHUNKS);
    let expected = desc.digest.clone();
    let store = content.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<bool, ImageError> {
        let mut w = store.writer()?;
        let ingest = store.dir().join("ingest");
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Msg::Data(b) => w.write_all(&b).map_err(ImageError::io(&ingest))?,
                Msg::Done => {
                    w.commit(Some(&expected))?;
                    return Ok(true);
                }
            }
        }
        // Sender gone without Done: the download failed; dropping `w` removes the temp file.
        Ok(false)
    });

    let streamed = stream(image, session, desc, &tx).await;
    let finished = match &streamed {
        Ok(_) => tx.send(Msg::Done).await.is_ok(),
        Err(_) => false,
    };
    drop(tx);
    let written = writer.await.map_err(|e| PullError::Internal {
        image: image.to_string(),
        what: format!("blob writer for {}: {e}", desc.digest),
    })?;
    match (streamed, written) {
        // A store failure (disk full...) explains a closed channel better than the stream.
        (_, Err(ImageError::DigestMismatch { expected, actual })) => {
            Err(PullError::DigestMismatch {
                image: image.to_string(),
                endpoint: session.endpoint().to_string(),
                what: format!("blob {}", desc.digest),
                expected,
                actual,
            })
        }
        (_, Err(e)) => Err(PullError::Store {
            image: image.to_string(),
            source: e,
        }),
        (Err(e), _) => Err(e),
        (Ok(n), Ok(true)) if finished => Ok(n),
        (Ok(_), Ok(_)) => Err(PullError::Internal {
            image: image.to_string(),
            what: format!("blob writer for {} stopped early", desc.digest),
        }),
    }
}

async fn stream(
    image: &str,
    session: &Session,
    desc: &Descriptor,
    tx: &tokio::sync::mpsc::Sender<Msg>,
) -> Result<u64, PullError> {
    let registry_err = |source: RegistryError| PullError::Registry {
        image: image.to_string(),
        source,
    };
    let bad = |reason: String| PullError::BadContent {
        image: image.to_string(),
        endpoint: session.endpoint().to_string(),
        what: format!("blob {}", desc.digest),
        reason,
    };
    let mut resp = session.blob(&desc.digest).await.map_err(registry_err)?;
    if let Some(len) = resp.content_length()
        && len != desc.size
    {
        return Err(bad(format!(
            "registry sends {len} bytes, the manifest says {}",
            desc.size
        )));
    }
    let mut got = 0u64;
    loop {
        let chunk = resp.chunk().await.map_err(|e| {
            registry_err(RegistryError::transport(
                session.endpoint(),
                format!("downloading blob {}", desc.digest),
                &e,
            ))
        })?;
        let Some(chunk) = chunk else { break };
        got += chunk.len() as u64;
        if got > desc.size {
            return Err(bad(format!(
                "more than the {} bytes the manifest says",
                desc.size
            )));
        }
        if tx.send(Msg::Data(chunk)).await.is_err() {
            // The writer failed; its error is reported by the caller.
            return Ok(got);
        }
    }
    if got != desc.size {
        return Err(bad(format!(
            "got {got} bytes, the manifest says {}",
            desc.size
        )));
    }
    Ok(got)
}

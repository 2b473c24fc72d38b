//! `crius image import`: load an archive into the image store directly (no daemon needed;
//! a running daemon sees the new image on its next lookup, the store lock keeps them apart).

use crate::image::ImageStore;
use anyhow::Context;
use std::io::Write;
use std::path::Path;

/// Import `file` ("-" = standard input) into the store under `root` and print each imported
/// image's references (its tags, or its id when untagged).
pub fn image_import(root: &Path, file: &Path) -> anyhow::Result<()> {
    let store = ImageStore::open(root)
        .with_context(|| format!("opening the image store in {}", root.display()))?;
    let records = if file == Path::new("-") {
        store
            .import_archive(std::io::stdin().lock())
            .context("importing from standard input")?
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        store
            .import_archive(std::io::BufReader::new(f))
            .with_context(|| format!("importing {}", file.display()))?
    };
    let mut out = std::io::stdout().lock();
    for rec in records {
        if rec.repo_tags.is_empty() {
            writeln!(out, "{}", rec.id)?;
        }
        for t in &rec.repo_tags {
            writeln!(out, "{t}\t{}", rec.id)?;
        }
    }
    Ok(())
}

/// `crius image export REF... FILE`: write the images as an OCI image-layout tar to `file`
/// ("-" = standard output). A file is written under a temporary name and renamed when
/// complete, so a failed export leaves nothing behind.
pub fn image_export(root: &Path, references: &[String], file: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(!references.is_empty(), "name at least one image to export");
    let store = ImageStore::open(root)
        .with_context(|| format!("opening the image store in {}", root.display()))?;
    if file == Path::new("-") {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        store
            .export(references, &mut out)
            .context("exporting to standard output")?;
        out.flush()?;
        return Ok(());
    }
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = file
        .file_name()
        .with_context(|| format!("{} is not a file name", file.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        crate::util::new_id()
    ));
    let result = (|| -> anyhow::Result<()> {
        let f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut out = std::io::BufWriter::new(f);
        store
            .export(references, &mut out)
            .with_context(|| format!("exporting to {}", file.display()))?;
        let f = out.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, file).with_context(|| format!("renaming to {}", file.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_a_file_into_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("pause.tar");
        std::fs::write(&file, crate::image::builtin::archive()).unwrap();
        let root = tmp.path().join("root");
        image_import(&root, &file).unwrap();
        let store = ImageStore::open(&root).unwrap();
        assert!(
            store
                .get(crate::image::builtin::REFERENCE)
                .unwrap()
                .is_some()
        );
        // Export and import into a fresh root: same id, same tag.
        let out = tmp.path().join("out.tar");
        let reference = crate::image::builtin::REFERENCE.to_string();
        image_export(&root, std::slice::from_ref(&reference), &out).unwrap();
        let root2 = tmp.path().join("root2");
        image_import(&root2, &out).unwrap();
        let a = store.get(&reference).unwrap().unwrap();
        let b = ImageStore::open(&root2)
            .unwrap()
            .get(&reference)
            .unwrap()
            .unwrap();
        assert_eq!((a.id, a.repo_tags), (b.id, b.repo_tags));
        let e = image_export(&root, &["nothere:1".to_string()], &out).unwrap_err();
        assert!(format!("{e:#}").contains("nothere"), "{e:#}");
        let leftovers = std::fs::read_dir(tmp.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp-")
            })
            .count();
        assert_eq!(leftovers, 0);
        let e = image_import(&root, &tmp.path().join("missing.tar")).unwrap_err();
        assert!(format!("{e:#}").contains("missing.tar"), "{e:#}");
    }
}

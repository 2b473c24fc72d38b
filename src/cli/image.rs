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
        let e = image_import(&root, &tmp.path().join("missing.tar")).unwrap_err();
        assert!(format!("{e:#}").contains("missing.tar"), "{e:#}");
    }
}

//! The in-memory image index: every record by id, with tag, repo-digest and id-prefix lookups
//! answered without touching the disk. [`ImageStore`](super::ImageStore) loads it at start-up,
//! keeps it in step with its own writes and reloads it when another process (`crius image
//! import`) changed the records (see the store's generation file).

use super::ImageRecord;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

#[derive(Debug, Default)]
pub struct ImageIndex {
    by_id: BTreeMap<String, ImageRecord>,
    by_tag: HashMap<String, BTreeSet<String>>,
    by_digest: HashMap<String, BTreeSet<String>>,
}

impl ImageIndex {
    pub fn from_records(records: Vec<ImageRecord>) -> ImageIndex {
        let mut idx = ImageIndex::default();
        for r in records {
            idx.insert(r);
        }
        idx
    }

    /// Add or replace a record (by id).
    pub fn insert(&mut self, rec: ImageRecord) {
        self.remove(&rec.id);
        for t in &rec.repo_tags {
            self.by_tag
                .entry(t.clone())
                .or_default()
                .insert(rec.id.clone());
        }
        for d in &rec.repo_digests {
            self.by_digest
                .entry(d.clone())
                .or_default()
                .insert(rec.id.clone());
        }
        self.by_id.insert(rec.id.clone(), rec);
    }

    pub fn remove(&mut self, id: &str) -> Option<ImageRecord> {
        let rec = self.by_id.remove(id)?;
        for (map, keys) in [
            (&mut self.by_tag, &rec.repo_tags),
            (&mut self.by_digest, &rec.repo_digests),
        ] {
            for k in keys {
                if let Some(ids) = map.get_mut(k) {
                    ids.remove(id);
                    if ids.is_empty() {
                        map.remove(k);
                    }
                }
            }
        }
        Some(rec)
    }

    pub fn get(&self, id: &str) -> Option<&ImageRecord> {
        self.by_id.get(id)
    }

    /// The image holding `tag`; while a tag moves, two records can hold it for a moment and
    /// the newer wins.
    pub fn by_tag(&self, tag: &str) -> Option<&ImageRecord> {
        self.newest(self.by_tag.get(tag))
    }

    pub fn by_digest(&self, repo_digest: &str) -> Option<&ImageRecord> {
        self.newest(self.by_digest.get(repo_digest))
    }

    fn newest(&self, ids: Option<&BTreeSet<String>>) -> Option<&ImageRecord> {
        ids?.iter()
            .filter_map(|id| self.by_id.get(id))
            .max_by_key(|r| r.updated_nanos)
    }

    /// Ids starting with `sha256:<hex_prefix>` (at most two: enough to tell unique from not).
    pub fn ids_with_prefix(&self, hex_prefix: &str) -> Vec<&str> {
        let start = format!("sha256:{hex_prefix}");
        self.by_id
            .range(start.clone()..)
            .take_while(|(id, _)| id.starts_with(&start))
            .take(2)
            .map(|(id, _)| id.as_str())
            .collect()
    }

    /// Records that hold any of `tags`, other than `except`.
    pub fn holders_of(&self, tags: &[String], except: &str) -> Vec<String> {
        let mut out: BTreeSet<String> = BTreeSet::new();
        for t in tags {
            if let Some(ids) = self.by_tag.get(t) {
                out.extend(ids.iter().filter(|i| *i != except).cloned());
            }
        }
        out.into_iter().collect()
    }

    /// All records, sorted by id.
    pub fn list(&self) -> Vec<ImageRecord> {
        self.by_id.values().cloned().collect()
    }

    /// Blobs (config, manifest, layers) some record needs.
    pub fn referenced_blobs(&self) -> HashSet<String> {
        self.by_id
            .values()
            .flat_map(super::store::record_blobs)
            .collect()
    }

    /// Snapshot chain ids some record needs.
    pub fn referenced_chains(&self) -> HashSet<String> {
        self.by_id
            .values()
            .flat_map(|r| r.chain_ids.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u8, tags: &[&str], nanos: i64) -> ImageRecord {
        let hex = format!("{n:02x}").repeat(32);
        ImageRecord {
            id: format!("sha256:{hex}"),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: tags
                .iter()
                .map(|t| format!("{}@sha256:{}", t.split(':').next().unwrap(), "d".repeat(64)))
                .collect(),
            size: 1,
            manifest_digest: format!("sha256:{}", "e".repeat(64)),
            layer_digests: vec![format!("sha256:{}", format!("{n:02x}").repeat(32))],
            layers: vec![],
            chain_ids: vec![format!("sha256:c{n}")],
            config: serde_json::from_str(
                r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
            )
            .unwrap(),
            pinned: false,
            updated_nanos: nanos,
        }
    }

    #[test]
    fn lookups_follow_inserts_replacements_and_removals() {
        let mut idx = ImageIndex::from_records(vec![rec(1, &["a:1", "b:1"], 1), rec(2, &[], 2)]);
        assert_eq!(idx.list().len(), 2);
        let id1 = rec(1, &[], 0).id;
        let id2 = rec(2, &[], 0).id;
        assert_eq!(idx.by_tag("a:1").unwrap().id, id1);
        assert_eq!(
            idx.by_digest(&format!("b@sha256:{}", "d".repeat(64)))
                .unwrap()
                .id,
            id1
        );
        assert!(idx.by_tag("c:1").is_none());

        // A tag on two records for a moment (a move in progress): the newer one wins.
        idx.insert(rec(2, &["a:1"], 5));
        assert_eq!(idx.by_tag("a:1").unwrap().id, id2);
        assert_eq!(idx.holders_of(&["a:1".into()], &id2), vec![id1.clone()]);
        // Replacing record 1 without the tag drops its index entries.
        idx.insert(rec(1, &["b:1"], 6));
        assert_eq!(idx.holders_of(&["a:1".into()], &id2), Vec::<String>::new());
        assert_eq!(idx.by_tag("b:1").unwrap().id, id1);

        assert_eq!(idx.ids_with_prefix("0101"), vec![id1.as_str()]);
        assert_eq!(idx.ids_with_prefix("0"), vec![id1.as_str(), id2.as_str()]);
        assert!(idx.ids_with_prefix("03").is_empty());

        assert!(
            idx.referenced_blobs()
                .contains(&rec(1, &[], 0).layer_digests[0])
        );
        assert!(idx.referenced_chains().contains("sha256:c2"));

        assert_eq!(idx.remove(&id1).unwrap().id, id1);
        assert!(idx.remove(&id1).is_none());
        assert!(idx.by_tag("b:1").is_none());
        assert!(
            !idx.by_tag.contains_key("b:1"),
            "empty tag entries are dropped"
        );
        assert!(idx.get(&id1).is_none());
        assert_eq!(idx.list().len(), 1);
    }
}

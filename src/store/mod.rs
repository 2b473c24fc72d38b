//! Metadata records, persisted crash-safely and held in memory for fast reads.
//!
//! One directory per sandbox under `<root>/sandboxes/<id>/` holds its `record.json` (written with
//! write-temp + fsync + rename) next to the sandbox's bundle and overlay dirs, so removing a
//! sandbox is removing one directory. The record carries a schema version.

pub mod sandbox;

pub use sandbox::{SandboxRecord, SandboxState, SandboxStore, StoreError};

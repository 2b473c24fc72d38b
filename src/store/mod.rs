//! Metadata records, persisted crash-safely and held in memory for fast reads.
//!
//! One directory per object (`<root>/sandboxes/<id>/`, `<root>/containers/<id>/`) holds its
//! `record.json` next to the object's bundle and overlay dirs, so removing an object is removing
//! one directory. Records carry a schema version.

pub mod container;
pub mod records;
pub mod sandbox;

pub use container::{ContainerRecord, ContainerState, ContainerStore};
pub use records::{RecordSync, StoreError, UpdateError};
pub use sandbox::{SandboxRecord, SandboxState, SandboxStore};

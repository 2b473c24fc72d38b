//! The built-in client verbs.

pub mod image;

pub use image::{image_export, image_import};

//! SPDY/3.1 as kubelet's streaming clients speak it (moby/spdystream): frames, header
//! compression, and a server connection.

pub mod conn;
pub mod frame;
pub mod headers;

pub use conn::{ConnectionGone, Session, Stream, StreamWriter, serve};

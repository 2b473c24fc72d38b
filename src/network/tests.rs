//! Root integration tests (below).

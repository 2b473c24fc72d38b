//! image (being written)

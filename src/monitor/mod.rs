//! monitor (being written)

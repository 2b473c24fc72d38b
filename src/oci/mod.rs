//! oci (being written)

//! hippo-memory: placeholder.

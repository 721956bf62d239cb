//! hippo-model: placeholder.

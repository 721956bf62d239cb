//! hippo-train: placeholder.

//! hippo-drift: placeholder.

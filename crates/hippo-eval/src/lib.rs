//! hippo-eval: placeholder.

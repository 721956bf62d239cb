//! hippo-salience: placeholder.

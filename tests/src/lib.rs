//! Cross-crate test support: the golden-image generator lives here.

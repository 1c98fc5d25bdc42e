//! Packaging files against the code.

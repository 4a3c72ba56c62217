//! The store contract, run against both backends.

//! End-to-end tests and spec tooling for NAP. The tests live in `tests/tests/`;
//! `cargo run -p nap-tests --bin spec-gen` rewrites the generated files under `spec/`.

//! nap-central: a thin tokio driver around `nap-core`'s central session and
//! hub, with storage, the operator API and the admin tooling.

pub mod store;

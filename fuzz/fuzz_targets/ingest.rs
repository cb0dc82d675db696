#![no_main]
//! The `ingest` target; its body is `nap_central::fuzz::ingest`, which
//! central's tests also replay.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nap_central::fuzz::ingest(data));

#![no_main]
//! The `jwt` target; its body is `nap_central::fuzz::jwt`, which
//! central's tests also replay.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nap_central::fuzz::jwt(data));

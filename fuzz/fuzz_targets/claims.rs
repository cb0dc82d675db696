#![no_main]
//! The `claims` target; its body is `nap_core::testing::fuzz::claims`, which the
//! workspace tests also replay.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nap_core::testing::fuzz::claims(data));

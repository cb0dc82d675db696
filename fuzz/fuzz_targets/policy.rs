#![no_main]
//! The `policy` target; its body is `nap_core::testing::fuzz::policy`, which the
//! workspace tests also replay.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nap_core::testing::fuzz::policy(data));

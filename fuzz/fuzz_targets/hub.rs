#![no_main]
//! The `hub` target; its body is `nap_core::testing::fuzz::hub`, which
//! the workspace tests also replay.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nap_core::testing::fuzz::hub(data));

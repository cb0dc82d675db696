#![no_main]
//! The `branch` target; its body is `nap_core::testing::fuzz::branch`, which
//! the workspace tests also replay.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nap_core::testing::fuzz::branch(data));

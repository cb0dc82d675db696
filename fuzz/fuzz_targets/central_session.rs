#![no_main]
//! The `central_session` target; its body is `nap_core::testing::fuzz::central_session`, which the
//! workspace tests also replay.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nap_core::testing::fuzz::central_session(data));

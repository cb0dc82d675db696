#![no_main]
//! The `codec` target; its body is `nap_core::testing::fuzz::codec`, which the
//! workspace tests also replay.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nap_core::testing::fuzz::codec(data));

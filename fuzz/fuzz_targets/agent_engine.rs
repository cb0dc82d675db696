#![no_main]
//! The `agent_engine` target; its body is `nap_core::testing::fuzz::agent_engine`, which the
//! workspace tests also replay.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nap_core::testing::fuzz::agent_engine(data));

//! The event contract's parser: `tollgate_fuzz::contract` says what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::contract::check(data));

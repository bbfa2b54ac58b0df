//! The LiteLLM price-file import: `tollgate_fuzz::prices` says what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::prices::check(data));

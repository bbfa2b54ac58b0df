//! The proxy's reading of OpenAI responses: `tollgate_fuzz::sse` says what is checked.
#![no_main]

use tollgate_proxy::observe::Dialect;

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::sse::check(Dialect::OpenAi, data));

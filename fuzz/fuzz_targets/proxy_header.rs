#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fanfare_fuzz::proxy::header(data));

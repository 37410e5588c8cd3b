#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fanfare_fuzz::mqtt::v5(data));

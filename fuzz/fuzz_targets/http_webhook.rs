#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| smsbus_worker::fuzzing::http_webhook(data));

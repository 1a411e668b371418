//! `Feedback::parse` on an arbitrary body (the raw input as UTF-8, lossily) under each status the
//! body parsers care about, with and without Cloudflare headers and a reference time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use traffic_control_core::Feedback;

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    let cloudflare = vec![("server".to_owned(), "cloudflare".to_owned()), ("cf-ray".to_owned(), "0".to_owned())];
    for status in [Some(200), Some(403), Some(429), None] {
        for (headers, unix_time) in [(&[][..], None), (&cloudflare[..], Some(1.8e9))] {
            let feedback = Feedback::parse(status, headers, Some(&body), unix_time);
            if feedback.block.is_some() {
                assert!(feedback.rate_limited);
            }
        }
    }
});

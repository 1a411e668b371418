//! `Feedback::parse` on arbitrary headers: names drawn from the ones the parser reads (in any
//! case) or arbitrary, values arbitrary, plus a status and a host clock that may be NaN or huge.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use traffic_control_core::Feedback;

const NAMES: &[&str] = &[
    "retry-after",
    "date",
    "ratelimit",
    "ratelimit-policy",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "server",
    "cf-ray",
    "cf-mitigated",
];

#[derive(Debug, Arbitrary)]
enum Name {
    Known(u8, bool),
    Other(String),
}

#[derive(Debug, Arbitrary)]
struct Input {
    status: Option<u16>,
    headers: Vec<(Name, String)>,
    body: Option<String>,
    unix_time: Option<f64>,
}

fuzz_target!(|input: Input| {
    let headers: Vec<(String, String)> = input
        .headers
        .into_iter()
        .map(|(name, value)| {
            let name = match name {
                Name::Known(i, upper) => {
                    let n = NAMES[usize::from(i) % NAMES.len()];
                    if upper { n.to_ascii_uppercase() } else { n.to_owned() }
                }
                Name::Other(s) => s,
            };
            (name, value)
        })
        .collect();
    let feedback = Feedback::parse(input.status, &headers, input.body.as_deref(), input.unix_time);
    if input.status == Some(429) || feedback.block.is_some() {
        assert!(feedback.rate_limited);
    }
});

//! The server model: counts each request when it arrives (after the network's latency), in
//! sliding windows, and answers as the real API does at its limit (429 with `Retry-After` and a
//! block, or BaseLinker's blocked token at status 200), or spends a Keepa-style token balance.

use std::collections::VecDeque;
use std::time::{Duration, UNIX_EPOCH};

use regex_lite::Regex;
use traffic_control_core::Outcome;

use crate::spec::{Answer, Server};
use crate::{SEC, UNIX0};

pub(crate) struct ServerState {
    pub(crate) name: String,
    pub(crate) windows: Vec<WindowState>,
    pub(crate) budget: Option<BudgetState>,
    answer: Answer,
    /// Requests answered as over a limit (429 or a blocked token).
    pub(crate) refused: u64,
    pub(crate) served: u64,
}

pub(crate) struct WindowState {
    pub(crate) name: String,
    path: Option<Regex>,
    methods: Option<Vec<String>>,
    pub(crate) max: u64,
    pub(crate) per: u64,
    block: Option<u64>,
    recent: VecDeque<u64>,
    /// Every instant it counted a request (for the peak in any window).
    pub(crate) counted: Vec<u64>,
    blocked_until: u64,
    /// Requests it refused.
    pub(crate) refused: u64,
    /// Times it was exceeded (each starts a block).
    pub(crate) exceeded: u64,
}

pub(crate) struct BudgetState {
    pub(crate) balance: i64,
    max: i64,
    refill: i64,
    per: u64,
    next_refill: u64,
    costs: Vec<(Regex, i64, Option<String>)>,
    pub(crate) lowest: i64,
    pub(crate) refused: u64,
}

impl ServerState {
    pub(crate) fn new(spec: &Server) -> ServerState {
        let regex = |p: &str| Regex::new(p).expect("checked when the model was read");
        ServerState {
            name: spec.name.clone(),
            windows: spec
                .windows
                .iter()
                .map(|w| WindowState {
                    name: w.name.clone(),
                    path: w.path.as_deref().map(regex),
                    methods: w.methods.as_ref().map(|m| m.iter().map(|m| m.to_ascii_uppercase()).collect()),
                    max: w.max,
                    per: nanos(w.per),
                    block: w.block.map(nanos),
                    recent: VecDeque::new(),
                    counted: Vec::new(),
                    blocked_until: 0,
                    refused: 0,
                    exceeded: 0,
                })
                .collect(),
            budget: spec.budget.as_ref().map(|b| BudgetState {
                balance: b.tokens,
                max: b.max,
                refill: b.refill,
                per: nanos(b.per),
                next_refill: nanos(b.per),
                costs: b.costs.iter().map(|c| (regex(&c.path), c.cost, c.per_value_of.clone())).collect(),
                lowest: b.tokens,
                refused: 0,
            }),
            answer: spec.answer,
            refused: 0,
            served: 0,
        }
    }

    /// The answer to a request arriving at `at` (ns from the start).
    pub(crate) fn answer(&mut self, at: u64, method: &str, url: Option<&str>, server_cost: Option<i64>) -> Outcome {
        let (path, query) = split_url(url.unwrap_or("/"));
        let matching: Vec<usize> = (0..self.windows.len()).filter(|&i| self.windows[i].counts(method, path)).collect();
        // Blocked: refused for the block's rest.
        let blocked = matching.iter().map(|&i| self.windows[i].blocked_until).max().unwrap_or(0);
        if blocked > at {
            for &i in &matching {
                if self.windows[i].blocked_until > at {
                    self.windows[i].refused += 1;
                }
            }
            return self.refuse(at, blocked);
        }
        // Over a window: refused, and the window blocks.
        let mut over = None::<u64>;
        for &i in &matching {
            let w = &mut self.windows[i];
            while w.recent.front().is_some_and(|&t| t + w.per <= at) {
                w.recent.pop_front();
            }
            if w.recent.len() as u64 >= w.max {
                w.refused += 1;
                w.exceeded += 1;
                let until = at + w.block.unwrap_or_else(|| w.recent.front().map_or(SEC, |&t| t + w.per - at));
                w.blocked_until = w.blocked_until.max(until);
                over = Some(over.unwrap_or(0).max(until));
            }
        }
        if let Some(until) = over {
            return self.refuse(at, until);
        }
        for &i in &matching {
            self.windows[i].recent.push_back(at);
            self.windows[i].counted.push(at);
        }
        let Some(budget) = &mut self.budget else {
            self.served += 1;
            return Outcome::status(200);
        };
        while budget.next_refill <= at {
            budget.balance = (budget.balance + budget.refill).min(budget.max);
            budget.next_refill += budget.per;
        }
        let refill_in = (budget.next_refill - at) / 1_000_000;
        let timestamp = (UNIX0 * SEC + at) / 1_000_000;
        if budget.balance <= 0 {
            budget.refused += 1;
            self.refused += 1;
            let body = format!(
                r#"{{"timestamp":{timestamp},"tokensLeft":{},"refillIn":{refill_in},"refillRate":{},"tokensConsumed":0,"error":{{"type":"NOT_ENOUGH_TOKEN","message":"Not enough tokens."}}}}"#,
                budget.balance, budget.refill
            );
            return json(429, body, at);
        }
        let cost = server_cost.unwrap_or_else(|| budget.cost(path, query));
        budget.balance -= cost;
        budget.lowest = budget.lowest.min(budget.balance);
        self.served += 1;
        let body = format!(
            r#"{{"timestamp":{timestamp},"tokensLeft":{},"refillIn":{refill_in},"refillRate":{},"tokensConsumed":{cost}}}"#,
            budget.balance, budget.refill
        );
        json(200, body, at)
    }

    fn refuse(&mut self, at: u64, until: u64) -> Outcome {
        self.refused += 1;
        match self.answer {
            Answer::RetryAfter => {
                let seconds = (until - at).div_ceil(SEC).max(1);
                Outcome::status(429).header("Retry-After", seconds.to_string()).unix_time(unix(at))
            }
            Answer::BlockedToken => {
                let until = UNIX_EPOCH + Duration::from_secs(UNIX0) + Duration::from_nanos(until);
                let message = format!("Token blocked until {}", humantime::format_rfc3339_seconds(until));
                let body =
                    format!(r#"{{"status":"ERROR","error_code":"ERROR_BLOCKED_TOKEN","error_message":"{message}"}}"#);
                json(200, body, at)
            }
        }
    }
}

impl WindowState {
    fn counts(&self, method: &str, path: &str) -> bool {
        self.path.as_ref().is_none_or(|re| re.is_match(path))
            && self.methods.as_ref().is_none_or(|m| m.iter().any(|m| m.eq_ignore_ascii_case(method)))
    }
}

impl BudgetState {
    fn cost(&self, path: &str, query: &str) -> i64 {
        for (re, cost, per_value_of) in &self.costs {
            if re.is_match(path) {
                return match per_value_of {
                    None => *cost,
                    Some(param) => {
                        let values = query
                            .split('&')
                            .filter_map(|kv| kv.split_once('='))
                            .find(|(k, _)| k == param)
                            .map_or(1, |(_, v)| v.split(',').filter(|s| !s.is_empty()).count().max(1));
                        cost * values as i64
                    }
                };
            }
        }
        1
    }
}

fn json(status: u16, body: String, at: u64) -> Outcome {
    Outcome::status(status).header("Content-Type", "application/json").body(body).unix_time(unix(at))
}

fn unix(at: u64) -> f64 {
    UNIX0 as f64 + at as f64 / SEC as f64
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The path and the query of a URL (`https://host/path?query`, or a bare `/path?query`). The
/// workload's own URLs only: a full URL parser would add nothing here.
pub(crate) fn split_url(url: &str) -> (&str, &str) {
    let rest = match url.find("://") {
        Some(i) => {
            let after = &url[i + 3..];
            after.find('/').map_or("/", |j| &after[j..])
        }
        None => url,
    };
    let rest = rest.split('#').next().unwrap_or(rest);
    rest.split_once('?').unwrap_or((rest, ""))
}

//! What the server's answers teach: completions, pauses after 429s and blocks (the policy is
//! `limit::pause`), quota exhaustion, smaller quotas, budget balances.

use std::cmp::Reverse;
use std::time::Duration;

use super::{InFlight, TrafficControl};
use crate::config::Config;
use crate::error::RequestError;
use crate::event::EventKind;
use crate::feedback::{BlockKind, Feedback};
#[cfg(feature = "keys")]
use crate::limit::breaker::{Phase, Transition, Verdict};
use crate::limit::pause::{strike, Told};
#[cfg(feature = "keys")]
use crate::limit::LimitState;
use crate::limit::{config_name, Limit};
use crate::queue::{lane_of, Admission};
use crate::request::{Completion, Outcome, Priority, RequestId};
use crate::route::Needs;
use crate::time::Timestamp;

impl TrafficControl {
    /// Reports the outcome of a permitted request: frees its concurrency slots, and learns from
    /// what the server said ([`Feedback`]):
    ///
    /// - token fields (Keepa) set the budget to the server's balance, less the estimated cost of the
    ///   requests still in flight (never above what the server said);
    /// - a 429 or a block pauses the limits it points at (see `pause_targets`) until the server's time
    ///   (`Retry-After`, or the reset when that is all it says), or for the configured block doubled
    ///   on every repeat (plus jitter) when it names none; a WAF block or a blocked token stops them
    ///   for the cooldown. Any other answer clears the strikes;
    /// - an answer that is not rate limited but says the quota is used up (`remaining: 0` with a
    ///   reset) pauses the same limits until the reset (reason `exhausted`; no strike, no retry);
    /// - a reported quota (`RateLimit-Policy`, `RateLimit-Limit`, `X-RateLimit-Limit`) smaller
    ///   than the max of the window it is about (see `quota_target`) lowers that max for good
    ///   ([`EventKind::LimitLowered`]); waiters it can no longer hold are refused;
    /// - a rate-limited request is queued again at its priority: [`Completion::Retry`], its Go
    ///   coming out of `poll` later under the same id; after `feedback.max_retries`, or when the
    ///   pause runs past its deadline, [`Completion::GiveUp`].
    pub fn complete(&mut self, now: Timestamp, request: RequestId, outcome: Outcome) -> Completion {
        let now = self.now.max(now);
        let Some(flight) = self.in_flight.remove(&request) else {
            return Completion::Unknown;
        };
        if self.leases.front().is_some_and(|&(_, id)| id == request) {
            // Completions come mostly in admission order: the oldest lease is this one's.
            self.leases.pop_front();
            self.stale_timers |= self.leases.front().is_some_and(|(_, id)| !self.in_flight.contains_key(id));
        } else {
            self.stale_timers = true;
        }
        if self.log {
            self.emit(
                now,
                request,
                &flight.endpoint,
                flight.priority,
                EventKind::Completed { status: outcome.status, duration: now - flight.started },
            );
        }
        #[cfg(feature = "shadow")]
        let shadowed = self.shadow.is_some().then(|| outcome.clone());
        #[cfg(not(feature = "shadow"))]
        let shadowed: Option<Outcome> = None;
        // Breakers judge the answer before the probe's place is given back: it is the probe's.
        let completion = if outcome.headers.is_empty() && outcome.body.is_none() && outcome.status != Some(429) {
            // Nothing to learn (the fast path): a success clears the limits' strikes.
            #[cfg(feature = "keys")]
            if !self.breakers.is_empty() && !outcome.unreported {
                self.judge_breakers(now, request, &flight, outcome.status, None);
            }
            self.give_back(now, request, &flight);
            self.clear_strikes(&flight.needs);
            Completion::Done
        } else {
            let feedback = Feedback::from_outcome(&outcome, outcome.body.as_deref(), outcome.unix_time);
            #[cfg(feature = "keys")]
            if !self.breakers.is_empty() {
                self.judge_breakers(now, request, &flight, outcome.status, Some(&feedback));
            }
            self.give_back(now, request, &flight);
            self.learn(now, request, flight, outcome.status, &feedback)
        };
        self.shadow_completed(now, request, shadowed.as_ref(), !matches!(completion, Completion::Retry { .. }));
        self.advance(now);
        completion
    }

    #[cfg(feature = "keys")]
    /// Judges an answer on every breaker the request took (see `limit::breaker`), and says each
    /// change of phase.
    fn judge_breakers(
        &mut self,
        now: Timestamp,
        id: RequestId,
        flight: &InFlight,
        status: Option<u16>,
        feedback: Option<&Feedback>,
    ) {
        let verdict = match feedback {
            Some(f) if f.rate_limited => match Told::of(&self.config.feedback, "", f) {
                Some(Told::Server(d)) => Verdict::RateLimited(Some(d)),
                Some(Told::Block { cooldown: true, .. }) => Verdict::Auth,
                _ => Verdict::RateLimited(None),
            },
            _ => Verdict::of_status(status),
        };
        for n in &flight.needs {
            let l = &mut self.limits[usize::from(n.limit)];
            if l.breaker().is_some_and(|b| b.phase == Phase::HalfOpen) {
                // A probe's place may come free.
                self.dirty = true;
            }
            let Some(t) = l.judge(now, id, verdict) else { continue };
            let name = l.name.to_string();
            self.dirty = true;
            let kind = match t {
                Transition::Opened { reason, until } => {
                    if let Some(b) = self.breakers.iter_mut().find(|(l, _)| *l == n.limit) {
                        b.1 = Some((id, flight.endpoint.clone(), flight.priority));
                    }
                    EventKind::BreakerOpened { limit: name, reason: reason.as_str(), until }
                }
                Transition::Closed => EventKind::BreakerClosed { limit: name },
            };
            self.emit(now, id, &flight.endpoint, flight.priority, kind);
        }
    }

    #[cfg(feature = "keys")]
    /// Says which breakers half-opened by time alone (their opening ended), naming the request
    /// that opened them.
    pub(super) fn say_half_open(&mut self, now: Timestamp) {
        for i in 0..self.breakers.len() {
            let limit = self.breakers[i].0;
            let l = &mut self.limits[usize::from(limit)];
            let LimitState::Breaker(b) = &mut l.state else { continue };
            let Some(at) = b.half_opened.take() else { continue };
            let name = l.name.to_string();
            self.dirty = true;
            if let Some((id, endpoint, priority)) = self.breakers[i].1.clone() {
                self.emit(at.min(now), id, &endpoint, priority, EventKind::BreakerHalfOpen { limit: name });
            }
        }
    }

    fn clear_strikes(&mut self, needs: &Needs) {
        for n in needs {
            self.limits[usize::from(n.limit)].strikes = 0;
        }
    }

    /// Applies what a response said; see [`complete`](Self::complete).
    fn learn(
        &mut self,
        now: Timestamp,
        id: RequestId,
        flight: InFlight,
        status: Option<u16>,
        feedback: &Feedback,
    ) -> Completion {
        if let Some(report) = &feedback.budget {
            for &limit in flight.budgets.as_slice() {
                let l = &mut self.limits[usize::from(limit)];
                let in_flight = i64::try_from(l.in_flight_cost).unwrap_or(i64::MAX);
                if let Some(b) = l.budget_mut() {
                    let refill_in = report.refill_in.map(crate::time::duration_nanos);
                    b.report(now, report.tokens_left.saturating_sub(in_flight), refill_in, report.server_time_ms);
                    self.dirty = true;
                }
            }
        }
        if let Some(quota) = feedback.limit {
            self.lower_max(now, id, &flight, quota, feedback);
        }
        if !feedback.rate_limited {
            self.clear_strikes(&flight.needs);
            if feedback.remaining == Some(0) {
                // The server's count wins when it is stricter than ours: its quota is used up
                // until the reset (not a strike, not a retry).
                self.pause(now, flight.started, flight.priority, &flight.needs, feedback, 0.0);
            }
            return Completion::Done;
        }
        let jitter = self.config.feedback.jitter * self.rng.next_unit();
        let mut until = self.pause(now, flight.started, flight.priority, &flight.needs, feedback, jitter);
        // A breaker the answer opened (`judge_breakers`) holds the request as long.
        for n in &flight.needs {
            let l = &self.limits[usize::from(n.limit)];
            if l.is_breaker() {
                until = until.max(l.paused_until);
            }
        }
        self.emit(now, id, &flight.endpoint, flight.priority, EventKind::RateLimited { status, until });
        let attempt = u32::from(flight.attempt) + 1;
        if attempt > self.config.feedback.max_retries || flight.deadline.is_some_and(|d| until > d) {
            return Completion::GiveUp;
        }
        // Queued again like any request: its limits are paused until `until`, so it cannot go
        // sooner, and when they open it competes at its priority (a Peak stays HIGH).
        let admission = Admission {
            priority: flight.priority,
            lane: lane_of(flight.priority),
            needs: flight.needs,
            reserve: None,
            spend: None,
            deadline: flight.deadline,
            endpoint: flight.endpoint.clone(),
            attempt: u16::try_from(attempt).unwrap_or(u16::MAX),
            budgets: flight.budgets,
            tenant: flight.tenant,
            key: flight.key,
        };
        if let Some(deadline) = admission.deadline {
            self.deadlines.push(Reverse((deadline, id)));
        }
        self.emit(now, id, &flight.endpoint, flight.priority, EventKind::Retried { attempt, at: until });
        self.queue.push(id, admission, now);
        self.dirty = true;
        Completion::Retry { at: until }
    }

    /// A response reported the quota of one of the request's windows ([`quota_target`]): when it is
    /// smaller than the window's max, the window holds that much from now on, and waiters that
    /// can no longer fit in it are refused (`COST_EXCEEDS_CAPACITY`).
    fn lower_max(&mut self, now: Timestamp, id: RequestId, flight: &InFlight, quota: u64, feedback: &Feedback) {
        let Some(limit) = quota_target(&self.config, &self.limits, &flight.needs, feedback) else { return };
        let l = &mut self.limits[usize::from(limit)];
        let Some(from) = l.lower_max(quota) else { return };
        let name = l.name.to_string();
        self.emit(
            now,
            id,
            &flight.endpoint,
            flight.priority,
            EventKind::LimitLowered { limit: name.clone(), from, to: quota },
        );
        let too_big: Vec<(RequestId, u64)> = self
            .queue
            .groups
            .iter()
            .flat_map(|g| g.members.iter())
            .filter_map(|w| {
                let need = self.queue.waiters.get(w)?.admission.total().iter().find(|n| n.limit == limit)?.cost;
                (need > quota).then_some((*w, need))
            })
            .collect();
        for (w, cost) in too_big {
            if let Some(waiter) = self.queue.remove(w) {
                self.detach_spend(&waiter.admission);
                let a = waiter.admission;
                let error = RequestError::CostExceedsCapacity { limit: name.clone(), cost, capacity: quota };
                self.emit(now, w, &a.endpoint, a.priority, EventKind::Rejected { error });
            }
        }
        self.dirty = true;
    }

    /// Pauses the limits the feedback points at; returns when the request may be sent again (a
    /// CRITICAL one: when the server's own pause ends). The policy is [`Told`]'s, shared with the
    /// store: the server's time exactly, else the block doubled on every repeat (a 429 for a
    /// request sent after the previous pause the server imposed had ended: the other answers of one
    /// burst count once), jitter included, never past `max_block` (`cooldown` for blocks, when
    /// longer). `jitter` is the fraction drawn for this answer. Reservations held on a paused limit
    /// live as much longer as the pause grew, so a follow-up waiting behind it keeps its room.
    #[allow(clippy::too_many_arguments)]
    fn pause(
        &mut self,
        now: Timestamp,
        sent: Timestamp,
        priority: Priority,
        needs: &Needs,
        feedback: &Feedback,
        jitter: f64,
    ) -> Timestamp {
        let targets = pause_targets(&self.config, &self.limits, needs, feedback);
        let mut until = now;
        let mut grown: Vec<(crate::route::LimitIdx, Duration)> = Vec::new();
        for limit in targets {
            let Some(told) = Told::of(&self.config.feedback, config_name(&self.limits, limit), feedback) else {
                continue;
            };
            let l = &mut self.limits[usize::from(limit)];
            let before = l.paused_until.max(now);
            let mut strikes = 1;
            if told.strikes() {
                let (kept, counted) = strike(l.strikes, sent >= l.server_until);
                l.strikes = kept;
                strikes = counted;
            }
            let p = told.pause(strikes, jitter);
            l.pause(now + p.server, now + p.total, p.reason);
            let after = if priority == Priority::Critical { l.server_until } else { l.paused_until };
            until = until.max(after);
            if l.paused_until > before {
                grown.push((limit, l.paused_until - before));
                self.counters.paused(limit, p.reason.as_str());
            }
        }
        if !grown.is_empty() {
            for (rid, r) in &mut self.reservations {
                let ext = grown.iter().filter(|(l, _)| r.holds.iter().any(|h| h.limit == *l)).map(|(_, d)| *d).max();
                if let Some(ext) = ext {
                    r.expires_at = r.expires_at + ext;
                    self.reservation_expiry.push(Reverse((r.expires_at, *rid)));
                }
            }
            self.stale_timers = true;
        }
        self.dirty = true;
        until
    }

    /// Takes the server's word for a budget's balance (Keepa's `tokensLeft`, and `refillIn` for the
    /// phase of its refills). The balance is set to what the server said, never above it.
    pub fn sync_budget(
        &mut self,
        now: Timestamp,
        limit: &str,
        tokens_left: i64,
        refill_in: Option<std::time::Duration>,
    ) -> Result<(), RequestError> {
        let now = self.advance(now);
        self.shadow_sync_budget(now, limit, tokens_left, refill_in);
        let idx = self.router.limit_index(limit).ok_or_else(|| RequestError::UnknownLimit { limit: limit.into() })?;
        let budget = self.limits[usize::from(idx)]
            .budget_mut()
            .ok_or_else(|| RequestError::UnknownLimit { limit: format!("{limit} (not a budget)") })?;
        budget.sync(now, tokens_left, refill_in.map(crate::time::duration_nanos));
        self.dirty = true;
        self.advance(now);
        Ok(())
    }
}

/// The limits a rate-limited answer points at: every limit of the request for a WAF block or a
/// blocked token (the whole caller is stopped); else the windows whose length the answer's
/// `RateLimit-Policy` names; else the route's own limits; else (a route with no narrower limit)
/// the global ones.
pub(crate) fn pause_targets(
    config: &Config,
    limits: &[Limit],
    needs: &Needs,
    feedback: &Feedback,
) -> Vec<crate::route::LimitIdx> {
    // Breakers judge answers on their own (`judge_breakers`): no pause of theirs. A tenant's share
    // of a limit is not the server's: the limit's pause stops it.
    let all: Vec<_> = needs
        .iter()
        .map(|n| n.limit)
        .filter(|&l| !limits[usize::from(l)].is_breaker() && !limits[usize::from(l)].is_tenant_share())
        .collect();
    let blocked =
        feedback.block.as_ref().is_some_and(|b| matches!(b.kind, BlockKind::WafBlocked | BlockKind::TokenBlocked));
    if blocked {
        return all;
    }
    let config_of = |l: crate::route::LimitIdx| &config.limits[config_name(limits, l)];
    if let Some(w) = feedback.policy_window {
        let named: Vec<_> = all
            .iter()
            .copied()
            .filter(|&l| matches!(config_of(l), crate::config::LimitConfig::Window { per, .. } if *per == w))
            .collect();
        if !named.is_empty() {
            return named;
        }
    }
    let own: Vec<_> =
        all.iter().copied().filter(|&l| !config.global.iter().any(|g| g == config_name(limits, l))).collect();
    if own.is_empty() {
        all
    } else {
        own
    }
}

/// The window a reported quota (`RateLimit-Policy`'s `q`, `RateLimit-Limit`, `X-RateLimit-Limit`)
/// is about, if it is clear: among the request's windows, those whose `per` is the policy's window
/// when the answer names one, else all of them; of those the route's own (the global ones when it
/// has none); and only when that leaves exactly one. A quota reported for one of several windows
/// is ambiguous (Back Market's listing ingestion takes `catalog`, 15 per 10 s, and `ingestion`, 2000
/// an hour: a bare `X-RateLimit-Limit: 15` must not lower the hourly one), and a quota of 0 says
/// nothing usable: neither lowers anything.
pub(crate) fn quota_target(
    config: &Config,
    limits: &[Limit],
    needs: &Needs,
    feedback: &Feedback,
) -> Option<crate::route::LimitIdx> {
    feedback.limit.filter(|&q| q > 0)?;
    let name = |l: crate::route::LimitIdx| config_name(limits, l);
    let windows: Vec<_> = needs
        .iter()
        .map(|n| n.limit)
        .filter(|&l| !limits[usize::from(l)].is_tenant_share())
        .filter(|&l| {
            matches!(config.limits[name(l)], crate::config::LimitConfig::Window { per, .. }
                if feedback.policy_window.is_none_or(|w| w == per))
        })
        .collect();
    let own: Vec<_> = windows.iter().copied().filter(|&l| !config.global.iter().any(|g| **g == *name(l))).collect();
    match (own.as_slice(), windows.as_slice()) {
        ([one], _) | ([], [one]) => Some(*one),
        _ => None,
    }
}

//! Time passing: `poll` and `poll_timeout`, and what `advance` does at every call (leases,
//! reservations and deadlines expiring, the scheduling pass when something may fit).

use std::cmp::Reverse;

use super::{earliest, TrafficControl, EVENTS_KEPT};
use crate::error::RequestError;
use crate::event::{Event, EventKind};
use crate::time::Timestamp;

impl TrafficControl {
    /// Advances to `now` and returns the next event, or `None` when there is nothing more to say
    /// now. Drain it after every call that changes state.
    pub fn poll(&mut self, now: Timestamp) -> Option<Event> {
        if self.events.is_empty() {
            self.advance(now);
            if self.events.is_empty() {
                // Drained: a burst's buffer (100k queued events are ~12 MB) is given back.
                if self.events.capacity() > EVENTS_KEPT {
                    self.events.shrink_to(EVENTS_KEPT);
                }
                return None;
            }
        }
        self.events.pop_front()
    }

    /// The next instant at which anything can change by time alone: a waiter may fit, a deadline,
    /// a reservation or a lease may expire. `None`: nothing will happen until the host calls in.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let mut t = self.next_timer();
        if !self.events.is_empty() || self.dirty {
            t = earliest(t, Some(self.now));
        }
        t
    }

    /// The next instant a timer fires: a waiter may fit, a deadline, reservation or lease expires.
    pub(super) fn next_timer(&self) -> Option<Timestamp> {
        let mut t = self.next_wake;
        if let Some(Reverse((deadline, _))) = self.deadlines.peek() {
            // A request may still go at its deadline; it expires just after.
            t = earliest(t, Some(Timestamp::from_nanos(deadline.as_nanos().saturating_add(1))));
        }
        if let Some(Reverse((at, _))) = self.reservation_expiry.peek() {
            t = earliest(t, Some(*at));
        }
        if let Some((at, _)) = self.leases.front() {
            t = earliest(t, Some(*at));
        }
        // An open breaker half-opens on time, its event with it, whether or not anyone waits.
        #[cfg(feature = "keys")]
        for &(l, _) in &self.breakers {
            t = earliest(t, self.limits[usize::from(l)].breaker().and_then(|b| b.opens_at()));
        }
        t
    }

    /// Moves the controller to `now`: expiries, then a scheduling pass if anything may fit.
    pub(super) fn advance(&mut self, now: Timestamp) -> Timestamp {
        if now <= self.now {
            // Same instant: every timer up to it has fired already; only a change since (a
            // completion, a cancel, a spent reservation) can call for a pass.
            if self.dirty {
                self.settle(self.now);
            }
            self.drop_stale_timers();
            return self.now;
        }
        let before = self.now;
        self.now = now;
        // A host that comes back late must not admit a waiter whose deadline passed before any
        // room could free for it: deadlines before the first instant something could change
        // (room foreseen, a lease or a reservation lapsing, a change made at the last call)
        // expire first, as they would have on time.
        let mut changed = if self.dirty { before } else { now };
        changed = changed.min(self.next_wake.unwrap_or(now));
        changed = changed.min(self.leases.front().map_or(now, |(at, _)| *at));
        changed = changed.min(self.reservation_expiry.peek().map_or(now, |Reverse((at, _))| *at));
        // A breaker whose opening ended by now half-opens first: its event comes before what this
        // instant expires.
        #[cfg(feature = "keys")]
        if !self.breakers.is_empty() {
            for i in 0..self.breakers.len() {
                let l = usize::from(self.breakers[i].0);
                self.limits[l].advance(now);
            }
            self.say_half_open(now);
        }
        let expired_early = self.expire_deadlines(changed);
        // Lapsed leases first: a window counts their cost from the lease's end, not from now.
        self.expire_leases(now);
        for l in &mut self.limits {
            l.advance(now);
        }
        self.expire_reservations(now);
        if expired_early || self.dirty || self.next_wake.is_some_and(|t| t <= now) {
            self.settle(now);
        }
        if self.expire_deadlines(now) {
            self.settle(now);
        }
        self.drop_stale_timers();
        now
    }

    /// Runs a scheduling pass, unless nobody waits.
    fn settle(&mut self, now: Timestamp) {
        if self.queue.len() == 0 {
            // Nothing to admit, no instant to wake for.
            self.dirty = false;
            self.next_wake = None;
        } else {
            self.schedule(now);
        }
    }

    /// Pops timer entries of things already gone (completed, cancelled, spent), so that
    /// `poll_timeout` names only instants where something can happen.
    #[inline]
    fn drop_stale_timers(&mut self) {
        if std::mem::take(&mut self.stale_timers) {
            self.pop_stale_timers();
        }
    }

    fn pop_stale_timers(&mut self) {
        while self.leases.front().is_some_and(|(_, id)| !self.in_flight.contains_key(id)) {
            self.leases.pop_front();
        }
        while self.deadlines.peek().is_some_and(|Reverse((_, id))| !self.queue.waiters.contains_key(id)) {
            self.deadlines.pop();
        }
        while self.reservation_expiry.peek().is_some_and(|Reverse((at, rid))| {
            self.reservations.get(rid).is_none_or(|r| r.attached || r.expires_at != *at)
        }) {
            self.reservation_expiry.pop();
        }
    }

    fn expire_reservations(&mut self, now: Timestamp) {
        while let Some(&Reverse((at, rid))) = self.reservation_expiry.peek() {
            if at > now {
                break;
            }
            self.reservation_expiry.pop();
            let live = self.reservations.get(&rid).is_some_and(|r| !r.attached && r.expires_at <= now);
            if live {
                let r = self.reservations.remove(&rid).expect("checked");
                self.drop_reservation(now, rid, r, true);
            }
        }
    }

    fn expire_leases(&mut self, now: Timestamp) {
        while let Some(&(at, id)) = self.leases.front() {
            if at > now {
                break;
            }
            self.leases.pop_front();
            if let Some(flight) = self.in_flight.remove(&id) {
                self.give_back(at, id, &flight);
                self.emit(
                    now,
                    id,
                    &flight.endpoint,
                    flight.priority,
                    EventKind::LeaseExpired { held: now - flight.started },
                );
            }
        }
        // Completed requests leave their lease entry behind; compact when those dominate.
        if self.leases.len() > 64 && self.leases.len() > 2 * self.in_flight.len() {
            let in_flight = &self.in_flight;
            self.leases.retain(|(_, id)| in_flight.contains_key(id));
        }
    }

    /// Expires waiters whose deadline is before `now`; returns whether any was.
    fn expire_deadlines(&mut self, now: Timestamp) -> bool {
        let mut any = false;
        while let Some(&Reverse((deadline, id))) = self.deadlines.peek() {
            if deadline >= now {
                break;
            }
            self.deadlines.pop();
            if let Some(waiter) = self.queue.remove(id) {
                self.detach_spend(&waiter.admission);
                let a = waiter.admission;
                self.emit(
                    now,
                    id,
                    &a.endpoint,
                    a.priority,
                    EventKind::Expired { error: RequestError::DeadlineExceeded { deadline, now } },
                );
                any = true;
            }
        }
        if self.deadlines.len() > 64 && self.deadlines.len() > 2 * self.queue.len() {
            let waiters = &self.queue.waiters;
            self.deadlines.retain(|Reverse((_, id))| waiters.contains_key(id));
        }
        any
    }
}

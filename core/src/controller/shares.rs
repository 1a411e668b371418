//! Tenants' shares of the limits (`TenantConfig::guaranteed`, `lendable`, `borrow`).
//!
//! A tenant with a share has its own copy of every window and concurrency limit outside key pools,
//! named `<limit>#<tenant>`, appended after the other limits: its requests take the copy as well
//! as the limit, so the copy counts the tenant's own use, exactly, in the limit's own windows. Its
//! capacity is the tenant's cap (guaranteed share plus `borrow`; the limit's capacity without a
//! cap), so borrowing beyond the cap waits like any full limit.
//!
//! The guaranteed share is kept from the others: a request of tenant `a` on limit `l` counts, on
//! top of what `l` holds, the part of every other tenant's guaranteed share that tenant does not
//! use now (`guaranteed - used`, the copy's use and reservations), all of it while that tenant has
//! requests waiting, else only the part it does not lend. A request within its own tenant's
//! guaranteed share does not wait behind other tenants' waiters either: the room is its own. As
//! the shares add up to 80% of capacity at most, the tenants without one always have room, and
//! room lent to borrowers comes back as their requests leave the window: within one window (plus
//! the latency of requests in flight) of its owner's return.
//!
//! The cost: one pass over the limit's guaranteed shares per ask on a divided limit (O(tenants
//! with a share)), nothing for the others.

use super::TrafficControl;
use crate::config::{Config, LimitConfig, DEFAULT_TENANT};
use crate::limit::Limit;
use crate::queue::Admission;
use crate::route::{LimitIdx, Need, Needs};

/// A tenant's guaranteed share of one limit.
#[derive(Debug, Clone, Copy)]
struct Share {
    tenant: u16,
    /// The tenant's copy of the limit.
    copy: LimitIdx,
    /// Kept for it while it waits.
    guaranteed: u64,
    /// Kept for it while it does not (the part it does not lend).
    kept: u64,
}

/// The tenants' shares of the limits.
#[derive(Debug, Default)]
pub(crate) struct Shares {
    /// Per limit (the config's, by index): the guaranteed shares on it.
    on: Vec<Vec<Share>>,
    /// Per tenant (by index, 0 the default class): (limit, its copy) for each divided limit.
    copies: Vec<Vec<(LimitIdx, LimitIdx)>>,
}

impl Shares {
    pub(crate) fn is_empty(&self) -> bool {
        self.copies.is_empty()
    }
}

/// Appends each tenant's copy of the divided limits to `limits` (see the module's docs); `tenants`
/// are the named tenants by index, the default class being index 0 before them.
pub(crate) fn expand(config: &Config, tenants: &[String], limits: &mut Vec<Limit>) -> Shares {
    let names = std::iter::once(DEFAULT_TENANT).chain(tenants.iter().map(String::as_str));
    let with_share: Vec<(u16, &str, &crate::config::TenantConfig)> = names
        .enumerate()
        .filter_map(|(i, name)| Some((i as u16, name, config.tenants.get(name).filter(|t| t.has_share())?)))
        .collect();
    if with_share.is_empty() {
        return Shares::default();
    }
    #[cfg(feature = "keys")]
    let pooled = |name: &str| config.pools.values().any(|p| p.limits.iter().any(|l| l == name));
    #[cfg(not(feature = "keys"))]
    let pooled = |_: &str| false;
    let divided: Vec<(LimitIdx, &String)> = config
        .limits
        .iter()
        .enumerate()
        .filter(|(_, (name, l))| {
            matches!(l, LimitConfig::Window { .. } | LimitConfig::Concurrency { .. }) && !pooled(name)
        })
        .map(|(i, (name, _))| (i as LimitIdx, name))
        .collect();
    let mut shares = Shares { on: vec![Vec::new(); config.limits.len()], copies: vec![Vec::new(); tenants.len() + 1] };
    for (t, tenant_name, tenant) in with_share {
        for &(l, name) in &divided {
            let capacity = limits[usize::from(l)].capacity();
            let guaranteed = capacity * u64::from(tenant.guaranteed) / 100;
            let cap = tenant.borrow.map_or(capacity, |b| capacity.min(guaranteed + capacity * u64::from(b) / 100));
            let config_of_copy = match config.limits[name] {
                LimitConfig::Window { per, hold, .. } => LimitConfig::Window { max: cap, per, hold },
                _ => LimitConfig::Concurrency { max: cap },
            };
            let mut copy = Limit::new(&format!("{name}#{tenant_name}"), &config_of_copy);
            copy.template = l;
            copy.tenant_share = true;
            limits.push(copy);
            let c = (limits.len() - 1) as LimitIdx;
            shares.copies[usize::from(t)].push((l, c));
            if guaranteed > 0 {
                let lent = guaranteed * u64::from(tenant.lendable) / 100;
                shares.on[usize::from(l)].push(Share { tenant: t, copy: c, guaranteed, kept: guaranteed - lent });
            }
        }
    }
    shares
}

impl TrafficControl {
    /// Adds to `needs` the tenant's copy of each divided limit they take.
    pub(super) fn with_shares(&self, tenant: u16, needs: &mut Needs) {
        let Some(copies) = self.shares.copies.get(usize::from(tenant)).filter(|c| !c.is_empty()) else { return };
        let extra: Needs = needs
            .iter()
            .filter_map(|n| copies.iter().find(|(l, _)| *l == n.limit).map(|&(_, c)| Need { limit: c, cost: n.cost }))
            .collect();
        if !extra.is_empty() {
            needs.extend(extra);
            needs.sort_unstable_by_key(|n| n.limit);
        }
    }

    /// The claims `a` counts on `limit` for a request of `cost`: the waiters' ahead (`claims`),
    /// none within its own tenant's guaranteed share, plus the others' guaranteed shares they do
    /// not use now (see the module's docs).
    #[inline(never)]
    pub(super) fn claims_with_shares(&self, a: &Admission, limit: LimitIdx, cost: u64, claims: u64) -> u64 {
        let Some(on) = self.shares.on.get(usize::from(limit)).filter(|on| !on.is_empty()) else { return claims };
        let mut held = 0;
        let mut within = false;
        for s in on {
            let copy = &self.limits[usize::from(s.copy)];
            let taken = copy.used() + copy.reserved;
            if s.tenant == a.tenant {
                within = taken + cost <= s.guaranteed;
                continue;
            }
            let keep = if self.queue.tenant_waits(s.tenant) { s.guaranteed } else { s.kept };
            held += keep.saturating_sub(taken);
        }
        if within {
            held
        } else {
            claims + held
        }
    }

    /// Whether `a` waits for its own tenant's cap (its copy of a limit is full): its claims on the
    /// shared limits would only keep room idle that others may use meanwhile.
    pub(super) fn capped(&self, a: &Admission) -> bool {
        a.total().iter().any(|n| {
            let l = &self.limits[usize::from(n.limit)];
            l.tenant_share && !l.fits(self.ask(a, n.limit, n.cost, 0))
        })
    }

    /// The claims of the waiters in `lane` or ahead of it on each limit, the heads held by their
    /// own tenant's cap left out (the queue's running sums count every head).
    pub(super) fn claims_ahead_with_shares(&self, lane: u8) -> Vec<u64> {
        let mut claims = vec![0; self.limits.len()];
        for group in self.queue.groups.iter().filter(|g| g.lane <= lane) {
            let Some(w) = group.members.front().and_then(|id| self.queue.waiters.get(id)) else { continue };
            if self.capped(&w.admission) {
                continue;
            }
            for n in w.admission.total() {
                claims[usize::from(n.limit)] += w.admission.claim(n);
            }
        }
        claims
    }

    /// Whether the tenant, out of the queue now, lends its guaranteed share: waiters a scheduling
    /// pass passed over may fit then (the pass is run again).
    pub(super) fn lends(&self, tenant: u16) -> bool {
        !self.shares.is_empty()
            && !self.queue.tenant_waits(tenant)
            && self.shares.on.iter().any(|on| on.iter().any(|s| s.tenant == tenant))
    }
}

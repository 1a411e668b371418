//! Key pools (`Config::pools`): each key of a pool has its own copy of the pool's limits, named
//! `<limit>@<key>`, appended after the config's limits. Routes keep naming the pool's limits (the
//! templates, never taken themselves); a request that takes them is placed on one key:
//!
//! - the key it names (`Request::key`), the key of the reservation it spends, or the key whose
//!   copy of a limit it names (`limits: ["requests@shop-a"]`);
//! - else the least-loaded key that can admit it now (all or nothing with its other limits), the
//!   load of a key being the fullest of its limits (used, reserved and claimed by waiters, against
//!   its capacity), ties to the key listed first;
//! - else the key where it can go soonest; and while it waits, a scheduling pass moves it to any
//!   other key that can admit it (an open breaker's key is skipped, as it admits nothing).
//!
//! The permit names the key by its id: a secret never enters the core.

use std::sync::Arc;

use super::TrafficControl;
use crate::config::Config;
use crate::error::RequestError;
use crate::limit::Limit;
use crate::queue::{Admission, KeySlot};
use crate::route::{LimitIdx, Need, Needs};
use crate::time::Timestamp;

/// A pool of keys.
#[derive(Debug)]
pub(crate) struct Pool {
    pub(crate) keys: Vec<Arc<str>>,
    /// `copies[key][j]`: the key's copy of the pool's `j`-th limit.
    copies: Vec<Vec<LimitIdx>>,
    /// The pool's limits (the templates), in config order.
    templates: Vec<LimitIdx>,
}

/// A limit's place in a pool: its pool, its position among the pool's limits, and whose copy it
/// is (`None`: the template).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pooled {
    pool: u8,
    j: u16,
    key: Option<u16>,
}

/// Appends every key's copy of its pool's limits to `limits`; returns the pools and each limit's
/// place in them.
pub(crate) fn expand(config: &Config, limits: &mut Vec<Limit>) -> (Vec<Pool>, Vec<Option<Pooled>>) {
    let index = |limits: &[Limit], name: &str| limits.iter().position(|l| &*l.name == name).expect("validated");
    let mut pools = Vec::new();
    let mut places: Vec<Option<Pooled>> = vec![None; limits.len()];
    for (p, pool) in config.pools.values().enumerate() {
        let templates: Vec<LimitIdx> = pool.limits.iter().map(|l| index(limits, l) as LimitIdx).collect();
        for (j, &t) in templates.iter().enumerate() {
            places[usize::from(t)] = Some(Pooled { pool: p as u8, j: j as u16, key: None });
        }
        let mut copies = Vec::new();
        for (k, key) in pool.keys.iter().enumerate() {
            let mut own = Vec::new();
            for (j, name) in pool.limits.iter().enumerate() {
                let mut copy = Limit::new(&format!("{name}@{key}"), &config.limits[name]);
                copy.template = templates[j];
                limits.push(copy);
                places.push(Some(Pooled { pool: p as u8, j: j as u16, key: Some(k as u16) }));
                own.push((limits.len() - 1) as LimitIdx);
            }
            copies.push(own);
        }
        pools.push(Pool { keys: pool.keys.iter().map(|k| Arc::from(k.as_str())).collect(), copies, templates });
    }
    (pools, places)
}

impl TrafficControl {
    /// A limit's place in a pool, if it is a pool's limit or a key's copy of one.
    fn place(&self, limit: LimitIdx) -> Option<Pooled> {
        self.pooled.get(usize::from(limit)).copied().flatten()
    }

    /// `needs` with every limit of `pool` taken on `key`'s copy, sorted again.
    fn needs_on(&self, needs: &[Need], pool: u8, key: u16) -> Needs {
        let mut out: Needs = needs
            .iter()
            .map(|n| match self.place(n.limit) {
                Some(at) if at.pool == pool => Need {
                    limit: self.pools[usize::from(pool)].copies[usize::from(key)][usize::from(at.j)],
                    cost: n.cost,
                },
                _ => *n,
            })
            .collect();
        out.sort_unstable_by_key(|n| n.limit);
        out
    }

    /// The admission placed on `key` of `pool`.
    pub(super) fn on_key(&self, a: &Admission, pool: u8, key: u16, pinned: bool) -> Admission {
        let mut placed = a.clone();
        placed.needs = self.needs_on(&a.needs, pool, key);
        if let Some(reserve) = placed.reserve.as_deref_mut() {
            for f in &mut reserve.follow_ups {
                f.needs = self.needs_on(&f.needs, pool, key);
            }
            reserve.merged = self.needs_on(&reserve.merged, pool, key).into_vec();
        }
        placed.key = KeySlot::new(key, pinned);
        // A follow-up on its reservation's key: covered there (its needs named the templates).
        if placed.reserve.is_none() && self.covered(&placed.needs, placed.spend.as_deref()) {
            placed.lane = crate::queue::RESERVED_LANE;
        }
        placed
    }

    /// How full `key` is: the fullest of its limits, in millionths of its capacity.
    fn key_load(&self, pool: u8, key: u16) -> u64 {
        self.pools[usize::from(pool)].copies[usize::from(key)]
            .iter()
            .map(|&l| {
                let limit = &self.limits[usize::from(l)];
                let taken = limit.used() + limit.reserved + self.queue.claims_through(l, crate::queue::LANES as u8 - 1);
                (u128::from(taken) * 1_000_000 / u128::from(limit.capacity().max(1))) as u64
            })
            .max()
            .unwrap_or(0)
    }

    /// Places a request that takes a pool's limits on one of its keys (see the module's docs);
    /// other requests are left as they are. `pin`: the key the request names. Out of line: the
    /// direct path without pools pays one branch for it.
    #[inline(never)]
    pub(super) fn place_on_key(
        &self,
        now: Timestamp,
        a: Admission,
        pin: Option<&str>,
    ) -> Result<Admission, RequestError> {
        // The key it names, else its tenant's dedicated key, if any.
        let tenant_key = || {
            let t = usize::from(a.tenant);
            let name = if t == 0 { crate::config::DEFAULT_TENANT } else { self.tenants[t - 1].as_str() };
            self.config.tenants.get(name)?.key.as_deref()
        };
        let pin = pin.or_else(tenant_key);
        let Some(at) = a.total().iter().find_map(|n| self.place(n.limit)) else {
            return Ok(a);
        };
        let pool = &self.pools[usize::from(at.pool)];
        if let Some(pin) = pin {
            let Some(k) = pool.keys.iter().position(|k| **k == *pin) else {
                let template = &self.limits[usize::from(pool.templates[0])].name;
                return Err(RequestError::UnknownLimit { limit: format!("{template}@{pin}") });
            };
            return Ok(self.on_key(&a, at.pool, k as u16, true));
        }
        // A follow-up spending a reservation goes on the reservation's key; a request naming a
        // key's copy of a limit (`requests@shop-a`) on that key.
        let key_of = |limit: LimitIdx| self.place(limit)?.key;
        let spent = a.spend.as_deref().and_then(|(_, holds)| holds.iter().find_map(|h| key_of(h.limit)));
        if let Some(k) = spent.or_else(|| a.total().iter().find_map(|n| key_of(n.limit))) {
            return Ok(self.on_key(&a, at.pool, k, true));
        }
        let lane = a.lane;
        let mut best: Option<((bool, Timestamp, u64, u16), Admission)> = None;
        for k in 0..pool.keys.len() as u16 {
            let placed = self.on_key(&a, at.pool, k, false);
            let ahead = |l| self.queue.claims_through(l, lane);
            let fits = self.fits(&placed, ahead);
            let when = if fits { now } else { self.when_fits(now, &placed, ahead).unwrap_or(Timestamp::MAX) };
            let rank = (!fits, when, self.key_load(at.pool, k), k);
            if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                best = Some((rank, placed));
            }
        }
        Ok(best.expect("a pool has keys").1)
    }

    /// Another key of a waiter's pool that can admit it now, the least loaded (`claims`: what the
    /// waiters ahead of it in this pass claim).
    pub(super) fn other_key(&self, a: &Admission, claims: &[u64]) -> Option<Admission> {
        let (pool, key) = self.movable(a)?;
        let keys = self.pools[usize::from(pool)].keys.len() as u16;
        (0..keys)
            .filter(|&k| k != key)
            .filter(|&k| self.fits(&self.on_key(a, pool, k, false), |l| claims[usize::from(l)]))
            .min_by_key(|&k| (self.key_load(pool, k), k))
            .map(|k| self.on_key(a, pool, k, false))
    }

    /// The pool whose limits `needs` take, if any.
    pub(super) fn pool_of(&self, needs: &[Need]) -> Option<u8> {
        needs.iter().find_map(|n| self.place(n.limit)).map(|at| at.pool)
    }

    /// A waiter that may move to another key: its pool and its key now.
    fn movable(&self, a: &Admission) -> Option<(u8, u16)> {
        if a.key.pinned() {
            return None;
        }
        Some((self.pool_of(&a.needs)?, a.key.key()?))
    }

    /// The soonest instant a waiter of a key pool could go on another key by time alone.
    pub(super) fn soonest_on_other_keys(&self, now: Timestamp, a: &Admission, claims: &[u64]) -> Option<Timestamp> {
        let (pool, key) = self.movable(a)?;
        let keys = self.pools[usize::from(pool)].keys.len() as u16;
        (0..keys)
            .filter(|&k| k != key)
            .filter_map(|k| self.when_fits(now, &self.on_key(a, pool, k, false), |l| claims[usize::from(l)]))
            .min()
    }

    /// Whether `a` could meet its deadline on some key of its pool (only an unpinned request has
    /// others to try).
    pub(super) fn deadline_on_any_key(&self, now: Timestamp, a: &Admission) -> bool {
        let Some((pool, _)) = self.movable(a) else { return false };
        let keys = self.pools[usize::from(pool)].keys.len() as u16;
        (0..keys).any(|k| self.check_deadline_on(now, &self.on_key(a, pool, k, false)).is_ok())
    }

    /// The id of the key an admission was placed on.
    pub(super) fn key_id(&self, needs: &[Need], key: KeySlot) -> Option<Arc<str>> {
        let k = key.key()?;
        Some(self.pools[usize::from(self.pool_of(needs)?)].keys[usize::from(k)].clone())
    }
}

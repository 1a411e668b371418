//! Waiting requests, grouped so that a scheduling pass costs what it admits, not what waits.
//!
//! Waiters are grouped by class: (lane, set of limits they ask of, whether they may use reserved
//! capacity). Within a class every member asks a positive cost of the same limits and sees the same
//! room, so no member can go before the one ahead of it: a group is a FIFO and only its head is ever
//! considered. Only heads claim room (a request behind a blocked head cannot use room before it).
//! A waiter that spends a reservation sees more room than its neighbours (its own reservation is
//! credited to it), so it gets a group of its own, freed when it leaves.
//!
//! With tenants (`Config::tenants`) each tenant has its own groups, and within a lane heads are
//! taken in the order of their start tags (start-time fair queuing): a tenant's request starts at
//! the later of the lane's virtual time and its tenant's previous finish, and finishes one
//! request's share (1 / weight) later. Backlogged tenants are served in proportion to their
//! weights, and a tenant that arrives with one request is served after at most one request of each
//! other tenant, however many they queued. Without tenants every tag is 0: arrival order.

use std::collections::VecDeque;
use std::time::Duration;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::request::{IdMap, Priority, RequestId, ReservationId};
use crate::route::EndpointRef;
use crate::route::{LimitIdx, Need, Needs};
use crate::time::Timestamp;

/// Lanes in scheduling order: follow-ups fully covered by their reservation first, then the
/// priorities.
pub(crate) const LANES: usize = 5;
pub(crate) const RESERVED_LANE: u8 = 0;

pub(crate) fn lane_of(priority: Priority) -> u8 {
    priority as u8 + 1
}

/// A follow-up, resolved: what its reservation will hold.
#[derive(Debug, Clone)]
pub(crate) struct FollowUpNeeds {
    pub(crate) needs: Needs,
    pub(crate) ttl: Duration,
}

/// What a request reserves for its follow-ups.
#[derive(Debug, Clone)]
pub(crate) struct Reserve {
    pub(crate) follow_ups: Vec<FollowUpNeeds>,
    /// The request's needs plus every follow-up's, per limit (see [`Admission::total`]).
    pub(crate) merged: Vec<Need>,
}

/// A request on its way to admission: everything it asks of every limit.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    pub(crate) priority: Priority,
    pub(crate) lane: u8,
    /// What the request itself takes at go.
    pub(crate) needs: Needs,
    /// Reserved at go for follow-ups, if any (one pointer when none: most requests reserve nothing,
    /// and waiters are many).
    pub(crate) reserve: Option<Box<Reserve>>,
    /// The reservation spent, and what it holds per limit (credited to this request).
    pub(crate) spend: Option<Box<(ReservationId, Needs)>>,
    pub(crate) deadline: Option<Timestamp>,
    pub(crate) endpoint: EndpointRef,
    /// 0 for the first try, n for the n-th retry after a rate-limited response (u16: with the
    /// key below, the admission stays at 128 bytes, copied inline).
    pub(crate) attempt: u16,
    /// Budgets its response may report on.
    pub(crate) budgets: crate::route::Budgets,
    /// Its tenant's index (0: the default class; see [`WaitQueue::set_tenants`]).
    pub(crate) tenant: u16,
    /// The key of a pool it is placed on (`controller::pools`; its pool is the one whose limits
    /// it takes).
    pub(crate) key: KeySlot,
}

/// The key of a pool a request is placed on, in two bytes: 0 for none, else the key's index plus
/// one, the top bit set when the request named it (or spends a reservation made on it): never
/// moved to another key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct KeySlot(u16);

#[cfg_attr(not(feature = "keys"), allow(dead_code))]
impl KeySlot {
    pub(crate) const NONE: KeySlot = KeySlot(0);
    const PINNED: u16 = 0x8000;

    /// Key `key` (below 1,000: pools are validated so).
    pub(crate) fn new(key: u16, pinned: bool) -> Self {
        KeySlot((key + 1) | if pinned { Self::PINNED } else { 0 })
    }

    pub(crate) fn key(self) -> Option<u16> {
        (self.0 != 0).then(|| (self.0 & !Self::PINNED) - 1)
    }

    pub(crate) fn pinned(self) -> bool {
        self.0 & Self::PINNED != 0
    }
}

impl Admission {
    /// Everything that must fit at once: the request's needs plus its follow-ups', per limit.
    pub(crate) fn total(&self) -> &[Need] {
        match &self.reserve {
            Some(r) => &r.merged,
            None => &self.needs,
        }
    }

    /// What the spent reservation holds on `limit`.
    pub(crate) fn own_reserved(&self, limit: LimitIdx) -> u64 {
        self.spend.as_deref().and_then(|(_, held)| held.iter().find(|n| n.limit == limit)).map_or(0, |n| n.cost)
    }

    /// CRITICAL may use capacity reserved by others for its own cost, never for reservations.
    pub(crate) fn may_use_reserved(&self) -> bool {
        self.priority == Priority::Critical && self.reserve.is_none()
    }

    /// What a waiter claims on a limit against those behind it: what it asks beyond the part its own
    /// reservation already holds (that part is already kept from everyone else).
    pub(crate) fn claim(&self, need: &Need) -> u64 {
        need.cost - need.cost.min(self.own_reserved(need.limit))
    }
}

/// Sums needs per limit into one sorted list.
pub(crate) fn merge_needs<'a>(lists: impl IntoIterator<Item = &'a Needs>) -> Vec<Need> {
    let mut total: Vec<Need> = Vec::new();
    for list in lists {
        for n in list {
            match total.iter_mut().find(|t| t.limit == n.limit) {
                Some(t) => t.cost += n.cost,
                None => total.push(Need { limit: n.limit, cost: n.cost }),
            }
        }
    }
    total.sort_unstable_by_key(|n| n.limit);
    total
}

#[derive(Debug)]
pub(crate) struct Waiter {
    pub(crate) admission: Admission,
    pub(crate) seq: u64,
    /// Its start tag among its lane's tenants (0 without tenants).
    pub(crate) tag: u64,
    pub(crate) enqueued_at: Timestamp,
    pub(crate) group: usize,
}

#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) lane: u8,
    /// Members in arrival order; ids no longer waiting are skipped lazily.
    pub(crate) members: VecDeque<RequestId>,
    /// Members still waiting.
    pub(crate) live: usize,
    /// Shared by every waiter of its key; otherwise it holds one reservation spender.
    shared: bool,
}

type GroupKey = (u8, bool, u16, SmallVec<[LimitIdx; 4]>);

/// One request's share of virtual time at weight 1: a weight w advances its tenant by SHARE / w.
pub(crate) const SHARE: u64 = 1 << 20;

/// The waiting requests by id: entries live in a slab whose freed slots are taken again first, so
/// a request queued just after another left lands where that one was (in cache), and the hash index
/// holds only small entries. With 100k waiting, a map of whole waiters put every new entry at a
/// random place in tens of megabytes.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    slots: Vec<Option<Waiter>>,
    free: Vec<u32>,
    index: IdMap<u32>,
}

impl Waiters {
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn contains_key(&self, id: &RequestId) -> bool {
        self.index.contains_key(id)
    }

    pub(crate) fn get(&self, id: &RequestId) -> Option<&Waiter> {
        self.index.get(id).and_then(|&i| self.slots[i as usize].as_ref())
    }

    fn insert(&mut self, id: RequestId, waiter: Waiter) {
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(waiter);
                i
            }
            None => {
                self.slots.push(Some(waiter));
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 waiting")
            }
        };
        self.index.insert(id, i);
    }

    fn remove(&mut self, id: &RequestId) -> Option<Waiter> {
        let i = self.index.remove(id)?;
        let waiter = self.slots[i as usize].take();
        if self.index.is_empty() {
            // Nothing waits: start again from the first slot.
            self.slots.clear();
            self.free.clear();
        } else {
            self.free.push(i);
        }
        waiter
    }
}

impl std::ops::Index<&RequestId> for Waiters {
    type Output = Waiter;

    fn index(&self, id: &RequestId) -> &Waiter {
        self.get(id).expect("a waiting request")
    }
}

/// The waiting requests.
#[derive(Debug, Default)]
pub(crate) struct WaitQueue {
    pub(crate) waiters: Waiters,
    pub(crate) groups: Vec<Group>,
    group_index: FxHashMap<GroupKey, usize>,
    /// Slots of emptied single-waiter groups, for reuse.
    free_groups: Vec<usize>,
    /// Claims per limit per lane of the groups' heads: the claims ahead of a newcomer.
    sums: Vec<[u64; LANES]>,
    /// Waiting per priority (a follow-up in the reserved lane counts under its own priority).
    depth: [usize; 4],
    next_seq: u64,
    /// Per tenant: how far one request advances its virtual time (empty: no tenants).
    steps: Vec<u64>,
    /// Per tenant and lane: the finish tag of its latest queued request.
    finish: Vec<[u64; LANES]>,
    /// Per lane: the start tag of the latest request served (the lane's virtual time).
    clock: [u64; LANES],
    /// Per tenant: how many of its requests wait (empty: no tenants).
    #[cfg(feature = "tenants")]
    waiting: Vec<u32>,
}

impl WaitQueue {
    pub(crate) fn new(limits: usize) -> Self {
        WaitQueue { sums: vec![[0; LANES]; limits], ..WaitQueue::default() }
    }

    pub(crate) fn len(&self) -> usize {
        self.waiters.len()
    }

    /// The tenants' weights, by index (0: the default class). Called once, before any push.
    pub(crate) fn set_tenants(&mut self, weights: &[u32]) {
        self.steps = weights.iter().map(|&w| SHARE / u64::from(w.max(1))).collect();
        self.finish = vec![[0; LANES]; weights.len()];
        #[cfg(feature = "tenants")]
        {
            self.waiting = vec![0; weights.len()];
        }
    }

    /// Whether any request of the tenant waits.
    #[cfg(feature = "tenants")]
    pub(crate) fn tenant_waits(&self, tenant: u16) -> bool {
        self.waiting.get(usize::from(tenant)).is_some_and(|&n| n > 0)
    }

    /// A request of `lane` whose start tag is `tag` went: the lane's virtual time reaches it.
    pub(crate) fn served(&mut self, lane: u8, tag: u64) {
        let clock = &mut self.clock[usize::from(lane)];
        *clock = (*clock).max(tag);
    }

    pub(crate) fn depth(&self, priority: Priority) -> usize {
        self.depth[priority as usize]
    }

    /// Claims on `limit` by the heads waiting in `lane` or ahead of it.
    pub(crate) fn claims_through(&self, limit: LimitIdx, lane: u8) -> u64 {
        self.sums[usize::from(limit)][..=usize::from(lane)].iter().sum()
    }

    /// What every waiter in `lane` or ahead of it asks of `limit` beyond its own reservation: all
    /// of them, not only the groups' heads (for a budget, whose spending never comes back). O(n).
    pub(crate) fn ahead_of(&self, limit: LimitIdx, lane: u8) -> u64 {
        let mut sum = 0;
        for g in self.groups.iter().filter(|g| g.lane <= lane) {
            for id in &g.members {
                if let Some(w) = self.waiters.get(id) {
                    sum += w
                        .admission
                        .total()
                        .iter()
                        .filter(|n| n.limit == limit)
                        .map(|n| w.admission.claim(n))
                        .sum::<u64>();
                }
            }
        }
        sum
    }

    pub(crate) fn push(&mut self, id: RequestId, admission: Admission, now: Timestamp) {
        let limits: SmallVec<[LimitIdx; 4]> = admission.total().iter().map(|n| n.limit).collect();
        let group = if admission.spend.is_some() {
            let group = Group { lane: admission.lane, members: VecDeque::new(), live: 0, shared: false };
            match self.free_groups.pop() {
                Some(g) => {
                    self.groups[g] = group;
                    g
                }
                None => {
                    self.groups.push(group);
                    self.groups.len() - 1
                }
            }
        } else {
            let key: GroupKey = (admission.lane, admission.may_use_reserved(), admission.tenant, limits);
            match self.group_index.get(&key) {
                Some(&g) => g,
                None => {
                    let g = self.groups.len();
                    self.groups.push(Group { lane: key.0, members: VecDeque::new(), live: 0, shared: true });
                    self.group_index.insert(key, g);
                    g
                }
            }
        };
        if self.groups[group].live == 0 {
            self.add_claims(&admission, true);
        }
        self.depth[admission.priority as usize] += 1;
        #[cfg(feature = "tenants")]
        if let Some(n) = self.waiting.get_mut(usize::from(admission.tenant)) {
            *n += 1;
        }
        self.groups[group].members.push_back(id);
        self.groups[group].live += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        let tag = match self.steps.get(usize::from(admission.tenant)) {
            Some(&step) => {
                let (t, lane) = (usize::from(admission.tenant), usize::from(admission.lane));
                let start = self.clock[lane].max(self.finish[t][lane]);
                self.finish[t][lane] = start + step;
                start
            }
            None => 0,
        };
        self.waiters.insert(id, Waiter { admission, seq, tag, enqueued_at: now, group });
    }

    /// Removes a waiter (admitted, cancelled or expired). Its group entry goes lazily, or at once
    /// when it is the head, and the next head's claims replace its own.
    pub(crate) fn remove(&mut self, id: RequestId) -> Option<Waiter> {
        let waiter = self.waiters.remove(&id)?;
        self.depth[waiter.admission.priority as usize] -= 1;
        #[cfg(feature = "tenants")]
        if let Some(n) = self.waiting.get_mut(usize::from(waiter.admission.tenant)) {
            *n -= 1;
        }
        let g = waiter.group;
        let was_head = self.groups[g].members.front() == Some(&id);
        if was_head {
            self.add_claims(&waiter.admission, false);
        }
        let group = &mut self.groups[g];
        group.live -= 1;
        if !group.shared && group.live == 0 {
            group.members.clear();
            self.free_groups.push(g);
            return Some(waiter);
        }
        self.trim(g);
        if was_head {
            if let Some(next) = self.groups[g].members.front() {
                let admission = self.waiters[next].admission.clone();
                self.add_claims(&admission, true);
            }
        }
        Some(waiter)
    }

    fn add_claims(&mut self, admission: &Admission, add: bool) {
        let lane = usize::from(admission.lane);
        for n in admission.total() {
            let sum = &mut self.sums[usize::from(n.limit)][lane];
            if add {
                *sum += admission.claim(n);
            } else {
                *sum -= admission.claim(n);
            }
        }
    }

    /// Drops entries of requests no longer waiting from both ends of a group, and compacts the
    /// group when stale entries (cancels in the middle) outnumber live ones: amortized O(1).
    pub(crate) fn trim(&mut self, g: usize) {
        let waiters = &self.waiters;
        let group = &mut self.groups[g];
        while let Some(front) = group.members.front() {
            if waiters.contains_key(front) {
                break;
            }
            group.members.pop_front();
        }
        // The newest leave from the back at once (a request cancelled soon after it was queued):
        // otherwise they pile up until the sweep below, which touches every member at once.
        while let Some(back) = group.members.back() {
            if waiters.contains_key(back) {
                break;
            }
            group.members.pop_back();
        }
        if group.members.len() > 64 && group.members.len() > 2 * group.live {
            group.members.retain(|id| waiters.contains_key(id));
        }
    }
}

-- traffic-control shared store: one atomic script for every operation on an account's limits.
-- Built and read by core/src/shared (the sans-IO `SharedStore`); every binding runs this same text.
--
-- Time is Redis server time (TIME) in whole microseconds, never a client clock. ARGV[2] may carry a
-- clock override (microseconds) for deterministic tests only; hosts leave it empty.
--
-- KEYS[1]  tc:{account}:meta   hash: epoch (state creation instant), last (newest time seen: time
--                              never runs backwards), lost (when the state was found lost: each limit closed for its own quarantine from then), seq (ids)
-- KEYS[2]  tc:{account}:rv     hash: reservation id -> "expiry;limit;cost;limit;cost..."
-- KEYS[3]  tc:{account}:rx     zset: reservation id, score = its expiry (expired ones leave in
--                              O(log n) each, never by a scan)
-- KEYS[4]  tc:{account}:rt     hash: limit -> the total the live reservations hold on it
-- KEYS[5]  tc:{account}:ri     zset, every score 0: "<limit>\0<reservation id>" for each limit a
--                              reservation holds, so a limit's reservations are one lexicographic
--                              range (the four reservation keys always carry one time to live)
-- then seven keys per limit, in the order of the limit arguments:
--          tc:{account}:<kind>:<limit>   the limit's state (w: zset, b: hash, c: zset, g: hash)
--          tc:{account}:s:<limit>        the pause and the strikes (hash: until, server (the part
--                                        the server imposed: CRITICAL waits only for it), reason,
--                                        strikes (rate-limited answers counted for the backoff)).
--                                        Lives `keep` (ARGV of complete) past the pause's end
--          tc:{account}:o:<limit>        registered waiters in their order (zset: member
--                                        "since|waiter|cost" with since zero-padded, score = lane:
--                                        by lane, then first registration, then waiter id; with
--                                        tenants "since|waiter|cost/step/backlog/class", since the
--                                        start tag: see "tenants" in admit)
--          tc:{account}:f:<limit>        a window's holds in flight (zset: member "request:cost",
--                                        score = the lease's end)
--          tc:{account}:m:<limit>        a window's max lowered by a quota the server reported
--                                        (string "<quota>:<the config's max then>": ignored under
--                                        another config), living an hour after the last report
--          tc:{account}:h:<limit>        the waiters' index (hash: "w<waiter>" -> "lane;member of
--                                        o", "L<lane>" -> the claims registered in that lane)
--          tc:{account}:x:<limit>        the waiters' expiries (zset: waiter id, score = expiry)
--                                        (o, h and x always carry one time to live)
--
-- Cost: no operation reads a whole set on the hot path. Per limit, an admission reads the lane
-- totals (one HMGET); only when those totals would refuse it does it walk the claims of its own
-- lane that are ahead of it, and it stops as soon as they pass the limit's room (each claim is at
-- least 1): at most capacity + 1 entries, whatever the number of waiters. Expired waiters and
-- reservations are removed through their expiry index, O(log n) each. The meta hash tells which of a
-- limit's keys can hold nothing live (see "gates" below), so an uncontended admission on a window
-- with hold "go" runs eight commands: TIME, HMGET meta, GET quota, the window's newest and first
-- entries, HMGET pause, ZADD, HSET meta. What it costs is mostly Lua turning numbers into text and
-- back, not the commands (bindings-node/bench/script-floor.mjs).
--
-- ARGV[1] op: admit | complete | release | withdraw | snapshot
-- ARGV[2] clock override (us) or ""      ARGV[3] the host's last seen epoch (and ":" the highest id
--                                        it got under it) or ""
-- ARGV[4] the longest quarantine (us): not read (each limit's is among its arguments), kept so that
--         every operation's own arguments start at 6
-- ARGV[5] the meta key's minimum time to live (ms)
--
-- Replies: { status, now, epoch, ... } with status 1 = go, 2 = wait, 3 = reject, 0 = done.
--
-- Wake-ups: when room frees on a limit that registered waiters wait on (a completion, a release, a
-- withdrawn claim, a waiter going), the script publishes on tc:{account}:wake, so every process
-- waiting asks again at once instead of at its next poll.

local op = ARGV[1]
local meta, resv, rx, rt, ri = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local ABSENT = -1

-- Whole numbers only (every time, count and level here is one): '%d' formats them twice as fast as
-- '%.0f'.
local function fmt(n) return string.format('%d', n) end

-- ---- clock, epoch, quarantine -------------------------------------------------------------------

-- `real` is the server's clock as Redis keeps it (key time to live counts in it); `now` is the time
-- the limits count in: the same, never running backwards, or the test clock override.
local clock = redis.call('TIME')
local real = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local now = ARGV[2] ~= '' and tonumber(ARGV[2]) or real

-- Gates: the meta hash also holds, per limit the operation names, what lets the common path skip keys
-- that hold nothing live (each field absent means "unknown: read the key"):
--   W:<limit>  the latest expiry of a waiter registered on the limit, limit time: past it, none
--   T:<limit>  when the window's entries that left it are next removed, limit time (the window
--              keeps at most a quarter of its per of entries that left it)
--   K:<limit>  when the window key expires, server clock (renewed a second ahead, so once a
--              second under load rather than on every admission)
-- and for the account: X when the meta key expires (server clock), R the latest expiry of a live
-- reservation (limit time). Every write to those keys goes through this script and moves the field
-- with it, in the same atomic step. None of them can let a limit admit more than it holds when a
-- process running an older script writes the same keys (it does not move them): the window is read
-- whole, and the pause and the learnt quota are always read; what such a process adds unseen is at
-- most its waiters' claims and reservations, until the field's time passes.
local names = {}
do
  local n, at, step = 0, 0, 10
  if op == 'admit' then n, at = tonumber(ARGV[13]), 19
  elseif op == 'snapshot' then n, at = tonumber(ARGV[6]), 7
  elseif op == 'complete' then n, at, step = tonumber(ARGV[9]), 10, 11 end
  for i = 1, n do names[i] = ARGV[at + (i - 1) * step] end
end
local GATES = { 'W', 'T', 'K' }
local fields = { 'epoch', 'last', 'lost', 'seq', 'X', 'R' }
for _, name in ipairs(names) do
  for _, g in ipairs(GATES) do fields[#fields + 1] = g .. ':' .. name end
end
local m = redis.call('HMGET', meta, unpack(fields))
local gate = {}
for i, name in ipairs(names) do
  local g, b = {}, 6 + (i - 1) * #GATES
  for j, f in ipairs(GATES) do g[f] = tonumber(m[b + j] or '') end
  gate[name] = g
end
-- A deadline that has passed on its clock (an absent one has not: the key is read).
local function passed(d, at) return d ~= nil and d <= at end

-- Writes to the meta hash wait for the reply: one HSET (and a PEXPIRE about once a second).
local mset = {}
local function mput(f, v) mset[f] = v end
local seq = tonumber(m[4] or '0') or 0
local seq_read = seq
local function next_id()
  seq = seq + 1
  return seq
end

local epoch = m[1]
-- ARGV[3]: "<epoch>:<the highest id this host got from it>" (or "<epoch>", or "").
local seen_epoch, seen_seq = string.match(ARGV[3], '^([^:]*):?(%d*)$')
seen_epoch = seen_epoch or ''
-- The instant from which the state is known to have lost writes (0: never): each limit stays closed
-- for its own quarantine (`q`) from then, so a request waits for the longest of its limits only.
local lost = tonumber(m[3] or '0') or 0
if not epoch then
  -- State is empty: either nothing ran for longer than the meta key lives (then nothing the server
  -- still counts is forgotten), or it was lost (restart, flush) while a host was using it. A host
  -- that saw state recently says so (ARGV[3]): then nobody admits until the server's windows have
  -- forgotten everything this store forgot.
  epoch = fmt(now)
  lost = 0
  if seen_epoch ~= '' then lost = now end
  mput('epoch', epoch)
  mput('lost', fmt(lost))
else
  if m[2] then now = math.max(now, tonumber(m[2])) end
  if seen_epoch ~= '' and seen_epoch ~= epoch then
    -- Recreated after this host last saw it, by a host that did not know: quarantine from then on.
    if tonumber(epoch) > lost then
      lost = tonumber(epoch)
      mput('lost', fmt(lost))
    end
  elseif seen_epoch == epoch and seen_seq ~= '' and tonumber(seen_seq) > seq then
    -- The same state, but older than what this host saw: writes were lost (a replica promoted
    -- before it had them). The admissions they held are forgotten: quarantine from now on.
    if now > lost then
      lost = now
      mput('lost', fmt(lost))
    end
    seq = tonumber(seen_seq)
  end
end
local meta_ttl = tonumber(ARGV[5])
-- How long (ms) the meta key must live at least for the reservations (it carries their ids).
local meta_longest = 0

-- Writes the meta hash once: the newest time seen, the ids drawn, the fields moved. Its time to
-- live is renewed when less than a second of its minimum would be left (its minimum carries a
-- minute's slack), or when a reservation needs it longer.
local function flush_meta()
  local args = { 'last', fmt(now) }
  if seq ~= seq_read then
    args[#args + 1] = 'seq'
    args[#args + 1] = fmt(seq)
  end
  for f, v in pairs(mset) do
    args[#args + 1] = f
    args[#args + 1] = v
  end
  local x = tonumber(m[5] or '')
  local ms = math.max(meta_ttl, meta_longest)
  local renew = x == nil or x < real + (meta_ttl - 1000) * 1000 or x < real + meta_longest * 1000
  if renew then
    args[#args + 1] = 'X'
    args[#args + 1] = fmt(real + ms * 1000)
  end
  redis.call('HSET', meta, unpack(args))
  if renew then redis.call('PEXPIRE', meta, ms) end
end

local function ttl_ms(us) return math.max(1, math.ceil(us / 1000) + 1) end

-- ---- reservations --------------------------------------------------------------------------------

-- The four reservation keys carry one time to live, at least `ms`.
local function keep_reservations(ms)
  if redis.call('PTTL', rx) < ms then
    redis.call('PEXPIRE', resv, ms)
    redis.call('PEXPIRE', rx, ms)
    redis.call('PEXPIRE', rt, ms)
    redis.call('PEXPIRE', ri, ms)
  end
end

local expire_reservations

-- Adds (sign 1) or removes (sign -1) a reservation's "...;limit;cost" part to the totals and to
-- the index by limit.
local function count_reservation(rid, rest, sign)
  for name, c in string.gmatch(rest, ';([^;]+);(%d+)') do
    if redis.call('HINCRBY', rt, name, sign * tonumber(c)) <= 0 then redis.call('HDEL', rt, name) end
    if sign > 0 then
      redis.call('ZADD', ri, 0, name .. '\0' .. rid)
    else
      redis.call('ZREM', ri, name .. '\0' .. rid)
    end
  end
end

-- R: the latest expiry of a reservation (limit time); past it, none is live and the three keys are
-- not read. `resv_clean`: whether the expired ones were removed in this call.
local R = tonumber(m[6] or '')
local resv_clean = false

local function note_reservation_expiry(exp)
  if R == nil or exp > R then
    R = exp
    mput('R', fmt(R))
  end
end

local function add_reservation(rid, exp, rest)
  -- Expired ones leave first: their totals must not count.
  if not resv_clean then expire_reservations() end
  note_reservation_expiry(exp)
  -- No index, no reservation: totals left without one (keys that expired a millisecond apart on a
  -- Redis before 7, where a script's calls do not share one clock) would hold room forever.
  if redis.call('EXISTS', rx) == 0 then redis.call('DEL', resv, rt, ri) end
  redis.call('HSET', resv, rid, fmt(exp) .. rest)
  redis.call('ZADD', rx, fmt(exp), rid)
  count_reservation(rid, rest, 1)
end

-- Ends a reservation (spent, released or expired); true if it was there.
local function drop_reservation(rid)
  local v = redis.call('HGET', resv, rid)
  redis.call('ZREM', rx, rid)
  if not v then return false end
  redis.call('HDEL', resv, rid)
  count_reservation(rid, string.sub(v, #string.match(v, '^(%d+)') + 1), -1)
  return true
end

-- Expired reservations leave through their expiry index: O(log n) each, never a scan.
function expire_reservations()
  for _, rid in ipairs(redis.call('ZRANGEBYSCORE', rx, '-inf', fmt(now))) do drop_reservation(rid) end
  resv_clean = true
end

-- reserved[limit] for these limits (live reservations only) and, for the reservation `spend`,
-- own[limit], whether it is live, its expiry and the rest of its value (;limit;cost...).
local function read_reservations(limits, spend)
  local reserved, own, own_live, own_exp, own_rest = {}, {}, false, nil, nil
  if passed(R, now) and op ~= 'snapshot' then
    -- None is live: nothing to read (the expired ones leave when one is next added, or with their
    -- keys; a snapshot, which reads everything, removes them).
    for _, l in ipairs(limits) do reserved[l.name] = 0 end
    return reserved, own, own_live, own_exp, own_rest
  end
  expire_reservations()
  if R == nil then
    -- Unknown (the meta hash is new): the latest expiry left.
    local last = redis.call('ZRANGE', rx, -1, -1, 'WITHSCORES')
    R = #last > 0 and tonumber(last[2]) or now
    mput('R', fmt(R))
  end
  if #limits > 0 then
    local names = {}
    for i, l in ipairs(limits) do names[i] = l.name end
    local t = redis.call('HMGET', rt, unpack(names))
    for i, l in ipairs(limits) do reserved[l.name] = math.max(0, tonumber(t[i] or '0') or 0) end
  end
  if spend ~= '' then
    local v = redis.call('HGET', resv, spend)
    if v then
      own_exp = tonumber(string.match(v, '^(%d+)'))
      own_rest = string.sub(v, #string.match(v, '^(%d+)') + 1)
      own_live = true
      for name, c in string.gmatch(own_rest, ';([^;]+);(%d+)') do own[name] = (own[name] or 0) + tonumber(c) end
    end
  end
  return reserved, own, own_live, own_exp, own_rest
end

-- The first expiry of a reservation other than `spend` (its room may be what a waiter misses), or nil.
local function first_reservation_expiry(spend)
  if passed(R, now) then return nil end
  local firsts = redis.call('ZRANGE', rx, 0, 1, 'WITHSCORES')
  for i = 1, #firsts, 2 do
    -- The spent reservation's own expiry opens no room for its follow-up (it is credited to it).
    if firsts[i] ~= spend then return tonumber(firsts[i + 1]) end
  end
  return nil
end

-- ---- the limit kinds -----------------------------------------------------------------------------
-- Each loads its state as of `now` into `l` (l.used, l.cap), answers l.when(target) (first instant
-- at which used <= target if nothing else happens, or nil when only an event can make room), and
-- l.take(cost). Arguments per limit: name, kind, need, total, a, b, c, d, e.

local function load_window(l, lease_ttl, id)
  -- Exact sliding window: members "<running total>:<cost>" (running total zero-padded, so members
  -- of one instant sort like the totals), scored by the instant a hold was released. At most max in
  -- any [s, s+per). With hold "completion" (c = 0) a request counts from its go, in flight (the
  -- f: zset, member "<request id>:<cost>" scored by its lease's end), until its completion plus
  -- per: the server counts it on arrival, somewhere in between. With hold "go" (c = 1), from its go.
  local max, per, go = l.a, l.b, l.c == 1
  l.cap = max
  local g = gate[l.name] or {}
  local function entry(i)
    local e = redis.call('ZRANGE', l.key, i, i, 'WITHSCORES')
    if #e == 0 then return nil end
    local cum, cost = string.match(e[1], '^(%d+):(%d+)$')
    return tonumber(cum), tonumber(cost), tonumber(e[2])
  end
  -- The newest entry's running total and instant (read from the window itself, never cached: a
  -- process of another version on the account may have written it).
  local last_cum, last_at = 0, nil
  local c, _, at = entry(-1)
  if c ~= nil then last_cum, last_at = c, at end
  -- The key lives until its newest entry leaves the window, renewed a second ahead (K); always
  -- when it held nothing in the window (it may have been removed, and the write just created it).
  local known_live = false
  local function keep(until_at)
    if not known_live or g.K == nil or g.K < real + (until_at - now) then
      local ms = ttl_ms(until_at - now) + 1000
      redis.call('PEXPIRE', l.key, ms)
      g.K = real + ms * 1000
      mput('K:' .. l.name, fmt(g.K))
      known_live = true
    end
  end
  local function add(at, cost)
    last_cum = last_cum + cost
    last_at = at
    redis.call('ZADD', l.key, fmt(at), string.format('%016d:%d', last_cum, cost))
    keep(at + per)
  end
  local function append(at, cost)
    add(math.max(at, last_at or at), cost)
  end
  l.release = function(member)
    if redis.call('ZREM', l.fkey, member) == 1 then
      append(now, tonumber(string.match(member, ':(%d+)$')))
      return true
    end
    return false
  end
  -- Lapsed leases: counted from their lease's end.
  local inflight = 0
  if not go then
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', l.fkey, '-inf', fmt(now), 'WITHSCORES')) do
      if l.lapsed == nil then l.lapsed = {} end
      l.lapsed[#l.lapsed + 1] = member
    end
    if l.lapsed ~= nil then
      for i = 1, #l.lapsed, 2 do
        redis.call('ZREM', l.fkey, l.lapsed[i])
        append(tonumber(l.lapsed[i + 1]), tonumber(string.match(l.lapsed[i], ':(%d+)$')))
      end
    end
    for _, member in ipairs(redis.call('ZRANGE', l.fkey, 0, -1)) do
      inflight = inflight + tonumber(string.match(member, ':(%d+)$'))
    end
    if inflight > 0 then
      l.timer = tonumber(redis.call('ZRANGE', l.fkey, 0, 0, 'WITHSCORES')[2])
      -- No hold in flight can leave the window before now + per (its completion is at least now):
      -- a host that hears no wake-up asks again then, not at the lease's end.
      l.hint = now + per
    end
  end
  -- Entries that left the window are removed every quarter of per (T), not on every call: the first
  -- entry still in it is found by its score.
  if g.T == nil or g.T <= now then
    redis.call('ZREMRANGEBYSCORE', l.key, '-inf', fmt(now - per))
    g.T = now + math.max(1000, math.floor(per / 4))
    mput('T:' .. l.name, fmt(g.T))
  end
  local logged = 0
  local first = redis.call('ZRANGEBYSCORE', l.key, '(' .. fmt(now - per), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #first > 0 then
    local first_cum, first_cost = string.match(first[1], '^(%d+):(%d+)$')
    logged = last_cum - tonumber(first_cum) + tonumber(first_cost)
    known_live = true
  end
  l.used = logged + inflight
  l.when = function(target)
    if l.used <= target then return now end
    -- Only a completion (or a lease lapsing: the timer) brings the in-flight cost down.
    if inflight > target then return nil end
    -- The entry whose leaving the window leaves at most `target`: binary search on the totals.
    local must = last_cum - (target - inflight)
    -- (Here the window holds entries: used > target >= inflight.)
    local lo, hi = 0, redis.call('ZCARD', l.key) - 1
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if entry(mid) < must then lo = mid + 1 else hi = mid end
    end
    local _, _, at = entry(lo)
    return at + per
  end
  l.take = function(cost)
    if go then
      append(now, cost)
    else
      redis.call('ZADD', l.fkey, fmt(now + lease_ttl), string.format('%s:%d', id(), cost))
      local pt = redis.call('PTTL', l.fkey)
      if pt < ttl_ms(lease_ttl + per) then redis.call('PEXPIRE', l.fkey, ttl_ms(lease_ttl + per)) end
    end
  end
end

local function load_bucket(l)
  -- Token bucket, level scaled by per (one token = per units), refilled by `refill` units per us:
  -- exact integers (the store refuses configs where capacity * per passes 2^53).
  local cap, refill, per = l.a, l.b, l.c
  l.cap = cap
  local full = cap * per
  local h = redis.call('HMGET', l.key, 's', 't')
  local s, t = tonumber(h[1] or ''), tonumber(h[2] or '')
  if s == nil then s, t = full, now end
  if now > t then s = math.min(full, s + (now - t) * refill); t = now end
  l.used = cap - math.floor(s / per)
  l.when = function(target)
    local need = (cap - target) * per
    if s >= need then return now end
    return t + math.ceil((need - s) / refill)
  end
  l.take = function(cost)
    s = math.max(0, s - cost * per)
    redis.call('HSET', l.key, 's', fmt(s), 't', fmt(t))
    redis.call('PEXPIRE', l.key, ttl_ms(math.ceil((full - s) / refill)))
  end
end

local function load_concurrency(l, lease_ttl, id)
  -- Leases scored by expiry: a caller that never completes holds its slot until then.
  l.cap = l.a
  redis.call('ZREMRANGEBYSCORE', l.key, '-inf', fmt(now))
  l.used = redis.call('ZCARD', l.key)
  -- Only an event frees a slot (a completion, or a lease lapsing: a timer, see `timer`).
  l.when = function(target)
    if l.used <= target then return now end
    return nil
  end
  if l.used > 0 then
    l.timer = tonumber(redis.call('ZRANGE', l.key, 0, 0, 'WITHSCORES')[2])
  end
  l.take = function(_)
    redis.call('ZADD', l.key, fmt(now + lease_ttl), id())
    redis.call('PEXPIRE', l.key, ttl_ms(lease_ttl))
  end
end

local function load_budget(l)
  -- A server-held balance mirrored: `refill` at every multiple of per, at most max, floor kept.
  local max, refill, per, floor, initial = l.a, l.b, l.c, l.d, l.e
  l.cap = max - floor
  local h = redis.call('HMGET', l.key, 'bal', 'next')
  local bal, nxt = tonumber(h[1] or ''), tonumber(h[2] or '')
  if bal == nil then
    -- Refill boundaries count from the account's epoch (the in-memory controller's: its origin).
    if initial >= 0 then bal = initial end
    nxt = tonumber(epoch) + per
  end
  if nxt <= now then
    local steps = math.floor((now - nxt) / per) + 1
    nxt = nxt + steps * per
    if bal ~= nil then bal = math.min(bal + steps * refill, max) end
  end
  l.known = bal ~= nil
  l.bal = bal
  l.used = bal ~= nil and (max - bal) or math.huge
  l.when = function(target)
    if bal == nil then return nil end
    local need = max - target
    if bal >= need then return now end
    local steps = math.ceil((need - bal) / refill)
    return nxt + (steps - 1) * per
  end
  l.take = function(cost)
    bal = bal - cost
    redis.call('HSET', l.key, 'bal', fmt(bal), 'next', fmt(nxt))
    local to_full = math.max(0, math.ceil((max - bal) / refill)) * per + (nxt - now)
    redis.call('PEXPIRE', l.key, ttl_ms(to_full + per))
  end
end

-- The index in KEYS of the i-th limit's first key (seven keys per limit after the five of the account).
local function limit_keys(i) return 6 + (i - 1) * 7 end

-- A limit's waiter keys only (for wake-ups and withdrawals).
local function waiter_keys(i)
  local k = limit_keys(i)
  return { okey = KEYS[k + 2], hkey = KEYS[k + 5], xkey = KEYS[k + 6] }
end

-- A quota learnt for a window under the config max `max`, or nil.
local function learnt_max(mkey, max)
  local v = redis.call('GET', mkey)
  if not v then return nil end
  local quota, under = string.match(v, '^(%d+):(%d+)$')
  if tonumber(under) ~= max then return nil end
  return tonumber(quota)
end

-- Reads the limit arguments starting at ARGV[at]: n limits of 10 fields, keys from KEYS[6].
local function read_limits(at, n, lease_ttl, id)
  local limits = {}
  for i = 1, n do
    local b = at + (i - 1) * 10
    local k = limit_keys(i)
    local l = {
      name = ARGV[b], kind = ARGV[b + 1], need = tonumber(ARGV[b + 2]), total = tonumber(ARGV[b + 3]),
      a = tonumber(ARGV[b + 4]), b = tonumber(ARGV[b + 5]), c = tonumber(ARGV[b + 6]),
      d = tonumber(ARGV[b + 7]), e = tonumber(ARGV[b + 8]),
      -- How long after a loss of state this limit stays closed: until the server forgot what the
      -- store forgot on it (a window's per, a bucket's full refill, a lease).
      q = tonumber(ARGV[b + 9]),
      key = KEYS[k], skey = KEYS[k + 1], okey = KEYS[k + 2], fkey = KEYS[k + 3], mkey = KEYS[k + 4],
      hkey = KEYS[k + 5], xkey = KEYS[k + 6],
    }
    if l.kind == 'w' then
      -- The effective max: the config's, or the smaller quota the server reported.
      local quota = learnt_max(l.mkey, l.a)
      if quota ~= nil and quota < l.a then l.a = quota end
      load_window(l, lease_ttl, id)
    elseif l.kind == 'b' then load_bucket(l)
    elseif l.kind == 'c' then load_concurrency(l, lease_ttl, id)
    else load_budget(l) end
    -- The pause (reason: retry_after, block, backoff, cooldown, exhausted) and the strikes.
    local s = redis.call('HMGET', l.skey, 'until', 'server', 'reason', 'strikes')
    l.paused = tonumber(s[1] or '0') or 0
    l.server = tonumber(s[2] or '0') or 0
    l.reason = s[3] or 'block'
    l.strikes = tonumber(s[4] or '0') or 0
    limits[i] = l
  end
  return limits
end

local function reply(status, ...)
  flush_meta()
  return { status, now, epoch, ... }
end

-- ---- wake-ups ------------------------------------------------------------------------------------

local wake_channel = (string.gsub(meta, 'meta$', 'wake'))

-- Publishes a wake-up when any of these limits holds a live waiter (O(log n) each).
local function wake_waiters(ls)
  for _, l in ipairs(ls) do
    local g = l.name and gate[l.name]
    if not (g and passed(g.W, now)) and redis.call('ZCOUNT', l.xkey, '(' .. fmt(now), '+inf') > 0 then
      redis.call('PUBLISH', wake_channel, '1')
      return
    end
  end
end

-- ---- waiters (cross-process priority) ------------------------------------------------------------
-- Kept incrementally: the order (o), an index by waiter with the claims per lane (h) and the
-- expiries (x). Registering, refreshing, leaving and expiring cost O(log n) each.

-- A member of the order: since, waiter, cost, and with tenants the class's step, the backlog its
-- waiter holds and the class.
local function parse_member(member)
  local s, w, c, step, b, class = string.match(member, '^(%d+)|(.*)|(%d+)/?(%d*)/?(%d*)/?(%d*)$')
  return tonumber(s), w, tonumber(c), tonumber(step), tonumber(b) or 1, class
end

-- A waiter's registration on a limit: { lane, since, claim (its cost times its backlog), member }
-- or nil.
local function waiter_of(l, wid)
  local v = redis.call('HGET', l.hkey, 'w' .. wid)
  if not v then return nil end
  local lane, member = string.match(v, '^(%d+);(.*)$')
  local since, _, cost, _, backlog = parse_member(member)
  return { tonumber(lane), since, cost * backlog, member }
end

-- Ends a waiter's registration on a limit; true if it had one.
local function drop_waiter(l, wid)
  local w = waiter_of(l, wid)
  redis.call('ZREM', l.xkey, wid)
  if w == nil then return false end
  redis.call('ZREM', l.okey, w[4])
  redis.call('HDEL', l.hkey, 'w' .. wid)
  if redis.call('HINCRBY', l.hkey, 'L' .. w[1], -w[3]) <= 0 then redis.call('HDEL', l.hkey, 'L' .. w[1]) end
  return true
end

-- Registers a claim, `member` of the order (lane nil: only moves the expiry of the registration
-- the waiter has).
local function add_waiter(l, wid, lane, member, claim, expiry)
  if lane ~= nil then
    -- No expiry index, no waiter: an order or totals left without one (see add_reservation) go.
    if redis.call('EXISTS', l.xkey) == 0 then redis.call('DEL', l.okey, l.hkey) end
    redis.call('ZADD', l.okey, lane, member)
    redis.call('HSET', l.hkey, 'w' .. wid, lane .. ';' .. member)
    redis.call('HINCRBY', l.hkey, 'L' .. lane, claim)
  end
  redis.call('ZADD', l.xkey, fmt(expiry), wid)
  local g = gate[l.name]
  if g ~= nil and (g.W == nil or expiry > g.W) then
    g.W = expiry
    mput('W:' .. l.name, fmt(expiry))
  end
  -- The three keys carry one time to live: the latest expiry of their waiters.
  local ms = ttl_ms(expiry - now)
  if redis.call('PTTL', l.xkey) < ms then
    redis.call('PEXPIRE', l.okey, ms)
    redis.call('PEXPIRE', l.hkey, ms)
    redis.call('PEXPIRE', l.xkey, ms)
  end
end

-- Expired waiters leave through their expiry index: O(log n) each, never a scan.
local function expire_waiters(l)
  for _, wid in ipairs(redis.call('ZRANGEBYSCORE', l.xkey, '-inf', fmt(now))) do drop_waiter(l, wid) end
end

-- The claims of the live waiters ahead of (lane, since, wid) on l (lower lane, or same lane and
-- registered earlier; its own registration `mine` excluded), exact as long as they stay within
-- `room`: above it the caller's answer is the same whatever they are, so the walk stops there.
-- With tenants, a class claims for the requests of its backlog (what its waiters hold back, in
-- every process) whose start tags come before `since`: they take consecutive tags, one step of the
-- class apart, from its first waiter ahead.
-- `enough`: if even every claim of the lanes up to its own stays within it, the exact figure does
-- not change the answer either, and no entry is read.
local function claims_ahead(l, lane, since, wid, mine, room, enough)
  local fields = {}
  for i = 0, lane do fields[#fields + 1] = 'L' .. i end
  local t = redis.call('HMGET', l.hkey, unpack(fields))
  local lower, upper = 0, 0
  for i = 0, lane do
    local v = tonumber(t[i + 1] or '0') or 0
    if mine ~= nil and mine[1] == i then v = v - mine[3] end
    if i < lane then lower = lower + v end
    upper = upper + v
  end
  if upper == lower or upper <= enough then return upper end
  local sum = lower
  local at = 0
  -- Per tenant class: its first start tag ahead, the backlog seen, the claim counted.
  local first, held, counted = {}, {}, {}
  while sum <= room do
    local batch = redis.call('ZRANGEBYSCORE', l.okey, lane, lane, 'LIMIT', at, 64)
    for _, member in ipairs(batch) do
      local s, w, c, step, backlog, class = parse_member(member)
      -- Members sort by since (zero-padded); among equal since, the rule decides.
      if s > since then return sum end
      if w ~= wid and (s < since or w < wid) then
        if step ~= nil then
          first[class] = first[class] or s
          held[class] = (held[class] or 0) + backlog
          local claim = c * math.min(held[class], 1 + math.floor((since - first[class]) / step))
          sum = sum + claim - (counted[class] or 0)
          counted[class] = claim
        else
          sum = sum + c
        end
        if sum > room then return sum end
      end
    end
    if #batch < 64 then return sum end
    at = at + 64
  end
  return sum
end

-- ---- operations ----------------------------------------------------------------------------------

if op == 'admit' then
  -- ARGV: 6 priority, 7 lease ttl us, 8 waiter id, 9 waiter since, 10 waiter ttl us, 11 spent
  -- reservation, 12 max wait us, 13 limits, 14 follow-ups, 15 the request's id if it has one (given
  -- by an earlier wait or refusal) or "", 16 its tenant class (a number, 0 the default class), 17 the
  -- class's step of virtual time ("": no tenants), 18 how many requests of its class wait in its
  -- process, itself included (with tenants); then the limits (10 fields each), then per follow-up:
  -- ttl us, n, n x (limit, cost).
  --
  -- Replies: go { 1, now, epoch, request id, reservation ids..., strikes }; wait { 2, now, epoch,
  -- wake or -1, since, request id }; refuse { 3, now, epoch, code, fields..., request id }. The
  -- request id is drawn once (from `seq`, unique across processes) and kept by the host through its
  -- waits, so every event of one request names the same id.
  local priority = tonumber(ARGV[6])
  local lease_ttl = tonumber(ARGV[7])
  local wid, since = ARGV[8], tonumber(ARGV[9] ~= '' and ARGV[9] or fmt(now))
  local waiter_ttl = tonumber(ARGV[10])
  local spend = ARGV[11]
  local max_wait = tonumber(ARGV[12] ~= '' and ARGV[12] or '-1')
  local nl, nf = tonumber(ARGV[13]), tonumber(ARGV[14])
  local request_id = ARGV[15] ~= '' and tonumber(ARGV[15]) or nil
  local function id()
    if request_id == nil then request_id = next_id() end
    return request_id
  end
  local limits = read_limits(19, nl, lease_ttl, id)
  local function refuse(...)
    local fields = { ... }
    fields[#fields + 1] = id()
    return reply(3, unpack(fields))
  end
  local strikes = 0
  for _, l in ipairs(limits) do
    -- CRITICAL waits only for the part of a pause the server imposed, never for our backoff.
    if priority == 0 then l.paused = l.server end
    if l.need > 0 then strikes = math.max(strikes, l.strikes) end
  end
  for _, l in ipairs(limits) do
    if l.kind == 'g' and not l.known and l.total > 0 then return refuse('BUDGET_UNKNOWN', l.name) end
    -- A window lowered by a quota the server reported may no longer hold the request at all.
    if l.kind == 'w' and l.total > l.cap then return refuse('COST_EXCEEDS_CAPACITY', l.name, l.total, l.cap) end
  end
  local reserved, own, own_live, own_exp, own_rest = read_reservations(limits, spend)
  -- A follow-up fully covered by its live reservation waits in the lane ahead of every priority.
  local covered = own_live and nf == 0
  if covered then
    for _, l in ipairs(limits) do
      if l.need > 0 and (own[l.name] or 0) < l.need then covered = false end
    end
  end
  local lane = covered and 0 or priority + 1
  local may_use_reserved = priority == 0 and nf == 0

  -- Tenants: start-time fair queueing across processes, as in memory. A request's place in its
  -- lane (`since`) is its start tag instead of its registration instant: the later of the lane's
  -- virtual time (meta V<lane>: the latest start tag that went) and its tenant class's previous
  -- finish (meta F<lane>:<class>); its class finishes one step (the share of one request at its
  -- weight) later. Backlogged tenants go in proportion to their weights, and a newcomer waits behind
  -- the few requests of each other tenant whose tags come first, however many they queued. The
  -- first waiting request of a class in a process also claims for its backlog there (ARGV 18).
  local step, vclock, fresh = tonumber(ARGV[17]), 0, false
  local backlog = step ~= nil and math.max(1, tonumber(ARGV[18]) or 1) or 1
  local ffield, vfield = 'F' .. lane .. ':' .. ARGV[16], 'V' .. lane
  if step ~= nil then
    local v = redis.call('HMGET', meta, vfield, ffield)
    vclock = tonumber(v[1] or '0') or 0
    if ARGV[9] == '' then
      since = math.max(vclock, tonumber(v[2] or '0') or 0)
      fresh = true
    end
  end

  -- A waiter keeps the place of its first registration, whether or not the host passes it back.
  for _, l in ipairs(limits) do
    -- Past the latest expiry of its waiters (W), a limit has none live: nothing to read.
    local g = gate[l.name]
    l.no_waiters = passed(g.W, now)
    if not l.no_waiters then
      expire_waiters(l)
      if g.W == nil then
        local last = redis.call('ZRANGE', l.xkey, -1, -1, 'WITHSCORES')
        g.W = #last > 0 and tonumber(last[2]) or now
        mput('W:' .. l.name, fmt(g.W))
      end
      if wid ~= '' then
        l.mine = waiter_of(l, wid)
        -- A registered tenant's waiter took its start tag at its registration.
        if l.mine ~= nil and (fresh or l.mine[2] < since) then since, fresh = l.mine[2], false end
      end
    end
  end
  local fits, wake = true, now
  for _, l in ipairs(limits) do
    local others = math.max(0, (reserved[l.name] or 0) - (own[l.name] or 0))
    if may_use_reserved and others >= l.cap then others = 0 end
    -- Claims of live waiters ahead of this request (lower lane, or same lane and registered
    -- earlier): the room they need is not taken by a request behind them. Exact up to the
    -- limit's room, which is all the answer reads.
    local claims = 0
    if not l.no_waiters then
      claims = claims_ahead(l, lane, since, wid, l.mine, l.cap - l.total, l.cap - l.total - others - l.used)
    end
    l.ahead = claims
    local soft, hard = l.cap - (others + claims + l.total), l.cap - l.total
    local ceiling = (soft >= 0 and hard >= 0) and math.min(soft, hard) or nil
    l.claim = l.total - math.min(l.total, own[l.name] or 0)
    if ceiling == nil or l.used > ceiling or l.paused > now then fits = false end
    if wake ~= nil then
      local t = ceiling ~= nil and l.when(ceiling) or nil
      if t == nil and ceiling ~= nil then t = l.hint end
      if t == nil then wake = nil else wake = math.max(wake, t, l.paused) end
    end
  end
  local quarantine = 0
  if lost > 0 then
    for _, l in ipairs(limits) do quarantine = math.max(quarantine, lost + l.q) end
  end
  if quarantine > now then
    fits = false
    if wake ~= nil then wake = math.max(wake, quarantine) end
  end

  if not fits then
    -- Wake sooner if a reservation or a lease lapses first: its room may be what is missing.
    local function sooner(t) if t ~= nil and (wake == nil or t < wake) then wake = t end end
    sooner(first_reservation_expiry(spend))
    for _, l in ipairs(limits) do sooner(l.timer) end
    if max_wait >= 0 then
      -- Refused at once if even empty of claims and reservations the limits could not take it in time.
      local deadline = now + max_wait
      local earliest, budget_late, t_late = math.max(now, quarantine), nil, nil
      for _, l in ipairs(limits) do
        -- A budget's spending never comes back: the claims of the waiters ahead on it come first.
        local ahead = l.kind == 'g' and l.ahead or 0
        local t = (l.cap - l.total - ahead >= 0) and l.when(l.cap - l.total - ahead) or nil
        if t == nil then earliest = nil; break end
        t = math.max(t, l.paused)
        if t > earliest then earliest = t end
        if l.kind == 'g' and t > deadline then budget_late, t_late = l, t end
      end
      if earliest ~= nil and earliest > deadline then
        if budget_late ~= nil then
          return refuse('INSUFFICIENT_BUDGET', budget_late.name, budget_late.total,
            budget_late.bal - budget_late.d, t_late, budget_late.ahead)
        end
        return refuse('DEADLINE_UNREACHABLE', earliest, deadline)
      end
    end
    if wid ~= '' then
      -- A tenant's waiter takes its start tag: its class's next request starts after it.
      if fresh then mput(ffield, fmt(since + step)) end
      -- Register (or refresh) this waiter's claim on every limit it needs; it lives until the
      -- instant it is due back plus the waiter ttl (bounded), so a crashed waiter claims nothing long.
      local back = wake ~= nil and math.min(wake, now + 30 * waiter_ttl) or now
      local expiry = math.max(back, now) + waiter_ttl
      for _, l in ipairs(limits) do
        -- Those that expired leave first: their claims must not count.
        if l.no_waiters then expire_waiters(l) end
        local m = l.mine
        local member = string.format('%016d|%s|%d', since, wid, l.claim)
        if step ~= nil then member = member .. string.format('/%d/%d/%s', step, backlog, ARGV[16]) end
        if m ~= nil and l.claim > 0 and m[1] == lane and m[4] == member then
          -- The same claim in the same place: only its expiry moves.
          add_waiter(l, wid, nil, nil, nil, expiry)
        else
          if m ~= nil then drop_waiter(l, wid) end
          if l.claim > 0 then add_waiter(l, wid, lane, member, l.claim * backlog, expiry) end
        end
      end
      -- A follow-up waiting to spend its reservation keeps it alive as long as its claim (as in
      -- memory, where a reservation being spent does not expire): a pause or a CRITICAL request
      -- that took the room first does not cost it its reservation. A crashed waiter's lapses.
      if own_live and own_exp < expiry then
        redis.call('HSET', resv, spend, fmt(expiry) .. own_rest)
        redis.call('ZADD', rx, fmt(expiry), spend)
        note_reservation_expiry(expiry)
        keep_reservations(ttl_ms(expiry - now))
      end
    end
    return reply(2, wake ~= nil and wake or ABSENT, since, id())
  end

  -- Go: the spent reservation turns into admissions, every limit takes its cost at this instant,
  -- the follow-ups' capacity is reserved, and the waiter registration ends.
  if own_live then drop_reservation(spend) end
  -- With tenants, a waiter whose class has more requests waiting in its process hands its
  -- registration, under the same waiter id, to the next of them (the host asks for it under that
  -- id): the class keeps its claims and its place in the lane between two of its requests.
  local successor = nil
  if step ~= nil then
    -- The lane's virtual time reaches the start tag that went.
    if since > vclock then
      vclock = since
      mput(vfield, fmt(since))
    end
    local finish = fresh and since + step or nil
    if backlog > 1 and wid ~= '' then
      -- A backlog continues its class's tags (as in memory, where it was queued with them): its
      -- next starts at the class's finish, not at the lane's virtual time, which a request of a
      -- later tag that went in the same instant may have moved past it.
      successor = finish or tonumber(redis.call('HGET', meta, ffield) or '0') or 0
      finish = successor + step
    end
    if finish ~= nil then mput(ffield, fmt(finish)) end
  end
  local left_claims = false
  for _, l in ipairs(limits) do
    if l.need > 0 then l.take(l.need) end
    if successor ~= nil and l.claim > 0 then
      if l.no_waiters then expire_waiters(l) end
      if l.mine ~= nil then drop_waiter(l, wid) end
      local member = string.format('%016d|%s|%d/%d/%d/%s', successor, wid, l.claim, step, backlog - 1, ARGV[16])
      add_waiter(l, wid, lane, member, l.claim * (backlog - 1), now + waiter_ttl)
      left_claims = true
    elseif l.mine ~= nil and drop_waiter(l, wid) then
      left_claims = true
    end
  end
  -- Its claims are gone: a waiter that was behind them may fit now.
  if left_claims then wake_waiters(limits) end
  local out = { id() }
  local at = 19 + nl * 10
  local longest = 0
  for _ = 1, nf do
    local ttl, n = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
    local exp = now + math.max(1, ttl)
    if exp - now > longest then longest = exp - now end
    local v = { fmt(exp) }
    for j = 1, n do
      v[#v + 1] = ARGV[at + 2 * j]
      v[#v + 1] = ARGV[at + 2 * j + 1]
    end
    at = at + 2 + 2 * n
    local rid = next_id()
    add_reservation(rid, exp, n > 0 and (';' .. table.concat(v, ';', 2)) or '')
    out[#out + 1] = rid
  end
  -- Then whether a limit it took holds strikes: its answer, if not rate limited, clears them.
  out[#out + 1] = strikes > 0 and 1 or 0
  if longest > 0 then
    keep_reservations(ttl_ms(longest))
    meta_longest = math.max(meta_longest, ttl_ms(longest))
  end
  return reply(1, unpack(out))

elseif op == 'complete' then
  -- ARGV: 6 request id ("" when it held nothing), 7 the request's go (us, the instant a repeat is
  -- judged by) or "", 8 how long strikes outlive their pause (us), 9 limits; then per limit: name,
  -- kind, pause mode, server us, ladder, reported balance or "", refill in us or "", max (budgets,
  -- windows), per (budgets, windows), cost held (windows) or "", quota learnt (windows) or ""; then
  -- how long a learnt quota lives (us). Reply: { 0, now, epoch, 0, the end of the longest pause
  -- it imposed as rate limited or -1 }.
  --
  -- The pause mode says what the answer does to the limit's pause (the policy is core's `Told`;
  -- the script keeps the state): "" nothing; "clear" the strikes are cleared (an answer that is not
  -- rate limited); "exhausted" cleared, and paused for `server us` (the quota is used up until its
  -- reset); "retry_after" a strike is counted, paused for `server us` exactly; "block" and
  -- "cooldown" a strike is counted, paused for the ladder's entry for the strikes that count (the
  -- last entry for more), of which `server us` is the server's part. A strike is counted only for a
  -- repeat: a request sent after the pause the server imposed had ended (the other answers of one
  -- burst count once, and pause from their own arrival).
  local rid, sent, keep, n = ARGV[6], tonumber(ARGV[7] ~= '' and ARGV[7] or '0'), tonumber(ARGV[8]), tonumber(ARGV[9])
  local freed, waiting, grown = false, {}, {}
  -- The end of the longest pause this answer imposed as rate limited (the reply's field 5).
  local paused_until = ABSENT
  for i = 1, n do
    local b = 10 + (i - 1) * 11
    local k = limit_keys(i)
    local wk = waiter_keys(i)
    wk.name = ARGV[b]
    waiting[#waiting + 1] = wk
    local kind, mode = ARGV[b + 1], ARGV[b + 2]
    if kind == 'c' and rid ~= '' and redis.call('ZREM', KEYS[k], rid) == 1 then freed = true end
    if kind == 'w' and rid ~= '' and ARGV[b + 9] ~= '' then
      -- The hold ends now: the window counts it for per from here (waiters learn when it frees).
      local w = { name = ARGV[b], key = KEYS[k], fkey = KEYS[k + 3], a = 0, b = tonumber(ARGV[b + 8]), c = 0 }
      load_window(w, 0, function() return 0 end)
      if w.release(rid .. ':' .. ARGV[b + 9]) then freed = true end
    end
    if mode ~= '' then
      local skey = KEYS[k + 1]
      local st = redis.call('HMGET', skey, 'until', 'server', 'reason', 'strikes')
      local untl, server = tonumber(st[1] or '0') or 0, tonumber(st[2] or '0') or 0
      local reason, strikes = st[3], tonumber(st[4] or '0') or 0
      local before, had = math.max(untl, now), strikes
      local srv, total, why = 0, 0, mode
      if mode == 'clear' or mode == 'exhausted' then
        strikes = 0
      else
        local counted = 1
        if sent >= server then
          strikes = strikes + 1
          counted = strikes
        end
        if mode == 'block' or mode == 'cooldown' then
          local ladder = {}
          for v in string.gmatch(ARGV[b + 4], '%d+') do ladder[#ladder + 1] = tonumber(v) end
          total = ladder[math.min(counted, #ladder)]
          if mode == 'block' and counted > 1 then why = 'backoff' end
        end
      end
      if mode ~= 'clear' then
        srv = tonumber(ARGV[b + 3])
        if mode == 'exhausted' or mode == 'retry_after' then total = srv end
        -- Pauses are only ever extended; the reason is the newest pause's when it runs longest.
        server = math.max(server, now + srv)
        if now + total > untl or reason == nil then reason = why end
        untl = math.max(untl, now + total, server)
        if untl > before then grown[ARGV[b]] = untl - before end
        if mode ~= 'exhausted' and untl > paused_until then paused_until = untl end
      end
      if mode ~= 'clear' or had > 0 then
        -- Kept `keep` past the pause: the strikes, and the server's part that tells a repeat from
        -- a late answer to a request sent before it ended.
        redis.call('HSET', skey, 'until', fmt(untl), 'server', fmt(server), 'reason', reason or 'block',
          'strikes', fmt(strikes))
        redis.call('PEXPIRE', skey, ttl_ms(math.max(untl, server) - now + keep))
      end
    end
    if kind == 'w' and ARGV[b + 10] ~= '' then
      -- The server reported a smaller quota: every process's window holds at most that (only ever
      -- lowered while the config stays the same).
      local max, quota = tonumber(ARGV[b + 7]), tonumber(ARGV[b + 10])
      local known = learnt_max(KEYS[k + 4], max)
      if known ~= nil and known < quota then quota = known end
      redis.call('SET', KEYS[k + 4], fmt(quota) .. ':' .. fmt(max), 'PX', ttl_ms(tonumber(ARGV[10 + n * 11])))
    end
    if kind == 'g' and ARGV[b + 5] ~= '' then
      local max, per = tonumber(ARGV[b + 7]), tonumber(ARGV[b + 8])
      local bal = math.min(tonumber(ARGV[b + 5]), max)
      local nxt
      if ARGV[b + 6] ~= '' then
        nxt = now + math.max(1, tonumber(ARGV[b + 6]))
      else
        nxt = tonumber(redis.call('HGET', KEYS[k], 'next') or '') or tonumber(epoch) + per
      end
      redis.call('HSET', KEYS[k], 'bal', fmt(bal), 'next', fmt(nxt))
      redis.call('PEXPIRE', KEYS[k], ttl_ms(math.max(0, max - bal) * per + per + (nxt - now)))
      freed = true
    end
  end
  if next(grown) ~= nil and not passed(R, now) then
    -- Reservations held on a paused limit live as much longer as the pause grew (the longest growth
    -- among their limits): a follow-up held back by the pause still finds its room. Only the paused
    -- limits' reservations are read, through the index by limit.
    expire_reservations()
    local ext = {}
    for name, by in pairs(grown) do
      for _, member in ipairs(redis.call('ZRANGEBYLEX', ri, '[' .. name .. '\0', '(' .. name .. '\1')) do
        local rid = string.sub(member, #name + 2)
        if (ext[rid] or 0) < by then ext[rid] = by end
      end
    end
    local longest = 0
    for rid, by in pairs(ext) do
      local v = redis.call('HGET', resv, rid)
      if v then
        local head = string.match(v, '^(%d+)')
        local exp = tonumber(head) + by
        redis.call('HSET', resv, rid, fmt(exp) .. string.sub(v, #head + 1))
        redis.call('ZADD', rx, fmt(exp), rid)
        note_reservation_expiry(exp)
        if exp - now > longest then longest = exp - now end
      end
    end
    if longest > 0 then
      keep_reservations(ttl_ms(longest))
      meta_longest = math.max(meta_longest, ttl_ms(longest))
    end
  end
  if freed then wake_waiters(waiting) end
  return reply(0, 0, paused_until)

elseif op == 'release' then
  -- ARGV: 6 reservation id. Reply: 1 if it was live.
  local e = redis.call('HGET', resv, ARGV[6])
  local live = 0
  if e and tonumber(string.match(e, '^(%d+)')) > now then live = 1 end
  drop_reservation(ARGV[6])
  -- Its room is free for anyone: wake the waiters (released reservations are rare).
  if live == 1 then redis.call('PUBLISH', wake_channel, '1') end
  return reply(0, live)

elseif op == 'withdraw' then
  -- ARGV: 6 waiter id, 7 limits (keys only): a waiter that gives up drops its claims at once.
  local ls, dropped = {}, false
  for i = 1, tonumber(ARGV[7]) do
    local l = waiter_keys(i)
    ls[#ls + 1] = l
    if drop_waiter(l, ARGV[6]) then dropped = true end
  end
  if dropped then wake_waiters(ls) end
  return reply(0)

elseif op == 'snapshot' then
  -- ARGV: 6 limits, then the limits as for admit (need and total 0). Per limit: used, capacity,
  -- reserved, paused until, waiters, next free (or -1), pause reason, the server's part of the
  -- pause, strikes.
  local limits = read_limits(7, tonumber(ARGV[6]), 0, function() return 0 end)
  local reserved = read_reservations(limits, '')
  local quarantine = 0
  if lost > 0 then
    for _, l in ipairs(limits) do quarantine = math.max(quarantine, lost + l.q) end
  end
  local out = { quarantine }
  for _, l in ipairs(limits) do
    local used = l.used == math.huge and ABSENT or l.used
    local nf = used > 0 and l.when(used - 1) or nil
    out[#out + 1] = used
    out[#out + 1] = l.cap
    out[#out + 1] = reserved[l.name] or 0
    out[#out + 1] = l.paused
    expire_waiters(l)
    out[#out + 1] = redis.call('ZCARD', l.xkey)
    out[#out + 1] = nf ~= nil and nf or ABSENT
    out[#out + 1] = l.reason
    out[#out + 1] = l.server
    out[#out + 1] = l.strikes
  end
  return reply(0, unpack(out))
end

return redis.error_reply('traffic-control: unknown op ' .. tostring(op))

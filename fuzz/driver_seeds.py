#!/usr/bin/env python3
"""Writes seeds/driver_inputs/*: host scenarios for the driver_inputs target, encoded the way the
`arbitrary` crate (1.5) decodes the target's `Input` (enums: a u32 tag scaled to the variant count;
integers little-endian; Option and bool: one byte; a list: a "one more" byte before each element;
a string's length: a byte taken from the end of the data). Each seed is a readable list of steps below; libFuzzer mutates from there. Changing
the target's types (a variant added or moved) changes what these bytes mean: run this again then.

    python3 fuzz/driver_seeds.py      # then check one: DRIVER_INPUTS_TRACE=1 cargo fuzz run driver_inputs seeds/driver_inputs/<seed>
"""
import os
import struct


class Enc:
    def __init__(self):
        self.front = bytearray()
        self.back = []  # lengths taken from the end, in the order they are taken, with the front's size then

    def raw(self, fmt, v):
        self.front += struct.pack("<" + fmt, v)
        return self

    def u8(self, v): return self.raw("B", v)
    def u16(self, v): return self.raw("H", v)
    def u32(self, v): return self.raw("I", v)
    def u64(self, v): return self.raw("Q", v)
    def i16(self, v): return self.raw("h", v)
    def i32(self, v): return self.raw("i", v)
    def b(self, v): return self.u8(1 if v else 0)

    def tag(self, i, n):
        return self.u32(-(-(i << 32) // n))  # ceil(i * 2^32 / n): (tag * n) >> 32 == i

    def opt(self, v, f):
        if v is None:
            return self.u8(0)
        self.u8(1)
        f(v)
        return self

    def length(self, n):
        self.back.append((len(self.front), n))
        return self

    def string(self, s):
        data = s.encode()
        self.length(len(data))
        self.front += data
        return self

    def bytes(self):
        self.u8(0)  # no more steps
        # A length takes one byte from the end while at most 256 bytes are left, else two (big
        # endian), read modulo the bytes left: those are more than n, so the bytes say n itself.
        widths = [1] * len(self.back)
        while True:
            total = len(self.front) + sum(widths)
            taken, new = 0, []
            for front_used, n in self.back:
                left = total - front_used - taken
                assert left <= 65537
                new.append(1 if left <= 256 else 2)
                taken += new[-1]
            if new == widths:
                break
            widths = new
        tail = b"".join(
            bytes([n]) if w == 1 else bytes([n >> 8, n & 0xFF]) for (_, n), w in zip(self.back, widths)
        )
        chunks = [tail[sum(widths[:i]) : sum(widths[: i + 1])] for i in range(len(widths))]
        return bytes(self.front) + b"".join(reversed(chunks))


# Variant counts of the target's enums.
CLOCK, ODD, PICK, SERVER, REPLY, OP, VAL = 6, 5, 2, 2, 9, 15, 5
URL = {"/x": 0, "/slow": 1, "product K": 2, "product L": 3, "token": 4, "/slow/2": 5}
PRIO = {"critical": 0, "high": 1, "normal": 2, "low": 3}
LIMIT = {"api": 0, "slots": 1, "tokens": 2, "nosuch": 3}
HEADER = {"retry-after": 0, "ratelimit-limit": 1, "ratelimit-remaining": 2, "ratelimit-reset": 3}
# Reply::Auto kinds for an admission (kind % 4): go (kind / 4 % 3 reservations), wait until
# server + n ms, wait without an instant, BUDGET_UNKNOWN on "tokens". To other calls: observed
# (kind % 2 = live); to a snapshot: its fields.
GO, WAIT, WAIT_NO_INSTANT, BUDGET_UNKNOWN, GO_1_RESERVATION = 0, 1, 2, 3, 4


class Seed(Enc):
    def __init__(self, fail=False, wake=True, learn=True, unavailable_max_wait=None, waiter_ttl=None):
        super().__init__()
        self.b(fail).b(not wake).b(not learn)
        self.opt(unavailable_max_wait, self.u16).opt(waiter_ttl, self.u16)

    # ---- clock, then op: one step ----
    def at(self, clock="same", n=0):
        self.u8(1)  # one more step
        i = ["same", "ms", "secs", "due", "huge", "odd"].index(clock)
        self.tag(i, CLOCK)
        if clock == "ms":
            self.u8(n)
        elif clock == "secs":
            self.u16(n)
        elif clock == "huge":
            self.u64(n)
        elif clock == "odd":
            self.tag(["nan", "inf", "-inf", "neg", "max"].index(n), ODD)
        return self

    def pick(self, known=None, any=None):
        if known is not None:
            return self.tag(0, PICK).u8(known)
        return self.tag(1, PICK).u64(any)

    def acquire(self, url, prio="normal", cost=None, max_wait=None, reserve=False, spend=None):
        self.tag(0, OP).u8(URL[url]).u8(PRIO[prio]).opt(cost, self.u8).opt(max_wait, self.u32).b(reserve)
        return self.opt(spend, lambda k: self.pick(known=k))

    def cancel(self, k): return self.tag(1, OP).pick(known=k)

    def complete(self, k, status=None, headers=(), body=None):
        self.tag(2, OP).pick(known=k).opt(status, self.u16)
        for name, value in headers:
            self.u8(1).u8(HEADER[name]).string(value)  # a list: "one more" before each element
        self.u8(0)
        return self.opt(body, self.string)

    def release(self, k=None, any=None): return self.tag(3, OP).pick(k, any)

    def sync_budget(self, limit, tokens, refill_in=None):
        return self.tag(4, OP).u8(LIMIT[limit]).i32(tokens).opt(refill_in, self.u32)

    def snapshot(self): return self.tag(5, OP)

    def reply(self, k, kind=GO, n=0, server_ms=0, epoch=True):
        """Reply::Auto to the k-th pending call (oldest first), server time = host clock + server_ms."""
        return self.tag(6, OP).pick(known=k).tag(0, SERVER).i16(server_ms).b(epoch).tag(0, REPLY).u8(kind).u16(n)

    def reply_wait(self, k, until_ms=None, since=7):
        self.tag(6, OP).pick(known=k).tag(0, SERVER).i16(0).b(True).tag(2, REPLY)
        return self.opt(until_ms, self.i32).u32(since)

    def reply_not_array(self, k, v):
        return self.tag(6, OP).pick(known=k).tag(0, SERVER).i16(0).b(True).tag(8, REPLY).tag(0, VAL).raw("q", v)

    def store_error(self, k, reason="connection refused"):
        return self.tag(7, OP).pick(known=k).string(reason)

    def woken(self): return self.tag(8, OP)
    def subscribed(self, ok): return self.tag(9, OP).b(ok)

    def status_done(self, k, status=None, tokens_left=None, body=None):
        self.tag(10, OP).pick(known=k).opt(status, self.u16).opt(tokens_left, self.i32)
        return self.opt(body, self.string)

    def timeout(self): return self.tag(11, OP)
    def close(self): return self.tag(12, OP)
    def process_tag(self, tag): return self.tag(13, OP).string(tag)
    def raw_input(self, text): return self.tag(14, OP).string(text)


def seeds():
    # A concurrency slot: the second request waits (subscribed to wake-ups), the first completes,
    # the second goes; the subscription lingers a second after the last waiter.
    s = Seed()
    s.at().acquire("/slow").at("ms", 2).reply(0, GO)
    s.at("ms", 5).acquire("/slow").at("ms", 2).reply(0, WAIT_NO_INSTANT)
    s.at("ms", 1).subscribed(True).at("ms", 2).reply(0, WAIT_NO_INSTANT)
    s.at("ms", 50).complete(0, status=200).at("ms", 2).reply(0, 1)
    s.at("ms", 2).reply(0, GO).at("ms", 100).complete(1, status=200).at("ms", 2).reply(0, 1)
    s.at("secs", 2).timeout()
    yield "slot_wait_wake", s

    # The window: a wait until the named instant, the timer, then go; a 429 with Retry-After; a
    # request whose longest wait runs out while queued.
    s = Seed(wake=False)
    s.at().acquire("/x").at("ms", 1).reply(0, GO)
    s.at("ms", 1).acquire("/x").at("ms", 1).reply(0, WAIT, n=300)
    s.at("ms", 2).acquire("/x", max_wait=100)
    s.at("due").timeout().at("due").timeout().at("ms", 1).reply(0, GO)
    s.at("ms", 20).complete(0, status=429, headers=[("retry-after", "2")]).at("ms", 1).reply(0, 0)
    s.at("due").timeout()
    yield "window_wait_timer_429", s

    # A budget learnt on first use: BUDGET_UNKNOWN, the status request (HIGH) goes, its answer
    # reports the balance, the request asks again and goes; then a budget sync and a snapshot.
    s = Seed(wake=False)
    s.at().acquire("product K").at("ms", 3).reply(0, BUDGET_UNKNOWN)
    s.at("ms", 2).reply(0, GO)
    s.at("ms", 40).status_done(0, status=200, tokens_left=80)
    s.at("ms", 2).reply(1, GO).at("ms", 1).reply(0, 1)
    s.at("ms", 30).sync_budget("tokens", 50, refill_in=3000).at("ms", 1).reply(0, 0)
    s.at("ms", 5).snapshot().at("ms", 1).reply(0, 1, n=3)
    yield "budget_learnt_sync_snapshot", s

    # The same with a status request that gets no response: the parked request fails.
    s = Seed(wake=False)
    s.at().acquire("product L").at("ms", 3).reply(0, BUDGET_UNKNOWN)
    s.at("ms", 1).acquire("product L", prio="low").at("ms", 2).reply(0, GO)
    s.at("ms", 40).status_done(0).at("ms", 1).reply(0, BUDGET_UNKNOWN)
    yield "budget_status_fails", s

    # The store unreachable: retried with backoff, then STORE_UNAVAILABLE; a release retried
    # until it lands; a cancel withdraws the waiter's claim.
    s = Seed(unavailable_max_wait=400)
    s.at().acquire("/x").at("ms", 1).store_error(0)
    for _ in range(3):
        s.at("due").timeout().at("ms", 1).store_error(0)
    s.at("ms", 5).release(any=4).at("ms", 1).store_error(0, "READONLY")
    s.at("due").timeout().at("ms", 1).reply(0, 1)
    s.at("ms", 5).acquire("/x").at("ms", 1).reply_wait(0, until_ms=900)
    s.at("ms", 10).cancel(1).at("ms", 1).reply(0, 0)
    yield "store_down_retry_cancel", s

    # Reservations: a request that reserves a follow-up, the follow-up spending it, another
    # reservation released early.
    s = Seed(wake=False)
    s.at().acquire("/x", reserve=True).at("ms", 1).reply(0, GO_1_RESERVATION)
    s.at("ms", 1).acquire("/x", prio="high", spend=0).at("ms", 1).reply(0, GO)
    s.at("ms", 1).acquire("/x", reserve=True).at("ms", 1).reply(0, GO_1_RESERVATION)
    s.at("ms", 1).release(1).at("ms", 1).reply(0, 1)
    yield "reservations", s

    # The host's odd moments: NaN, infinite and negative clocks, a huge jump, a reply that is not
    # a list, garbage input, a late process tag, a lost subscription, close.
    s = Seed(fail=True)
    s.at("odd", "nan").acquire("/x").at("odd", "inf").reply_not_array(0, 5)
    s.at("odd", "-inf").acquire("/x").at("odd", "neg").reply_wait(0)
    s.at().subscribed(True).at().subscribed(False).at().woken()
    s.at("huge", 1 << 60).timeout().at("odd", "max").raw_input('{"input":')
    s.at().process_tag("p2").at().acquire("token").at().close().at().store_error(0)
    yield "odd_clocks_and_garbage", s


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "driver_inputs")
    os.makedirs(out, exist_ok=True)
    for name, seed in seeds():
        data = seed.bytes()
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()

//! At most `max` requests in flight.

/// Slots are taken at go and given back at completion, cancellation or lease expiry (the lease is
/// kept by the controller, which knows which request holds which slots).
#[derive(Debug, Clone)]
pub(crate) struct Concurrency {
    max: u64,
    in_flight: u64,
}

impl Concurrency {
    pub(crate) fn new(max: u64) -> Self {
        Concurrency { max, in_flight: 0 }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.max
    }

    pub(crate) fn used(&self) -> u64 {
        self.in_flight
    }

    pub(crate) fn take(&mut self, cost: u64) {
        self.in_flight += cost;
    }

    pub(crate) fn give_back(&mut self, cost: u64) {
        self.in_flight = self.in_flight.saturating_sub(cost);
    }
}

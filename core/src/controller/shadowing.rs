//! Shadow mode's public calls and the hooks through which the enforced controller feeds its
//! shadow (see `crate::shadow`). Without the `shadow` feature the hooks are empty.

use super::TrafficControl;
use crate::event::EventKind;
use crate::request::{Outcome, Request, RequestId, ReservationId};
use crate::time::Timestamp;
#[cfg(feature = "shadow")]
use crate::{config::Config, error::ConfigError, shadow::Shadow, shadow::ShadowReport};

#[cfg(feature = "shadow")]
impl TrafficControl {
    /// Runs `config` beside this controller from `now` on, as a shadow: it sees every request,
    /// outcome and cancellation this controller sees and decides on them, but nothing it decides
    /// is acted on. [`shadow_report`](Self::shadow_report) says what it would have done beside
    /// what this controller did. `None` stops the shadow; a new config starts a fresh one. An
    /// invalid config is refused with the field and the reason, and leaves the current shadow.
    pub fn set_shadow(&mut self, now: Timestamp, config: Option<Config>) -> Result<(), ConfigError> {
        let now = self.advance(now);
        self.shadow = match config {
            Some(config) => Some(Box::new(Shadow::new(now, config)?)),
            None => None,
        };
        Ok(())
    }

    /// The shadow's config, if a shadow runs.
    pub fn shadow_config(&self) -> Option<&Config> {
        self.shadow.as_deref().map(Shadow::config)
    }

    /// What the shadow config would have decided, beside what this controller decided, for the
    /// requests seen since the shadow started; `None` without a shadow.
    pub fn shadow_report(&mut self, now: Timestamp) -> Option<ShadowReport> {
        let now = self.advance(now);
        self.shadow.as_deref_mut().map(|s| s.report(now))
    }
}

// The hooks: each a branch on `None` when no shadow runs.
impl TrafficControl {
    #[inline]
    pub(super) fn shadow_arrive(&mut self, _now: Timestamp, _id: RequestId, _request: &Request) {
        #[cfg(feature = "shadow")]
        if let Some(s) = self.shadow.as_deref_mut() {
            s.arrive(_now, _id, _request);
        }
    }

    #[inline]
    pub(super) fn shadow_went(&mut self, _now: Timestamp, _id: RequestId, _reservations: &[ReservationId]) {
        #[cfg(feature = "shadow")]
        if let Some(s) = self.shadow.as_deref_mut() {
            s.went(_now, _id, _reservations, false);
        }
    }

    #[inline]
    pub(super) fn shadow_completed(
        &mut self,
        _now: Timestamp,
        _id: RequestId,
        _outcome: Option<&Outcome>,
        _last: bool,
    ) {
        #[cfg(feature = "shadow")]
        if let (Some(s), Some(outcome)) = (self.shadow.as_deref_mut(), _outcome) {
            s.completed(_now, _id, outcome, _last);
        }
    }

    /// Called by `emit`: the enforced side's refusals, expiries, cancellations and lost leases.
    #[inline]
    pub(super) fn shadow_event(&mut self, _now: Timestamp, _id: RequestId, _kind: &EventKind) {
        #[cfg(feature = "shadow")]
        if let Some(s) = self.shadow.as_deref_mut() {
            match _kind {
                EventKind::Rejected { .. } | EventKind::Expired { .. } | EventKind::Cancelled => {
                    s.ended(_now, _id, _kind);
                }
                // The response never came back: as far as the shadow knows, it went through.
                EventKind::LeaseExpired { .. } => s.completed(_now, _id, &Outcome::status(200), true),
                _ => {}
            }
        }
    }

    #[inline]
    pub(super) fn shadow_release(&mut self, _now: Timestamp, _reservation: ReservationId) {
        #[cfg(feature = "shadow")]
        if let Some(s) = self.shadow.as_deref_mut() {
            s.release(_now, _reservation);
        }
    }

    #[inline]
    pub(super) fn shadow_sync_budget(
        &mut self,
        _now: Timestamp,
        _limit: &str,
        _tokens_left: i64,
        _refill_in: Option<std::time::Duration>,
    ) {
        #[cfg(feature = "shadow")]
        if let Some(s) = self.shadow.as_deref_mut() {
            s.sync_budget(_now, _limit, _tokens_left, _refill_in);
        }
    }
}

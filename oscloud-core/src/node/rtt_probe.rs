//! The round-trip time of a link as the node measures it, on every kind of
//! link (the session measures one only on lossy links, where its
//! retransmission timer needs it: `Stats::srtt_us` is 0 on reliable
//! streams).
//!
//! The driver sends a Call to the empty name, which names no server: every
//! node answers it at once with ReplyErr `NotFound` (`docs/PROTOCOL.md`
//! §4.2), without asking a server or its access policy. The time until that
//! answer is the link's round trip plus one turn of each side's driver. At
//! most one probe is out at a time, one a second at most, and only on a
//! turn of the driver's loop that has something else to do (so an idle
//! link is probed as often as its keepalive runs). The figure is smoothed
//! as TCP smooths its SRTT (RFC 6298: 7/8 of the old value, 1/8 of the
//! new sample).

use std::time::{Duration, Instant};

use crate::wire::CallId;

/// The name a probe calls: no server has it.
pub(crate) const PROBE_NAME: &str = "";

/// The probe's request: MessagePack nil (a Call carries one value).
pub(crate) const PROBE_PAYLOAD: &[u8] = &[0xc0];

/// The least time between two probes.
const EVERY: Duration = Duration::from_secs(1);

/// A probe not answered after this long is given up (and another sent).
const GIVE_UP: Duration = Duration::from_secs(30);

/// An answered probe: its round trip, and the smoothed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProbeAnswer {
    /// This probe's round trip.
    pub(crate) sample: Duration,
    /// The smoothed round trip, this sample included.
    pub(crate) srtt: Duration,
}

/// One link's probe.
#[derive(Debug, Default)]
pub(crate) struct RttProbe {
    /// The probe out now, and when it was sent.
    pending: Option<(CallId, Instant)>,
    /// When the last probe was sent.
    last: Option<Instant>,
    /// The smoothed round-trip time so far.
    srtt: Option<Duration>,
}

impl RttProbe {
    /// Whether a probe should go out at `now`; the one out now, if it is
    /// to be given up, is returned as the second value.
    pub(crate) fn due(&self, now: Instant) -> (bool, Option<CallId>) {
        match self.pending {
            Some((id, sent)) if now.saturating_duration_since(sent) >= GIVE_UP => (true, Some(id)),
            Some(_) => (false, None),
            None => (
                self.last
                    .is_none_or(|t| now.saturating_duration_since(t) >= EVERY),
                None,
            ),
        }
    }

    /// The probe `id` went out at `now`.
    pub(crate) fn sent(&mut self, id: CallId, now: Instant) {
        self.pending = Some((id, now));
        self.last = Some(now);
    }

    /// Whether `id` is the probe out now.
    pub(crate) fn is_out(&self, id: CallId) -> bool {
        self.pending.is_some_and(|(probe, _)| probe == id)
    }

    /// The reply to call `id` arrived at `now`: the round trips if it
    /// answers the probe, `None` for any other call.
    pub(crate) fn answered(&mut self, id: CallId, now: Instant) -> Option<ProbeAnswer> {
        let (probe, sent) = self.pending?;
        if probe != id {
            return None;
        }
        self.pending = None;
        let sample = now.saturating_duration_since(sent);
        let srtt = match self.srtt {
            None => sample,
            Some(old) => old * 7 / 8 + sample / 8,
        };
        self.srtt = Some(srtt);
        Some(ProbeAnswer { sample, srtt })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_probe_at_a_time_smoothed_and_given_up() {
        let t0 = Instant::now();
        let mut p = RttProbe::default();
        assert_eq!(p.due(t0), (true, None));
        p.sent(CallId(1), t0);
        assert_eq!(p.due(t0 + EVERY * 2), (false, None), "one out at a time");
        assert_eq!(p.answered(CallId(2), t0), None, "another call");
        let ms = Duration::from_millis;
        let srtt = |p: &mut RttProbe, id, at| p.answered(CallId(id), at).map(|a| a.srtt);
        assert_eq!(srtt(&mut p, 1, t0 + ms(8)), Some(ms(8)));
        assert_eq!(p.answered(CallId(1), t0 + ms(9)), None, "answered once");
        assert_eq!(p.due(t0 + ms(500)), (false, None), "not before a second");
        let t1 = t0 + EVERY;
        assert_eq!(p.due(t1), (true, None));
        p.sent(CallId(3), t1);
        assert_eq!(
            p.answered(CallId(3), t1 + ms(16)),
            Some(ProbeAnswer {
                sample: ms(16),
                srtt: ms(9)
            })
        );
        let t2 = t1 + EVERY;
        p.sent(CallId(4), t2);
        assert_eq!(p.due(t2 + GIVE_UP), (true, Some(CallId(4))));
    }
}

//! The audit trail's view of a play: what was actually sent, from which
//! byte and time to which, recorded when the stream ends however it ends.

use crate::audit::ending::End;
use crate::audit::event::{Action as AuditAction, NewEvent};
use crate::audit::trail;
use crate::domain::{Principal, RecordingId};

use super::Purpose;

/// The play's finishing event, given the bytes sent from `from` and how
/// the stream ended.
pub(super) fn play_finished(
    principal: &Principal,
    rec: RecordingId,
    purpose: Purpose,
    from: u64,
    size: u64,
    duration_ms: u64,
) -> impl FnOnce(u64, End) -> NewEvent + Send + 'static {
    let principal = principal.clone();
    move |sent, end| {
        let to = from + sent;
        // Byte offsets to times, proportionally (exact for constant bit
        // rates, an estimate for the others).
        let at = |b: u64| {
            u64::try_from(u128::from(b) * u128::from(duration_ms) / u128::from(size.max(1)))
                .unwrap_or(u64::MAX)
        };
        end.describe(
            trail::by(&principal, AuditAction::PlaybackFinished)
                .recording(rec)
                .detail("purpose", purpose.as_str())
                .detail("from_byte", from)
                .detail("to_byte", to)
                .detail("bytes_sent", sent)
                .detail("from_ms", at(from))
                .detail("to_ms", at(to)),
        )
    }
}

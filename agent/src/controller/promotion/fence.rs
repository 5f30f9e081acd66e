//! Rule 4d of manage mode, `[fence] aws = true`: the agent that won the key after the old
//! primary was lost *without* word that it was down or demoted stops that node's EC2
//! instance (the driver sends `StopInstances` with `Force` and `SkipOsShutdown`, as
//! Pacemaker's `fence_aws`).
//!
//! Why only then: a leader that resigned saying its SQL Server refuses connections, or that
//! demoted its replica for a switchover, left nothing that can write; a crashed, cut-off,
//! frozen or hung one did not say so, and the write lease (rule 2) is what keeps it from
//! writing. The fence adds a second layer for the case that layer's assumptions break (a
//! node paused by its hypervisor past every deadline, with a renewal still in its socket
//! buffer): a stopped instance sends nothing more. The `FAILOVER` does not wait for the
//! stop: the wait before the campaign already covers the write lease, and an instance
//! takes seconds to stop.
//!
//! Whom: the holder of the key whose loss opened the vacancy, and only if it was the last
//! node seen PRIMARY (a winner refused with 41142 leads over a SECONDARY: the next vacancy
//! is its, and it is not stopped); never this node itself. Only the key holder fences
//! (`fence_aws`'s race check: two nodes that cannot see each other must not stop each
//! other), and the driver sends the stop only while the key is provably held.

use super::candidate::MemberRole;
use super::{MemberState, PromotionAction as A, PromotionCause, PromotionController};

impl PromotionController {
    /// Remembers the node the members' states show PRIMARY, if any.
    pub(super) fn note_primary(&mut self, members: &[MemberState]) {
        if let Some(p) = members.iter().find(|m| m.role == MemberRole::Primary) {
            self.last_primary = Some(p.node.clone());
        }
    }

    /// The fence that goes with this agent's `FAILOVER` under the key `token`, won in a
    /// vacancy with `cause` that the key of `vacated_from` opened.
    pub(super) fn fence_on_win(
        &self,
        token: i64,
        cause: PromotionCause,
        vacated_from: Option<String>,
    ) -> Option<A> {
        let node = vacated_from?;
        let unconfirmed = cause == PromotionCause::LeaderLost;
        let was_primary = self.last_primary.as_ref() == Some(&node);
        (self.s.fence && unconfirmed && was_primary && node != self.s.node)
            .then_some(A::Fence { token, node })
    }
}

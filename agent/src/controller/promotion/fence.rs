//! Rule 10 of manage mode, `[fence] aws = true`: the agent whose `FAILOVER` SQL Server
//! accepted, after the old primary was lost *without* word that it was down or demoted,
//! stops that node's EC2 instance (the driver sends `StopInstances` with `Force` and
//! `SkipOsShutdown`, as Pacemaker's `fence_aws`).
//!
//! Why only then: a leader that resigned saying its SQL Server refuses connections, or that
//! demoted its replica for a switchover (whoever the switchover was for), left nothing that
//! can write; a crashed, cut-off, frozen or hung one did not say so, and the write lease
//! (rule 2) is what keeps it from writing. The fence adds a second layer for the case that
//! layer's assumptions break (a node paused by its hypervisor past every deadline, with a
//! renewal still in its socket buffer): a stopped instance sends nothing more. The
//! `FAILOVER` does not wait for the stop: the wait before the campaign already covers the
//! write lease, and an instance takes seconds to stop. The stop follows an *accepted*
//! `FAILOVER`: a winner refused (41142, the failsafe gate, a proof run out) must not leave
//! the AG with its old primary stopped and nobody promoted.
//!
//! Whom ([`Target`]): the holder of a key whose loss the watch *showed* (with its note, if
//! any), if that node served (the members showed it PRIMARY): a winner refused with 41142
//! led over a SECONDARY, and its loss leaves the target as it was, for the next winner. A
//! read that finds no key names nobody (it cannot tell whose key went, or whether with a
//! note). The target is given up once another node is seen PRIMARY (it was that node's to
//! fence) or once this agent has asked for the stop. Never this node itself. Only the key
//! holder fences (`fence_aws`'s race check), and the driver sends the stop only while the
//! key is provably held.

use super::candidate::MemberRole;
use super::{Handoff, MemberState, PromotionAction as A, PromotionController};

impl PromotionController {
    /// Remembers the node the members' states show PRIMARY, if any (the first in node order
    /// that is not the one already remembered: an old primary's state may linger beside its
    /// successor's); another node serving ends any target.
    pub(super) fn note_primary(&mut self, members: &[MemberState]) {
        let primaries = members.iter().filter(|m| m.role == MemberRole::Primary);
        let newest = primaries
            .clone()
            .find(|m| self.last_primary.as_ref() != Some(&m.node))
            .or_else(|| primaries.clone().next());
        if let Some(p) = newest {
            self.last_primary = Some(p.node.clone());
            self.fence_target.take_if(|t| *t != p.node);
        }
    }

    /// The watch showed the key of `holder` go, with `note` (already matched to its term).
    pub(super) fn note_loss(&mut self, holder: Option<String>, note: Option<&Handoff>) {
        let announced = note.is_some_and(|n| n.confirmed_down || n.to.is_some());
        match holder {
            // It said it cannot write: nothing to fence, not even an older target (its
            // own word is newer than whatever that target did before it served).
            Some(h) if announced => {
                self.fence_target.take_if(|t| *t == h);
            }
            Some(h) if self.last_primary.as_ref() == Some(&h) && h != self.s.node => {
                self.fence_target = Some(h);
            }
            // A holder that never served: the target stays for the next winner.
            _ => {}
        }
    }

    /// At a won campaign over a SECONDARY: the stop to ask for once the `FAILOVER` is accepted.
    pub(super) fn fence_on_win(&mut self) {
        self.fence_pending = self.fence_target.clone().filter(|_| self.s.fence);
    }

    /// The `FAILOVER` under `token` was accepted: the stop it carries, if any.
    pub(super) fn fence_after_failover(&mut self, token: i64, out: &mut Vec<A>) {
        if let Some(node) = self.fence_pending.take() {
            self.fence_target = None;
            out.push(A::Fence { token, node });
        }
    }
}

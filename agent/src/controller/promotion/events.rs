//! The vocabulary between manage mode's pure controller and the driver that runs it: what
//! the driver reports ([`PromotionEvent`], each with the instant it saw it) and what the
//! controller asks it to carry out ([`PromotionAction`]). Kept apart from the rules so that
//! either side reads the whole interface in one place.

use std::time::{Duration, Instant};

use super::candidate::{MemberState, Refusal};
use super::commit_quorum::CommitRule;
use super::switchover::Switchover;

/// One poll of the local replica.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalPoll {
    /// The replica answered: what its agent publishes, and the AG's commit rule.
    Up(MemberState, CommitRule),
    /// The TCP connection was refused: nothing listens, the server is not running.
    Refused,
    /// No answer within the deadline (hung, overloaded, or a login problem).
    Unanswered,
}

/// The AG's leader key as etcd holds it: its holder's node name and its create revision,
/// the fencing token logged with every action taken under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderKey {
    pub holder: String,
    pub token: i64,
}

/// The note a leader leaves in the transaction that deletes its key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Handoff {
    pub from: String,
    pub token: i64,
    /// The old primary's SQL Server refused connections: no write lease to wait out.
    pub confirmed_down: bool,
    /// A planned switchover: the old primary was demoted to SECONDARY before this note was
    /// written, and the AG goes to this node, which campaigns at once (`switchover.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PromotionEvent {
    /// A poll of the local replica, taken now.
    Local(LocalPoll),
    /// A poll of the local replica that started at `started`. One that started before the
    /// last role change this agent made had returned may tell the role from before it, and
    /// is ignored: it can reach the controller after the change (it waited in the queue
    /// while the change ran), and a PRIMARY read just before a demotion would make the
    /// demoted primary's agent take the key back (seen in the switchover drill).
    Polled {
        poll: LocalPoll,
        started: Instant,
    },
    /// An `OFFLINE` or `SET (ROLE = SECONDARY)` this agent sent returned.
    RoleChanged,
    /// A resign of the key with `token` got no answer or an error: the key may still be there.
    ResignFailed {
        token: i64,
    },
    /// Every member state in etcd, this node's own included.
    Members(Vec<MemberState>),
    /// The leader key was read (or re-put): who holds it.
    Leader(Option<LeaderKey>),
    /// The leader key with `token` was last written at `revision`, as a read found it or the
    /// watch showed it now: its holder's heartbeat (`beats.rs`).
    Beat {
        token: i64,
        revision: i64,
    },
    /// This agent's heartbeat of the key with `token`, sent at `sent`, was applied: the key
    /// was still this agent's when etcd applied it, later than `sent`.
    Beaten {
        token: i64,
        sent: Instant,
    },
    /// This agent's heartbeat found the key with `token` gone (deposed, expired) or another
    /// term's: this agent no longer holds it.
    BeatRefused {
        token: i64,
    },
    /// A deposal of the key with `token` at `revision` got no answer or an error.
    DeposeFailed {
        token: i64,
        revision: i64,
    },
    /// The key with this token was deleted (resigned, or its lease expired).
    LeaderGone {
        token: i64,
        handoff: Option<Handoff>,
    },
    /// This agent's etcd lease was renewed by a request sent at `sent`.
    KeyRenewed {
        sent: Instant,
        ttl: Duration,
    },
    /// A new etcd lease was granted: nothing is published on it yet.
    LeaseGranted,
    /// A `Publish` or `Unpublish` was carried out, or not (etcd unreachable, no lease).
    Published {
        ok: bool,
    },
    /// This agent's etcd lease expired (or was revoked): every key on it is gone, the
    /// leader key included, and a new lease starts from nothing.
    LeaseLost,
    Campaigned(Campaign),
    /// `FAILOVER` answered: `Ok(sent)`, accepted, sent at `sent` (for the timeline);
    /// `Err(true)` when it was 41142 (not synchronized).
    FailedOver(Result<Instant, bool>),
    WriteLeaseRenewed,
    /// A `SET (REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT = n)` returned, done or not.
    RequiredSynchronizedSet,
    /// Every peer agent acknowledged this agent as the leader with `token`, in a round of
    /// requests sent at `sent`; `from` names the nodes that answered.
    Acknowledged {
        token: i64,
        sent: Instant,
        from: Vec<String>,
    },
    /// This agent acknowledged another agent as the leader with `token`: it must not
    /// promote its own replica before `until`.
    AcknowledgedLeader {
        token: i64,
        until: Instant,
    },
    /// A planned switchover was asked for (`Some`) or the request is gone (`None`).
    SwitchoverAsked(Option<Switchover>),
    /// The ownership controller let go of the addresses (`ok`), or did not in time.
    LetGoDone {
        ok: bool,
    },
    /// `SET (ROLE = SECONDARY)` of the local replica answered.
    Demoted {
        ok: bool,
    },
    /// A campaign, resign or renewal call failed (etcd unreachable): try again later.
    EtcdFailed,
    Deadline,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Campaign {
    /// Won by a transaction sent at `sent`: like a heartbeat, it proves the key held from then.
    Won {
        token: i64,
        sent: Instant,
    },
    Held(LeaderKey),
}

/// What the driver carries out; the variant's name (snake case) is its name in the log.
#[derive(Debug, Clone, PartialEq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum PromotionAction {
    Publish(MemberState),
    Unpublish,
    Campaign,
    Failover {
        token: i64,
        cause: PromotionCause,
    },
    RenewWriteLease {
        token: i64,
    },
    /// `SET (REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT = value)` on the local PRIMARY,
    /// whose catalog reported `reported`.
    SetRequiredSynchronized {
        token: i64,
        value: u32,
        reported: CommitRule,
    },
    Resign {
        token: i64,
        confirmed_down: bool,
        /// A planned switchover's target (the replica was demoted first).
        to: Option<String>,
    },
    /// A planned switchover: the ownership controller lets go of the addresses while the
    /// replica is still PRIMARY, before it is demoted.
    LetGo {
        token: i64,
        to: String,
    },
    /// The switchover stopped before the demotion: the addresses may be taken again.
    MayHold,
    /// `SET (ROLE = SECONDARY)` on the local replica, for a planned switchover.
    Demote {
        token: i64,
    },
    /// The key is lost while the replica is (or may become) PRIMARY: `OFFLINE` it.
    TakeOffline {
        token: i64,
    },
    /// The replica is RESOLVING under another leader: make it a secondary again.
    SetSecondary,
    /// `[fence] aws`: stop the EC2 instance of `node`, the primary whose key went without a
    /// note that it was down or demoted, as this agent (holding the key with `token`) fails
    /// over (`fence.rs`). Sent only while the key is provably held; the `FAILOVER` does not
    /// wait for it.
    Fence {
        token: i64,
        node: String,
    },
    /// The leader key with `token` has not been rewritten since `revision`, seen
    /// `leader_timeout` ago: delete it if that is still so (`beats.rs`).
    Depose {
        token: i64,
        revision: i64,
    },
    Refused(Refusal),
}

/// Why the AG needed a new primary: the `cause` label of `tdsvip_promotions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum PromotionCause {
    /// The old leader resigned saying its SQL Server refuses connections (no wait).
    PrimaryDown,
    /// The leader key went without that word: an agent or node gone, a partition, a hung
    /// SQL Server whose leader gave up (the old write lease was waited out).
    LeaderLost,
    /// A planned switchover to this node (`tdsvip switchover`): the old primary was demoted.
    Switchover,
}

impl PromotionCause {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

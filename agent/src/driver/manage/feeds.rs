//! The three feeders of a manage task: the local replica's poll, this agent's etcd lease
//! (granted, then renewed on a fixed rate, each renewal reported with the instant its
//! request was sent: the only instant the lease is provably alive from), and the AG's keys
//! in etcd (the leader key and the member states), read once and then watched.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tdsvip_etcd::{AgEvent, Etcd, EtcdError, EtcdSettings, Lease, SWITCHOVER_KEY_SUFFIX};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::sql::ReplicaControl;
use crate::controller::promotion::{Handoff, LeaderKey, MemberState, PromotionEvent, Switchover};
use crate::metrics::ManageMetrics;
use crate::switchover_request::SwitchoverRequest;

type Events = mpsc::Sender<PromotionEvent>;

/// The key under the AG's prefix where a resigning leader leaves its [`Handoff`].
pub(super) const HANDOFF: &str = "handoff";
const LEADER: &str = "leader";
const MEMBERS: &str = "members/";

/// Between two attempts to reach etcd when it does not answer.
const RETRY: Duration = Duration::from_millis(200);

pub(super) fn spawn_poll(
    mut control: ReplicaControl,
    every: Duration,
    tx: Events,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let started = std::time::Instant::now();
            let poll = control.poll().await;
            if tx
                .send(PromotionEvent::Polled { poll, started })
                .await
                .is_err()
            {
                break;
            }
        }
    });
}

/// Connects to etcd, retrying until it answers or the agent stops.
pub(super) async fn connect(settings: &EtcdSettings, cancel: &CancellationToken) -> Option<Etcd> {
    let mut logged = false;
    loop {
        match Etcd::connect(settings).await {
            Ok(etcd) => {
                tracing::info!(endpoints = ?settings.endpoints, "manage: connected to etcd");
                return Some(etcd);
            }
            Err(e) if !logged => {
                tracing::warn!(error = %e, "manage: etcd unreachable; retrying (no promotion until it answers)");
                logged = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// This agent's etcd lease: what [`LeaseFeed::spawn`] needs.
pub(super) struct LeaseFeed {
    pub etcd: Arc<Etcd>,
    pub ttl: Duration,
    pub every: Duration,
    /// Revoke the lease when the agent stops (it releases its addresses).
    pub revoke_at_stop: bool,
    /// Where the actor finds the current lease.
    pub lease_tx: watch::Sender<Option<Lease>>,
    /// When the last answered renewal was sent, as it happens (the controller hears of it
    /// through the event queue, which waits while an action runs).
    pub renewed_tx: watch::Sender<Option<std::time::Instant>>,
    pub metrics: ManageMetrics,
    pub ag: String,
}

impl LeaseFeed {
    /// Grants the lease and renews it every `every`; a lease etcd says is gone is reported
    /// ([`PromotionEvent::LeaseLost`]) and replaced by a new one.
    pub(super) fn spawn(self, tx: Events, cancel: CancellationToken) {
        let LeaseFeed {
            etcd,
            ttl,
            every,
            revoke_at_stop,
            lease_tx,
            renewed_tx,
            metrics,
            ag,
        } = self;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut lease: Option<Lease> = None;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let event = match &lease {
                    None => match etcd.grant(ttl).await {
                        Ok(l) => {
                            tracing::info!(lease = l.id, "manage: etcd lease granted");
                            lease = Some(l.clone());
                            // The actor sees the lease before the controller hears of it.
                            let _ = lease_tx.send(Some(l));
                            PromotionEvent::LeaseGranted
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "manage: cannot grant an etcd lease");
                            continue;
                        }
                    },
                    Some(l) => match etcd.renew(l).await {
                        Ok(r) => {
                            metrics.observe_key_renewal(&ag, Some(r.answered - r.sent));
                            renewed_tx.send_replace(Some(r.sent));
                            PromotionEvent::KeyRenewed {
                                sent: r.sent,
                                ttl: r.ttl,
                            }
                        }
                        Err(EtcdError::LeaseExpired { .. }) => {
                            tracing::warn!(
                                lease = l.id,
                                "manage: the etcd lease expired; every key on it is gone"
                            );
                            lease = None;
                            let _ = lease_tx.send(None);
                            PromotionEvent::LeaseLost
                        }
                        Err(e) => {
                            metrics.observe_key_renewal(&ag, None);
                            tracing::debug!(error = %e, "manage: lease renewal failed");
                            continue;
                        }
                    },
                };
                if tx.send(event).await.is_err() {
                    break;
                }
            }
            if let Some(l) = lease.filter(|_| revoke_at_stop) {
                // An agent that stops and releases should not make the candidates wait for
                // its TTL too (best effort). One that keeps its addresses for a restart leaves
                // its key: the next agent resigns it at once (`PromotionController`).
                let _ = etcd.revoke(&l).await;
            }
        });
    }
}

/// Reads the AG's keys and watches them. A watch that fails is opened again from the revision
/// after the last one it reported, so that every change in between still arrives in order
/// (a deposal's wait counts from the last heartbeat seen only if the deletion arrives through
/// the watch, `beats.rs`); only when etcd compacted those revisions away are the keys read
/// afresh.
pub(super) fn spawn_watch(etcd: Arc<Etcd>, ag: String, tx: Events, cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut resume = None;
        loop {
            let result = tokio::select! {
                _ = cancel.cancelled() => break,
                r = watch_once(&etcd, &ag, &tx, &mut resume) => r,
            };
            match result {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(%ag, error = %e, "manage: watching the AG's keys failed; watching again from the last change seen")
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    });
}

/// What the watcher knows of the AG's keys, to turn single key events into the
/// controller's whole-picture events.
#[derive(Clone)]
struct AgKeys {
    leader: Option<LeaderKey>,
    members: BTreeMap<String, MemberState>,
}

impl AgKeys {
    fn members_event(&self) -> PromotionEvent {
        PromotionEvent::Members(self.members.values().cloned().collect())
    }
}

/// Where a watch that ended picks up: the keys as it knew them, and the last revision it
/// reported (or was confirmed at).
struct Resume {
    keys: AgKeys,
    revision: i64,
}

/// `Ok(())` when the controller is gone; `Err` when etcd failed (`resume` then says where
/// to pick up).
async fn watch_once(
    etcd: &Etcd,
    ag: &str,
    tx: &Events,
    resume: &mut Option<Resume>,
) -> Result<(), EtcdError> {
    let (mut stream, mut keys, mut revision) = match resume.take() {
        Some(r) => match etcd.watch_ag(ag, Some(r.revision + 1)).await {
            // A store whose revision went back (restored from a snapshot) would leave a watch
            // from the future waiting in silence: read afresh instead.
            Ok(stream) if stream.confirmed_revision() >= r.revision => (stream, r.keys, r.revision),
            Ok(_) => {
                tracing::warn!(%ag, "manage: etcd's revision went back; reading the AG's keys afresh");
                match read_and_watch(etcd, ag, tx).await? {
                    Some(fresh) => fresh,
                    None => return Ok(()),
                }
            }
            Err(e @ EtcdError::WatchCompacted { .. }) => {
                tracing::warn!(%ag, error = %e, "manage: the AG's keys changed beyond etcd's history; reading them afresh");
                match read_and_watch(etcd, ag, tx).await? {
                    Some(fresh) => fresh,
                    None => return Ok(()),
                }
            }
            Err(e) => {
                *resume = Some(r);
                return Err(e);
            }
        },
        None => match read_and_watch(etcd, ag, tx).await? {
            Some(fresh) => fresh,
            None => return Ok(()),
        },
    };
    loop {
        let event = match stream.next().await {
            Ok(event) => event,
            Err(e) => {
                *resume = resume_after(&e, keys, revision);
                return Err(e);
            }
        };
        // An event whose reads fail (the handoff note of a deletion) is seen again: the
        // watch picks up before it, with the keys as they were, so that the deletion comes
        // back with its note (a fresh read would lose the note, and with it whether the old
        // primary said it cannot write).
        let before = keys.clone();
        let seen = event_revision(&event);
        let outs = match apply(etcd, ag, &mut keys, event).await {
            Ok(outs) => outs,
            Err(e) => {
                // From the revision before it: a transaction's events share one revision
                // (a resign's note and deletion), and those already applied replay harmlessly.
                *resume = resume_after(&e, before, revision.min(seen - 1));
                return Err(e);
            }
        };
        revision = revision.max(seen);
        for out in outs {
            if tx.send(out).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// Where a watch that failed with `error`, having reported up to `revision`, picks up:
/// from there, unless etcd compacted those revisions (etcd 3.4 confirms a watch from a
/// compacted revision, then cancels it: picking up from there again fails the same way,
/// forever) or the revision is unknown (a confirmation without a header would replay
/// everything): then `None`, and the keys are read afresh.
fn resume_after(error: &EtcdError, keys: AgKeys, revision: i64) -> Option<Resume> {
    let compacted = matches!(error, EtcdError::WatchCompacted { .. });
    (!compacted && revision > 0).then_some(Resume { keys, revision })
}

fn event_revision(event: &AgEvent) -> i64 {
    match event {
        AgEvent::Put { mod_revision, .. } | AgEvent::Delete { mod_revision, .. } => *mod_revision,
    }
}

/// Opens a watch from now, reads the keys and tells the controller what they say; `None`
/// when the controller is gone.
async fn read_and_watch(
    etcd: &Etcd,
    ag: &str,
    tx: &Events,
) -> Result<Option<(tdsvip_etcd::AgWatch, AgKeys, i64)>, EtcdError> {
    // The watch starts first: a change between the reads and the watch is seen twice,
    // never missed.
    let stream = etcd.watch_ag(ag, None).await?;
    let revision = stream.confirmed_revision();
    let read = etcd.leader(ag).await?;
    let beat = read.as_ref().map(|k| PromotionEvent::Beat {
        token: k.create_revision,
        revision: k.mod_revision,
    });
    let mut keys = AgKeys {
        leader: read.map(|k| LeaderKey {
            holder: k.value,
            token: k.create_revision,
        }),
        members: BTreeMap::new(),
    };
    for m in etcd.members(ag).await? {
        if let Some(state) = parse_member(&m.node, &m.value) {
            keys.members.insert(m.node, state);
        }
    }
    // A request written or withdrawn while no watch was open is seen here.
    let asked = etcd
        .get(&format!("{ag}/{SWITCHOVER_KEY_SUFFIX}"))
        .await?
        .and_then(|v| parse_switchover(&v.value));
    let first = [
        Some(PromotionEvent::Leader(keys.leader.clone())),
        beat,
        Some(keys.members_event()),
        Some(PromotionEvent::SwitchoverAsked(asked)),
    ];
    for e in first.into_iter().flatten() {
        if tx.send(e).await.is_err() {
            return Ok(None);
        }
    }
    Ok(Some((stream, keys, revision)))
}

/// The controller's events for one key event: a leader key rewritten by its holder's
/// heartbeat is only a [`PromotionEvent::Beat`], a new one is also a `Leader`.
async fn apply(
    etcd: &Etcd,
    ag: &str,
    keys: &mut AgKeys,
    event: AgEvent,
) -> Result<Vec<PromotionEvent>, EtcdError> {
    Ok(match event {
        AgEvent::Put {
            key_suffix,
            value,
            create_revision,
            mod_revision,
        } if key_suffix == LEADER => {
            let k = LeaderKey {
                holder: value,
                token: create_revision,
            };
            let beat = PromotionEvent::Beat {
                token: create_revision,
                revision: mod_revision,
            };
            if keys.leader.as_ref() == Some(&k) {
                return Ok(vec![beat]);
            }
            keys.leader = Some(k.clone());
            vec![PromotionEvent::Leader(Some(k)), beat]
        }
        AgEvent::Delete {
            key_suffix,
            mod_revision,
        } if key_suffix == LEADER => {
            // The watch starts before the reads, so a deletion older than the key the read
            // found may be replayed after it: it cannot have deleted that key.
            let Some(old) = keys.leader.take_if(|k| k.token < mod_revision) else {
                return Ok(Vec::new());
            };
            // Only the note written in the deletion's own transaction (a resign writes both
            // at one revision): a deletion replayed later (a resumed or lagging watch), or a
            // deposal, which writes none, must not pick up an older term's note, whose
            // "confirmed down" or "to" would end a wait the deleted term still needs.
            let handoff = etcd
                .get(&format!("{ag}/{HANDOFF}"))
                .await?
                .filter(|v| v.mod_revision == mod_revision)
                .and_then(|v| serde_json::from_str::<Handoff>(&v.value).ok())
                .filter(|h| h.token == old.token);
            vec![PromotionEvent::LeaderGone {
                token: old.token,
                handoff,
            }]
        }
        AgEvent::Put {
            key_suffix, value, ..
        } if key_suffix == SWITCHOVER_KEY_SUFFIX => {
            vec![PromotionEvent::SwitchoverAsked(parse_switchover(&value))]
        }
        AgEvent::Delete { key_suffix, .. } if key_suffix == SWITCHOVER_KEY_SUFFIX => {
            vec![PromotionEvent::SwitchoverAsked(None)]
        }
        AgEvent::Put {
            key_suffix, value, ..
        } => {
            let Some(node) = key_suffix.strip_prefix(MEMBERS) else {
                return Ok(Vec::new());
            };
            match parse_member(node, &value) {
                Some(state) => keys.members.insert(node.to_owned(), state),
                None => keys.members.remove(node),
            };
            vec![keys.members_event()]
        }
        AgEvent::Delete { key_suffix, .. } => {
            let Some(node) = key_suffix.strip_prefix(MEMBERS) else {
                return Ok(Vec::new());
            };
            keys.members.remove(node);
            vec![keys.members_event()]
        }
    })
}

/// The switchover request's value; one that does not parse is no request, and says so.
fn parse_switchover(value: &str) -> Option<Switchover> {
    match SwitchoverRequest::from_json(value) {
        Ok(r) => Some(Switchover {
            to: r.to,
            term: r.term,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "manage: the switchover request does not parse; ignored");
            None
        }
    }
}

/// A member key's value; one that does not parse (another version's agent, a hand edit)
/// counts as no report, and says so.
fn parse_member(node: &str, value: &str) -> Option<MemberState> {
    match serde_json::from_str::<MemberState>(value) {
        Ok(state) if state.node == node => Some(state),
        Ok(state) => {
            tracing::warn!(key = node, named = %state.node, "manage: a member key names another node; ignored");
            None
        }
        Err(e) => {
            tracing::warn!(key = node, error = %e, "manage: a member key does not parse; ignored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::promotion::{CommitMode, MemberRole};

    #[test]
    fn a_member_key_is_read_only_under_its_own_name() {
        let state = MemberState {
            node: "b".into(),
            role: MemberRole::Secondary,
            commit_mode: CommitMode::Synchronous,
            sequence_number: 4,
            synchronized: true,
            voters: 3,
        };
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(
            json,
            r#"{"node":"b","role":"secondary","commit_mode":"synchronous","sequence_number":4,"synchronized":true,"voters":3}"#
        );
        assert_eq!(parse_member("b", &json), Some(state));
        assert_eq!(parse_member("c", &json), None, "a key naming another node");
        assert_eq!(
            parse_member("b", "{\"node\":\"b\"}"),
            None,
            "fields missing"
        );
        assert_eq!(parse_member("b", "not json"), None);
    }

    #[test]
    fn a_watch_is_resumed_after_its_last_revision_unless_etcd_compacted_it() {
        let keys = || AgKeys {
            leader: None,
            members: BTreeMap::new(),
        };
        let compacted = EtcdError::WatchCompacted {
            endpoints: "http://127.0.0.1:2379".into(),
            prefix: "/tdsvip/AG1/".into(),
            compact_revision: 40,
        };
        assert!(resume_after(&compacted, keys(), 12).is_none());
        let ended = EtcdError::WatchEnded {
            endpoints: "http://127.0.0.1:2379".into(),
            prefix: "/tdsvip/AG1/".into(),
            reason: "the member went away".into(),
        };
        assert_eq!(
            resume_after(&ended, keys(), 12).map(|r| r.revision),
            Some(12)
        );
        assert!(
            resume_after(&ended, keys(), 0).is_none(),
            "an unknown revision"
        );
    }

    #[test]
    fn a_handoff_note_reads_back() {
        let note = Handoff {
            from: "a".into(),
            token: 12,
            confirmed_down: true,
            to: None,
        };
        let json = serde_json::to_string(&note).unwrap();
        assert_eq!(json, r#"{"from":"a","token":12,"confirmed_down":true}"#);
        assert_eq!(serde_json::from_str::<Handoff>(&json).unwrap(), note);
    }
}

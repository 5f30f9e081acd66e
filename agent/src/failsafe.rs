//! Rule 5's peer side, where the HTTP listener and a manage task meet. A leader whose etcd
//! key renewals fail asks every peer agent `POST /failsafe?ag=AG&leader=NODE&term=T`; a
//! peer that acknowledges promises to promote nothing for `ack_hold`
//! (`controller::promotion::PromotionSettings::ack_hold`, the README's "Manage mode",
//! rule 5). The promise is kept here, under one lock: an acknowledgement and this node's own
//! `FAILOVER` exclude each other. Either the acknowledgement came first, and the manage task
//! withholds its `FAILOVER` until the hold ends ([`FailsafeGate::begin_failover`]), or the
//! `FAILOVER` came first, and the leader asking is refused (this node leads now). The
//! controller also hears of every acknowledgement ([`FailsafeGate::subscribe`]) so that it
//! does not campaign in vain; the lock is what makes the promise hold when that news is late.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The answer to `POST /failsafe`: this node's promise, in the one wire type its leader
/// reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailsafeAck {
    /// The node that acknowledged.
    pub node: String,
    pub ag: String,
    pub leader: String,
    pub term: i64,
    /// How long from its answer this node promotes nothing.
    pub hold_ms: u64,
}

/// An acknowledgement this node gave: the leader's term and the end of the hold.
pub type Acknowledgement = Option<(i64, Instant)>;

#[derive(Debug, Default)]
struct GateState {
    /// This node holds the key, promotes, or its replica is PRIMARY.
    leading: bool,
    /// The term of the leader key as this node's manage task last read it.
    leader_term: Option<i64>,
    acknowledged: Acknowledgement,
}

/// One AG's gate on this node.
#[derive(Debug)]
pub struct FailsafeGate {
    node: String,
    ag: String,
    hold: Duration,
    state: Mutex<GateState>,
    news: watch::Sender<Acknowledgement>,
}

impl FailsafeGate {
    /// A new gate holds back this node's own `FAILOVER` for `hold` from `now`, as if it had
    /// just acknowledged a leader: the promises of a previous process of this agent died with
    /// it, and a restart must not cut them short.
    pub fn new(node: &str, ag: &str, hold: Duration, now: Instant) -> FailsafeGate {
        let state = GateState {
            acknowledged: Some((0, now + hold)),
            ..GateState::default()
        };
        FailsafeGate {
            node: node.to_owned(),
            ag: ag.to_owned(),
            hold,
            state: Mutex::new(state),
            news: watch::channel(None).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        // A panic while holding this lock cannot leave the state half-written (every
        // change is one assignment): the state is still good to read.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `leader` (term `term`) asks this node to acknowledge it: the promise, or why not.
    pub fn acknowledge(
        &self,
        leader: &str,
        term: i64,
        now: Instant,
    ) -> Result<FailsafeAck, String> {
        if leader == self.node {
            return Err(format!("{leader} is this node"));
        }
        let mut s = self.lock();
        if s.leading {
            return Err(format!(
                "{} leads AG {} itself (or is promoting its replica)",
                self.node, self.ag
            ));
        }
        if let Some(known) = s.leader_term.filter(|&k| k > term) {
            return Err(format!(
                "term {term} is over: {} has seen the leader key of term {known}",
                self.node
            ));
        }
        let until = now + self.hold;
        let longest = match s.acknowledged {
            Some((_, u)) if u > until => u,
            _ => until,
        };
        s.acknowledged = Some((term, longest));
        drop(s);
        self.news.send_replace(Some((term, longest)));
        Ok(FailsafeAck {
            node: self.node.clone(),
            ag: self.ag.clone(),
            leader: leader.to_owned(),
            term,
            hold_ms: self.hold.as_millis() as u64,
        })
    }

    /// Right before this node's `FAILOVER`: `Err(until)` while an acknowledgement holds it
    /// back; otherwise this node leads from now on (acknowledgements are refused).
    ///
    /// A `planned` switchover is not held back: it follows a leader that held its key in
    /// etcd and was the one writable primary until it demoted itself; a leader this node
    /// promised anything to lost its key before that one was won, and could not renew its
    /// write lease since (the winner refuses to acknowledge it).
    pub fn begin_failover(&self, now: Instant, planned: bool) -> Result<(), Instant> {
        let mut s = self.lock();
        if let Some((_, until)) = s.acknowledged.filter(|&(_, u)| now < u && !planned) {
            return Err(until);
        }
        s.leading = true;
        Ok(())
    }

    /// What the manage task knows after each event: whether this node leads, and the term
    /// of the leader key it last read.
    pub fn update(&self, leading: bool, leader_term: Option<i64>) {
        let mut s = self.lock();
        s.leading = leading;
        s.leader_term = leader_term.max(s.leader_term);
    }

    /// The acknowledgements this node gives, as they are given.
    pub fn subscribe(&self) -> watch::Receiver<Acknowledgement> {
        self.news.subscribe()
    }

    /// A confirmed-down handoff of `term` ended the promise (its SQL Server writes nothing).
    pub fn release(&self, term: i64) {
        self.lock().acknowledged.take_if(|(t, _)| *t == term);
    }
}

/// Every managed AG's gate on this node, by AG name; empty in follow mode.
#[derive(Debug, Clone, Default)]
pub struct FailsafeGates(BTreeMap<String, Arc<FailsafeGate>>);

impl FailsafeGates {
    pub fn insert(&mut self, gate: FailsafeGate) -> Arc<FailsafeGate> {
        let gate = Arc::new(gate);
        self.0.insert(gate.ag.clone(), gate.clone());
        gate
    }

    pub fn get(&self, ag: &str) -> Option<&FailsafeGate> {
        self.0.get(ag).map(|g| g.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_millis(2400);

    #[test]
    fn an_acknowledgement_withholds_the_failover_until_the_hold_ends() {
        let g = FailsafeGate::new("b", "ag1", HOLD, Instant::now() - HOLD);
        let t0 = Instant::now();
        let ack = g.acknowledge("a", 5, t0).unwrap();
        assert_eq!(ack.hold_ms, 2400);
        assert_eq!(*g.subscribe().borrow(), Some((5, t0 + HOLD)));
        assert_eq!(
            g.begin_failover(t0 + Duration::from_millis(2399), false),
            Err(t0 + HOLD)
        );
        assert_eq!(g.begin_failover(t0 + HOLD, false), Ok(()));
        let refused = g.acknowledge("a", 5, t0 + HOLD).unwrap_err();
        assert!(refused.contains("leads AG ag1"), "{refused}");
    }

    #[test]
    fn a_node_that_leads_or_knows_a_newer_term_refuses() {
        let g = FailsafeGate::new("b", "ag1", HOLD, Instant::now() - HOLD);
        let t0 = Instant::now();
        g.update(false, Some(7));
        let e = g.acknowledge("a", 5, t0).unwrap_err();
        assert!(e.contains("term 5 is over") && e.contains("term 7"), "{e}");
        assert!(g.acknowledge("a", 7, t0).is_ok());
        g.update(false, Some(3));
        assert!(
            g.acknowledge("a", 6, t0).is_err(),
            "an older read does not lower the term known"
        );
        g.update(true, Some(7));
        assert!(g.acknowledge("a", 7, t0).is_err());
        assert!(g.acknowledge("b", 9, t0).unwrap_err().contains("this node"));
    }

    #[test]
    fn an_earlier_hold_is_never_shortened_and_a_confirmed_handoff_releases_it() {
        let g = FailsafeGate::new("b", "ag1", HOLD, Instant::now() - HOLD);
        let t0 = Instant::now();
        g.acknowledge("a", 5, t0 + Duration::from_secs(1)).unwrap();
        g.acknowledge("a", 5, t0).unwrap();
        let until = t0 + Duration::from_secs(1) + HOLD;
        assert_eq!(g.begin_failover(t0 + HOLD, false), Err(until));
        g.release(4);
        assert_eq!(g.begin_failover(t0 + HOLD, false), Err(until));
        g.release(5);
        assert_eq!(g.begin_failover(t0 + HOLD, false), Ok(()));
    }

    #[test]
    fn a_new_gate_holds_back_as_if_its_predecessor_had_just_promised() {
        let t0 = Instant::now();
        let g = FailsafeGate::new("b", "ag1", HOLD, t0);
        assert_eq!(g.begin_failover(t0 + HOLD / 2, false), Err(t0 + HOLD));
        g.release(5);
        assert_eq!(
            g.begin_failover(t0 + HOLD / 2, false),
            Err(t0 + HOLD),
            "no leader's note ends it"
        );
        assert_eq!(g.begin_failover(t0 + HOLD, false), Ok(()));
    }

    #[test]
    fn a_planned_switchover_is_not_held_back() {
        let t0 = Instant::now();
        let g = FailsafeGate::new("b", "ag1", HOLD, t0);
        assert_eq!(g.begin_failover(t0, true), Ok(()));
        assert!(g.acknowledge("a", 5, t0).is_err(), "this node leads now");
    }

    #[test]
    fn the_answer_reads_back_as_golden_json() {
        let ack = FailsafeAck {
            node: "b".into(),
            ag: "ag1".into(),
            leader: "a".into(),
            term: 12,
            hold_ms: 2400,
        };
        let json = serde_json::to_string(&ack).unwrap();
        assert_eq!(
            json,
            r#"{"node":"b","ag":"ag1","leader":"a","term":12,"hold_ms":2400}"#
        );
        assert_eq!(serde_json::from_str::<FailsafeAck>(&json).unwrap(), ack);
    }
}

//! Watching everything under `{prefix}/{ag}/`: leader key changes, member states, notes. The
//! agent reads the current state, then watches from the revision after it, so it misses
//! nothing in between; a watch whose revisions were compacted away, or that etcd cancelled,
//! ends with an error and the agent starts over from a fresh read. So does a watch whose
//! member the client left after another call to it failed (`pin`): a member cut off without
//! a word would otherwise leave the watch waiting for events that never come.

use std::collections::VecDeque;

use etcd_client::proto::PbEvent;
use etcd_client::{WatchOptions, WatchResponse, WatchStream};

use crate::answer;
use crate::error::Target;
use crate::{Etcd, EtcdError};

/// One change under an AG's directory. `key_suffix` is the key after `{prefix}/{ag}/`
/// (`leader`, `members/{node}`, a note's suffix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgEvent {
    Put {
        key_suffix: String,
        value: String,
        mod_revision: i64,
        create_revision: i64,
    },
    /// Deleted (resigned, or its lease expired); `mod_revision` is the deletion's revision.
    Delete {
        key_suffix: String,
        mod_revision: i64,
    },
}

/// An open watch of one AG. Every error it returns ends it: later calls say it has ended.
#[derive(Debug)]
pub struct AgWatch {
    stream: WatchStream,
    /// The member the watch is open on, and where the client's pin is.
    member: usize,
    pin: tokio::sync::watch::Receiver<usize>,
    dir: String,
    target: Target,
    pending: VecDeque<AgEvent>,
    ended: bool,
    /// The store's revision when etcd confirmed the watch.
    confirmed: i64,
}

/// etcd's mvccpb.Event.EventType values.
const EVENT_PUT: i32 = 0;
const EVENT_DELETE: i32 = 1;

impl Etcd {
    /// Watches `{prefix}/{ag}/` from `from_revision` (`None`: from now). Returns once etcd has
    /// confirmed the watch (within `request_timeout`), so no later write is missed.
    pub async fn watch_ag(
        &self,
        ag: &str,
        from_revision: Option<i64>,
    ) -> Result<AgWatch, EtcdError> {
        let dir = self.keys.ag_dir(ag)?;
        let operation = format!("watch {dir}");
        let mut options = WatchOptions::new().with_prefix();
        if let Some(revision) = from_revision {
            options = options.with_start_revision(revision);
        }
        let member = self.members.pinned();
        let pin = self.members.moves();
        let start = |c: etcd_client::Client| {
            let dir = dir.clone();
            async move {
                let mut stream = c.watch_client().watch(dir, Some(options)).await?;
                let created = stream.message().await?;
                Ok::<_, etcd_client::Error>((stream, created))
            }
        };
        let (stream, created) = self.bounded(&operation, start).await?;
        let mut watch = AgWatch {
            stream,
            member,
            pin,
            dir,
            target: self.target.clone(),
            pending: VecDeque::new(),
            ended: false,
            confirmed: 0,
        };
        match created {
            Some(answer) if answer.created() => {
                watch.confirmed = answer.header().map_or(0, |h| h.revision());
                watch.take(answer)?
            }
            Some(_) => return Err(watch.end("the first answer did not confirm the watch")),
            None => return Err(watch.end("closed before it was confirmed")),
        }
        Ok(watch)
    }
}

impl AgWatch {
    /// The store's revision when etcd confirmed the watch: a watch from now reports every
    /// change after it, so a watch opened again from the revision after it (or after the
    /// last change reported) misses nothing in between.
    pub fn confirmed_revision(&self) -> i64 {
        self.confirmed
    }

    /// The next change. Waits as long as nothing changes: bound it where needed.
    pub async fn next(&mut self) -> Result<AgEvent, EtcdError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            if self.ended {
                return Err(self.end("it ended earlier"));
            }
            let member = self.member;
            let answer = tokio::select! {
                answer = self.stream.message() => Some(answer),
                _ = self.pin.wait_for(|p| *p != member) => None,
            };
            let Some(answer) = answer else {
                return Err(self.end("the client left its member for another"));
            };
            let answer = match answer {
                Ok(Some(answer)) => answer,
                Ok(None) => return Err(self.end("etcd closed the stream")),
                Err(e) => {
                    self.ended = true;
                    return Err(self.target.failure(&format!("watch {}", self.dir), e));
                }
            };
            self.take(answer)?;
        }
    }

    /// Queues the events of one answer, or ends the watch if etcd cancelled it.
    fn take(&mut self, answer: WatchResponse) -> Result<(), EtcdError> {
        if answer.compact_revision() > 0 {
            self.ended = true;
            return Err(EtcdError::WatchCompacted {
                endpoints: self.target.endpoints.clone(),
                prefix: self.dir.clone(),
                compact_revision: answer.compact_revision(),
            });
        }
        if answer.canceled() {
            let reason = match answer.cancel_reason() {
                "" => "cancelled by etcd".to_owned(),
                reason => format!("cancelled by etcd: {reason}"),
            };
            return Err(self.end(&reason));
        }
        for event in answer.events() {
            let event = ag_event(&self.dir, &event.0).map_err(|odd| self.unexpected(odd))?;
            self.pending.push_back(event);
        }
        Ok(())
    }

    fn end(&mut self, reason: &str) -> EtcdError {
        self.ended = true;
        EtcdError::WatchEnded {
            endpoints: self.target.endpoints.clone(),
            prefix: self.dir.clone(),
            reason: reason.to_owned(),
        }
    }

    fn unexpected(&mut self, odd: answer::Odd) -> EtcdError {
        self.ended = true;
        self.target.unexpected(&format!("watch {}", self.dir), odd)
    }
}

fn ag_event(dir: &str, event: &PbEvent) -> Result<AgEvent, answer::Odd> {
    let kv = event.kv.as_ref().ok_or("event without a key")?;
    match event.r#type {
        EVENT_PUT => {
            let kv = answer::text_key_value(kv)?;
            Ok(AgEvent::Put {
                key_suffix: answer::suffix_after(dir, &kv.key)?,
                value: kv.value,
                mod_revision: kv.mod_revision,
                create_revision: kv.create_revision,
            })
        }
        EVENT_DELETE => {
            let key = String::from_utf8(kv.key.clone()).map_err(|e| format!("key: {e}"))?;
            Ok(AgEvent::Delete {
                key_suffix: answer::suffix_after(dir, &key)?,
                mod_revision: kv.mod_revision,
            })
        }
        other => Err(format!("event of unknown type {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::PbKeyValue;

    fn event(kind: i32, key: &str, value: &str) -> PbEvent {
        PbEvent {
            r#type: kind,
            kv: Some(PbKeyValue {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                create_revision: 3,
                mod_revision: 8,
                version: 1,
                lease: 0,
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn events_carry_the_key_below_the_ag_directory() {
        let put = ag_event("/t/ag/", &event(EVENT_PUT, "/t/ag/members/n1", "{}")).unwrap();
        assert_eq!(
            put,
            AgEvent::Put {
                key_suffix: "members/n1".to_owned(),
                value: "{}".to_owned(),
                mod_revision: 8,
                create_revision: 3,
            }
        );
        let delete = ag_event("/t/ag/", &event(EVENT_DELETE, "/t/ag/leader", "")).unwrap();
        assert_eq!(
            delete,
            AgEvent::Delete {
                key_suffix: "leader".to_owned(),
                mod_revision: 8,
            }
        );
    }

    #[test]
    fn an_unknown_event_type_or_a_missing_key_is_an_error_not_a_panic() {
        assert!(
            ag_event("/t/ag/", &event(7, "/t/ag/leader", ""))
                .unwrap_err()
                .contains("type 7")
        );
        let mut no_kv = event(EVENT_PUT, "/t/ag/leader", "");
        no_kv.kv = None;
        assert!(ag_event("/t/ag/", &no_kv).is_err());
        assert!(ag_event("/t/ag/", &event(EVENT_PUT, "/t/other/leader", "")).is_err());
    }
}

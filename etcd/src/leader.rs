//! The leader key of one availability group, `{prefix}/{ag}/leader`: who owns the overlay IP.
//! Its create_revision is the owner's token: a campaign creates the key under the owner's
//! lease (one transaction, so two agents campaigning at once get one winner); resigning and
//! heartbeats act only while the key still carries that token, so an agent whose lease expired
//! and whose key someone else recreated can never delete or rewrite the new owner's key. A
//! challenger deposes a holder that stopped beating only if no heartbeat landed since the one
//! it saw (`depose`). An operator's switchover request is addressed to one leader the same
//! way: by its token.

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};

use crate::answer::{self, TextKeyValue};
use crate::{Etcd, EtcdError, Lease};

/// The outcome of a campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Campaign {
    /// The key was created with our value and lease; `create_revision` is our token.
    Won { create_revision: i64 },
    /// Someone holds the key.
    Held {
        value: String,
        create_revision: i64,
        mod_revision: i64,
    },
}

/// The leader key as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderKey {
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

impl From<TextKeyValue> for LeaderKey {
    fn from(kv: TextKeyValue) -> LeaderKey {
        LeaderKey {
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            lease: kv.lease,
        }
    }
}

/// "The key exists and still carries `token`" (a missing key has create_revision 0, so the
/// version check keeps a token of 0 from matching a missing key).
fn still_ours(key: &str, token: i64) -> [Compare; 2] {
    [
        Compare::create_revision(key, CompareOp::Equal, token),
        Compare::version(key, CompareOp::Greater, 0),
    ]
}

impl Etcd {
    /// Creates the leader key of `ag` with `value` under `lease` unless it exists; one
    /// transaction. A lease that is gone is `EtcdError::LeaseExpired`.
    pub async fn campaign(
        &self,
        ag: &str,
        value: &str,
        lease: &Lease,
    ) -> Result<Campaign, EtcdError> {
        let key = self.keys.leader(ag)?;
        let operation = format!("campaign for {key}");
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                value,
                Some(PutOptions::new().with_lease(lease.id)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let answer = self.txn(&operation, txn, lease.id).await?;
        let odd = |odd| self.target.unexpected(&operation, odd);
        if answer.succeeded {
            let create_revision = answer::revision(answer.header.as_ref()).map_err(odd)?;
            return Ok(Campaign::Won { create_revision });
        }
        let holder = answer::txn_range(&answer, 0)
            .and_then(answer::at_most_one)
            .and_then(|kv| kv.ok_or_else(|| "key exists but the get found none".to_owned()))
            .map_err(odd)?;
        Ok(Campaign::Held {
            value: holder.value,
            create_revision: holder.create_revision,
            mod_revision: holder.mod_revision,
        })
    }

    /// The leader key of `ag`, if any (linearizable read).
    pub async fn leader(&self, ag: &str) -> Result<Option<LeaderKey>, EtcdError> {
        let key = self.keys.leader(ag)?;
        let operation = format!("read {key}");
        Ok(self.get_one(&operation, key).await?.map(LeaderKey::from))
    }

    /// Deletes the leader key of `ag` if it still carries `create_revision`, and in the same
    /// transaction writes `note` = (suffix, value) at `{prefix}/{ag}/{suffix}` without a lease.
    /// `Ok(false)`: the key was not ours any more; nothing was written.
    pub async fn resign(
        &self,
        ag: &str,
        create_revision: i64,
        note: Option<(&str, &str)>,
    ) -> Result<bool, EtcdError> {
        let key = self.keys.leader(ag)?;
        let operation = format!("resign {key} (token {create_revision})");
        let mut writes = vec![TxnOp::delete(key.as_str(), None)];
        if let Some((suffix, value)) = note {
            writes.push(TxnOp::put(self.keys.ag_note(ag, suffix)?, value, None));
        }
        let txn = Txn::new()
            .when(still_ours(&key, create_revision))
            .and_then(writes);
        Ok(self.txn(&operation, txn, 0).await?.succeeded)
    }

    /// Rewrites the leader key's value (keeping its lease) if it still carries
    /// `create_revision`: the new mod_revision, or `None` when the key is no longer ours.
    pub async fn heartbeat(
        &self,
        ag: &str,
        create_revision: i64,
        value: &str,
    ) -> Result<Option<i64>, EtcdError> {
        let key = self.keys.leader(ag)?;
        let operation = format!("heartbeat {key} (token {create_revision})");
        let txn = Txn::new()
            .when(still_ours(&key, create_revision))
            .and_then([TxnOp::put(
                key.as_str(),
                value,
                Some(PutOptions::new().with_ignore_lease()),
            )]);
        let answer = self.txn(&operation, txn, 0).await?;
        if !answer.succeeded {
            return Ok(None);
        }
        answer::revision(answer.header.as_ref())
            .map(Some)
            .map_err(|odd| self.target.unexpected(&operation, odd))
    }

    /// Deletes the leader key of `ag` if it still carries `create_revision` and was last
    /// written at `mod_revision`, that is if its holder has not beaten since a challenger saw
    /// that revision: how a challenger ends the term of a leader that stopped beating, without
    /// waiting for its lease to expire. `Ok(false)`: a newer heartbeat, or another key (or
    /// none); nothing was changed. The compare is what makes it safe against a live leader:
    /// a heartbeat that etcd applied after the revision the challenger saw keeps the key.
    pub async fn depose(
        &self,
        ag: &str,
        create_revision: i64,
        mod_revision: i64,
    ) -> Result<bool, EtcdError> {
        let key = self.keys.leader(ag)?;
        let operation = format!("depose {key} (token {create_revision}, revision {mod_revision})");
        let [same_token, exists] = still_ours(&key, create_revision);
        let txn = Txn::new()
            .when([
                same_token,
                exists,
                Compare::mod_revision(key.as_str(), CompareOp::Equal, mod_revision),
            ])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        Ok(self.txn(&operation, txn, 0).await?.succeeded)
    }

    /// Asks the leader of `ag` that holds term `term` (its key's create_revision) to hand over:
    /// one transaction that writes `value` at `{prefix}/{ag}/switchover` under `lease` if the
    /// leader key still carries `term`. `Ok(false)`: it does not (another leader, or none);
    /// nothing was written. A lease that is gone is `EtcdError::LeaseExpired`.
    ///
    /// Why the term guards it: a request outlives neither the leader it was addressed to nor
    /// the caller. The caller checked that leader's situation (who leads, which replica is a
    /// synchronized candidate) before asking; a leader elected since then never saw that
    /// check and must not find a request waiting for it, so the write happens only while the
    /// key is the one the caller read. A leader elected after the write can still see the key
    /// until it goes, which is why `value` should carry `term` too (the agent's
    /// `SwitchoverRequest` does): a leader acts only on a request with its own term. And the
    /// key lives on the caller's `lease`: once the caller gives up, stops or dies, its request
    /// is deleted with the lease instead of lingering for a leader to act on later.
    pub async fn request_switchover(
        &self,
        ag: &str,
        term: i64,
        value: &str,
        lease: &Lease,
    ) -> Result<bool, EtcdError> {
        let leader = self.keys.leader(ag)?;
        let request = self.keys.switchover(ag)?;
        let operation = format!("write {request} (leader term {term})");
        let txn = Txn::new()
            .when(still_ours(&leader, term))
            .and_then([TxnOp::put(
                request,
                value,
                Some(PutOptions::new().with_lease(lease.id)),
            )]);
        Ok(self.txn(&operation, txn, lease.id).await?.succeeded)
    }
}

//! The member states of one availability group, `{prefix}/{ag}/members/{node}`: each agent
//! publishes what it sees of its replica (a JSON document the agent defines) under its own
//! lease, so a crashed agent's state disappears with its lease instead of lingering.

use etcd_client::GetOptions;

use crate::answer;
use crate::{Etcd, EtcdError, Lease};

/// One agent's published state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberKey {
    pub node: String,
    pub value: String,
    pub mod_revision: i64,
}

impl Etcd {
    /// Publishes `json` as `node`'s state in `ag` under `lease`; the revision of the write.
    pub async fn put_member(
        &self,
        ag: &str,
        node: &str,
        json: &str,
        lease: &Lease,
    ) -> Result<i64, EtcdError> {
        let key = self.keys.member(ag, node)?;
        let operation = format!("write {key}");
        self.put_at(&operation, key, json, lease.id).await
    }

    /// Withdraws `node`'s state in `ag` (its replica stopped answering): with no state, it
    /// does not count towards anyone's majority. Deleting a missing key is no error.
    pub async fn delete_member(&self, ag: &str, node: &str) -> Result<(), EtcdError> {
        let key = self.keys.member(ag, node)?;
        let operation = format!("delete {key}");
        self.bounded(&operation, |c| async move {
            c.kv_client().delete(key.as_str(), None).await
        })
        .await
        .map(|_| ())
    }

    /// Every member state of `ag`, ordered by node name (linearizable read).
    pub async fn members(&self, ag: &str) -> Result<Vec<MemberKey>, EtcdError> {
        let dir = self.keys.members_dir(ag)?;
        let operation = format!("read {dir}*");
        let answer = self
            .bounded(&operation, |c| {
                let dir = dir.clone();
                async move {
                    c.kv_client()
                        .get(dir, Some(GetOptions::new().with_prefix()))
                        .await
                }
            })
            .await?;
        let odd = |odd| self.target.unexpected(&operation, odd);
        answer
            .0
            .kvs
            .iter()
            .map(|kv| {
                let kv = answer::text_key_value(kv).map_err(odd)?;
                Ok(MemberKey {
                    node: answer::suffix_after(&dir, &kv.key).map_err(odd)?,
                    value: kv.value,
                    mod_revision: kv.mod_revision,
                })
            })
            .collect()
    }
}

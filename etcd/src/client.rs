//! The connection to etcd and what every call shares: the member it goes to (`pin`: one at
//! a time, the next one after a failure), the deadline (`request_timeout`, so no call waits
//! on a member that does not answer), the translation of failures into `EtcdError` with the
//! endpoints named, and the plain key reads and writes (`get`, `put`) and the cluster status
//! (`cluster_leader`).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::proto::PbTxnResponse;
use etcd_client::{Client, GetOptions, Txn};

use crate::answer::{self, TextKeyValue};
use crate::error::Target;
use crate::keys::KeyPaths;
use crate::pin::Members;
use crate::settings::connect_options;
use crate::{EtcdError, EtcdSettings};

/// A connected client. Cheap to share by reference: every call takes `&self`.
#[derive(Clone)]
pub struct Etcd {
    pub(crate) members: Arc<Members>,
    pub(crate) target: Target,
    pub(crate) keys: KeyPaths,
    pub(crate) request_timeout: Duration,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("members", &self.members)
            .field("keys", &self.keys)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// A key's value with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue {
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
}

impl Etcd {
    /// Connects to the first member (in the order given) that authenticates, when a user is
    /// set, and answers a read (serializable, so a member without quorum answers too); that
    /// member is pinned. All within `connect_timeout`.
    pub async fn connect(settings: &EtcdSettings) -> Result<Etcd, EtcdError> {
        let target = Target::new(
            &settings.endpoints,
            settings.user.as_ref().map(|(user, _)| user.as_str()),
        );
        let members = Arc::new(Members::new(
            &settings.endpoints,
            connect_options(settings)?,
        ));
        let keys = KeyPaths::new(&settings.prefix);
        let probe_key = keys.under_prefix("connect-probe")?;
        let give_up = Instant::now() + settings.connect_timeout;
        let mut last = None;
        for index in 0..members.len() {
            // Each member gets its share of what is left, the last one all of it.
            let left = give_up.saturating_duration_since(Instant::now());
            let share = left / u32::try_from(members.len() - index).unwrap_or(1);
            let attempt = first_read(&members, index, probe_key.clone(), settings, &target);
            match tokio::time::timeout(share, attempt).await {
                Ok(Ok(())) => {
                    members.pin(index);
                    return Ok(Etcd {
                        members,
                        target,
                        keys,
                        request_timeout: settings.request_timeout,
                    });
                }
                // A refused password is refused by every member alike.
                Ok(Err(e @ EtcdError::AuthenticationRefused { .. })) => return Err(e),
                Ok(Err(e)) => last = Some(e),
                Err(_) => last = Some(target.no_answer("connect", settings.connect_timeout)),
            }
        }
        Err(last.unwrap_or_else(|| target.no_answer("connect", settings.connect_timeout)))
    }

    /// Runs one etcd-client call on the pinned member within `request_timeout`, its failure
    /// named by `operation`; a member that gets no answer or cannot be reached is left for
    /// the next one.
    pub(crate) async fn bounded<T, F>(
        &self,
        operation: &str,
        call: impl FnOnce(Client) -> F,
    ) -> Result<T, EtcdError>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.bounded_with_lease(operation, 0, call).await
    }

    /// As `bounded`, for a call that attaches keys to `lease` (0: none): etcd answers NotFound
    /// when the lease is gone, which is `EtcdError::LeaseExpired`.
    pub(crate) async fn bounded_with_lease<T, F>(
        &self,
        operation: &str,
        lease: i64,
        call: impl FnOnce(Client) -> F,
    ) -> Result<T, EtcdError>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        let member = self.members.pinned();
        let attempt = async { call(self.members.client(member).await?).await };
        let result = match tokio::time::timeout(self.request_timeout, attempt).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(etcd_client::Error::GRpcStatus(status)))
                if lease != 0 && status.code() == tonic::Code::NotFound =>
            {
                Err(self.target.lease_expired(lease))
            }
            Ok(Err(e)) => Err(self.target.failure(operation, e)),
            Err(_) => Err(self.target.no_answer(operation, self.request_timeout)),
        };
        self.judge(member, result)
    }

    /// Leaves `member` for the next one when `result` says it did not answer.
    pub(crate) fn judge<T>(
        &self,
        member: usize,
        result: Result<T, EtcdError>,
    ) -> Result<T, EtcdError> {
        if let Err(e) = &result
            && e.member_unreachable()
        {
            self.members.failed(member);
        }
        result
    }

    /// One transaction, its raw answer (see `answer` for why raw); `lease`: the lease its
    /// writes attach keys to, 0 for none.
    pub(crate) async fn txn(
        &self,
        operation: &str,
        txn: Txn,
        lease: i64,
    ) -> Result<PbTxnResponse, EtcdError> {
        let answer = self
            .bounded_with_lease(
                operation,
                lease,
                |c| async move { c.kv_client().txn(txn).await },
            )
            .await?;
        Ok(answer.0)
    }

    /// Linearizable read of one key.
    pub(crate) async fn get_one(
        &self,
        operation: &str,
        key: String,
    ) -> Result<Option<TextKeyValue>, EtcdError> {
        let answer = self
            .bounded(
                operation,
                |c| async move { c.kv_client().get(key, None).await },
            )
            .await?;
        answer::at_most_one(&answer.0.kvs).map_err(|odd| self.target.unexpected(operation, odd))
    }

    /// Writes `value` at `key` (with the lease `lease`, 0 for none); the revision of the write.
    /// A put to a lease that is gone is `EtcdError::LeaseExpired`.
    pub(crate) async fn put_at(
        &self,
        operation: &str,
        key: String,
        value: &str,
        lease: i64,
    ) -> Result<i64, EtcdError> {
        let options = (lease != 0).then(|| etcd_client::PutOptions::new().with_lease(lease));
        let value = value.to_owned();
        let put = |c: Client| async move { c.kv_client().put(key, value, options).await };
        let answer = self.bounded_with_lease(operation, lease, put).await?;
        answer::revision(answer.0.header.as_ref())
            .map_err(|odd| self.target.unexpected(operation, odd))
    }

    /// The key `{prefix}/{key_suffix}` (a handoff note is `{ag}/{suffix}`), if it exists.
    pub async fn get(&self, key_suffix: &str) -> Result<Option<StoredValue>, EtcdError> {
        let key = self.keys.under_prefix(key_suffix)?;
        let operation = format!("read {key}");
        Ok(self.get_one(&operation, key).await?.map(|kv| StoredValue {
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        }))
    }

    /// Writes `{prefix}/{key_suffix}` without a lease; the revision of the write.
    pub async fn put(&self, key_suffix: &str, value: &str) -> Result<i64, EtcdError> {
        let key = self.keys.under_prefix(key_suffix)?;
        let operation = format!("write {key}");
        self.put_at(&operation, key, value, 0).await
    }

    /// The member id of the etcd cluster's raft leader, as the answering member sees it.
    pub async fn cluster_leader(&self) -> Result<u64, EtcdError> {
        let status = self
            .bounded("status", |c| async move {
                c.maintenance_client().status().await
            })
            .await?;
        match status.leader() {
            0 => Err(EtcdError::NoClusterLeader {
                endpoints: self.target.endpoints.clone(),
            }),
            leader => Ok(leader),
        }
    }
}

/// Connects member `index` (authenticating when a user is set) and reads once from it.
async fn first_read(
    members: &Members,
    index: usize,
    probe_key: String,
    settings: &EtcdSettings,
    target: &Target,
) -> Result<(), EtcdError> {
    let client = members
        .client(index)
        .await
        .map_err(|e| match settings.user {
            Some(_) => target.authentication_failure(e),
            None => target.failure(&format!("connect to {}", members.url(index)), e),
        })?;
    let read = GetOptions::new().with_serializable().with_count_only();
    client
        .kv_client()
        .get(probe_key, Some(read))
        .await
        .map_err(|e| target.failure(&format!("first read from {}", members.url(index)), e))?;
    Ok(())
}

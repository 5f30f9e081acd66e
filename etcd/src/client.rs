//! The connection to etcd and what every call shares: the deadline (`request_timeout`, so no
//! call waits on a cluster that does not answer: etcd-client's balanced channel waits for an
//! endpoint to come up rather than failing), the translation of failures into `EtcdError`
//! with the endpoints named, and the plain key reads and writes (`get`, `put`) and the cluster
//! status (`cluster_leader`).

use std::future::Future;
use std::time::Duration;

use etcd_client::proto::PbTxnResponse;
use etcd_client::{Client, GetOptions, Txn};

use crate::answer::{self, TextKeyValue};
use crate::error::Target;
use crate::keys::KeyPaths;
use crate::settings::connect_options;
use crate::{EtcdError, EtcdSettings};

/// A connected client. Cheap to share by reference: every call takes `&self`.
#[derive(Clone)]
pub struct Etcd {
    pub(crate) client: Client,
    pub(crate) target: Target,
    pub(crate) keys: KeyPaths,
    pub(crate) request_timeout: Duration,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.target.endpoints)
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
    /// Connects, authenticates when a user is set, and reads once (serializable, so one
    /// reachable member is enough), all within `connect_timeout`.
    pub async fn connect(settings: &EtcdSettings) -> Result<Etcd, EtcdError> {
        let target = Target::new(
            &settings.endpoints,
            settings.user.as_ref().map(|(user, _)| user.as_str()),
        );
        let options = connect_options(settings)?;
        let keys = KeyPaths::new(&settings.prefix);
        let probe_key = keys.under_prefix("connect-probe")?;
        let attempt = async {
            let client = Client::connect(&settings.endpoints, Some(options))
                .await
                .map_err(|e| match settings.user {
                    Some(_) => target.authentication_failure(e),
                    None => target.failure("connect", e),
                })?;
            let read = GetOptions::new().with_serializable().with_count_only();
            client
                .kv_client()
                .get(probe_key, Some(read))
                .await
                .map_err(|e| target.failure("first read", e))?;
            Ok(client)
        };
        let client = tokio::time::timeout(settings.connect_timeout, attempt)
            .await
            .map_err(|_| target.no_answer("connect", settings.connect_timeout))??;
        Ok(Etcd {
            client,
            target,
            keys,
            request_timeout: settings.request_timeout,
        })
    }

    /// Runs one etcd-client call within `request_timeout`, its failure named by `operation`.
    pub(crate) async fn bounded<T>(
        &self,
        operation: &str,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, EtcdError> {
        self.bounded_with_lease(operation, 0, call).await
    }

    /// As `bounded`, for a call that attaches keys to `lease` (0: none): etcd answers NotFound
    /// when the lease is gone, which is `EtcdError::LeaseExpired`.
    pub(crate) async fn bounded_with_lease<T>(
        &self,
        operation: &str,
        lease: i64,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, EtcdError> {
        match tokio::time::timeout(self.request_timeout, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(etcd_client::Error::GRpcStatus(status)))
                if lease != 0 && status.code() == tonic::Code::NotFound =>
            {
                Err(self.target.lease_expired(lease))
            }
            Ok(Err(e)) => Err(self.target.failure(operation, e)),
            Err(_) => Err(self.target.no_answer(operation, self.request_timeout)),
        }
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
            .bounded_with_lease(operation, lease, self.client.kv_client().txn(txn))
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
            .bounded(operation, self.client.kv_client().get(key, None))
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
        let mut kv = self.client.kv_client();
        let put = kv.put(key, value, options);
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
            .bounded("status", self.client.maintenance_client().status())
            .await?;
        match status.leader() {
            0 => Err(EtcdError::NoClusterLeader {
                endpoints: self.target.endpoints.clone(),
            }),
            leader => Ok(leader),
        }
    }
}

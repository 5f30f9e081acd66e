//! The virtual catalog: the system views an HA manager and a health check read, and the
//! lab's `dbo.ledger` table, built afresh from the replica's and the AG's state for each
//! statement.
//!
//! Column names and types follow SQL Server's where it matters to a client: names are
//! `sysname` (NVARCHAR(128)), `*_desc` columns NVARCHAR(60), codes TINYINT/INT, LSNs and
//! `sequence_number` BIGINT. Known deviations (README): `group_id`/`replica_id` are GUID
//! strings, not uniqueidentifier; `last_hardened_lsn` is BIGINT (numeric(25,0) on SQL
//! Server) and counts transactions; `last_commit_time` is an ISO-8601 string, not datetime.
//! Replica ids are derived from the sorted replica names, so every replica of one AG gives
//! a replica the same id. `sys.availability_groups` and `sys.availability_replicas` show
//! the AG only to a login that may see it (`access`).

use tds_codec::types::{TypeInfo, Value};

use crate::ag::{AgState, AvailabilityMode, SyncState};
use crate::query::Env;
use crate::state::{Health, Role};

#[derive(Debug, Clone, Copy)]
pub enum Ty {
    Int(u8),
    NVarChar(u16),
}

impl Ty {
    pub fn info(self) -> TypeInfo {
        match self {
            Ty::Int(n) => TypeInfo::int_n(n),
            Ty::NVarChar(n) => TypeInfo::nvarchar(n),
        }
    }
}

pub struct Table {
    pub columns: Vec<(&'static str, Ty)>,
    pub rows: Vec<Vec<Value>>,
}

/// A fixed id shared by the replica and its AG, so the health query's join matches.
const GROUP_ID: &str = "5D6A8A3E-7B59-4C5D-9F0A-2B1C3D4E5F60";

pub fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

const NAME: Ty = Ty::NVarChar(128);
const DESC: Ty = Ty::NVarChar(60);
const GUID: Ty = Ty::NVarChar(36);
const TINY: Ty = Ty::Int(1);
const INT: Ty = Ty::Int(4);
const BIG: Ty = Ty::Int(8);

fn int(n: i64) -> Value {
    Value::Int(n)
}

/// One replica of the AG as the views list it.
struct Member {
    name: String,
    id: String,
    local: bool,
    mode: AvailabilityMode,
    endpoint: String,
}

fn members(env: &Env<'_>) -> Vec<Member> {
    let cfg = &env.ag.cfg;
    let mut names: Vec<String> = cfg.partners.iter().map(|p| p.name.clone()).collect();
    names.push(env.replica.server_name.clone());
    names.sort_by_key(|n| n.to_lowercase());
    let id = |n: &str| {
        let i = names.iter().position(|x| x == n).unwrap_or(0) + 1;
        format!("1F1E1D1C-0000-4000-8000-{i:012}")
    };
    let mut out = vec![Member {
        name: env.replica.server_name.clone(),
        id: id(&env.replica.server_name),
        local: true,
        mode: cfg.mode,
        endpoint: cfg
            .endpoint
            .map(|e| format!("TCP://{e}"))
            .unwrap_or_default(),
    }];
    for p in &cfg.partners {
        out.push(Member {
            name: p.name.clone(),
            id: id(&p.name),
            local: false,
            mode: p.mode,
            endpoint: format!("TCP://{}", p.endpoint),
        });
    }
    out
}

pub(crate) fn iso(ms: u64) -> Value {
    if ms == 0 {
        return Value::Null;
    }
    let (secs, milli) = ((ms / 1000) as i64, ms % 1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    text(&format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

pub fn table(key: &str, env: &Env<'_>) -> Option<Table> {
    Some(match key {
        "sys.dm_hadr_availability_replica_states" => replica_states(env),
        "sys.availability_groups" => availability_groups(env),
        "sys.availability_replicas" => availability_replicas(env),
        "sys.dm_hadr_database_replica_states" => database_replica_states(env),
        "sys.databases" => databases(env),
        "dbo.ledger" => ledger(env),
        _ => return None,
    })
}

fn replica_states(env: &Env<'_>) -> Table {
    let r = env.replica;
    let ag = env.ag.read();
    let mut rows = Vec::new();
    for m in members(env) {
        let (role, connected, health) = if m.local {
            (r.role, true, r.health)
        } else if r.role != Role::Primary {
            // A secondary lists only itself, as on SQL Server.
            continue;
        } else {
            let p = ag.partners.iter().find(|p| p.conf.name == m.name);
            let connected = p.is_some_and(|p| p.connected);
            let healthy = p.is_some_and(|p| {
                p.synchronized || (connected && m.mode != AvailabilityMode::SynchronousCommit)
            });
            let h = if healthy {
                Health::Healthy
            } else {
                Health::NotHealthy
            };
            (Role::Secondary, connected, h)
        };
        rows.push(vec![
            text(&m.id),
            text(GROUP_ID),
            int(m.local as i64),
            int(role.code()),
            text(role.as_str()),
            text(if m.local { "ONLINE" } else { "" }),
            text(if connected {
                "CONNECTED"
            } else {
                "DISCONNECTED"
            }),
            int(health.code()),
            text(health.as_str()),
        ]);
    }
    Table {
        columns: vec![
            ("replica_id", GUID),
            ("group_id", GUID),
            ("is_local", TINY),
            ("role", TINY),
            ("role_desc", DESC),
            ("operational_state_desc", DESC),
            ("connected_state_desc", DESC),
            ("synchronization_health", TINY),
            ("synchronization_health_desc", DESC),
        ],
        rows,
    }
}

fn availability_groups(env: &Env<'_>) -> Table {
    let ag = env.ag.read();
    Table {
        columns: vec![
            ("group_id", GUID),
            ("name", NAME),
            ("cluster_type", TINY),
            ("cluster_type_desc", DESC),
            ("sequence_number", BIG),
            ("required_synchronized_secondaries_to_commit", INT),
            ("failure_condition_level", INT),
            ("db_failover", TINY),
        ],
        rows: [vec![
            text(GROUP_ID),
            text(&env.replica.ag),
            int(1),
            text("external"),
            int(ag.seq as i64),
            int(ag.required as i64),
            int(3),
            int(1),
        ]]
        .into_iter()
        .filter(|_| env.ag_visible())
        .collect(),
    }
}

fn availability_replicas(env: &Env<'_>) -> Table {
    let timeout_s = env.ag.cfg.session_timeout.as_millis().div_ceil(1000) as i64;
    let rows = members(env)
        .into_iter()
        .filter(|_| env.ag_visible())
        .map(|m| {
            vec![
                text(&m.id),
                text(GROUP_ID),
                text(&m.name),
                text(&m.endpoint),
                int(m.mode.code()),
                text(m.mode.as_str()),
                int(2),
                text("EXTERNAL"),
                int(timeout_s),
            ]
        })
        .collect();
    Table {
        columns: vec![
            ("replica_id", GUID),
            ("group_id", GUID),
            ("replica_server_name", NAME),
            ("endpoint_url", Ty::NVarChar(128)),
            ("availability_mode", TINY),
            ("availability_mode_desc", DESC),
            ("failover_mode", TINY),
            ("failover_mode_desc", DESC),
            ("session_timeout", INT),
        ],
        rows,
    }
}

/// State, hardened LSN and whether this replica's row is listed, per member.
fn member_sync(m: &Member, ag: &AgState, role: Role) -> Option<(SyncState, u64)> {
    if m.local {
        return Some((ag.local_sync_state(role, m.mode), ag.log.last_lsn()));
    }
    if role != Role::Primary {
        return None;
    }
    let p = ag.partners.iter().find(|p| p.conf.name == m.name)?;
    let st = if p.synchronized {
        SyncState::Synchronized
    } else if p.connected {
        SyncState::Synchronizing
    } else {
        SyncState::NotSynchronizing
    };
    Some((st, p.hardened_lsn))
}

fn database_replica_states(env: &Env<'_>) -> Table {
    let ag = env.ag.read();
    let role = env.replica.role;
    let mut rows = Vec::new();
    for (i, (_, st)) in env.replica.databases.iter().enumerate() {
        for m in members(env) {
            let Some((sync, lsn)) = member_sync(&m, &ag, role) else {
                continue;
            };
            let healthy = sync == SyncState::Synchronized
                || (sync == SyncState::Synchronizing
                    && m.mode != AvailabilityMode::SynchronousCommit);
            rows.push(vec![
                int(5 + i as i64),
                text(GROUP_ID),
                text(&m.id),
                int(m.local as i64),
                int((m.local && role == Role::Primary) as i64),
                int(sync.code()),
                text(sync.as_str()),
                text(if healthy { "HEALTHY" } else { "NOT_HEALTHY" }),
                text(st.as_str()),
                int(lsn as i64),
                iso(if m.local {
                    ag.log.last_commit_unix_ms()
                } else {
                    0
                }),
            ]);
        }
    }
    Table {
        columns: vec![
            ("database_id", INT),
            ("group_id", GUID),
            ("replica_id", GUID),
            ("is_local", TINY),
            ("is_primary_replica", TINY),
            ("synchronization_state", TINY),
            ("synchronization_state_desc", DESC),
            ("synchronization_health_desc", DESC),
            ("database_state_desc", DESC),
            ("last_hardened_lsn", BIG),
            ("last_commit_time", Ty::NVarChar(30)),
        ],
        rows,
    }
}

fn databases(env: &Env<'_>) -> Table {
    Table {
        columns: vec![
            ("name", NAME),
            ("database_id", INT),
            ("state", TINY),
            ("state_desc", DESC),
        ],
        rows: env
            .replica
            .databases
            .iter()
            .enumerate()
            .map(|(i, (name, st))| {
                // Ids 1-4 belong to master, tempdb, model and msdb.
                vec![
                    text(name),
                    int(5 + i as i64),
                    int(st.code()),
                    text(st.as_str()),
                ]
            })
            .collect(),
    }
}

fn ledger(env: &Env<'_>) -> Table {
    let ag = env.ag.read();
    Table {
        columns: vec![("id", BIG), ("at", BIG)],
        rows: ag
            .log
            .ledger()
            .iter()
            .map(|(id, at)| vec![int(*id), int(*at)])
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso(0), Value::Null);
        assert_eq!(iso(1), text("1970-01-01T00:00:00.001"));
        // 2026-12-01T16:51:25.250Z
        assert_eq!(iso(1_796_143_885_250), text("2026-12-01T16:51:25.250"));
        assert_eq!(iso(951_782_400_000), text("2000-02-29T00:00:00.000"));
    }
}

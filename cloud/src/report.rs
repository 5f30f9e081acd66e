//! What a claim or an observation found, in a shape that `tdsvip routes` prints unchanged
//! (JSON or a human table) and that the agent turns into metrics and timeline entries.
//!
//! Every EC2 call is kept as a `CallRecord` (operation, result, latency, attempts) so the agent
//! can count `tdsvip_route_table_calls_total{operation,result}` without this crate knowing
//! about Prometheus.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Serialize, Serializer};
use strum::{Display, IntoStaticStr};

use crate::config::ClaimMode;

/// The EC2 operations this crate calls, named as AWS names them (the metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, IntoStaticStr, Display)]
#[serde(into = "&'static str")]
pub enum Operation {
    DescribeRouteTables,
    ReplaceRoute,
    CreateRoute,
    DescribeNetworkInterfaces,
    DescribeNetworkInterfaceAttribute,
    AssignPrivateIpAddresses,
    StopInstances,
    DescribeInstances,
}

/// How one call ended (the metrics `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, IntoStaticStr, Display)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
pub enum CallResult {
    Ok,
    /// AWS refused it for good (bad id, missing permission, …); not retried.
    Rejected,
    /// Still throttled at the last attempt.
    Throttled,
    /// Still a 5xx at the last attempt.
    ServerError,
    /// No answer within the per-call deadline at the last attempt.
    Timeout,
    /// Connection failed at the last attempt.
    Transport,
    /// The claim's time budget ran out before this call could (re)start.
    BudgetExhausted,
}

/// One EC2 call, with its retries folded in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    pub operation: Operation,
    /// The route table, ENI or instance the call was about.
    pub resource: String,
    pub result: CallResult,
    /// From the first attempt's start to the last attempt's end, backoffs included.
    #[serde(rename = "ms", serialize_with = "as_millis")]
    pub elapsed: Duration,
    pub attempts: u32,
    /// AWS's error code of the last failed attempt.
    pub code: Option<String>,
}

/// Where the overlay IP's /32 points in one route table (or, in secondary-IP mode, which ENI
/// holds the address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteState {
    /// To this node's ENI, and the route is active.
    ThisEni,
    /// To another ENI (another node), with its instance when EC2 names it.
    OtherEni {
        eni: String,
        instance: Option<String>,
    },
    /// No /32 route for the address in this table.
    Missing,
    /// A route whose target is gone (EC2 marks it `blackhole`); traffic is dropped.
    Blackhole { target: String },
    /// To something that is not an ENI (a gateway, NAT, peering, …).
    OtherTarget { target: String },
}

impl RouteState {
    /// The compact form used in JSON and in the human table; `this` is this node's ENI id.
    fn render(&self, this: &str) -> String {
        match self {
            RouteState::ThisEni => this.to_owned(),
            RouteState::OtherEni { eni, .. } => eni.clone(),
            RouteState::Missing => "missing".into(),
            RouteState::Blackhole { target } => format!("blackhole:{target}"),
            RouteState::OtherTarget { target } => target.clone(),
        }
    }

    fn describe(&self, this: &str) -> String {
        match self {
            RouteState::ThisEni => format!("{this} (this node)"),
            RouteState::OtherEni {
                eni,
                instance: Some(instance),
            } => format!("{eni} ({instance})"),
            other => other.render(this),
        }
    }
}

/// Milliseconds with microsecond resolution: how reports show durations (JSON and tables).
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub(crate) fn as_millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(millis(*d))
}

/// Serializes `Option<RouteState>` as the compact string (or null when unknown); needs the
/// ENI id, so the containing structs serialize through this helper.
fn state_json(state: &Option<RouteState>, eni: &str) -> Option<String> {
    state.as_ref().map(|s| s.render(eni))
}

/// How the calls for one route table went, for a claim's table and an observation's alike.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TableCalls {
    /// A claim: time of the write (ReplaceRoute, or CreateRoute, retries included). An
    /// observation: time of the read.
    pub elapsed: Duration,
    /// Attempts over those calls.
    pub attempts: u32,
    /// The first error that kept this table from ending at (or being read as) this ENI.
    pub error: Option<String>,
    pub error_code: Option<String>,
    pub config_problem: bool,
    pub calls: Vec<CallRecord>,
}

impl TableCalls {
    /// The calls ended with `error` (or none) after `elapsed` and `attempts`.
    pub fn ended(
        error: Option<&crate::error::CloudError>,
        elapsed: Duration,
        attempts: u32,
        calls: Vec<CallRecord>,
    ) -> Self {
        TableCalls {
            elapsed,
            attempts,
            error: error.map(ToString::to_string),
            error_code: error.and_then(|e| e.code()).map(str::to_owned),
            config_problem: error.is_some_and(crate::error::CloudError::is_config_problem),
            calls,
        }
    }
}

impl TableCalls {
    /// The task that made the calls panicked with `message`: nothing is known of them.
    pub fn panicked(message: String) -> Self {
        TableCalls {
            error: Some(message),
            ..TableCalls::default()
        }
    }
}

/// The JSON of [`TableCalls`], flattened into each table's object after its own fields.
#[derive(Serialize)]
struct TableCallsJson<'a> {
    ms: f64,
    attempts: u32,
    error: Option<&'a str>,
    error_code: Option<&'a str>,
    config_problem: bool,
    calls: &'a [CallRecord],
}

impl<'a> From<&'a TableCalls> for TableCallsJson<'a> {
    fn from(t: &'a TableCalls) -> Self {
        TableCallsJson {
            ms: millis(t.elapsed),
            attempts: t.attempts,
            error: t.error.as_deref(),
            error_code: t.error_code.as_deref(),
            config_problem: t.config_problem,
            calls: &t.calls,
        }
    }
}

/// The outcome for one route table of a claim.
#[derive(Debug, Clone, PartialEq)]
pub struct TableClaim {
    pub id: String,
    /// What DescribeRouteTables said just before the write; `None` if that read failed.
    pub before: Option<RouteState>,
    /// What DescribeRouteTables said after the write; `None` if that read failed.
    pub after: Option<RouteState>,
    pub outcome: TableCalls,
}

impl TableClaim {
    pub fn points_here(&self) -> bool {
        self.after == Some(RouteState::ThisEni)
    }
}

/// The outcome of `claim`: one entry per configured route table, in config order.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimReport {
    pub address: Ipv4Addr,
    pub eni: String,
    pub mode: ClaimMode,
    pub tables: Vec<TableClaim>,
    /// Wall time of the whole claim (reads, writes, read-back).
    pub total: Duration,
    /// The time budget the claim was bounded by.
    pub budget: Duration,
}

impl ClaimReport {
    /// True when every table was read back pointing at this node's ENI.
    pub fn all_point_here(&self) -> bool {
        !self.tables.is_empty() && self.tables.iter().all(TableClaim::points_here)
    }

    /// True when some table failed for a reason only a config/IAM/setup change can fix.
    pub fn has_config_problem(&self) -> bool {
        self.tables.iter().any(|t| t.outcome.config_problem)
    }

    /// Every EC2 call made, for metrics.
    pub fn calls(&self) -> impl Iterator<Item = &CallRecord> {
        self.tables.iter().flat_map(|t| t.outcome.calls.iter())
    }
}

impl Serialize for ClaimReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Table<'a> {
            id: &'a str,
            before: Option<String>,
            after: Option<String>,
            here: bool,
            #[serde(flatten)]
            outcome: TableCallsJson<'a>,
        }
        #[derive(Serialize)]
        struct Report<'a> {
            address: Ipv4Addr,
            eni: &'a str,
            mode: ClaimMode,
            tables: Vec<Table<'a>>,
            all_point_here: bool,
            total_ms: f64,
            budget_ms: f64,
        }
        Report {
            address: self.address,
            eni: &self.eni,
            mode: self.mode,
            tables: self
                .tables
                .iter()
                .map(|t| Table {
                    id: &t.id,
                    before: state_json(&t.before, &self.eni),
                    after: state_json(&t.after, &self.eni),
                    here: t.points_here(),
                    outcome: (&t.outcome).into(),
                })
                .collect(),
            all_point_here: self.all_point_here(),
            total_ms: millis(self.total),
            budget_ms: millis(self.budget),
        }
        .serialize(serializer)
    }
}

impl fmt::Display for ClaimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "claim {}/32 -> {} ({} mode): {} of {} point here, {:.1} ms (budget {:.0} ms)",
            self.address,
            self.eni,
            self.mode,
            self.tables.iter().filter(|t| t.points_here()).count(),
            self.tables.len(),
            millis(self.total),
            millis(self.budget),
        )?;
        let rows: Vec<[String; 6]> = self
            .tables
            .iter()
            .map(|t| {
                [
                    t.id.clone(),
                    describe_opt(&t.before, &self.eni),
                    describe_opt(&t.after, &self.eni),
                    format!("{:.1}", millis(t.outcome.elapsed)),
                    t.outcome.attempts.to_string(),
                    match &t.outcome.error {
                        None if t.points_here() => "ok".to_owned(),
                        None => "not pointing here".to_owned(),
                        Some(e) => e.clone(),
                    },
                ]
            })
            .collect();
        write_table(
            f,
            ["TABLE", "BEFORE", "AFTER", "MS", "TRIES", "RESULT"],
            &rows,
        )
    }
}

/// Where the /32 points in one route table, as `observe` found it.
#[derive(Debug, Clone, PartialEq)]
pub struct TableObservation {
    pub id: String,
    /// `None` when the table could not be read (see `outcome.error`).
    pub state: Option<RouteState>,
    pub outcome: TableCalls,
}

impl TableObservation {
    pub fn points_here(&self) -> bool {
        self.state == Some(RouteState::ThisEni)
    }
}

/// The outcome of `observe`: one entry per configured route table, in config order.
#[derive(Debug, Clone, PartialEq)]
pub struct ObserveReport {
    pub address: Ipv4Addr,
    pub eni: String,
    pub mode: ClaimMode,
    pub tables: Vec<TableObservation>,
    pub total: Duration,
}

impl ObserveReport {
    pub fn all_point_here(&self) -> bool {
        !self.tables.is_empty() && self.tables.iter().all(TableObservation::points_here)
    }

    pub fn has_config_problem(&self) -> bool {
        self.tables.iter().any(|t| t.outcome.config_problem)
    }

    /// Tables that were read and do not point here: what a reconcile loop must repair.
    pub fn drifted(&self) -> impl Iterator<Item = &TableObservation> {
        self.tables
            .iter()
            .filter(|t| t.state.is_some() && !t.points_here())
    }

    pub fn calls(&self) -> impl Iterator<Item = &CallRecord> {
        self.tables.iter().flat_map(|t| t.outcome.calls.iter())
    }
}

impl Serialize for ObserveReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Table<'a> {
            id: &'a str,
            target: Option<String>,
            here: bool,
            instance: Option<&'a str>,
            #[serde(flatten)]
            outcome: TableCallsJson<'a>,
        }
        #[derive(Serialize)]
        struct Report<'a> {
            address: Ipv4Addr,
            eni: &'a str,
            mode: ClaimMode,
            tables: Vec<Table<'a>>,
            all_point_here: bool,
            total_ms: f64,
        }
        Report {
            address: self.address,
            eni: &self.eni,
            mode: self.mode,
            tables: self
                .tables
                .iter()
                .map(|t| Table {
                    id: &t.id,
                    target: state_json(&t.state, &self.eni),
                    here: t.points_here(),
                    instance: match &t.state {
                        Some(RouteState::OtherEni { instance, .. }) => instance.as_deref(),
                        _ => None,
                    },
                    outcome: (&t.outcome).into(),
                })
                .collect(),
            all_point_here: self.all_point_here(),
            total_ms: millis(self.total),
        }
        .serialize(serializer)
    }
}

impl fmt::Display for ObserveReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}/32 ({} mode), this node's ENI {}: {} of {} point here ({:.1} ms)",
            self.address,
            self.mode,
            self.eni,
            self.tables.iter().filter(|t| t.points_here()).count(),
            self.tables.len(),
            millis(self.total),
        )?;
        let rows: Vec<[String; 3]> = self
            .tables
            .iter()
            .map(|t| {
                [
                    t.id.clone(),
                    describe_opt(&t.state, &self.eni),
                    match (&t.outcome.error, t.points_here()) {
                        (Some(e), _) => e.clone(),
                        (None, true) => "here".to_owned(),
                        (None, false) => "elsewhere".to_owned(),
                    },
                ]
            })
            .collect();
        write_table(f, ["TABLE", "POINTS TO", "STATUS"], &rows)
    }
}

fn describe_opt(state: &Option<RouteState>, eni: &str) -> String {
    state
        .as_ref()
        .map_or_else(|| "?".to_owned(), |s| s.describe(eni))
}

/// Left-aligned columns; the last column is not padded so long error messages stay readable.
fn write_table<const N: usize>(
    f: &mut fmt::Formatter<'_>,
    header: [&str; N],
    rows: &[[String; N]],
) -> fmt::Result {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut line = |cells: [&str; N]| -> fmt::Result {
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                writeln!(f, "{cell}")?;
            } else {
                write!(f, "{cell:<width$}  ", width = widths[i])?;
            }
        }
        Ok(())
    };
    line(header)?;
    for row in rows {
        line(row.each_ref().map(String::as_str))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;

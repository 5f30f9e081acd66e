//! `dashboards/`: the alert rules pass `promtool check rules` and their unit tests
//! (`promtool test rules dashboards/alerts_test.yml`); the Grafana dashboard parses, every
//! panel (rows aside) has a datasource and targets, and every PromQL expression in it parses
//! (promtool, with Grafana's variables substituted); and every `tdsvip_*` metric named in the
//! rules, their tests or the dashboard is one the agent's `AgentMetrics` really exports, so
//! renaming a metric in agent/src/metrics/ breaks this test. The dashboard is also validated
//! against Grafana's own schema (npm @grafana/schema's `Dashboard` type as JSON Schema, with
//! ajv). promtool comes from Debian `prometheus`, the npm tools from deploy/setup.sh; without
//! them these tests fail.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tdsvip::controller::{
    AgController, AgPolicy, Direction, FailoverTimeline, ReplicaRole, TimedStep,
};
use tdsvip::{AgentMetrics, PacketVerdict};
use tdsvip_cloud::report::{CallRecord, CallResult, Operation};
use tdsvip_probes::{Mode, Outcome, Phase, PhaseTimes, ProbeResult, ServerInfo};

/// Relative to the package root, where `cargo test` runs tests (not `env!`: a binary from a
/// shared target dir may have been built in another checkout).
fn dashboards() -> PathBuf {
    // Absolute: tools run from other directories are given these paths.
    Path::new("../dashboards")
        .canonicalize()
        .expect("../dashboards from the package root")
}

fn read(name: &str) -> String {
    let p = dashboards().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn promtool(args: &[&str], dir: &Path) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("promtool (Debian package prometheus) not runnable: {e}"))
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tdsvip-dash-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn alert_rules_check_and_their_unit_tests_pass() {
    let dir = dashboards();
    let out = promtool(&["check", "rules", "alerts.yml"], &dir);
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("SUCCESS: 14 rules found"),
        "{}",
        said(&out)
    );
    let out = promtool(&["test", "rules", "alerts_test.yml"], &dir);
    assert!(out.status.success(), "{}", said(&out));

    // The unit tests notice a changed rule: TdsvipNoOwner waiting 5 m instead of 30 s.
    let tmp = scratch("rules");
    let rules = read("alerts.yml");
    let slow = rules.replacen("for: 30s", "for: 5m", 1);
    assert_ne!(slow, rules);
    std::fs::write(tmp.join("alerts.yml"), slow).unwrap();
    std::fs::write(tmp.join("alerts_test.yml"), read("alerts_test.yml")).unwrap();
    let out = promtool(&["test", "rules", "alerts_test.yml"], &tmp);
    assert!(!out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("TdsvipNoOwner"), "{}", said(&out));

    // Ownership is judged per (ag, address): the unit tests fail when either ownership rule
    // aggregates by ag alone (one address of an AG unowned; two nodes holding one address
    // each).
    for (rule, per_address, per_ag) in [
        (
            "TdsvipNoOwner",
            "max by (ag, address) (tdsvip_owner) == 0",
            "max by (ag) (tdsvip_owner) == 0",
        ),
        (
            "TdsvipMultipleOwners",
            "sum by (ag, address) (tdsvip_owner) > 1",
            "sum by (ag) (tdsvip_owner) > 1",
        ),
    ] {
        assert_eq!(rules.matches(per_address).count(), 1, "{rule}: {rules}");
        std::fs::write(tmp.join("alerts.yml"), rules.replace(per_address, per_ag)).unwrap();
        let out = promtool(&["test", "rules", "alerts_test.yml"], &tmp);
        assert!(!out.status.success(), "{rule} by ag: {}", said(&out));
        assert!(said(&out).contains(rule), "{}", said(&out));
    }
    let _ = std::fs::remove_dir_all(tmp);
}

fn every_alert_is_tested(rules: &str, tests: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .filter(|a| !tests.contains(&format!("alertname: {a}\n")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_alert_has_a_unit_test_case() {
    let rules = read("alerts.yml");
    assert_eq!(rules.matches("- alert: ").count(), 14);
    let untested = every_alert_is_tested(&rules, &read("alerts_test.yml"));
    assert!(
        untested.is_empty(),
        "no promtool test case for {untested:?}"
    );
}

fn dashboard() -> Value {
    serde_json::from_str(&read("tdsvip.json")).expect("dashboards/tdsvip.json is not JSON")
}

/// A row only groups the panels after it: no datasource, no query.
fn is_row(panel: &Value) -> bool {
    panel["type"] == "row"
}

/// Every panel's PromQL, with the variables Grafana would substitute.
fn dashboard_exprs(d: &Value) -> Vec<String> {
    let mut v = Vec::new();
    for p in d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !is_row(p))
    {
        for t in p["targets"].as_array().unwrap() {
            v.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    v
}

#[test]
fn dashboard_panels_have_a_datasource_and_targets() {
    let d = dashboard();
    assert!(
        d["schemaVersion"].as_u64().unwrap() >= 36,
        "{}",
        d["schemaVersion"]
    );
    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert_eq!(var("ag")["type"], "query");
    assert_eq!(var("ag")["datasource"]["uid"], "${datasource}");

    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id in {title}"
        );
        if is_row(p) {
            // Expanded, its panels follow it at the top level, where these checks reach
            // them; a collapsed row would hide them in its own "panels".
            assert_eq!(p["collapsed"], false, "{title}");
            assert_eq!(p["panels"].as_array().map(Vec::len), Some(0), "{title}");
            continue;
        }
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no target");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            assert!(!t["expr"].as_str().unwrap().is_empty(), "{title}");
            assert!(t["refId"].is_string(), "{title}");
        }
    }
    let types: BTreeSet<&str> = panels.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert!(
        types.contains("heatmap") && types.contains("state-timeline"),
        "{types:?}"
    );
    let exprs = dashboard_exprs(&d).join("\n");
    for needle in [
        "histogram_quantile(0.99, sum by (le, phase) (rate(tdsvip_failover_phase_duration_seconds_bucket",
        "tdsvip_probe_duration_seconds_bucket",
        "tdsvip_owner{ag=~\"$ag\"}",
        "sum by (ag) (tdsvip_leader{ag=~\"$ag\"})",
        "histogram_quantile(0.99, sum by (le, instance, ag) (rate(tdsvip_etcd_lease_renewal_seconds_bucket",
    ] {
        assert!(exprs.contains(needle), "no {needle:?} in the dashboard");
    }
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // promtool parses every expression of a rule file: wrap the dashboard's queries in one.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in dashboard_exprs(&dashboard()).iter().enumerate() {
        let e = e.replace("$__rate_interval", "1m").replace("$ag", ".*");
        assert!(
            !e.contains('$') || e.contains("{{"),
            "unsubstituted variable in {e}"
        );
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let dir = scratch("promql");
    std::fs::write(dir.join("q.yml"), &rules).unwrap();
    let out = promtool(&["check", "rules", "q.yml"], &dir);
    assert!(out.status.success(), "{}\n{rules}", said(&out));
    // A broken query is refused, so the check can fail.
    std::fs::write(
        dir.join("bad.yml"),
        rules.replacen("sum by (", "sum by ((", 1),
    )
    .unwrap();
    assert!(
        !promtool(&["check", "rules", "bad.yml"], &dir)
            .status
            .success()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Every `tdsvip_…` name in `text`, histogram series suffixes stripped.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("tdsvip_") {
        let before = text.len() - rest.len() + i;
        let prev = text[..before].chars().next_back();
        let tail = &rest[i..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..len];
        rest = &tail[len..];
        // Part of a longer identifier (e.g. a path) is not a metric name.
        if prev.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(base.to_owned());
    }
    names
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An `AgentMetrics` with one event of every kind recorded, as the agent's own tests do.
fn exported_by_the_agent() -> BTreeSet<String> {
    let m = AgentMetrics::new().unwrap();
    m.observe_probe(&ProbeResult {
        target: "127.0.0.1:1433".parse().unwrap(),
        mode: Mode::Login,
        outcome: Outcome::Timeout {
            phase: Phase::Connect,
        },
        started_wall: SystemTime::now(),
        started: Instant::now(),
        latency: Duration::from_micros(1500),
        phases: PhaseTimes::default(),
        session_reused: None,
        server: ServerInfo::default(),
    });
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    let mut t = FailoverTimeline::new("ag1", Direction::Acquire, None, "primary", ms(30));
    t.old_primary_failed = Some(t0);
    t.detected = Some(ms(20));
    t.local_primary_seen = Some(ms(25));
    t.node_steps.push(TimedStep {
        name: "address".into(),
        start: ms(31),
        duration: Duration::from_micros(200),
        ok: true,
        detail: String::new(),
    });
    m.record_timeline(&t);
    m.record_cloud_calls(&[CallRecord {
        operation: Operation::ReplaceRoute,
        resource: "rtb-1".into(),
        result: CallResult::Throttled,
        elapsed: Duration::from_millis(12),
        attempts: 3,
        code: None,
    }]);
    m.set_owner("ag1", ip("10.9.0.10"), true);
    m.set_role("ag1", "sql1", Some(&ReplicaRole::Primary));
    m.set_overlay_packets(ip("10.9.0.10"), PacketVerdict::Pass, 1);
    m.observe_controller(&AgController::new("ag1", AgPolicy::new(2, 2)).unwrap());
    // Manage mode's: in follow mode none of them has a series, and so no `# TYPE` line.
    let manage = m.manage();
    manage.set_leader("ag1", true);
    manage.set_term("ag1", Some(42));
    manage.set_etcd_lease_alive("ag1", true);
    manage.count_promotion("ag1", "leader_lost");
    manage.count_refusal("ag1", "not_synchronous_commit");
    manage.observe_key_renewal("ag1", Some(Duration::from_millis(1)));
    manage.observe_key_renewal("ag1", None);
    manage.observe_write_lease_renewal("ag1", Duration::from_millis(2));
    manage.observe_heartbeat("ag1", Some(Duration::from_millis(1)));
    manage.set_failsafe("ag1", false);
    manage.count_acknowledgement("ag1");
    let text = m.encode().unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect()
}

#[test]
fn every_metric_used_is_exported_by_the_agent() {
    let exported = exported_by_the_agent();
    assert!(exported.len() >= 19, "{exported:?}");
    let mut used = BTreeSet::new();
    for (what, text) in [
        ("alerts.yml", read("alerts.yml")),
        ("alerts_test.yml", read("alerts_test.yml")),
        // The whole file: queries, the $ag variable's label_values(), descriptions.
        ("tdsvip.json", read("tdsvip.json")),
    ] {
        let names = metric_names(&text);
        let unknown: Vec<&String> = names.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} uses {unknown:?}, which the agent does not export ({exported:?})"
        );
        used.extend(names);
    }
    // The rules and dashboard really use the metrics they are about.
    for m in [
        "tdsvip_owner",
        "tdsvip_probe_failures_total",
        "tdsvip_probe_duration_seconds",
        "tdsvip_failover_phase_duration_seconds",
        "tdsvip_route_table_calls_total",
        "tdsvip_drift_repairs_total",
        "tdsvip_conflicts_total",
    ]
    .into_iter()
    .chain(tdsvip::ManageMetrics::NAMES)
    {
        assert!(used.contains(m), "{m} not used: {used:?}");
    }
}

#[test]
fn metric_names_are_extracted_exactly() {
    let n = metric_names(
        "rate(tdsvip_probe_duration_seconds_bucket[1m]) tdsvip_owner{ag=\"x\"} my_tdsvip_x tdsvip_conflicts_total",
    );
    let want: BTreeSet<String> = [
        "tdsvip_probe_duration_seconds",
        "tdsvip_owner",
        "tdsvip_conflicts_total",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(n, want);
}

/// Where deploy/setup.sh installed @grafana/schema, ts-json-schema-generator and ajv-cli.
fn grafana_schema_dir() -> PathBuf {
    std::env::var_os("TDSVIP_GRAFANA_SCHEMA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/tdsvip/grafana-schema")
        })
}

fn npx(dir: &Path, args: &[&str]) -> Output {
    Command::new("npx")
        .arg("--no-install")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("npx not runnable (deploy/setup.sh installs it): {e}"))
}

#[test]
fn dashboard_matches_grafanas_own_schema() {
    let tools = grafana_schema_dir();
    let types =
        tools.join("node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts");
    assert!(
        types.is_file(),
        "{} missing: run deploy/setup.sh tests",
        types.display()
    );
    let tmp = scratch("schema");
    let schema = tmp.join("dashboard.schema.json");
    let out = npx(
        &tools,
        &[
            "ts-json-schema-generator",
            "--path",
            types.to_str().unwrap(),
            "--type",
            "Dashboard",
            "-o",
            schema.to_str().unwrap(),
        ],
    );
    assert!(out.status.success() && schema.is_file(), "{}", said(&out));
    let validate = |data: &Path| {
        npx(
            &tools,
            &[
                "ajv",
                "validate",
                "--strict=false",
                "-s",
                schema.to_str().unwrap(),
                "-d",
                data.to_str().unwrap(),
            ],
        )
    };
    let out = validate(&dashboards().join("tdsvip.json"));
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("tdsvip.json valid"), "{}", said(&out));

    // The schema is really applied: a schemaVersion that is not a number is refused.
    let mut d = dashboard();
    d["schemaVersion"] = Value::from("39");
    let bad = tmp.join("bad.json");
    std::fs::write(&bad, serde_json::to_string(&d).unwrap()).unwrap();
    let out = validate(&bad);
    assert!(!out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("/schemaVersion"), "{}", said(&out));
    let _ = std::fs::remove_dir_all(tmp);
}

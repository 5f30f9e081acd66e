//! Tests of `report.rs`, kept in a file of their own so that the module stays readable in
//! one sitting.

use super::*;

fn claim_report(after_second: Option<RouteState>) -> ClaimReport {
    let table = |id: &str, before, after| TableClaim {
        id: id.into(),
        before,
        after,
        outcome: TableCalls::ended(
            None,
            Duration::from_micros(7250),
            1,
            vec![CallRecord {
                operation: Operation::ReplaceRoute,
                resource: id.into(),
                result: CallResult::Ok,
                elapsed: Duration::from_micros(7250),
                attempts: 1,
                code: None,
            }],
        ),
    };
    ClaimReport {
        address: Ipv4Addr::new(192, 168, 100, 10),
        eni: "eni-aaaaaaaa".into(),
        mode: ClaimMode::Route,
        tables: vec![
            table(
                "rtb-11111111",
                Some(RouteState::OtherEni {
                    eni: "eni-bbbbbbbb".into(),
                    instance: Some("i-bbbbbbbb".into()),
                }),
                Some(RouteState::ThisEni),
            ),
            table("rtb-22222222", Some(RouteState::Missing), after_second),
        ],
        total: Duration::from_micros(20_500),
        budget: Duration::from_millis(8700),
    }
}

#[test]
fn json_has_the_documented_shape() {
    let json = serde_json::to_value(claim_report(Some(RouteState::ThisEni))).unwrap();
    assert_eq!(json["address"], "192.168.100.10");
    assert_eq!(json["eni"], "eni-aaaaaaaa");
    assert_eq!(json["total_ms"], 20.5);
    let t0 = &json["tables"][0];
    assert_eq!(t0["id"], "rtb-11111111");
    assert_eq!(t0["before"], "eni-bbbbbbbb");
    assert_eq!(t0["after"], "eni-aaaaaaaa");
    assert_eq!(t0["ms"], 7.25);
    assert_eq!(t0["attempts"], 1);
    assert!(t0["error"].is_null());
    assert_eq!(t0["calls"][0]["operation"], "ReplaceRoute");
    assert_eq!(t0["calls"][0]["result"], "ok");
    assert_eq!(json["tables"][1]["before"], "missing");
    assert_eq!(json["all_point_here"], true);
}

#[test]
fn all_point_here_needs_every_table() {
    assert!(claim_report(Some(RouteState::ThisEni)).all_point_here());
    assert!(!claim_report(None).all_point_here());
    assert!(
        !claim_report(Some(RouteState::Blackhole {
            target: "eni-aaaaaaaa".into()
        }))
        .all_point_here()
    );
    let mut empty = claim_report(None);
    empty.tables.clear();
    assert!(!empty.all_point_here());
}

#[test]
fn human_table_names_owners() {
    let text = claim_report(None).to_string();
    assert!(text.contains("1 of 2 point here"), "{text}");
    assert!(text.contains("eni-bbbbbbbb (i-bbbbbbbb)"), "{text}");
    assert!(text.contains("eni-aaaaaaaa (this node)"), "{text}");
    assert!(text.contains("not pointing here"), "{text}");
    assert!(text.lines().nth(1).unwrap().starts_with("TABLE"), "{text}");
}

#[test]
fn observe_report_finds_drift() {
    let obs = |id: &str, state| TableObservation {
        id: id.into(),
        state,
        outcome: TableCalls::ended(None, Duration::from_millis(1), 1, vec![]),
    };
    let report = ObserveReport {
        address: Ipv4Addr::new(192, 168, 100, 10),
        eni: "eni-aaaaaaaa".into(),
        mode: ClaimMode::Route,
        tables: vec![
            obs("rtb-11111111", Some(RouteState::ThisEni)),
            obs(
                "rtb-22222222",
                Some(RouteState::OtherEni {
                    eni: "eni-bbbbbbbb".into(),
                    instance: None,
                }),
            ),
            obs("rtb-33333333", None),
        ],
        total: Duration::from_millis(3),
    };
    let drifted: Vec<&str> = report.drifted().map(|t| t.id.as_str()).collect();
    assert_eq!(drifted, ["rtb-22222222"]);
    assert!(!report.all_point_here());
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["tables"][1]["target"], "eni-bbbbbbbb");
    assert!(json["tables"][2]["target"].is_null());
}

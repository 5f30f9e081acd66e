//! Tests of `config.rs`, kept in a file of their own so that the module stays readable in
//! one sitting.

use super::*;

fn parse(text: &str) -> Result<CloudConfig, toml::de::Error> {
    toml::from_str(text)
}

fn valid() -> CloudConfig {
    CloudConfig::route("us-east-1", &["rtb-0123456789abcdef0", "rtb-89abcdef"])
}

fn problems_of(cfg: &CloudConfig) -> Vec<String> {
    cfg.validate().iter().map(ToString::to_string).collect()
}

#[test]
fn full_section_parses_with_defaults() {
    let cfg = parse(
        r#"
        provider = "aws"
        region = "eu-west-1"
        route_tables = ["rtb-0123456789abcdef0"]
        "#,
    )
    .unwrap();
    assert_eq!(cfg.mode, ClaimMode::Route);
    assert_eq!(cfg.call_timeout_ms, 2000);
    assert_eq!(cfg.max_attempts, 4);
    assert_eq!(cfg.backoff_base_ms, DEFAULT_BACKOFF_BASE_MS);
    assert_eq!(cfg.backoff_cap_ms, DEFAULT_BACKOFF_CAP_MS);
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
}

#[test]
fn every_key_parses() {
    let cfg = parse(
        r#"
        provider = "aws"
        region = "us-gov-west-1"
        route_tables = ["rtb-0123456789abcdef0"]
        mode = "route"
        instance_id = "i-0123456789abcdef0"
        interface = "ens5"
        endpoint_url = "https://vpce-1.ec2.us-gov-west-1.vpce.amazonaws.com"
        imds_endpoint = "http://[fd00:ec2::254]"
        call_timeout_ms = 500
        max_attempts = 3
        backoff_base_ms = 20
        backoff_cap_ms = 400
        "#,
    )
    .unwrap();
    assert_eq!(cfg.interface.as_deref(), Some("ens5"));
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
}

#[test]
fn unknown_key_is_refused_by_name() {
    let err = parse("provider = \"aws\"\nroute_table = [\"rtb-89abcdef\"]\n").unwrap_err();
    assert!(err.to_string().contains("route_table"), "{err}");
}

#[test]
fn unknown_provider_and_mode_are_refused() {
    assert!(parse("provider = \"gcp\"").is_err());
    let err = parse("provider = \"aws\"\nmode = \"eip\"").unwrap_err();
    assert!(err.to_string().contains("eip"), "{err}");
}

#[test]
fn secondary_ip_mode_parses() {
    let cfg = parse("provider = \"aws\"\nmode = \"secondary_ip\"").unwrap();
    assert_eq!(cfg.mode, ClaimMode::SecondaryIp);
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
}

#[test]
fn bad_route_table_names_its_index() {
    let mut cfg = valid();
    cfg.route_tables.push("rtb-xyz".into());
    assert_eq!(
        problems_of(&cfg),
        [
            "cloud.route_tables[2]: \"rtb-xyz\" is not a route table id (expected rtb- followed by 8 or 17 hex digits)"
        ]
    );
}

#[test]
fn route_table_id_forms() {
    assert!(is_resource_id("rtb-89abcdef", "rtb-"));
    assert!(is_resource_id("rtb-0123456789abcdef0", "rtb-"));
    assert!(!is_resource_id("rtb-0123456789ABCDEF0", "rtb-"));
    assert!(!is_resource_id("rtb-123456789", "rtb-"));
    assert!(!is_resource_id("eni-89abcdef", "rtb-"));
    assert!(!is_resource_id("rtb-", "rtb-"));
}

#[test]
fn duplicate_route_table_is_refused() {
    let mut cfg = valid();
    cfg.route_tables.push("rtb-89abcdef".into());
    assert_eq!(
        problems_of(&cfg),
        ["cloud.route_tables[2]: \"rtb-89abcdef\" is already listed at cloud.route_tables[1]"]
    );
}

#[test]
fn route_mode_needs_tables() {
    let mut cfg = valid();
    cfg.route_tables.clear();
    let problems = cfg.validate();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "cloud.route_tables");
}

#[test]
fn secondary_ip_mode_refuses_tables() {
    let mut cfg = valid();
    cfg.mode = ClaimMode::SecondaryIp;
    let problems = cfg.validate();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "cloud.route_tables");
    assert!(problems[0].reason.contains("secondary_ip"));
}

#[test]
fn region_forms() {
    for good in [
        "us-east-1",
        "ap-southeast-2",
        "us-gov-west-1",
        "us-isob-east-1",
    ] {
        assert!(is_region(good), "{good}");
    }
    for bad in [
        "",
        "us-east",
        "US-EAST-1",
        "us_east_1",
        "useast1",
        "us--1",
        "us-east-1a",
    ] {
        assert!(!is_region(bad), "{bad}");
    }
    let mut cfg = valid();
    cfg.region = Some("us-east-1a".into());
    let problems = cfg.validate();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "cloud.region");
}

#[test]
fn region_may_be_left_to_the_sdk() {
    let mut cfg = valid();
    cfg.region = None;
    assert!(cfg.validate().is_empty());
}

#[test]
fn bad_instance_and_eni_ids() {
    let mut cfg = valid();
    cfg.instance_id = Some("i-xyz".into());
    cfg.eni_id = Some("eni_0123".into());
    let keys: Vec<String> = cfg.validate().into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["cloud.instance_id", "cloud.eni_id"]);
}

#[test]
fn interface_name_rules() {
    let mut cfg = valid();
    cfg.interface = Some("eth0/../x".into());
    assert_eq!(cfg.validate()[0].key, "cloud.interface");
    cfg.interface = Some("averyveryverylongname".into());
    assert_eq!(cfg.validate()[0].key, "cloud.interface");
    cfg.interface = Some("ens5".into());
    assert!(cfg.validate().is_empty());
}

#[test]
fn interface_and_eni_id_conflict() {
    let mut cfg = valid();
    cfg.interface = Some("ens5".into());
    cfg.eni_id = Some("eni-0123456789abcdef0".into());
    let problems = cfg.validate();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "cloud.interface");
    assert!(problems[0].reason.contains("cloud.eni_id"));
}

#[test]
fn endpoint_url_rules() {
    for good in [
        "http://127.0.0.1:5000",
        "https://ec2.us-east-1.amazonaws.com",
        "http://[::1]:8080/",
    ] {
        assert!(check_url(good, true).is_ok(), "{good}");
    }
    for bad in [
        "127.0.0.1:5000",
        "ftp://x",
        "http://",
        "http://host:0",
        "http://host:99999",
        "http://[::1",
        "http://user@host",
    ] {
        assert!(check_url(bad, true).is_err(), "{bad}");
    }
    let mut cfg = valid();
    cfg.endpoint_url = Some("localhost:5000".into());
    let problems = cfg.validate();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "cloud.endpoint_url");
    assert!(
        problems[0]
            .to_string()
            .starts_with("cloud.endpoint_url: \"localhost:5000\": ")
    );
}

#[test]
fn imds_endpoint_must_be_plain_http() {
    let mut cfg = valid();
    cfg.imds_endpoint = Some("https://169.254.169.254".into());
    let problems = cfg.validate();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "cloud.imds_endpoint");
}

#[test]
fn call_timeout_and_attempt_ranges() {
    let mut cfg = valid();
    cfg.call_timeout_ms = 10;
    cfg.max_attempts = 0;
    let keys: Vec<String> = cfg.validate().into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["cloud.call_timeout_ms", "cloud.max_attempts"]);
    cfg.call_timeout_ms = 60_001;
    cfg.max_attempts = 11;
    assert_eq!(cfg.validate().len(), 2);
    cfg.call_timeout_ms = 50;
    cfg.max_attempts = 1;
    assert!(cfg.validate().is_empty());
}

#[test]
fn backoff_rules() {
    let mut cfg = valid();
    cfg.backoff_base_ms = 0;
    assert_eq!(cfg.validate()[0].key, "cloud.backoff_base_ms");
    cfg.backoff_base_ms = 500;
    cfg.backoff_cap_ms = 100;
    let problems = cfg.validate();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "cloud.backoff_cap_ms");
    cfg.backoff_cap_ms = 60_001;
    assert_eq!(cfg.validate()[0].key, "cloud.backoff_cap_ms");
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let mut cfg = valid();
    cfg.region = Some("nowhere".into());
    cfg.route_tables = vec!["rtb-1".into(), "subnet-89abcdef".into()];
    cfg.max_attempts = 0;
    let keys: Vec<String> = cfg.validate().into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "cloud.region",
            "cloud.route_tables[0]",
            "cloud.route_tables[1]",
            "cloud.max_attempts"
        ]
    );
}

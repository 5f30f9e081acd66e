//! The config file's tests: defaults, the shipped examples, and every kind of problem
//! named by its key.

use super::parse::key_path;
use super::*;

const MINIMAL: &str = r#"
interface = "eth0"
[sql]
user = "tdsvip"
password_file = "/etc/tdsvip/sql-password"
[[ag]]
name = "AG1"
addresses = ["10.0.0.100"]
"#;

fn issues(text: &str) -> Vec<String> {
    match AgentConfig::parse(text) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn minimal_file_gets_documented_defaults() {
    let c = AgentConfig::parse(MINIMAL).unwrap();
    assert_eq!(c.sql.endpoint, "127.0.0.1:1433".parse().unwrap());
    assert_eq!(c.probe, ProbeSettings::default());
    assert_eq!(c.http.listen, "127.0.0.1:9477".parse().unwrap());
    assert!(c.ebpf.enabled);
    assert_eq!(c.ags[0].port, 1433);
    assert_eq!(
        c.ags[0].overlay_addresses(),
        vec![OverlayAddress {
            ip: "10.0.0.100".parse().unwrap(),
            prefix: 32
        }]
    );
}

#[test]
fn the_example_config_in_deploy_is_valid() {
    let text = include_str!("../../../deploy/tdsvip.toml");
    if let Err(e) = AgentConfig::parse(text) {
        panic!("deploy/tdsvip.toml does not validate:\n{e}");
    }
}

#[test]
fn the_aws_example_config_is_valid() {
    let text = include_str!("../../../deploy/tdsvip-aws.toml");
    let c = AgentConfig::parse(text).unwrap_or_else(|e| panic!("deploy/tdsvip-aws.toml:\n{e}"));
    assert_eq!(c.cloud.map(|c| c.route_tables.len()), Some(2));
}

#[test]
fn cloud_section_problems_are_reported_with_the_rest() {
    let text = format!(
        "{MINIMAL}\n[cloud]\nprovider = \"aws\"\nroute_tables = [\"rtb-nothex\"]\ncall_timeout_ms = 1\n"
    );
    let got = issues(&text);
    assert!(
        got.iter().any(|g| g.starts_with("cloud.route_tables[0]: ")),
        "{got:?}"
    );
    assert!(
        got.iter().any(|g| g.starts_with("cloud.call_timeout_ms: ")),
        "{got:?}"
    );
    let got = issues(&format!("{MINIMAL}\n[cloud]\nprovider = \"gcp\"\n"));
    assert!(got[0].starts_with("cloud.provider: "), "{got:?}");
    let v6_only = MINIMAL.replace("10.0.0.100", "fd00::100");
    let got = issues(&format!(
        "{v6_only}\n[cloud]\nprovider = \"aws\"\nregion = \"us-east-1\"\nroute_tables = [\"rtb-0123456789abcdef0\"]\n"
    ));
    assert!(got.iter().any(|g| g.starts_with("cloud.mode: ")), "{got:?}");
}

#[test]
fn every_unknown_key_is_reported_with_its_path() {
    let text = format!("extra = 1\n{MINIMAL}\n[probe]\nintervall_ms = 5\n");
    let text = text.replace(
        "addresses = [\"10.0.0.100\"]",
        "addresses = [\"10.0.0.100\"]\ndatabse = [\"x\"]",
    );
    let got = issues(&text);
    assert!(got.contains(&"extra: unknown key".to_owned()), "{got:?}");
    assert!(
        got.contains(&"probe.intervall_ms: unknown key".to_owned()),
        "{got:?}"
    );
    assert!(
        got.contains(&"ag[0].databse: unknown key".to_owned()),
        "{got:?}"
    );
}

#[test]
fn wrong_types_name_the_key() {
    let got = issues(&MINIMAL.replace(
        "interface = \"eth0\"",
        "interface = \"eth0\"\n[probe]\nrise = \"two\"",
    ));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("probe.rise: "), "{got:?}");
    let got = issues(&MINIMAL.replace(
        "addresses = [\"10.0.0.100\"]",
        "addresses = [\"10.0.0.100\", 7]",
    ));
    assert!(got[0].starts_with("ag[0].addresses[1]: "), "{got:?}");
    let got = issues("interface = \"eth0\"\n");
    assert!(got[0].contains("sql"), "{got:?}");
}

#[test]
fn syntax_errors_give_line_and_column() {
    let got = issues("interface = \"eth0\"\nsql = {\n");
    assert_eq!(got.len(), 1);
    assert!(got[0].starts_with("(syntax, line 2 column"), "{got:?}");
}

#[test]
fn every_meaning_problem_is_reported_at_once() {
    let text = r#"
interface = "this-name-is-far-too-long"
[sql]
user = ""
password_file = "relative/path"
encrypt = "strict"
trust_server_certificate = true
[probe]
interval_ms = 20
jitter_ms = 20
timeout_ms = 5
rise = 0
[http]
listen = "0.0.0.0:9477"
[[ag]]
name = "AG1"
addresses = ["10.0.0.100", "10.0.0.100/33", "127.0.0.1", "nonsense"]
port = 0
databases = [""]
[[ag]]
name = "ag1"
addresses = ["10.0.0.100"]
[[peer]]
name = "n2"
status_url = "ftp://x"
"#;
    let got = issues(text);
    for key in [
        "interface",
        "sql.user",
        "sql.password_file",
        "sql.trust_server_certificate",
        "probe.jitter_ms",
        "probe.timeout_ms",
        "probe.rise",
        "http.token_file",
        "ag[0].addresses[1]",
        "ag[0].addresses[2]",
        "ag[0].addresses[3]",
        "ag[0].port",
        "ag[0].databases[0]",
        "ag[1].name",
        "ag[1].addresses[0]",
        "peer[0].status_url",
    ] {
        assert!(
            got.iter().any(|g| g.starts_with(&format!("{key}: "))),
            "no issue for {key} in {got:#?}"
        );
    }
}

#[test]
fn password_sources_are_exclusive_and_required() {
    let none = MINIMAL.replace("password_file = \"/etc/tdsvip/sql-password\"\n", "");
    assert!(issues(&none)[0].starts_with("sql.password_file: one of"));
    let both = MINIMAL.replace(
        "password_file = \"/etc/tdsvip/sql-password\"",
        "password_file = \"/p\"\npassword_env = \"PW\"",
    );
    assert!(issues(&both)[0].starts_with("sql.password_env: "));
}

#[test]
fn overlay_addresses_parse_with_and_without_prefix() {
    let v6: OverlayAddress = "fd00::100".parse().unwrap();
    assert_eq!(v6.prefix, 128);
    let v4: OverlayAddress = "10.1.2.3/24".parse().unwrap();
    assert_eq!((v4.prefix, v4.to_string().as_str()), (24, "10.1.2.3/24"));
    assert!("10.1.2.3/0".parse::<OverlayAddress>().is_err());
    assert!("::1".parse::<OverlayAddress>().is_err());
    assert!("224.0.0.1".parse::<OverlayAddress>().is_err());
}

/// Several AGs on one node share the interface's one eBPF guard (`interface_guard.rs`);
/// one address still follows one AG.
#[test]
fn two_ags_share_the_guard_but_not_an_address() {
    let two = format!("{MINIMAL}[[ag]]\nname = \"AG2\"\naddresses = [\"10.0.0.101\"]\n");
    assert!(issues(&two).is_empty(), "{:?}", issues(&two));
    let same = two.replace("10.0.0.101", "10.0.0.100");
    let got = issues(&same);
    assert!(got.iter().any(|g| g.contains("is listed twice")), "{got:?}");
}

#[test]
fn key_paths_read_like_toml() {
    assert_eq!(key_path("ag.0.addresses.2"), "ag[0].addresses[2]");
    assert_eq!(key_path("probe.rise"), "probe.rise");
    assert_eq!(key_path(""), ".");
}

fn with_sql(extra: &str) -> String {
    MINIMAL.replace(
        "password_file = \"/etc/tdsvip/sql-password\"\n",
        &format!("password_file = \"/etc/tdsvip/sql-password\"\n{extra}\n"),
    )
}

#[test]
fn encryption_defaults_to_mandatory_with_verification() {
    let c = AgentConfig::parse(MINIMAL).unwrap();
    assert_eq!(c.sql.encrypt, tdsvip_probes::Encrypt::Mandatory);
    assert!(!c.sql.trust_server_certificate && !c.sql.allow_cleartext_login);
    assert_eq!(c.sql.ca_file, None);
    assert!(c.sql.warnings().is_empty());
    let login = c.login_config(&"pw".into(), "AG1", &[]);
    assert_eq!(login.tls, c.sql.tls_config());
    for mode in ["strict", "mandatory", "optional"] {
        let c = AgentConfig::parse(&with_sql(&format!("encrypt = \"{mode}\""))).unwrap();
        assert_eq!(c.sql.encrypt.name(), mode);
    }
    let c = AgentConfig::parse(&with_sql(
        "ca_file = \"/etc/tdsvip/ca.pem\"\nhost_name_in_certificate = \"sql1.example.com\"",
    ))
    .unwrap();
    assert_eq!(
        c.sql.tls_config().ca_file.unwrap().to_str(),
        Some("/etc/tdsvip/ca.pem")
    );
}

#[test]
fn every_encryption_refusal_names_its_key() {
    let one = |extra: &str| issues(&with_sql(extra));
    let off = one("encrypt = \"off\"");
    assert_eq!(off.len(), 1, "{off:?}");
    assert!(off[0].starts_with("sql.allow_cleartext_login:"), "{off:?}");
    assert!(one("encrypt = \"off\"\nallow_cleartext_login = true").is_empty());
    let strict_trust = one("encrypt = \"strict\"\ntrust_server_certificate = true");
    assert!(
        strict_trust[0].starts_with("sql.trust_server_certificate:"),
        "{strict_trust:?}"
    );
    let name = one("host_name_in_certificate = \"not a host\"");
    assert!(
        name[0].starts_with("sql.host_name_in_certificate:"),
        "{name:?}"
    );
    let ca = one("ca_file = \"ca.pem\"");
    assert!(ca[0].starts_with("sql.ca_file:"), "{ca:?}");
    let bogus = one("encrypt = \"yes\"");
    assert!(bogus[0].starts_with("sql.encrypt:"), "{bogus:?}");
    for old in ["tls = \"required\"", "tls = \"off\""] {
        let tls = one(old);
        assert_eq!(tls.len(), 1, "{tls:?}");
        assert!(
            tls[0].starts_with("sql.tls:") && tls[0].contains("sql.encrypt"),
            "{tls:?}"
        );
    }
}

#[test]
fn trust_and_cleartext_are_warned_at_start() {
    let c = AgentConfig::parse(&with_sql("trust_server_certificate = true")).unwrap();
    assert!(c.sql.warnings()[0].contains("sql.trust_server_certificate"));
    let c = AgentConfig::parse(&with_sql(
        "encrypt = \"optional\"\nallow_cleartext_login = true",
    ))
    .unwrap();
    assert!(c.sql.warnings()[0].contains("sql.allow_cleartext_login"));
}

#[test]
fn login_problems_need_the_password_and_the_files() {
    let c = AgentConfig::parse(&with_sql("ca_file = \"/nonexistent/tdsvip-ca.pem\"")).unwrap();
    let p = c.login_problems(&"pw".into());
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "sql.ca_file");
    let c =
        AgentConfig::parse(&with_sql("encrypt = \"off\"\nallow_cleartext_login = true")).unwrap();
    let long = "x".repeat(129);
    let p = c.login_problems(&long.as_str().into());
    assert_eq!(p[0].key, "sql.password", "{p:?}");
    assert!(c.login_problems(&"pw".into()).is_empty());
}

#[test]
fn http_limits_default_to_the_servers_and_refuse_what_cannot_work() {
    let c = AgentConfig::parse(MINIMAL).unwrap();
    assert_eq!(c.http.head_timeout_ms, 1000);
    assert_eq!(c.http.max_connections, 256);
    assert_eq!(c.http.max_connections_per_source, 8);
    let ok = format!(
        "{MINIMAL}[http]\nhead_timeout_ms = 250\nmax_connections = 64\nmax_connections_per_source = 64\n"
    );
    let c = AgentConfig::parse(&ok).unwrap();
    assert_eq!((c.http.head_timeout_ms, c.http.max_connections), (250, 64));
    for (body, key, reason) in [
        (
            "head_timeout_ms = 0",
            "http.head_timeout_ms",
            "outside 100..=10000",
        ),
        (
            "head_timeout_ms = 30000",
            "http.head_timeout_ms",
            "outside 100..=10000",
        ),
        (
            "max_connections = 0",
            "http.max_connections",
            "outside 1..=768",
        ),
        (
            "max_connections = 5000",
            "http.max_connections",
            "file descriptor",
        ),
        (
            "max_connections_per_source = 0",
            "http.max_connections_per_source",
            "outside 1..=",
        ),
        (
            "max_connections = 16\nmax_connections_per_source = 17",
            "http.max_connections_per_source",
            "http.max_connections (16)",
        ),
    ] {
        let got = issues(&format!("{MINIMAL}[http]\n{body}\n"));
        assert!(
            got.iter()
                .any(|g| g.starts_with(&format!("{key}: ")) && g.contains(reason)),
            "{body}: no {key} problem with {reason:?} in {got:#?}"
        );
    }
}

#[test]
fn a_lease_that_one_slow_probe_or_a_long_freeze_would_defeat_is_refused() {
    assert_eq!(AgentConfig::parse(MINIMAL).unwrap().ebpf.lease_ms, 2000);
    // Default probe: 20 ms interval, 200 ms deadline: two rounds are 440 ms.
    let short = issues(&format!("{MINIMAL}[ebpf]\nlease_ms = 400\n"));
    assert_eq!(short.len(), 1, "{short:?}");
    assert!(
        short[0].starts_with("ebpf.lease_ms: 400 is below 440"),
        "{short:?}"
    );
    assert!(issues(&format!("{MINIMAL}[ebpf]\nlease_ms = 440\n")).is_empty());
    let long = issues(&format!("{MINIMAL}[ebpf]\nlease_ms = 60001\n"));
    assert!(
        long[0].starts_with("ebpf.lease_ms: 60001 is above 60000"),
        "{long:?}"
    );
}

#[test]
fn the_pin_directory_defaults_under_sys_fs_bpf_and_must_be_absolute() {
    let config = AgentConfig::parse(MINIMAL).unwrap();
    assert_eq!(
        config.ebpf.pin_dir,
        std::path::Path::new("/sys/fs/bpf/tdsvip")
    );
    let relative = issues(&format!("{MINIMAL}[ebpf]\npin_dir = \"bpf/tdsvip\"\n"));
    assert_eq!(relative.len(), 1, "{relative:?}");
    assert!(
        relative[0].starts_with("ebpf.pin_dir: bpf/tdsvip is not an absolute path"),
        "{relative:?}"
    );
}

#[test]
fn required_synchronized_secondaries_to_commit_is_named_when_wrong() {
    let manage =
        format!("{MINIMAL}\n[cluster]\nmode = \"manage\"\netcd = [\"http://10.0.0.1:2379\"]\n");
    let c = AgentConfig::parse(&manage).unwrap();
    assert_eq!(c.cluster.required_synchronized_secondaries_to_commit, None);
    let with =
        |value: &str| format!("{manage}required_synchronized_secondaries_to_commit = {value}\n");
    let c = AgentConfig::parse(&with("1")).unwrap();
    assert_eq!(
        c.cluster.required_synchronized_secondaries_to_commit,
        Some(1)
    );
    for bad in ["-1", "\"1\"", "1.5", "9"] {
        let got = issues(&with(bad));
        assert!(
            got.len() == 1
                && got[0].starts_with("cluster.required_synchronized_secondaries_to_commit: "),
            "{bad}: {got:?}"
        );
    }
}

/// A manage-mode node `sqlnode1` on EC2 with two peers, `fence` and `peers` appended.
fn fenced(fence: &str, peers: &[(&str, Option<&str>)]) -> String {
    let mut text = format!(
        "node = \"sqlnode1\"\n{MINIMAL}\n[cluster]\nmode = \"manage\"\netcd = [\"http://10.0.0.1:2379\"]\n\
         [cloud]\nprovider = \"aws\"\nregion = \"us-east-1\"\nroute_tables = [\"rtb-0123456789abcdef0\"]\n\
         instance_id = \"i-0aaaaaaaaaaaaaaaa\"\n{fence}\n"
    );
    for (name, instance) in peers {
        text += &format!("[[peer]]\nname = \"{name}\"\nstatus_url = \"http://10.0.0.2:9477\"\n");
        if let Some(id) = instance {
            text += &format!("instance_id = \"{id}\"\n");
        }
    }
    text
}

#[test]
fn fence_aws_needs_every_peers_own_instance() {
    let both = [
        ("sqlnode2", Some("i-0bbbbbbbbbbbbbbbb")),
        ("sqlnode3", Some("i-0cccccccccccccccc")),
    ];
    let c = AgentConfig::parse(&fenced("[fence]\naws = true", &both)).unwrap();
    assert!(c.fence.aws);
    assert_eq!(
        c.peers[1].instance_id.as_deref(),
        Some("i-0cccccccccccccccc")
    );
    assert_eq!(
        AgentConfig::parse(&fenced("", &[])).unwrap().fence,
        FenceConfig::default()
    );

    let bad = [
        ("sqlnode2", None),
        ("sqlnode3", Some("i-0xyz")),
        ("sqlnode4", Some("i-0aaaaaaaaaaaaaaaa")),
        ("sqlnode5", Some("i-0bbbbbbbbbbbbbbbb")),
        ("sqlnode6", Some("i-0bbbbbbbbbbbbbbbb")),
    ];
    let found = issues(&fenced("[fence]\naws = true", &bad));
    let expect = [
        "peer[0].instance_id: required with fence.aws",
        "peer[1].instance_id: \"i-0xyz\" is not an instance id",
        "peer[2].instance_id: \"i-0aaaaaaaaaaaaaaaa\" is this node's own instance",
        "peer[4].instance_id: \"i-0bbbbbbbbbbbbbbbb\" is another peer's instance too",
    ];
    assert_eq!(found.len(), expect.len(), "{found:#?}");
    for (f, e) in found.iter().zip(expect) {
        assert!(f.starts_with(e), "{f:?} is not {e:?}…");
    }
}

#[test]
fn fence_aws_needs_manage_mode_a_cloud_section_and_a_peer() {
    let text = format!("{MINIMAL}\n[fence]\naws = true\n");
    let found = issues(&text);
    assert!(
        found
            .iter()
            .any(|i| i.starts_with("fence.aws: needs cluster.mode = \"manage\"")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|i| i.starts_with("fence.aws: needs a [cloud] section")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|i| i.starts_with("fence.aws: no [[peer]]")),
        "{found:#?}"
    );
    // An instance id without the fence does nothing: said, not ignored.
    let found = issues(&fenced("", &[("sqlnode2", Some("i-0bbbbbbbbbbbbbbbb"))]));
    assert_eq!(
        found,
        ["peer[0].instance_id: set, but fence.aws is false: only the fence uses it"],
    );
    let found = issues(&fenced("[fence]\naws = \"yes\"", &[]));
    assert!(
        found.iter().any(|i| i.starts_with("fence.aws")),
        "{found:#?}"
    );
}

#[test]
fn fence_aws_takes_one_ag_and_must_know_this_nodes_own_instance() {
    let peer = [("sqlnode2", Some("i-0bbbbbbbbbbbbbbbb"))];
    let two_ags = fenced("[fence]\naws = true", &peer)
        + "[[ag]]\nname = \"AG2\"\naddresses = [\"10.0.0.101\"]\n";
    let found = issues(&two_ags);
    assert!(
        found.iter().any(|i| i.starts_with("fence.aws: 2 [[ag]]")),
        "{found:#?}"
    );
    let by_eni = fenced("[fence]\naws = true", &peer).replace(
        "instance_id = \"i-0aaaaaaaaaaaaaaaa\"",
        "eni_id = \"eni-0aaaaaaaaaaaaaaaa\"",
    );
    let found = issues(&by_eni);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with("cloud.instance_id: required with fence.aws when cloud.eni_id is set"),
        "{found:#?}"
    );
}

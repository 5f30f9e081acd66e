//! `tdsvip routes` as an operator runs it: the real binary, a real config file, and moto's
//! EC2 server on loopback, checking the report and the exit codes (0 every table points
//! here, 1 not all do, 2 configuration problems).

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::json;

use tdsvip_cloud::moto::{OVERLAY, World, moto, route_target, setup_api};

fn write_config(name: &str, endpoint: &str, eni: &str, tables: &[String]) -> PathBuf {
    let tables: Vec<String> = tables.iter().map(|t| format!("\"{t}\"")).collect();
    let text = format!(
        r#"
node = "sqlnode1"
interface = "eth0"
[sql]
user = "tdsvip"
password_file = "/etc/tdsvip/sql-password"
[[ag]]
name = "AG1"
addresses = ["{OVERLAY}"]
[cloud]
provider = "aws"
region = "us-east-1"
route_tables = [{}]
eni_id = "{eni}"
endpoint_url = "{endpoint}"
call_timeout_ms = 2000
"#,
        tables.join(", ")
    );
    let path =
        std::env::temp_dir().join(format!("tdsvip-routes-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write config");
    path
}

/// Runs the binary with static test credentials, off the runtime's threads.
async fn tdsvip(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tdsvip"))
            .args(&args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("run tdsvip")
    })
    .await
    .expect("join")
}

fn routes(config: &std::path::Path, extra: &str) -> Vec<String> {
    let mut v = vec![
        "routes".to_owned(),
        "--config".to_owned(),
        config.display().to_string(),
    ];
    v.extend(extra.split_whitespace().map(str::to_owned));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_claim_and_look_again_across_four_tables() {
    let endpoint = moto().endpoint();
    let api = setup_api(&endpoint).await;
    let world = World::build(api.client(), 4).await;
    // The previous primary (node b) owns every route.
    world
        .route_to(api.client(), &world.tables, &world.b.eni)
        .await;
    let config = write_config("claim", &endpoint, &world.a.eni, &world.tables);

    let out = tdsvip(routes(&config, "--json")).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let r = json(&out);
    assert_eq!(r["address"], OVERLAY.to_string());
    assert_eq!(r["eni"], world.a.eni);
    assert_eq!(r["tables"].as_array().map(Vec::len), Some(4));
    for t in r["tables"].as_array().unwrap() {
        assert_eq!(t["target"], world.b.eni, "{t}");
        assert_eq!(t["here"], false);
    }

    let out = tdsvip(routes(&config, "--claim --json")).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let r = json(&out);
    assert!(r["total_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{r}");
    for t in r["tables"].as_array().unwrap() {
        assert_eq!(t["before"], world.b.eni, "{t}");
        assert_eq!(t["after"], world.a.eni, "{t}");
        assert!(t["attempts"].as_u64().is_some_and(|n| n >= 1));
        assert!(t["error"].is_null());
    }
    // Checked straight through the SDK, not through the code under test.
    for table in &world.tables {
        assert_eq!(
            route_target(api.client(), table).await.as_deref(),
            Some(world.a.eni.as_str())
        );
    }

    let out = tdsvip(routes(&config, "")).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("4 of 4 point here"), "{text}");
    for table in &world.tables {
        assert!(text.contains(table.as_str()), "{text}");
    }
    std::fs::remove_file(config).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_route_table_is_a_configuration_problem_and_the_others_are_claimed() {
    let endpoint = moto().endpoint();
    let api = setup_api(&endpoint).await;
    let world = World::build(api.client(), 2).await;
    let mut tables = world.tables.clone();
    tables.push("rtb-0123456789abcdef0".to_owned());
    let config = write_config("unknown", &endpoint, &world.a.eni, &tables);

    let out = tdsvip(routes(&config, "--claim --json")).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let r = json(&out);
    let bad = &r["tables"][2];
    assert_eq!(bad["id"], "rtb-0123456789abcdef0");
    assert_eq!(bad["error_code"], "InvalidRouteTableID.NotFound");
    assert_eq!(bad["config_problem"], true);
    for t in &r["tables"].as_array().unwrap()[..2] {
        assert_eq!(t["after"], world.a.eni, "{t}");
    }
    std::fs::remove_file(config).ok();
}

#[tokio::test]
async fn config_problems_exit_2_before_any_call() {
    let cases = [
        (
            "no-cloud",
            "interface = \"eth0\"\n[sql]\nuser = \"u\"\npassword_env = \"PW\"\n[[ag]]\nname = \"A\"\naddresses = [\"10.9.9.9\"]\n",
            "no [cloud] section",
        ),
        (
            "bad-table",
            "interface = \"eth0\"\n[sql]\nuser = \"u\"\npassword_env = \"PW\"\n[[ag]]\nname = \"A\"\naddresses = [\"10.9.9.9\"]\n[cloud]\nprovider = \"aws\"\nroute_tables = [\"table-1\"]\n",
            "cloud.route_tables[0]",
        ),
    ];
    for (name, text, expected) in cases {
        let path =
            std::env::temp_dir().join(format!("tdsvip-routes-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let out = tdsvip(routes(&path, "")).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(expected), "{name}: {err}");
        std::fs::remove_file(path).ok();
    }
}

//! `tdsvip check-config`: the encryption keys are refused by name offline, exactly as `run`
//! refuses them, and `--online` logs in to a tds-sim replica and reports one
//! `KEY: ok|problem` line per check, exit 2 on any problem; a login without the follow
//! mode's permissions gets one line per missing permission with the GRANT that fixes it.

use std::path::PathBuf;
use std::process::Output;

use tds_sim::{DbState, Role, SimConfig, SimHandle};

fn write(tag: &str, text: &str) -> PathBuf {
    write_with_password(tag, text, "secret")
}

/// As [`write`], with another password in the password file.
fn write_with_password(tag: &str, text: &str, password: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("tdsvip-check-config-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pw"), format!("{password}\n")).unwrap();
    let path = dir.join("tdsvip.toml");
    std::fs::write(
        &path,
        text.replace("PW", &dir.join("pw").display().to_string()),
    )
    .unwrap();
    path
}

fn config(endpoint: &str, sql_extra: &str, databases: &str) -> String {
    format!(
        "interface = \"eth0\"\n[sql]\nendpoint = \"{endpoint}\"\nuser = \"tdsvip\"\npassword_file = \"PW\"\n{sql_extra}\n[[ag]]\nname = \"AG1\"\naddresses = [\"10.0.0.100\"]\ndatabases = [{databases}]\n"
    )
}

async fn tdsvip(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tdsvip"))
            .args(&args)
            .output()
            .expect("run tdsvip")
    })
    .await
    .expect("join")
}

async fn check(path: &std::path::Path, online: bool) -> (Option<i32>, String, String) {
    let mut args = vec![
        "check-config".to_owned(),
        "--config".to_owned(),
        path.display().to_string(),
    ];
    if online {
        args.push("--online".to_owned());
    }
    let out = tdsvip(args).await;
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn encryption_problems_exit_2_naming_the_key_and_run_refuses_the_same() {
    let cases = [
        ("tls = \"required\"", "sql.tls:", "sql.encrypt"),
        ("encrypt = \"off\"", "sql.allow_cleartext_login:", "clear"),
        (
            "encrypt = \"strict\"\ntrust_server_certificate = true",
            "sql.trust_server_certificate:",
            "strict",
        ),
        (
            "ca_file = \"/nonexistent/tdsvip-ca.pem\"",
            "sql.ca_file:",
            "/nonexistent/tdsvip-ca.pem",
        ),
    ];
    for (i, (extra, key, word)) in cases.into_iter().enumerate() {
        let path = write(&format!("bad{i}"), &config("127.0.0.1:1433", extra, ""));
        let (code, _, err) = check(&path, false).await;
        assert_eq!(code, Some(2), "{extra}: {err}");
        assert!(err.starts_with(key) && err.contains(word), "{extra}: {err}");
        // `run` stops at the very same problem, before touching anything.
        let out = tdsvip(vec![
            "run".into(),
            "--config".into(),
            path.display().to_string(),
        ])
        .await;
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).starts_with(key));
    }
    let path = write(
        "trust",
        &config("127.0.0.1:1433", "trust_server_certificate = true", ""),
    );
    let (code, out, err) = check(&path, false).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("sql.encrypt = mandatory"), "{out}");
    assert!(
        err.contains("warning: sql.trust_server_certificate"),
        "{err}"
    );
}

async fn sim() -> SimHandle {
    let mut cfg = SimConfig::new("SQL1", "AG1", Role::Primary);
    cfg.databases = vec![("sales".into(), DbState::Online)];
    tds_sim::start(cfg).await.unwrap()
}

fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} line in {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_reports_each_check_and_names_the_certificate_problem() {
    let sim = sim().await;
    let endpoint = sim.tds_addr().to_string();
    // Verified by default: tds-sim's self-signed certificate is a problem, named.
    let path = write("online-verify", &config(&endpoint, "", "\"sales\""));
    let (code, out, _) = check(&path, true).await;
    assert_eq!(code, Some(2), "{out}");
    let tls = line(&out, "sql.encrypt");
    assert!(
        tls.starts_with("sql.encrypt: problem") && tls.contains("CN=SSL_Self_Signed_Fallback"),
        "{out}"
    );
    assert_eq!(sim.stats().logins, 0);

    // Trusted: TLS, login, AG and databases are ok; a database outside the AG is not.
    let path = write(
        "online-trust",
        &config(
            &endpoint,
            "trust_server_certificate = true",
            "\"sales\", \"nope\"",
        ),
    );
    let (code, out, _) = check(&path, true).await;
    assert!(
        line(&out, "sql.encrypt").starts_with("sql.encrypt: ok TLSv1_2"),
        "{out}"
    );
    assert!(line(&out, "sql.encrypt").contains("NOT verified"), "{out}");
    assert_eq!(line(&out, "sql.user"), "sql.user: ok logged in");
    assert!(line(&out, "ag[0].name").contains("is PRIMARY"), "{out}");
    let dbs = line(&out, "ag[0].databases");
    assert!(
        dbs.starts_with("ag[0].databases: problem")
            && dbs.contains("nope")
            && !dbs.contains("sales"),
        "{out}"
    );
    // The default login is sysadmin: every permission of the follow mode is there.
    let perms = lines(&out, "sql.user.permissions");
    assert_eq!(perms.len(), 2, "{out}");
    assert!(
        perms[0].starts_with("sql.user.permissions: ok has VIEW SERVER ")
            && perms[1].starts_with("sql.user.permissions: ok has VIEW DEFINITION on AG \"AG1\""),
        "{out}"
    );
    assert_eq!(code, Some(2), "{out}");
    sim.shutdown().await;
}

fn lines<'a>(out: &'a str, key: &str) -> Vec<&'a str> {
    out.lines()
        .filter(|l| l.starts_with(&format!("{key}: ")))
        .collect()
}

const WATCHER_PW: &str = "w4tch:er";

/// Runs `sql` on the sim as its sysadmin login, through the probe crate's TDS client.
async fn as_admin(sim: &SimHandle, sql: &str) {
    use tdsvip_probes::{Encrypt, LoginConfig, LoginProbe, Outcome, TlsConfig};
    let mut c = LoginConfig::new("tdsvip", "secret");
    c.tls = TlsConfig {
        encrypt: Encrypt::Off,
        allow_cleartext_login: true,
        ..TlsConfig::default()
    };
    let mut admin = LoginProbe::new(sim.tds_addr(), c).unwrap();
    assert_eq!(admin.probe().await.outcome, Outcome::Ok);
    admin
        .query_text(sql)
        .await
        .unwrap_or_else(|o| panic!("{sql}: {o}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_names_each_missing_grant_until_the_login_has_them() {
    let mut cfg = SimConfig::new("SQL1", "AG1", Role::Primary);
    cfg.databases = vec![("sales".into(), DbState::Online)];
    cfg.logins = vec![("watcher".into(), WATCHER_PW.into())];
    let sim = tds_sim::start(cfg).await.unwrap();
    let text = config(
        &sim.tds_addr().to_string(),
        "trust_server_certificate = true",
        "\"sales\"",
    )
    .replace("user = \"tdsvip\"", "user = \"watcher\"");
    let path = write_with_password("online-perms", &text, WATCHER_PW);

    // No permission: the health query is refused (Msg 300), the login itself works, and
    // each missing permission is named with its GRANT.
    let (code, out, _) = check(&path, true).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(
        line(&out, "sql.encrypt").starts_with("sql.encrypt: ok TLSv1_2"),
        "{out}"
    );
    assert_eq!(line(&out, "sql.user"), "sql.user: ok logged in", "{out}");
    assert!(
        line(&out, "ag[0].name").starts_with("ag[0].name: problem query_failed: error 300: VIEW SERVER PERFORMANCE STATE permission was denied"),
        "{out}"
    );
    let perms = lines(&out, "sql.user.permissions");
    assert_eq!(perms.len(), 2, "{out}");
    assert!(
        perms[0].starts_with("sql.user.permissions: problem lacks VIEW SERVER STATE or VIEW SERVER PERFORMANCE STATE (follow: ")
            && perms[0].ends_with("run: GRANT VIEW SERVER STATE TO [watcher];"),
        "{out}"
    );
    assert!(
        perms[1].starts_with(
            "sql.user.permissions: problem lacks VIEW DEFINITION on AG \"AG1\" (follow: "
        ) && perms[1]
            .ends_with("run: GRANT VIEW DEFINITION ON AVAILABILITY GROUP::[AG1] TO [watcher];"),
        "{out}"
    );

    // VIEW SERVER STATE only: the DMVs answer, but the AG stays hidden from the login.
    as_admin(&sim, "GRANT VIEW SERVER STATE TO [watcher]").await;
    let (code, out, _) = check(&path, true).await;
    assert_eq!(code, Some(2), "{out}");
    let perms = lines(&out, "sql.user.permissions");
    assert!(
        perms[0].starts_with("sql.user.permissions: ok has VIEW SERVER STATE (follow: "),
        "{out}"
    );
    assert!(
        perms[1].contains("run: GRANT VIEW DEFINITION ON AVAILABILITY GROUP::[AG1] TO [watcher];"),
        "{out}"
    );
    assert!(
        line(&out, "ag[0].name").starts_with("ag[0].name: problem AG not found")
            && line(&out, "ag[0].name").contains("see sql.user.permissions"),
        "{out}"
    );

    // Both GRANTs: every line ok, exit 0.
    as_admin(
        &sim,
        "GRANT VIEW DEFINITION ON AVAILABILITY GROUP::[AG1] TO [watcher]",
    )
    .await;
    let (code, out, _) = check(&path, true).await;
    assert!(!out.contains(": problem"), "{out}");
    assert_eq!(lines(&out, "sql.user.permissions").len(), 2, "{out}");
    assert!(line(&out, "ag[0].name").contains("is PRIMARY"), "{out}");
    assert!(
        line(&out, "ag[0].databases").contains("sales=ONLINE"),
        "{out}"
    );
    assert_eq!(code, Some(0), "{out}");
    sim.shutdown().await;
}

/// `[fence] aws` with `--online`: one `StopInstances` dry run per peer against moto's EC2
/// (allowed: ok, and nothing stopped; an instance EC2 does not know: a problem with its code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_asks_ec2_whether_each_peers_instance_may_be_stopped() {
    use tdsvip_cloud::moto::{World, moto, setup_api};
    let sim = sim().await;
    let endpoint = moto().endpoint();
    let api = setup_api(&endpoint).await;
    let world = World::build(api.client(), 1).await;
    let dir = std::env::temp_dir().join(format!("tdsvip-check-fence-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "t0ken-for-the-fence-test\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let text = format!(
        "node = \"sqlnode1\"\n{}\n[http]\nlisten = \"192.0.2.1:9477\"\ntoken_file = \"{}\"\n\
         [cluster]\nmode = \"manage\"\netcd = [\"http://192.0.2.9:2379\"]\n\
         [cloud]\nprovider = \"aws\"\nregion = \"us-east-1\"\nroute_tables = [\"{}\"]\n\
         instance_id = \"{}\"\neni_id = \"{}\"\nendpoint_url = \"{endpoint}\"\n\
         [fence]\naws = true\n\
         [[peer]]\nname = \"sqlnode2\"\nstatus_url = \"http://192.0.2.2:9477\"\ninstance_id = \"{}\"\n\
         [[peer]]\nname = \"sqlnode3\"\nstatus_url = \"http://192.0.2.3:9477\"\ninstance_id = \"i-0000000000000000f\"\n",
        config(
            &sim.tds_addr().to_string(),
            "trust_server_certificate = true",
            "\"sales\""
        ),
        token.display(),
        world.tables[0],
        world.a.instance,
        world.a.eni,
        world.b.instance,
    );
    let path = write("online-fence", &text);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tdsvip"))
            .args(["check-config", "--online", "--config"])
            .arg(&path)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("run tdsvip")
    })
    .await
    .unwrap();
    let out =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let allowed = line(&out, "peer[0].instance_id");
    assert!(
        allowed.starts_with("peer[0].instance_id: ok this node may stop sqlnode2's instance"),
        "{out}"
    );
    let unknown = line(&out, "peer[1].instance_id");
    assert!(
        unknown.starts_with("peer[1].instance_id: problem")
            && unknown.contains("i-0000000000000000f"),
        "{out}"
    );
    let state = api
        .client()
        .describe_instances()
        .instance_ids(&world.b.instance)
        .send()
        .await
        .unwrap();
    let state = state.reservations()[0].instances()[0].state().cloned();
    assert_eq!(
        state
            .and_then(|s| s.name().map(|n| n.as_str().to_owned()))
            .as_deref(),
        Some("running"),
        "a dry run stops nothing"
    );
    let _ = std::fs::remove_dir_all(dir);
}

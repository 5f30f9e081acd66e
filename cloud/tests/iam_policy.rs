//! `deploy/iam-policy.json` must allow every EC2 operation the agent calls, and nothing the
//! agent does not call: the operations are read from this crate's sources (every
//! `.client().operation()` / `client.operation()` chain outside the moto test harness), so
//! adding an API call without the permission fails here instead of on a customer's instance.

use std::collections::BTreeSet;
use std::path::Path;

fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// `ec2:Operation` for every EC2 call in `cloud/src` (the moto harness builds test worlds
/// and is not part of the agent).
fn operations_called() -> BTreeSet<String> {
    const VERBS: [&str; 7] = [
        "describe_",
        "replace_",
        "create_",
        "assign_",
        "unassign_",
        "modify_",
        "stop_",
    ];
    // Relative to the package root, where `cargo test` runs tests (a path baked in by
    // `env!` would name the checkout the binary was built in).
    let src = Path::new("src");
    let mut ops = BTreeSet::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "moto.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines().map(str::trim) {
            if line.starts_with("//") {
                continue;
            }
            for piece in line.split('.') {
                let Some(name) = piece.strip_suffix("()") else {
                    continue;
                };
                if VERBS.iter().any(|v| name.starts_with(v))
                    && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                {
                    ops.insert(format!("ec2:{}", pascal(name)));
                }
            }
        }
    }
    ops
}

#[test]
fn the_policy_allows_exactly_what_the_agent_calls() {
    let policy = Path::new("../deploy/iam-policy.json");
    let text = std::fs::read_to_string(policy).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).expect("iam-policy.json is JSON");
    assert_eq!(doc["Version"], "2012-10-17");
    let mut allowed = BTreeSet::new();
    for statement in doc["Statement"].as_array().expect("Statement list") {
        assert_eq!(statement["Effect"], "Allow", "{statement}");
        for action in statement["Action"].as_array().expect("Action list") {
            allowed.insert(action.as_str().unwrap().to_owned());
        }
    }
    let called = operations_called();
    assert!(
        called.contains("ec2:ReplaceRoute") && called.len() >= 5,
        "the source scan found too little: {called:?}"
    );
    let missing: Vec<_> = called.difference(&allowed).collect();
    let extra: Vec<_> = allowed.difference(&called).collect();
    assert!(missing.is_empty(), "the policy lacks {missing:?}");
    assert!(
        extra.is_empty(),
        "the policy allows what the agent never calls: {extra:?}"
    );
}

/// The fence may stop instances, so its permission must be scoped: instances only, and only
/// those tagged as the AG's (a `"Resource": "*"` here would let any node stop any instance).
#[test]
fn stopping_instances_is_limited_to_tagged_instances() {
    let text = std::fs::read_to_string("../deploy/iam-policy.json").unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let statements: Vec<&serde_json::Value> = doc["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["Action"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "ec2:StopInstances")
        })
        .collect();
    assert_eq!(statements.len(), 1, "{statements:?}");
    let statement = statements[0];
    assert_eq!(statement["Sid"], "TdsvipFenceAws");
    assert_eq!(
        statement["Action"].as_array().unwrap().len(),
        1,
        "{statement}"
    );
    assert_eq!(
        statement["Resource"], "arn:aws:ec2:REGION:ACCOUNT:instance/*",
        "{statement}"
    );
    let tagged = statement["Condition"]["StringEquals"]
        .as_object()
        .is_some_and(|c| c.keys().any(|k| k.starts_with("aws:ResourceTag/")));
    assert!(tagged, "no tag condition: {statement}");
}

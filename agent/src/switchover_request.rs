//! The value of `{prefix}/{ag}/switchover`, which `tdsvip switchover` writes (guarded by the
//! leader's term, on the caller's own lease) and the leader's agent reads: one wire type for
//! both sides.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverRequest {
    /// The node whose replica is to become PRIMARY.
    pub to: String,
    /// The leader key's create revision the request was addressed to.
    pub term: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_reads_back_as_golden_json() {
        let r = SwitchoverRequest {
            to: "sqlnode2".into(),
            term: 42,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"to":"sqlnode2","term":42}"#);
        assert_eq!(serde_json::from_str::<SwitchoverRequest>(&json).unwrap(), r);
    }
}

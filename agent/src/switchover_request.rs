//! The value of an AG's switchover request in etcd (`{prefix}/{ag}/switchover`): written by
//! `tdsvip switchover`, read by the leader's manage task. One type for both sides, so the
//! JSON cannot drift between the command and the agents; the golden test below pins it,
//! because agents and commands of different versions meet during an upgrade.
//!
//! The term is in the value as well as in the write's guard (`Etcd::request_switchover`): the
//! guard keeps a request from being written to a leader other than the one the operator
//! checked, and the term in the value lets a leader elected after the write, which still sees
//! the key until the caller's lease ends, tell that the request was not addressed to it.

use serde::{Deserialize, Serialize};

/// "Hand the AG over to `to`", addressed to the leader of term `term` (its leader key's
/// create_revision).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverRequest {
    /// The node whose replica is to become PRIMARY.
    pub to: String,
    /// The leader's term the request is addressed to; a leader of another term ignores it.
    pub term: i64,
}

impl SwitchoverRequest {
    /// The JSON written to etcd.
    pub fn to_json(&self) -> String {
        // Two plain fields: serializing them cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| {
            format!(
                "{{\"to\":{},\"term\":{}}}",
                serde_json::Value::from(self.to.as_str()),
                self.term
            )
        })
    }

    /// Reads a request from the key's value; the error says what was wrong with it.
    pub fn from_json(text: &str) -> Result<SwitchoverRequest, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_is_exactly_to_and_term() {
        let request = SwitchoverRequest {
            to: "sql-b".to_owned(),
            term: 42,
        };
        assert_eq!(request.to_json(), r#"{"to":"sql-b","term":42}"#);
        assert_eq!(
            SwitchoverRequest::from_json(r#"{"to":"sql-b","term":42}"#).unwrap(),
            request
        );
    }

    #[test]
    fn node_names_are_escaped_and_bad_values_are_errors() {
        let request = SwitchoverRequest {
            to: "a\"b".to_owned(),
            term: 1,
        };
        assert_eq!(request.to_json(), r#"{"to":"a\"b","term":1}"#);
        assert_eq!(
            SwitchoverRequest::from_json(&request.to_json()).unwrap(),
            request
        );
        for bad in [
            "",
            "{}",
            r#"{"to":"x"}"#,
            r#"{"to":"x","term":"7"}"#,
            "null",
        ] {
            assert!(SwitchoverRequest::from_json(bad).is_err(), "{bad:?}");
        }
    }
}

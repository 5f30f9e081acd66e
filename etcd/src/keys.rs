//! Where things live in etcd, in one place: the leader key and the member states of an
//! availability group under the configured prefix, and the checks that keep one AG's keys from
//! reaching into another's (an AG named `a` must not see the keys of an AG named `a/b` in its
//! prefix watch). Pure, so the layout is unit-tested without a server.

use crate::EtcdError;

/// The suffix of an AG's switchover request, `{prefix}/{ag}/switchover`: what a leader's watch
/// of the AG sees as `AgEvent`'s `key_suffix` (written by `Etcd::request_switchover`).
pub const SWITCHOVER_KEY_SUFFIX: &str = "switchover";

/// The key layout under one prefix: `{prefix}/{ag}/leader`, `{prefix}/{ag}/members/{node}`,
/// and notes at `{prefix}/{ag}/{suffix}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyPaths {
    /// The prefix without trailing slashes (may be empty: keys then start with `/`).
    prefix: String,
}

impl KeyPaths {
    pub(crate) fn new(prefix: &str) -> KeyPaths {
        KeyPaths {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    /// `{prefix}/{ag}/`: everything that belongs to one AG (what `watch_ag` watches).
    pub(crate) fn ag_dir(&self, ag: &str) -> Result<String, EtcdError> {
        check_name("availability group", ag)?;
        Ok(format!("{}/{ag}/", self.prefix))
    }

    /// `{prefix}/{ag}/leader`.
    pub(crate) fn leader(&self, ag: &str) -> Result<String, EtcdError> {
        Ok(self.ag_dir(ag)? + "leader")
    }

    /// `{prefix}/{ag}/members/`.
    pub(crate) fn members_dir(&self, ag: &str) -> Result<String, EtcdError> {
        Ok(self.ag_dir(ag)? + "members/")
    }

    /// `{prefix}/{ag}/members/{node}`.
    pub(crate) fn member(&self, ag: &str, node: &str) -> Result<String, EtcdError> {
        check_name("node", node)?;
        Ok(self.members_dir(ag)? + node)
    }

    /// `{prefix}/{ag}/{suffix}`: a note kept next to the leader key (the handoff record).
    pub(crate) fn ag_note(&self, ag: &str, suffix: &str) -> Result<String, EtcdError> {
        check_suffix(suffix)?;
        Ok(self.ag_dir(ag)? + suffix)
    }

    /// `{prefix}/{ag}/switchover`: an operator's request that the leader hand over.
    pub(crate) fn switchover(&self, ag: &str) -> Result<String, EtcdError> {
        self.ag_note(ag, SWITCHOVER_KEY_SUFFIX)
    }

    /// `{prefix}/{suffix}`: any key under the prefix.
    pub(crate) fn under_prefix(&self, suffix: &str) -> Result<String, EtcdError> {
        check_suffix(suffix)?;
        Ok(format!("{}/{suffix}", self.prefix))
    }
}

/// An AG or node name is one path segment: not empty, no `/`, no control characters. Public
/// so that a caller can refuse a name before it reaches etcd (`tdsvip switchover --to`).
pub fn check_name(what: &'static str, name: &str) -> Result<(), EtcdError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.contains('/') {
        "it contains '/', which separates key segments"
    } else if name.chars().any(char::is_control) {
        "it contains a control character"
    } else {
        return Ok(());
    };
    Err(EtcdError::InvalidName {
        what,
        name: name.to_owned(),
        reason,
    })
}

/// A key suffix may have several segments (`ag1/handoff`) but no empty ones.
fn check_suffix(suffix: &str) -> Result<(), EtcdError> {
    if suffix.split('/').any(str::is_empty) {
        return Err(EtcdError::InvalidName {
            what: "key suffix",
            name: suffix.to_owned(),
            reason: "it is empty or has an empty segment (a leading, trailing or double '/')",
        });
    }
    if suffix.chars().any(char::is_control) {
        return Err(EtcdError::InvalidName {
            what: "key suffix",
            name: suffix.to_owned(),
            reason: "it contains a control character",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_ag_sit_under_its_directory() {
        let keys = KeyPaths::new("/tdsvip");
        assert_eq!(keys.ag_dir("ag1").unwrap(), "/tdsvip/ag1/");
        assert_eq!(keys.leader("ag1").unwrap(), "/tdsvip/ag1/leader");
        assert_eq!(keys.members_dir("ag1").unwrap(), "/tdsvip/ag1/members/");
        assert_eq!(
            keys.member("ag1", "sql-b").unwrap(),
            "/tdsvip/ag1/members/sql-b"
        );
        assert_eq!(
            keys.ag_note("ag1", "handoff").unwrap(),
            "/tdsvip/ag1/handoff"
        );
        assert_eq!(keys.switchover("ag1").unwrap(), "/tdsvip/ag1/switchover");
        assert_eq!(
            keys.under_prefix("ag1/handoff").unwrap(),
            "/tdsvip/ag1/handoff"
        );
    }

    #[test]
    fn trailing_slashes_of_the_prefix_are_dropped_and_an_empty_prefix_works() {
        assert_eq!(
            KeyPaths::new("/tdsvip//").leader("ag").unwrap(),
            "/tdsvip/ag/leader"
        );
        assert_eq!(KeyPaths::new("").leader("ag").unwrap(), "/ag/leader");
        assert_eq!(KeyPaths::new("t").leader("ag").unwrap(), "t/ag/leader");
    }

    #[test]
    fn a_name_that_would_reach_into_another_ags_keys_is_refused() {
        let keys = KeyPaths::new("/tdsvip");
        for bad in ["", "a/b", "a\nb"] {
            let err = keys.leader(bad).unwrap_err();
            assert!(
                matches!(&err, EtcdError::InvalidName { what: "availability group", name, .. } if name == bad),
                "{err}"
            );
        }
        let err = keys.member("ag1", "n/1").unwrap_err();
        assert!(err.to_string().contains("node \"n/1\""), "{err}");
    }

    #[test]
    fn a_suffix_with_an_empty_segment_is_refused() {
        let keys = KeyPaths::new("/tdsvip");
        for bad in ["", "/x", "x/", "a//b"] {
            assert!(keys.under_prefix(bad).is_err(), "{bad:?} accepted");
            assert!(keys.ag_note("ag1", bad).is_err(), "{bad:?} accepted");
        }
    }
}

//! Probe configuration and its validation.
//!
//! Every value here comes from an operator's config file, so validation returns an error
//! that names the field and the reason instead of letting a bad value surface later as a
//! strange probe outcome. The password lives in [`Password`], whose `Debug` is redacted, so
//! that logging a config (or a panic message that includes it) cannot leak it.

use std::fmt;
use std::time::Duration;

/// The shortest deadline accepted: below this a probe on a loaded host would time out on
/// scheduling noise alone and the agent would flap.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// The default deadline of every probe.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);

/// An invalid configuration value: the field, as named in the config structs, and why.
pub use tdsvip_config_problem::ConfigProblem;

pub(crate) fn validate_timeout(field: &'static str, t: Duration) -> Result<(), ConfigProblem> {
    if t < MIN_TIMEOUT {
        return Err(ConfigProblem::new(
            field,
            format!("{t:?} is below the minimum of {MIN_TIMEOUT:?}"),
        ));
    }
    Ok(())
}

/// Configuration of the TCP and PRELOGIN probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Hard deadline of one probe call, all phases included (default 200 ms, at least 10 ms).
    pub timeout: Duration,
    /// PRELOGIN probe: announce ENCRYPT_ON instead of ENCRYPT_NOT_SUP, for servers that
    /// force encryption. The probe closes after the answer either way, before any TLS.
    pub announce_encryption: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            timeout: DEFAULT_TIMEOUT,
            announce_encryption: false,
        }
    }
}

impl ProbeConfig {
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        validate_timeout("timeout", self.timeout)
    }
}

/// A password that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Password(String);

impl Password {
    pub fn new(p: impl Into<String>) -> Self {
        Password(p.into())
    }

    /// The cleartext, for handing to the TDS login only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Password {
    fn from(s: String) -> Self {
        Password(s)
    }
}

impl From<&str> for Password {
    fn from(s: &str) -> Self {
        Password(s.to_owned())
    }
}

/// Transport security of the login probe.
///
/// tds-sim speaks plain text only, so the TLS path is built but not tested in this repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Tls {
    /// Plain text (`EncryptionLevel::NotSupported`): the server must answer ENCRYPT_NOT_SUP.
    #[default]
    Off,
    /// TLS required (`EncryptionLevel::Required`); needs the cargo feature `tls`.
    Required {
        /// Skip certificate validation: for self-signed lab certificates only.
        trust_cert: bool,
        /// The name to check the certificate against; the probe connects by IP address, so
        /// without it the certificate must carry the IP in its subject alternative names.
        hostname_in_certificate: Option<String>,
    },
}

/// Configuration of the login probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginConfig {
    /// SQL login name.
    pub user: String,
    /// The caller reads it from a file or the environment; it is never logged.
    pub password: Password,
    /// The availability group whose local replica must be PRIMARY. Without it the probe
    /// runs `SELECT @@SERVERNAME` only and `ok` means "logged in and answered".
    pub ag: Option<String>,
    /// Databases that must exist and be ONLINE on the replica; needs `ag`.
    pub databases: Vec<String>,
    pub tls: Tls,
    /// Hard deadline of one probe call, login (when a new session is needed) and query
    /// included (default 200 ms, at least 10 ms).
    pub timeout: Duration,
    /// TDS application name shown in `sys.dm_exec_sessions` (default "tdsvip").
    pub application_name: String,
}

impl LoginConfig {
    pub fn new(user: impl Into<String>, password: impl Into<Password>) -> Self {
        LoginConfig {
            user: user.into(),
            password: password.into(),
            ag: None,
            databases: Vec::new(),
            tls: Tls::Off,
            timeout: DEFAULT_TIMEOUT,
            application_name: "tdsvip".to_owned(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigProblem> {
        validate_timeout("timeout", self.timeout)?;
        if self.user.is_empty() {
            return Err(ConfigProblem::new("user", "must not be empty"));
        }
        // LOGIN7 carries lengths in 16-bit character counts capped at 128 for names.
        if self.user.encode_utf16().count() > 128 {
            return Err(ConfigProblem::new("user", "longer than 128 characters"));
        }
        if self.password.expose().encode_utf16().count() > 128 {
            return Err(ConfigProblem::new("password", "longer than 128 characters"));
        }
        if let Some(ag) = &self.ag {
            validate_sysname("ag", ag)?;
        }
        for db in &self.databases {
            validate_sysname("databases", db)?;
        }
        if !self.databases.is_empty() && self.ag.is_none() {
            return Err(ConfigProblem::new(
                "databases",
                "database checks need an availability group (ag)",
            ));
        }
        if let Tls::Required { .. } = self.tls
            && !cfg!(feature = "tls")
        {
            return Err(ConfigProblem::new(
                "tls",
                "this build has no TLS support (cargo feature `tls`)",
            ));
        }
        Ok(())
    }
}

/// AG and database names are `sysname` (nvarchar(128)). Quotes are escaped when the query
/// is built; control characters are refused because no real object has them and they would
/// only make logs and the query text confusing.
fn validate_sysname(field: &'static str, name: &str) -> Result<(), ConfigProblem> {
    if name.is_empty() {
        return Err(ConfigProblem::new(field, "names must not be empty"));
    }
    if name.encode_utf16().count() > 128 {
        return Err(ConfigProblem::new(
            field,
            format!("{name:?} is longer than 128 characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ConfigProblem::new(
            field,
            format!("{name:?} contains a control character"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_password() {
        let cfg = LoginConfig::new("tdsvip", "hunter2-secret");
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert_eq!(cfg.password.expose(), "hunter2-secret");
    }

    #[test]
    fn timeouts_below_10ms_are_refused_by_name() {
        let mut p = ProbeConfig {
            timeout: Duration::from_millis(9),
            ..Default::default()
        };
        assert_eq!(p.validate().unwrap_err().key, "timeout");
        p.timeout = Duration::from_millis(10);
        assert!(p.validate().is_ok());
        let mut l = LoginConfig::new("u", "p");
        l.timeout = Duration::from_millis(5);
        assert_eq!(l.validate().unwrap_err().key, "timeout");
    }

    #[test]
    fn login_fields_are_validated_by_name() {
        let mut l = LoginConfig::new("", "p");
        assert_eq!(l.validate().unwrap_err().key, "user");
        l.user = "u".into();
        l.databases = vec!["db1".into()];
        assert_eq!(l.validate().unwrap_err().key, "databases");
        l.ag = Some("AG1".into());
        assert!(l.validate().is_ok());
        l.databases.push(String::new());
        assert_eq!(l.validate().unwrap_err().key, "databases");
        l.databases.pop();
        l.ag = Some("a\0b".into());
        assert_eq!(l.validate().unwrap_err().key, "ag");
        l.ag = Some("x".repeat(129));
        assert_eq!(l.validate().unwrap_err().key, "ag");
        // Quotes are legal in names; the query builder escapes them.
        l.ag = Some("it's".into());
        assert!(l.validate().is_ok());
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_without_the_feature_is_refused() {
        let mut l = LoginConfig::new("u", "p");
        l.tls = Tls::Required {
            trust_cert: true,
            hostname_in_certificate: None,
        };
        let e = l.validate().unwrap_err();
        assert_eq!(e.key, "tls");
    }
}

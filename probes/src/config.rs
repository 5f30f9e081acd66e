//! Probe configuration and its validation.
//!
//! Every value here comes from an operator's config file, so validation returns an error
//! that names the field and the reason instead of letting a bad value surface later as a
//! strange probe outcome. The password lives in [`Password`], whose `Debug` is redacted, so
//! that logging a config (or a panic message that includes it) cannot leak it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

/// How the login probe protects its session, named as Microsoft's drivers name it
/// (`Encrypt=strict|mandatory|optional`), plus `off`.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumIter,
    strum::VariantNames,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Encrypt {
    /// TDS 8.0: TLS (ALPN `tds/8.0`) before any TDS byte, PRELOGIN inside it.
    Strict,
    /// TDS 7.x, everything encrypted; a server that cannot encrypt is refused.
    #[default]
    Mandatory,
    /// TDS 7.x; the login is encrypted whenever the server can (login-only encryption),
    /// everything when the server forces it. A server without TLS is refused unless
    /// `allow_cleartext_login`.
    Optional,
    /// No TLS at all: the password crosses the network in TDS's reversible obfuscation.
    /// Needs `allow_cleartext_login`.
    Off,
}

impl Encrypt {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

impl std::str::FromStr for Encrypt {
    type Err = ConfigProblem;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_name("encrypt", s)
    }
}

/// The variant of `E` named `text` (its strum name), or a problem for `key` that lists the
/// names it accepts.
pub(crate) fn parse_name<E>(key: &'static str, text: &str) -> Result<E, ConfigProblem>
where
    E: strum::IntoEnumIterator + strum::VariantNames + Into<&'static str> + Copy,
{
    E::iter().find(|v| (*v).into() == text).ok_or_else(|| {
        ConfigProblem::new(
            key,
            format!("{text:?} is not one of {}", E::VARIANTS.join(", ")),
        )
    })
}

/// Transport security of the login probe. The keys are the agent's `sql.*` keys without
/// the section, so a problem names the key an operator sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    pub encrypt: Encrypt,
    /// PEM file of the CA certificates to trust instead of the system store.
    pub ca_file: Option<PathBuf>,
    /// The name the certificate must carry (and the SNI sent); without it the target's IP
    /// address, which the certificate must then list as an IP subject alternative name.
    pub host_name_in_certificate: Option<String>,
    /// Accept any certificate (the handshake signature is still checked): a lab opt-in,
    /// refused with `strict` as Microsoft's drivers refuse it.
    pub trust_server_certificate: bool,
    /// Allow the password to cross the network in clear: with `off`, or with `optional`
    /// against a server that answers ENCRYPT_NOT_SUP.
    pub allow_cleartext_login: bool,
}

impl TlsConfig {
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        if self.trust_server_certificate && self.encrypt == Encrypt::Strict {
            return Err(ConfigProblem::new(
                "trust_server_certificate",
                "cannot be used with encrypt = \"strict\": strict always verifies the certificate (set host_name_in_certificate or ca_file instead)",
            ));
        }
        if self.encrypt == Encrypt::Off && !self.allow_cleartext_login {
            return Err(ConfigProblem::new(
                "allow_cleartext_login",
                "encrypt = \"off\" sends the password in clear across the network; set allow_cleartext_login = true to accept that, or use encrypt = \"mandatory\"",
            ));
        }
        if let Some(name) = &self.host_name_in_certificate
            && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
        {
            return Err(ConfigProblem::new(
                "host_name_in_certificate",
                format!("{name:?} is not a DNS name or IP address"),
            ));
        }
        if let Some(path) = &self.ca_file
            && !path.is_absolute()
        {
            return Err(ConfigProblem::new(
                "ca_file",
                format!("{} is not an absolute path", path.display()),
            ));
        }
        Ok(())
    }
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
    /// Encryption and certificate checks; `mandatory` with verification by default.
    pub tls: TlsConfig,
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
            tls: TlsConfig::default(),
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
        self.tls.validate()
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

    #[test]
    fn tls_refusals_name_their_key() {
        let mut t = TlsConfig::default();
        assert_eq!(t.encrypt, Encrypt::Mandatory);
        assert!(t.validate().is_ok());
        t.encrypt = Encrypt::Off;
        assert_eq!(t.validate().unwrap_err().key, "allow_cleartext_login");
        t.allow_cleartext_login = true;
        assert!(t.validate().is_ok());
        t.encrypt = Encrypt::Strict;
        t.trust_server_certificate = true;
        assert_eq!(t.validate().unwrap_err().key, "trust_server_certificate");
        t.encrypt = Encrypt::Mandatory;
        assert!(t.validate().is_ok());
        t.host_name_in_certificate = Some("not a name".into());
        assert_eq!(t.validate().unwrap_err().key, "host_name_in_certificate");
        t.host_name_in_certificate = Some("sql1.example.com".into());
        t.ca_file = Some("relative.pem".into());
        assert_eq!(t.validate().unwrap_err().key, "ca_file");
        let mut l = LoginConfig::new("u", "p");
        l.tls.encrypt = Encrypt::Off;
        assert_eq!(l.validate().unwrap_err().key, "allow_cleartext_login");
        assert_eq!(
            "bogus".parse::<Encrypt>().unwrap_err().key,
            "encrypt",
            "an unknown mode names the key"
        );
        assert_eq!("strict".parse::<Encrypt>().unwrap(), Encrypt::Strict);
    }
}

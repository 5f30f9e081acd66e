//! The PRELOGIN encryption negotiation, as SQL Server answers it: from the server's setting
//! and the client's ENCRYPTION byte, what the server answers and what happens next.
//!
//! It is one pure function so that the whole table can be read in one place and tested
//! cell by cell; the session only acts on its result. The table ([MS-TDS] 2.2.6.5, checked
//! against what FreeTDS, python-tds, tiberius and tedious expect of the answer):
//!
//! | client sends \ server | `off` (certificate, not forced) | `force` (Force Encryption) |
//! |---|---|---|
//! | ENCRYPT_OFF (0)     | OFF: TLS for LOGIN7 only     | REQ: TLS for everything |
//! | ENCRYPT_ON (1)      | ON: TLS for everything       | REQ: TLS for everything |
//! | ENCRYPT_NOT_SUP (2) | NOT_SUP: no TLS at all       | REQ, then the server closes |
//! | ENCRYPT_REQ (3)     | ON: TLS for everything       | REQ: TLS for everything |
//!
//! A server without a certificate (`not-supported`, tds-sim's behaviour before TLS) answers
//! NOT_SUP to everything and never starts TLS; a client that needs encryption gives up on
//! its own (and one that starts TLS anyway is told so and closed). Under `strict` (TDS 8.0)
//! the PRELOGIN arrives inside TLS already: nothing is left to negotiate, and the answer
//! is ENCRYPT_REQ whatever the client sent (tiberius sends REQ, tedious NOT_SUP, go-mssqldb
//! 4; each ignores the answer). The answer to NOT_SUP is NOT_SUP, not OFF: python-tds and
//! tiberius would start TLS on OFF, and both log in to a default SQL Server without it.
//! A missing ENCRYPTION option, or a value the table does not know, counts as NOT_SUP.

use tds_codec::Encryption;

/// The server's setting, `--encryption`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// SQL Server's default: a certificate, encryption at the client's request, and
    /// always at least for the login packet when the client can do TLS.
    Off,
    /// Force Encryption = Yes: everything is encrypted; a client without TLS is refused.
    Force,
    /// TDS 8.0: TLS first, on the raw TCP stream, before any TDS byte.
    Strict,
    /// No certificate at all: PRELOGIN answers ENCRYPT_NOT_SUP (tds-sim before issue 14).
    NotSupported,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Force => "force",
            Mode::Strict => "strict",
            Mode::NotSupported => "not-supported",
        }
    }

    /// Whether this setting needs a certificate.
    pub fn uses_tls(self) -> bool {
        self != Mode::NotSupported
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Ok(Mode::Off),
            "force" => Ok(Mode::Force),
            "strict" => Ok(Mode::Strict),
            "not-supported" | "not_supported" => Ok(Mode::NotSupported),
            _ => Err(format!(
                "'{s}' is not an encryption setting (off, force, strict, not-supported)"
            )),
        }
    }
}

/// What the server does after answering PRELOGIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No TLS: LOGIN7 and everything after it in clear text.
    Clear,
    /// A TLS handshake in PRELOGIN packets, LOGIN7 through TLS, then clear text again from
    /// the login answer on.
    LoginOnly,
    /// A TLS handshake in PRELOGIN packets, then everything through TLS.
    Full,
    /// The stream is TLS already (TDS 8.0): carry on.
    AlreadyTls,
    /// Send the answer, then close: the client cannot do what the server requires.
    Refuse,
}

/// The PRELOGIN answer's ENCRYPTION byte and what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub answer: Encryption,
    pub outcome: Outcome,
}

/// The client's value reduced to the four the table knows.
fn client_value(client: Option<Encryption>) -> Encryption {
    match client {
        Some(e @ (Encryption::Off | Encryption::On | Encryption::Required)) => e,
        _ => Encryption::NotSupported,
    }
}

/// The table above.
pub fn negotiate(mode: Mode, client: Option<Encryption>) -> Negotiated {
    use Encryption as E;
    let n = |answer, outcome| Negotiated { answer, outcome };
    match (mode, client_value(client)) {
        (Mode::NotSupported, _) => n(E::NotSupported, Outcome::Clear),
        (Mode::Strict, _) => n(E::Required, Outcome::AlreadyTls),
        (Mode::Off, E::Off) => n(E::Off, Outcome::LoginOnly),
        (Mode::Off, E::NotSupported) => n(E::NotSupported, Outcome::Clear),
        (Mode::Off, _) => n(E::On, Outcome::Full),
        (Mode::Force, E::NotSupported) => n(E::Required, Outcome::Refuse),
        (Mode::Force, _) => n(E::Required, Outcome::Full),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Encryption as E;

    /// Every cell of the table, as (server, client, answer, outcome).
    #[test]
    fn every_cell_of_the_table() {
        let cells = [
            (Mode::Off, E::Off, E::Off, Outcome::LoginOnly),
            (Mode::Off, E::On, E::On, Outcome::Full),
            (Mode::Off, E::NotSupported, E::NotSupported, Outcome::Clear),
            (Mode::Off, E::Required, E::On, Outcome::Full),
            (Mode::Force, E::Off, E::Required, Outcome::Full),
            (Mode::Force, E::On, E::Required, Outcome::Full),
            (Mode::Force, E::NotSupported, E::Required, Outcome::Refuse),
            (Mode::Force, E::Required, E::Required, Outcome::Full),
            (Mode::NotSupported, E::Off, E::NotSupported, Outcome::Clear),
            (Mode::NotSupported, E::On, E::NotSupported, Outcome::Clear),
            (
                Mode::NotSupported,
                E::NotSupported,
                E::NotSupported,
                Outcome::Clear,
            ),
            (
                Mode::NotSupported,
                E::Required,
                E::NotSupported,
                Outcome::Clear,
            ),
            (Mode::Strict, E::Off, E::Required, Outcome::AlreadyTls),
            (Mode::Strict, E::On, E::Required, Outcome::AlreadyTls),
            (
                Mode::Strict,
                E::NotSupported,
                E::Required,
                Outcome::AlreadyTls,
            ),
            (Mode::Strict, E::Required, E::Required, Outcome::AlreadyTls),
        ];
        for (mode, client, answer, outcome) in cells {
            assert_eq!(
                negotiate(mode, Some(client)),
                Negotiated { answer, outcome },
                "{} x {}",
                mode.name(),
                client.name()
            );
        }
    }

    #[test]
    fn absent_or_unknown_values_count_as_not_sup() {
        for client in [None, Some(E::Other(4)), Some(E::Other(0x81))] {
            assert_eq!(
                negotiate(Mode::Off, client).outcome,
                Outcome::Clear,
                "{client:?}"
            );
            assert_eq!(
                negotiate(Mode::Force, client).outcome,
                Outcome::Refuse,
                "{client:?}"
            );
        }
        assert_eq!(
            negotiate(Mode::Strict, Some(E::Other(4))).outcome,
            Outcome::AlreadyTls
        );
    }

    #[test]
    fn modes_parse_and_name_themselves() {
        for m in [Mode::Off, Mode::Force, Mode::Strict, Mode::NotSupported] {
            assert_eq!(m.name().parse::<Mode>(), Ok(m));
        }
        assert_eq!("FORCE".parse::<Mode>(), Ok(Mode::Force));
        assert!("maybe".parse::<Mode>().unwrap_err().contains("off, force"));
        assert!(!Mode::NotSupported.uses_tls() && Mode::Off.uses_tls());
    }
}

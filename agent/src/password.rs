//! Reading the SQL password from a file or the environment, never from argv.
//!
//! A password on the command line is visible to every user through /proc; a file readable
//! only by the service account, or an environment variable set by systemd's credentials, is
//! not. A trailing newline (as `echo pw > file` writes) is not part of the password.

use std::path::Path;

use tdsvip_probes::Password;

/// The environment variable read when no password file is given.
pub const PASSWORD_ENV: &str = "TDSVIP_PASSWORD";

/// Reads a password from `path`, stripping one trailing `\n` or `\r\n`.
pub fn read_password_file(path: &Path) -> Result<Password, String> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read password file {}: {e}", path.display()))?;
    let pw = raw
        .strip_suffix("\r\n")
        .or_else(|| raw.strip_suffix('\n'))
        .unwrap_or(&raw);
    if pw.is_empty() {
        return Err(format!("password file {} is empty", path.display()));
    }
    Ok(Password::new(pw))
}

/// The password from [`PASSWORD_ENV`], if set and not empty.
pub fn password_from_env() -> Option<Password> {
    std::env::var(PASSWORD_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .map(Password::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_one_trailing_newline_only() {
        let dir = std::env::temp_dir().join(format!("tdsvip-password-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "s3cret \n").unwrap();
        assert_eq!(read_password_file(&f).unwrap().expose(), "s3cret ");
        std::fs::write(&f, "a\r\n").unwrap();
        assert_eq!(read_password_file(&f).unwrap().expose(), "a");
        std::fs::write(&f, "a\n\n").unwrap();
        assert_eq!(read_password_file(&f).unwrap().expose(), "a\n");
        std::fs::write(&f, "\n").unwrap();
        assert!(read_password_file(&f).unwrap_err().contains("empty"));
        assert!(
            read_password_file(&dir.join("missing"))
                .unwrap_err()
                .contains("cannot read")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The `gpg` program: key lookup in the user's keyring, and decryption through `gpg --decrypt`
//! (the runbook's tool), which uses the keyring and gpg-agent, so no secret key or passphrase
//! passes through kars-backup.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kars_backup_core::{EncryptionInfo, Error, Result};

/// The `gpg` program and its keyring: `GNUPGHOME` (or gpg's default `~/.gnupg`); the program is
/// `gpg` on `PATH`, or `KARS_BACKUP_GPG`.
#[derive(Debug, Clone)]
pub struct Gpg {
    program: PathBuf,
    homedir: Option<PathBuf>,
}

impl Default for Gpg {
    fn default() -> Self {
        Gpg::new()
    }
}

/// A key as `gpg --list-keys --with-colons` describes it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListedKey {
    pub(crate) fingerprint: String,
    pub(crate) user_id: Option<String>,
    /// (fingerprint, creation time) of the (sub)keys gpg would encrypt to: encryption-capable,
    /// not revoked, expired, invalid or disabled. The primary key is included when it can encrypt.
    pub(crate) encryption_keys: Vec<(String, u64)>,
}

impl Gpg {
    /// `gpg` from `PATH` (or the program named by `KARS_BACKUP_GPG`).
    pub fn new() -> Self {
        let program = std::env::var_os("KARS_BACKUP_GPG")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| OsString::from("gpg"));
        Gpg {
            program: program.into(),
            homedir: None,
        }
    }

    /// Uses this gpg program.
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Uses the keyring in this directory (`gpg --homedir`) instead of `GNUPGHOME`'s.
    pub fn with_homedir(mut self, homedir: impl Into<PathBuf>) -> Self {
        self.homedir = Some(homedir.into());
        self
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.arg("--batch").arg("--no-tty");
        if let Some(h) = &self.homedir {
            c.arg("--homedir").arg(h);
        }
        c
    }

    fn keyring(&self) -> String {
        if let Some(h) = &self.homedir {
            return format!("the gpg keyring in {}", h.display());
        }
        match std::env::var_os("GNUPGHOME") {
            Some(h) => format!(
                "the gpg keyring in GNUPGHOME={}",
                PathBuf::from(h).display()
            ),
            None => "the default gpg keyring (~/.gnupg; set GNUPGHOME for another)".into(),
        }
    }

    fn not_installed(&self, e: &io::Error, name: &str) -> Error {
        Error::KeyMissing {
            name: name.to_string(),
            reason: format!(
                "OpenPGP needs the gpg program ({}: {e}); install GnuPG (Debian: apt-get install gnupg)",
                self.program.display()
            ),
        }
    }

    /// Looks a key up by id, fingerprint or e-mail.
    pub(crate) fn list_key(&self, id: &str) -> Result<ListedKey> {
        let output = self
            .command()
            .args([
                "--with-colons",
                "--fixed-list-mode",
                "--with-fingerprint",
                "--with-subkey-fingerprint",
                "--list-keys",
                "--",
                id,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| match self.not_installed(&e, id) {
                Error::KeyMissing { reason, .. } => Error::InvalidInput(reason),
                other => other,
            })?;
        if !output.status.success() {
            return Err(Error::InvalidInput(format!(
                "gpg:{id}: no such public key in {} ({}); import it (gpg --import key.asc) or give a key file (gpg:/path/key.asc)",
                self.keyring(),
                last_lines(&String::from_utf8_lossy(&output.stderr), 2)
            )));
        }
        let keys = parse_colons(&String::from_utf8_lossy(&output.stdout));
        match keys.len() {
            1 => Ok(keys.into_iter().next().expect("one key")),
            0 => Err(Error::InvalidInput(format!(
                "gpg:{id}: no such public key in {}",
                self.keyring()
            ))),
            n => Err(Error::InvalidInput(format!(
                "gpg:{id} matches {n} keys ({}); name one by its fingerprint (gpg:FINGERPRINT)",
                keys.iter()
                    .map(|k| k.fingerprint.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The public key with this fingerprint, in OpenPGP's binary form.
    pub(crate) fn export(&self, fingerprint: &str) -> Result<Vec<u8>> {
        let output = self
            .command()
            .args(["--export", "--", fingerprint])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::InvalidInput(format!("cannot run gpg: {e}")))?;
        if !output.status.success() || output.stdout.is_empty() {
            return Err(Error::InvalidInput(format!(
                "gpg --export {fingerprint} gave no key ({})",
                last_lines(&String::from_utf8_lossy(&output.stderr), 2)
            )));
        }
        Ok(output.stdout)
    }

    /// Streams `input` through `gpg --decrypt`. Returns once gpg has produced its first
    /// plaintext (or failed), so a key missing from the keyring fails here.
    pub(crate) fn decrypt(
        &self,
        name: &str,
        info: Option<&EncryptionInfo>,
        mut input: Box<dyn Read + Send>,
    ) -> Result<Box<dyn Read + Send>> {
        let mut child = self
            .command()
            .args(["--status-fd", "2", "--decrypt"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.not_installed(&e, name))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        // The stored bytes go to gpg on their own thread; an error reading them (a download
        // failure, a checksum mismatch) is kept for the end of the plaintext.
        let upstream: Arc<Mutex<Option<io::Error>>> = Arc::new(Mutex::new(None));
        let upstream_slot = upstream.clone();
        let feeder = std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        if let Ok(mut slot) = upstream_slot.lock() {
                            *slot = Some(e);
                        }
                        break;
                    }
                };
                // gpg stopped reading (it failed, or was stopped): nothing more to do.
                if stdin.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            drop(stdin);
        });
        let status = std::thread::spawn(move || {
            let mut text = String::new();
            let mut bytes = Vec::new();
            let _ = stderr.read_to_end(&mut bytes);
            text.push_str(&String::from_utf8_lossy(&bytes));
            text
        });
        let mut reader = GpgReader {
            keyring: self.keyring(),
            recipients: info.map(|i| i.describe_recipients()),
            child,
            stdout,
            pending: Vec::new(),
            offset: 0,
            feeder: Some(feeder),
            status: Some(status),
            upstream,
            done: false,
        };
        // Wait for the first plaintext: gpg writes none before it has unwrapped the session key.
        let mut first = vec![0u8; 64 * 1024];
        let n = loop {
            match reader.stdout.read(&mut first) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        }
        .map_err(|e| Error::DecryptionFailed {
            name: name.to_string(),
            reason: format!("reading gpg's output: {e}"),
        })?;
        if n == 0 {
            reader.done = true;
            reader.finish().map_err(|f| f.into_error(name))?;
        } else {
            first.truncate(n);
            reader.pending = first;
        }
        Ok(Box::new(reader))
    }
}

/// Why gpg failed, classified from its status lines.
struct GpgFailure {
    reason: String,
}

impl GpgFailure {
    fn into_error(self, name: &str) -> Error {
        Error::DecryptionFailed {
            name: name.to_string(),
            reason: self.reason,
        }
    }
}

struct GpgReader {
    keyring: String,
    recipients: Option<String>,
    child: Child,
    stdout: ChildStdout,
    pending: Vec<u8>,
    offset: usize,
    feeder: Option<JoinHandle<()>>,
    status: Option<JoinHandle<String>>,
    upstream: Arc<Mutex<Option<io::Error>>>,
    done: bool,
}

impl GpgReader {
    /// After the last plaintext byte: the input's own error, else gpg's verdict.
    fn finish(&mut self) -> std::result::Result<(), GpgFailure> {
        if let Some(f) = self.feeder.take() {
            let _ = f.join();
        }
        let exit = self.child.wait();
        let status = self
            .status
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if let Some(e) = self.upstream.lock().ok().and_then(|mut u| u.take()) {
            return Err(GpgFailure {
                reason: format!("reading the archive failed: {e}"),
            });
        }
        let has = |s: &str| {
            status.lines().any(|l| {
                l.strip_prefix("[GNUPG:] ")
                    .is_some_and(|r| r.starts_with(s))
            })
        };
        let ok = exit.as_ref().is_ok_and(|s| s.success());
        if ok && has("DECRYPTION_OKAY") && !has("BADMDC") && !has("DECRYPTION_FAILED") {
            return Ok(());
        }
        let to = self
            .recipients
            .as_ref()
            .map(|r| format!(" (the archive is encrypted to {r})"))
            .unwrap_or_default();
        // A session key was unwrapped (gpg 2.2 reports DECRYPTION_KEY/DECRYPTION_INFO) and the
        // decryption still failed: the data is damaged.
        let unwrapped = has("DECRYPTION_KEY") || has("DECRYPTION_INFO");
        let reason = if has("BADMDC") || (has("DECRYPTION_FAILED") && unwrapped) {
            "the OpenPGP ciphertext failed its integrity check: the archive was tampered with or truncated".to_string()
        } else if (has("NO_SECKEY") || status.contains("No secret key")) && !unwrapped {
            let ids: Vec<&str> = status
                .lines()
                .filter_map(|l| l.strip_prefix("[GNUPG:] ENC_TO "))
                .filter_map(|r| r.split_whitespace().next())
                .collect();
            format!(
                "no secret key in {} opens it{to}; it needs the secret key of (sub)key {}: import it (gpg --import) or point GNUPGHOME at the keyring that has it",
                self.keyring,
                ids.join(", ")
            )
        } else if !has("DECRYPTION_OKAY") && ok {
            "gpg read it but reported no decryption: it is not an encrypted OpenPGP message".into()
        } else {
            let messages: Vec<&str> = status
                .lines()
                .filter(|l| !l.starts_with("[GNUPG:]"))
                .collect();
            format!(
                "gpg --decrypt failed{to}: {}",
                last_lines(&messages.join("\n"), 3)
            )
        };
        Err(GpgFailure { reason })
    }
}

impl Read for GpgReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.offset < self.pending.len() {
            let n = buf.len().min(self.pending.len() - self.offset);
            buf[..n].copy_from_slice(&self.pending[self.offset..self.offset + n]);
            self.offset += n;
            if self.offset == self.pending.len() {
                self.pending = Vec::new();
                self.offset = 0;
            }
            return Ok(n);
        }
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self.stdout.read(buf)?;
        if n == 0 {
            self.done = true;
            self.finish()
                .map_err(|f| io::Error::new(io::ErrorKind::InvalidData, f.reason))?;
        }
        Ok(n)
    }
}

impl Drop for GpgReader {
    fn drop(&mut self) {
        if !self.done || self.feeder.is_some() {
            // Stopped early: end gpg; its feeder ends on the broken pipe.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Parses `gpg --with-colons --fixed-list-mode --with-fingerprint --with-subkey-fingerprint`.
pub(crate) fn parse_colons(text: &str) -> Vec<ListedKey> {
    struct Current {
        key: ListedKey,
        /// The (sub)key whose `fpr` line comes next: usable for encryption, and its time.
        pending: Option<(bool, u64)>,
    }
    let mut keys = Vec::new();
    let mut current: Option<Current> = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        let field = |i: usize| f.get(i).copied().unwrap_or("");
        let usable =
            |f1: &str, caps: &str| caps.contains('e') && !matches!(f1, "r" | "e" | "i" | "d");
        match field(0) {
            "pub" => {
                if let Some(c) = current.take() {
                    keys.push(c.key);
                }
                current = Some(Current {
                    key: ListedKey::default(),
                    pending: Some((usable(field(1), field(11)), field(5).parse().unwrap_or(0))),
                });
            }
            "sub" => {
                if let Some(c) = current.as_mut() {
                    c.pending = Some((usable(field(1), field(11)), field(5).parse().unwrap_or(0)));
                }
            }
            "fpr" => {
                if let Some(c) = current.as_mut() {
                    let fpr = field(9).to_string();
                    if c.key.fingerprint.is_empty() {
                        c.key.fingerprint = fpr.clone();
                    }
                    if let Some((usable, created)) = c.pending.take() {
                        if usable {
                            c.key.encryption_keys.push((fpr, created));
                        }
                    }
                }
            }
            "uid" => {
                if let Some(c) = current.as_mut() {
                    if c.key.user_id.is_none() && !matches!(field(1), "r" | "e" | "i") {
                        c.key.user_id = Some(unescape(field(9)));
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(c) = current.take() {
        keys.push(c.key);
    }
    keys
}

/// Undoes gpg's `\xNN` escapes in colon listings.
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1] == b'x' {
            let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_colon_listing() {
        let text = "\
tru::1:1700000000:0:3:1:5
pub:u:255:22:AAAA1111AAAA1111:1700000000:::u:::scESC:::::ed25519:::0:
fpr:::::::::0123456789ABCDEF0123456789ABCDEFAAAA1111:
uid:u::::1700000000::HASH::Backup Admin <admin@example.com>::::::::::0:
sub:e:255:18:BBBB2222BBBB2222:1600000000:1650000000:::::e:::::cv25519::
fpr:::::::::1111111111111111111111111111111111111111:
sub:u:255:18:CCCC3333CCCC3333:1700000001::::::e:::::cv25519::
fpr:::::::::2222222222222222222222222222222222222222:
sub:u:255:22:DDDD4444DDDD4444:1700000002::::::s:::::ed25519::
fpr:::::::::3333333333333333333333333333333333333333:
";
        let keys = parse_colons(text);
        assert_eq!(keys.len(), 1);
        let k = &keys[0];
        assert_eq!(k.fingerprint, "0123456789ABCDEF0123456789ABCDEFAAAA1111");
        assert_eq!(
            k.user_id.as_deref(),
            Some("Backup Admin <admin@example.com>")
        );
        // The expired subkey and the signing subkey are left out.
        assert_eq!(
            k.encryption_keys,
            vec![(
                "2222222222222222222222222222222222222222".to_string(),
                1700000001
            )]
        );
        assert_eq!(unescape("a\\x3ab"), "a:b");
    }
}

//! `kars-backup key init` and `kars-backup key show`: the age identity of encrypted backups.

use std::path::PathBuf;

use crate::args::{KeyCommand, KeyInitArgs, KeyShowArgs};
use crate::{exit, render};

pub(crate) async fn run(command: KeyCommand) -> anyhow::Result<u8> {
    match command {
        KeyCommand::Init(a) => init(a),
        KeyCommand::Show(a) => show(a),
    }
}

/// `--out`/`--identity`, else the default identity path.
fn identity_path(given: Option<PathBuf>, flag: &str) -> anyhow::Result<PathBuf> {
    given
        .or_else(kars_backup::encrypt::default_identity_path)
        .ok_or_else(|| {
            exit::UsageError(format!(
                "neither HOME nor XDG_CONFIG_HOME is set: name the identity file with {flag} FILE"
            ))
            .into()
        })
}

fn init(a: KeyInitArgs) -> anyhow::Result<u8> {
    let path = identity_path(a.out, "--out")?;
    // An existing file is the operator's to keep: refusing it is a usage error (exit 2).
    let recipient = kars_backup::encrypt::generate_identity_file(&path).map_err(|e| match e {
        kars_backup::core::Error::AlreadyExists { what } => {
            anyhow::Error::from(exit::UsageError(format!("already exists: {what}")))
        }
        e => e.into(),
    })?;
    if a.json {
        render::print_json(&serde_json::json!({
            "ok": true,
            "identity_file": path,
            "recipient": recipient,
        }))?;
    } else {
        // The recipient alone on stdout (`R=$(kars-backup key init …)`); the advice on stderr.
        println!("{recipient}");
        eprintln!(
            "Created the age identity {} (mode 0600). Back up with `--encrypt-to {recipient}`, or \
name the file in the config: [job.encryption] identity-file = \"{}\".\n\
Keep a copy of this file offline (a password manager, a printed copy in a safe): without it \
the backups cannot be restored. A second recipient (`--encrypt-to` twice, or age-recipients in \
the config) whose identity lives elsewhere keeps them readable if this one is lost.",
            path.display(),
            path.display()
        );
    }
    Ok(exit::OK)
}

fn show(a: KeyShowArgs) -> anyhow::Result<u8> {
    let path = identity_path(a.identity, "--identity")?;
    let recipients = kars_backup::encrypt::identity_file_recipients(&path)?;
    if a.json {
        render::print_json(&serde_json::json!({
            "ok": true,
            "identity_file": path,
            "recipients": recipients,
        }))?;
    } else {
        for r in &recipients {
            println!("{r}");
        }
    }
    Ok(exit::OK)
}

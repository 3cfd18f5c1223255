//! `kars-backup schedule --emit cron|systemd --config FILE`.

use kars_backup::config::emit::{self, EmitOptions};

use crate::args::{EmitFormat, ScheduleArgs};
use crate::exit;

pub(crate) async fn run(a: ScheduleArgs) -> anyhow::Result<u8> {
    let config = kars_backup::job::load_config(&a.config)?;
    let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let binary = match &a.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    let mut opts = EmitOptions::new(absolute(&binary), absolute(&a.config));
    opts.log_file = a.log_file.clone();
    opts.env_file = a.env_file.clone();
    let emitted = match a.emit {
        EmitFormat::Cron => emit::crontab(&config, &opts),
        EmitFormat::Systemd => emit::systemd(&config, &opts),
    };
    match (&a.output_dir, a.emit) {
        (Some(dir), EmitFormat::Systemd) => {
            std::fs::create_dir_all(dir)?;
            for (name, content) in &emitted.files {
                let path = dir.join(name);
                std::fs::write(&path, content)?;
                println!("wrote {}", path.display());
            }
            if !emitted.files.is_empty() {
                println!(
                    "then: systemctl daemon-reload && systemctl enable --now {}",
                    emitted
                        .files
                        .iter()
                        .filter(|(n, _)| n.ends_with(".timer"))
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
        }
        (Some(_), EmitFormat::Cron) => {
            return Err(exit::UsageError("--output-dir is for --emit systemd; for cron, append the output to a crontab (crontab -e)".into()).into());
        }
        (None, _) => {
            for (i, (_, content)) in emitted.files.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print!("{content}");
            }
        }
    }
    if emitted.files.iter().all(|(_, c)| c.is_empty()) {
        eprintln!("note: no job has a [job.schedule]");
    }
    Ok(exit::OK)
}

//! Writes the benches' sample SQLite database: `sample-db PATH SIZE_MB`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(path), Some(size_mb)) = (
        args.first(),
        args.get(1).and_then(|s| s.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: sample-db PATH SIZE_MB");
        return ExitCode::from(2);
    };
    let start = std::time::Instant::now();
    match kars_backup_benches::create_sample_database(&PathBuf::from(path), size_mb << 20) {
        Ok(()) => {
            eprintln!("wrote {path} in {:.1} s", start.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sample-db: {e}");
            ExitCode::FAILURE
        }
    }
}

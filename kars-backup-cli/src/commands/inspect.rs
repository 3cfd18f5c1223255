//! `kars-backup inspect`.

use crate::args::InspectArgs;
use crate::{exit, render, resolve};

pub(crate) async fn run(a: InspectArgs) -> anyhow::Result<u8> {
    let source: kars_backup_core::DynDatabaseSource = if resolve::is_postgres(&a.db.db) {
        std::sync::Arc::new(resolve::postgres_source(&a.db.db, None)?)
    } else {
        resolve::shared(resolve::sqlite_source(&a.db.db)?)
    };
    let databases = source.inspect().await?;
    if a.json {
        render::print_json(&serde_json::json!({
            "source": source.describe(),
            "engine": source.engine(),
            "databases": databases,
        }))?;
    } else {
        let engine = source.engine();
        println!(
            "{} ({})",
            source.describe(),
            kars_backup_core::engine_name(engine)
        );
        for db in &databases {
            print!("{}", render::database(engine, db));
        }
    }
    Ok(exit::OK)
}

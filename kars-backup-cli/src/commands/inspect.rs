//! `kars-backup inspect`.

use crate::args::InspectArgs;
use crate::{exit, render};

pub(crate) async fn run(a: InspectArgs) -> anyhow::Result<u8> {
    let source = kars_backup::job::source_from_url(&a.db.db)?;
    let databases = source.inspect().await?;
    let previous = source.previous_copies().await?;
    if a.json {
        render::print_json(&serde_json::json!({
            "source": source.describe(),
            "engine": source.engine(),
            "databases": databases,
            "previous_copies": previous,
        }))?;
    } else {
        let engine = source.engine();
        println!(
            "{} ({})",
            source.describe(),
            kars_backup::core::engine_name(engine)
        );
        for db in &databases {
            print!("{}", render::database(engine, db));
        }
        print!("{}", render::previous_copies(&previous));
    }
    Ok(exit::OK)
}

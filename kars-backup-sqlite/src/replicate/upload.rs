//! Uploading a spooled file (a sealed segment, a compacted one) to a destination.

use std::path::Path;

use bytes::Bytes;
use kars_backup_core::sink::{DynBackupSink, PutOptions};

use crate::error::{Error, Result};

/// Uploads a spooled file in 1 MiB parts.
pub(super) async fn upload_file(sink: &DynBackupSink, key: &str, path: &Path) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io("open", path, e))?;
    let mut upload = sink.put(key, PutOptions::default()).await?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                let _ = upload.abort().await;
                return Err(Error::io("read", path, e));
            }
        };
        if n == 0 {
            break;
        }
        if let Err(e) = upload.put_part(Bytes::copy_from_slice(&buf[..n])).await {
            let _ = upload.abort().await;
            return Err(e.into());
        }
    }
    upload.complete().await?;
    Ok(())
}

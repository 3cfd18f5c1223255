//! Table data on its way to the loading connections, within budgets: in memory up to
//! [`MEMORY_BUDGET`], beyond it in temporary files of [`SEGMENT`] bytes (each removed once its
//! pieces are loaded), and the reader waits when more than [`DISK_BUDGET`] bytes are waiting.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};
use kars_backup_core::TaskError;

/// Table data held in memory, over all tables waiting to be loaded.
pub(crate) const MEMORY_BUDGET: usize = 32 << 20;
/// Table data waiting in temporary files before the reader waits for the loading connections.
pub(crate) const DISK_BUDGET: usize = 1 << 30;
/// The size of one temporary file.
pub(crate) const SEGMENT: u64 = 64 << 20;

/// One piece of a table's data on its way to a loading connection.
pub(crate) enum Piece {
    Memory(Bytes, OwnedSemaphorePermit),
    File {
        segment: Arc<Segment>,
        offset: u64,
        len: usize,
        _permit: OwnedSemaphorePermit,
    },
}

/// A temporary file of spilled table data, removed when the last piece in it is loaded.
pub(crate) struct Segment {
    pub(crate) path: PathBuf,
    pub(crate) file: std::fs::File,
}

impl Drop for Segment {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Spills table data into segments within the memory and disk budgets.
pub(crate) struct Spiller {
    pub(crate) memory: Arc<Semaphore>,
    pub(crate) disk: Arc<Semaphore>,
    pub(crate) dir: PathBuf,
    pub(crate) current: Option<(Arc<Segment>, u64)>,
    pub(crate) next_id: u64,
}

/// Budgets are counted in KiB.
pub(crate) fn kib(n: usize) -> u32 {
    n.div_ceil(1024).min(u32::MAX as usize) as u32
}

impl Spiller {
    pub(crate) async fn piece(&mut self, data: Bytes) -> Result<Piece> {
        if let Ok(p) = self.memory.clone().try_acquire_many_owned(kib(data.len())) {
            return Ok(Piece::Memory(data, p));
        }
        let need = kib(data.len()).min(kib(DISK_BUDGET));
        let permit = self
            .disk
            .clone()
            .acquire_many_owned(need)
            .await
            .map_err(|e| Error::Task(TaskError::new("spilling table data", e.to_string())))?;
        if self.current.as_ref().is_none_or(|(_, len)| *len >= SEGMENT) {
            let path = self.dir.join(format!("table-data-{}.spill", self.next_id));
            self.next_id += 1;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| Error::io("create", &path, e))?;
            self.current = Some((Arc::new(Segment { path, file }), 0));
        }
        let (segment, len) = self.current.as_mut().expect("a segment");
        let offset = *len;
        {
            use std::os::unix::fs::FileExt;
            segment
                .file
                .write_all_at(&data, offset)
                .map_err(|e| Error::io("write", &segment.path, e))?;
        }
        *len += data.len() as u64;
        Ok(Piece::File {
            segment: segment.clone(),
            offset,
            len: data.len(),
            _permit: permit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Beyond the memory budget, data goes to segment files, reads back the same, and the files
    /// are removed once their pieces are gone.
    #[tokio::test]
    async fn data_beyond_the_memory_budget_spills_to_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spiller {
            memory: Arc::new(Semaphore::new(1)),
            disk: Arc::new(Semaphore::new(kib(DISK_BUDGET) as usize)),
            dir: dir.path().to_path_buf(),
            current: None,
            next_id: 0,
        };
        let a = s.piece(Bytes::from_static(b"in memory\n")).await.unwrap();
        let b = s.piece(Bytes::from(vec![b'x'; 5000])).await.unwrap();
        let c = s
            .piece(Bytes::from_static(b"also spilled\n"))
            .await
            .unwrap();
        assert!(matches!(a, Piece::Memory(..)));
        let read = |p: &Piece| match p {
            Piece::File {
                segment,
                offset,
                len,
                ..
            } => {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; *len];
                segment.file.read_exact_at(&mut buf, *offset).unwrap();
                buf
            }
            Piece::Memory(..) => panic!("expected a spilled piece"),
        };
        assert_eq!(read(&b), vec![b'x'; 5000]);
        assert_eq!(read(&c), b"also spilled\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop((a, b, c));
        s.current = None;
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

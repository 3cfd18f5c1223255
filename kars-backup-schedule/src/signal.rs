//! SIGTERM/SIGINT handling for the daemon.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// Shutdown tokens driven by SIGTERM and SIGINT (Ctrl-C).
///
/// The first signal cancels [`graceful`](Self::graceful): pass it to
/// [`Scheduler::run`](crate::Scheduler::run) so no new run starts and in-flight runs see their
/// cancellation. A second signal also cancels [`forced`](Self::forced): the daemon may then
/// stop waiting (e.g. abort the in-flight upload at once, or exit).
#[derive(Debug, Clone)]
pub struct ShutdownSignals {
    graceful: CancellationToken,
    forced: CancellationToken,
    /// The number of the first signal received (0: none yet).
    first: Arc<AtomicI32>,
}

impl ShutdownSignals {
    /// Installs the handlers (call inside a tokio runtime with signals enabled).
    ///
    /// # Errors
    /// [`Error::Signal`] when the handlers cannot be installed.
    pub fn install() -> Result<Self> {
        let this = ShutdownSignals {
            graceful: CancellationToken::new(),
            forced: CancellationToken::new(),
            first: Arc::new(AtomicI32::new(0)),
        };
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
            let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
            let (graceful, forced) = (this.graceful.clone(), this.forced.clone());
            let first = this.first.clone();
            tokio::spawn(async move {
                for round in 0..2 {
                    let (name, number) = tokio::select! {
                        _ = term.recv() => ("SIGTERM", 15),
                        _ = int.recv() => ("SIGINT", 2),
                    };
                    if round == 0 {
                        first.store(number, Ordering::SeqCst);
                        tracing::warn!(
                            signal = name,
                            "stop requested: nothing new starts; work under way is told to stop (a restore rolls back)"
                        );
                        graceful.cancel();
                    } else {
                        tracing::warn!(signal = name, "second signal: forcing shutdown");
                        forced.cancel();
                    }
                }
            });
        }
        #[cfg(not(unix))]
        {
            let (graceful, forced) = (this.graceful.clone(), this.forced.clone());
            let first = this.first.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    first.store(2, Ordering::SeqCst);
                    graceful.cancel();
                }
                if tokio::signal::ctrl_c().await.is_ok() {
                    forced.cancel();
                }
            });
            let _ = Error::Signal;
        }
        Ok(this)
    }

    /// Cancelled by the first signal.
    pub fn graceful(&self) -> CancellationToken {
        self.graceful.clone()
    }

    /// Cancelled by the second signal.
    pub fn forced(&self) -> CancellationToken {
        self.forced.clone()
    }

    /// The first signal received (2 for SIGINT, 15 for SIGTERM), if any: a command that stopped
    /// because of it exits with 128 plus this number, as shells expect.
    pub fn received(&self) -> Option<i32> {
        match self.first.load(Ordering::SeqCst) {
            0 => None,
            n => Some(n),
        }
    }
}

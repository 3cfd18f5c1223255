//! SIGTERM/SIGINT handling for the daemon.

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
        };
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
            let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
            let (graceful, forced) = (this.graceful.clone(), this.forced.clone());
            tokio::spawn(async move {
                for round in 0..2 {
                    let name = tokio::select! {
                        _ = term.recv() => "SIGTERM",
                        _ = int.recv() => "SIGINT",
                    };
                    if round == 0 {
                        tracing::info!(
                            signal = name,
                            "shutdown requested: no new runs; in-flight runs are told to stop"
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
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
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
}

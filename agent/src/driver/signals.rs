//! SIGTERM, SIGINT and SIGHUP as the router's inputs (linkerd2-proxy's `linkerd-signal` is
//! the model): the first of SIGTERM, SIGINT or a requested shutdown becomes one
//! `Input::Stop` and ends the task; each SIGHUP becomes an `Input::Reload`.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{DriverError, Input};

/// Installs the handlers now (so that a signal sent right after start is not lost) and
/// forwards them from a task.
pub(super) fn spawn(
    tx: mpsc::Sender<Input>,
    shutdown: CancellationToken,
) -> Result<(), DriverError> {
    let handler = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| DriverError::Start(format!("{name} handler: {e}")))
    };
    let mut term = handler(SignalKind::terminate(), "SIGTERM")?;
    let mut int = handler(SignalKind::interrupt(), "SIGINT")?;
    let mut hup = handler(SignalKind::hangup(), "SIGHUP")?;
    tokio::spawn(async move {
        loop {
            let input = tokio::select! {
                _ = term.recv() => Input::Stop("SIGTERM"),
                _ = int.recv() => Input::Stop("SIGINT"),
                _ = shutdown.cancelled() => Input::Stop("shutdown requested"),
                Some(()) = hup.recv() => Input::Reload,
            };
            let stop = matches!(input, Input::Stop(_));
            if tx.send(input).await.is_err() || stop {
                break;
            }
        }
    });
    Ok(())
}

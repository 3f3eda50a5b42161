//! SIGTERM and SIGINT cancel the agent's token: the first one starts a graceful
//! stop, later ones are logged and ignored (geth must get exactly one SIGTERM).

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

pub fn cancel_on_termination(cancel: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if cancel.is_cancelled() {
                tracing::warn!(signal = name, "already stopping; signal ignored");
            } else {
                tracing::info!(signal = name, "stopping");
                cancel.cancel();
            }
        }
    });
    Ok(())
}

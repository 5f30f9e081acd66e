//! Ctrl-C and SIGTERM: tear down every live lab of this process (agents, simulators,
//! namespaces) before exiting, so an interrupted lab leaves nothing behind.

/// Installs the handler on a thread of its own (a current-thread tokio runtime waiting for
/// either signal). Exits with 130 after cleaning up.
pub fn install() -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("signal runtime: {e}"))?;
    // Register before returning so that a signal right after start is caught.
    let (mut int, mut term) = rt
        .block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        })
        .map_err(|e| format!("signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("lab-signals".into())
        .spawn(move || {
            let name = rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                }
            });
            eprintln!("tdsvip-lab: {name}: tearing the lab down");
            crate::netns::destroy_all_live();
            std::process::exit(130);
        })
        .map_err(|e| format!("signal thread: {e}"))?;
    Ok(())
}

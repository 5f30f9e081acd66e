//! tds-sim's TDS 7.x TLS handshake reader (`tls::Framing` while it unwraps TLS records from
//! PRELOGIN packets), fed arbitrary bytes as a client would send them: alone, it must end
//! in payload bytes or an error, never a panic, and never yield more bytes than came in;
//! under a real rustls server handshake (the session's configuration for `--encryption
//! off`), it must end in a handshake or an error, never a panic.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tds_sim::tls::{Framing, Mode, self_signed, server_config};
use tokio::io::AsyncReadExt;
use tokio_rustls::rustls::ServerConfig;

fn config() -> Arc<ServerConfig> {
    static C: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    C.get_or_init(|| {
        let id = self_signed().expect("certificate");
        Arc::new(server_config(Mode::Off, id).expect("server config"))
    })
    .clone()
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut f = Framing::new(data);
        f.set_wrapping(true);
        let mut out = Vec::new();
        let _ = f.read_to_end(&mut out).await;
        assert!(out.len() <= data.len(), "more payload than input");

        let mut f = Framing::new(tokio::io::join(data, tokio::io::sink()));
        f.set_wrapping(true);
        let _ = tokio_rustls::TlsAcceptor::from(config()).accept(f).await;
    });
});

//! TDS wire formats, encoded and decoded without I/O (except the small framed reader in [`io`]).
//!
//! Both sides of the project speak TDS: the probes (client side: PRELOGIN) and `tds-sim`
//! (server side: PRELOGIN answer, LOGIN7, SQL batches, RPC, tokens). Keeping every wire format
//! in one crate, one module per message or token as tiberius does, gives each format one
//! place with its golden-byte tests and one fuzz target. Every decoder takes bytes from the
//! network and must return a [`CodecError`] for any input, never panic, and never allocate
//! more than the input justifies.

#![forbid(unsafe_code)]

pub mod all_headers;
pub mod batch;
mod cursor;
pub mod error;
pub mod io;
pub mod login7;
pub mod packet;
pub mod prelogin;
pub mod rpc;
pub mod tds_version;
pub mod token;
pub mod txn_manager;
pub mod types;
pub mod ucs2;

pub use batch::SqlBatch;
pub use error::CodecError;
pub use login7::Login7;
pub use packet::{PacketHeader, PacketType};
pub use prelogin::{Encryption, Prelogin, Version};
pub use rpc::RpcRequest;
pub use txn_manager::TransactionManager;

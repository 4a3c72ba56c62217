//! tcp-redirs: a self-hostable TCP redirection gateway.
//!
//! One crate, two halves. The client half (always built) is the command line that mirrors
//! Clever Cloud's `clever tcp-redirs` and speaks HTTP/JSON to a control server. The server
//! half (cargo feature `server`) is that control server: it allocates public ports, keeps
//! the redirection table in an embedded store and forwards raw TCP from each public port
//! to the application's instances.
//!
//! Where each concept lives:
//! - [`wire`]: the JSON types shared by client and server (the API's contract), among
//!   them one redirection's settings ([`wire::settings`]), the one type the API, the CLI,
//!   the files and the store share;
//! - [`cli`]: the command line, one file per subcommand;
//! - [`client`]: the HTTP client the commands use;
//! - [`profile`]: the client's saved server address and credentials;
//! - [`link_file`]: the applications linked to a project's directory (`.tcp-redirs.json`);
//! - [`manifest`]: the declarative file of `apply` and `export`;
//! - [`toml_file`]: the user's TOML files, read with one-line errors;
//! - `server`: the control server (API, port allocator, store, forwarding).

pub mod cli;
pub mod client;
pub mod link_file;
pub mod manifest;
pub mod profile;
#[cfg(feature = "server")]
pub mod server;
pub mod toml_file;
pub mod wire;

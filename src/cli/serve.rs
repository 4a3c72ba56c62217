//! `tcp-redirs serve`: run the control server (cargo feature `server`).

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use tracing_subscriber::EnvFilter;

use crate::server;

/// The options of `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The control API's address (port 0 picks a free port; the address is logged).
    #[arg(long, env = "TCP_REDIRS_LISTEN", default_value = "127.0.0.1:7070", value_name = "ADDR")]
    listen: SocketAddr,
    /// Where the store and the admin credential live [default: the user's data directory].
    #[arg(long, env = "TCP_REDIRS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The address public ports bind when the config file does not say.
    #[arg(long, env = "TCP_REDIRS_PUBLIC_BIND", default_value = "0.0.0.0", value_name = "IP")]
    public_bind: IpAddr,
    /// A TOML file declaring namespaces and applications.
    #[arg(long, env = "TCP_REDIRS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve the control API over TLS with this PEM certificate (chain); needs --tls-key.
    #[arg(long, env = "TCP_REDIRS_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "TCP_REDIRS_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seconds open connections may run on after SIGTERM or SIGINT.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    drain_timeout: u64,
    /// How many threads forward connections [default: one per core].
    #[arg(long, env = "TCP_REDIRS_THREADS", value_name = "N")]
    threads: Option<std::num::NonZeroUsize>,
    /// Share the redirection table with other nodes through etcd: etcd://HOST:PORT[,HOST:PORT…][/PREFIX]
    /// (cargo feature `etcd`) [default: SQLite in the data directory].
    #[arg(long, env = "TCP_REDIRS_STORE", value_name = "URL")]
    store: Option<String>,
    /// The CA certificate (PEM) that signed etcd's: talk to etcd over TLS, checking it is etcd.
    #[arg(long, env = "TCP_REDIRS_STORE_CA", value_name = "FILE")]
    store_ca: Option<PathBuf>,
    /// This node's client certificate (PEM), for an etcd run with --client-cert-auth; needs --store-key.
    #[arg(long, env = "TCP_REDIRS_STORE_CERT", value_name = "FILE", requires = "store_key")]
    store_cert: Option<PathBuf>,
    /// The private key (PEM) of --store-cert.
    #[arg(long, env = "TCP_REDIRS_STORE_KEY", value_name = "FILE", requires = "store_cert")]
    store_key: Option<PathBuf>,
    /// The etcd user this node logs in as (etcd's auth); its password comes from
    /// --store-password-file or TCP_REDIRS_STORE_PASSWORD, never from the command line.
    #[arg(long, env = "TCP_REDIRS_STORE_USER", value_name = "NAME")]
    store_user: Option<String>,
    /// A file holding the etcd user's password (its first line).
    #[arg(long, env = "TCP_REDIRS_STORE_PASSWORD_FILE", value_name = "FILE")]
    store_password_file: Option<PathBuf>,
    /// This node's name in the fleet [default: the host name].
    #[arg(long, env = "TCP_REDIRS_NODE", value_name = "NAME")]
    node: Option<String>,
    /// Serve only these namespaces (comma-separated) [default: all].
    #[arg(long, value_name = "NS,NS", value_delimiter = ',')]
    namespaces: Option<Vec<String>>,
    /// How public TCP ports listen: `steered` (every port on one socket per address family,
    /// steered by the kernel with BPF sk_lookup: needs Linux 5.9 and CAP_BPF with
    /// CAP_NET_ADMIN, or root), `bound` (one listening socket per port), or `auto` (steered
    /// where it can be, else bound, saying why at start).
    #[arg(long, env = "TCP_REDIRS_PORT_MODE", default_value = "auto", value_name = "MODE",
        value_parser = server::PortModeSetting::parse)]
    port_mode: server::PortModeSetting,
    /// Log one line per connection when it ends, on every port (else per namespace: access_log).
    #[arg(long, env = "TCP_REDIRS_ACCESS_LOG")]
    access_log: bool,
    /// Seconds the node stays listed as up after it last reached the store.
    #[arg(long, default_value_t = 10, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    node_ttl: u64,
}

pub fn run(args: Args) -> Result<()> {
    // Before the log writer's thread, the first the server starts.
    server::limit_malloc_arenas();
    let filter = EnvFilter::try_from_env("TCP_REDIRS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Lines are written to stderr in batches by a thread of their own, so that a forwarding
    // thread never waits on a write nor wakes a thread per line (one connection log line
    // per connection); `_flushed` writes what is left when the server returns.
    let _flushed = server::log_writer::start()?;
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(server::log_writer::Lines);
    // TCP_REDIRS_LOG_FORMAT=json: one JSON object per line, for log shippers.
    match std::env::var("TCP_REDIRS_LOG_FORMAT").as_deref() {
        Ok("json") => {
            server::conn_log::set_json(true);
            logs.json().init()
        }
        Ok("text") | Err(_) => {
            logs.with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()).init()
        }
        Ok(other) => anyhow::bail!("TCP_REDIRS_LOG_FORMAT={other}: use `json` or `text`"),
    }
    let opts = server::Options {
        listen: args.listen,
        data_dir: args.data_dir,
        public_bind: args.public_bind,
        config: args.config,
        // Read from the environment only: a flag would show the secret in `ps`.
        admin_token: non_empty_env("TCP_REDIRS_ADMIN_TOKEN"),
        admin_secret: non_empty_env("TCP_REDIRS_ADMIN_SECRET"),
        drain: Duration::from_secs(args.drain_timeout),
        tls: args.tls_cert.zip(args.tls_key),
        threads: args.threads,
        store: args.store,
        store_access: server::StoreAccess {
            ca: args.store_ca,
            cert: args.store_cert,
            key: args.store_key,
            user: args.store_user,
            password_file: args.store_password_file,
        },
        node: args.node,
        port_mode: args.port_mode,
        namespaces: args.namespaces,
        node_ttl: Duration::from_secs(args.node_ttl),
        access_log: args.access_log,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(server::run(opts))
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

//! The data plane: accepted TCP connections forwarded to instances, and UDP datagrams
//! ([`udp`], its own design beside this one).
//!
//! The hot path takes no lock and allocates nothing per connection beyond its task, and
//! nothing per byte: each forwarding thread ([`workers`]) runs its own accept loops
//! ([`forward`]) on sockets from the port allocator ([`ports`]), one sleeping thread
//! woken per new connection once a port is busy ([`exclusive`]); in steered mode
//! ([`steered`]) on one listener per address family that the kernel's program ([`steer`])
//! hands every port's connections. It checks each connection ([`admission`], with the
//! access list the spec parsed, and the limits per client address, [`per_client`], kept
//! with the bandwidth limit, [`bandwidth`], in [`limited`]), picks an instance ([`balance`]), moves the bytes with
//! pooled buffers and splice ([`copy`]), counts in per-thread slots ([`metrics`]) and logs
//! one line when it ends ([`conn_log`]). It knows nothing of the store or the API: the
//! state above it hands it what to listen on.

mod admission;
pub(super) mod balance;
mod bandwidth;
pub mod conn_log;
pub(super) mod copy;
mod exclusive;
pub(super) mod forward;
mod limited;
pub mod log_writer;
pub(super) mod metrics;
mod per_client;
pub(super) mod ports;
mod proxy_header;
pub(super) mod steer;
pub(super) mod steered;
pub(super) mod udp;
pub(super) mod workers;

//! The PROXY protocol v2 header of a UDP flow (HAProxy's specification, section 2.2):
//! the `DGRAM` transport over IPv4 (`0x12`) or IPv6 (`0x22`), made once per flow by `ppp`.

use std::net::SocketAddr;

use ppp::v2::{Builder, Command, Protocol, Version};

use crate::server::spec::access::unmapped;

/// The header telling the instance that `client` sent to `local`; `None` when the two are
/// of different families (an IPv4 client seen on an IPv6 address), which v2 cannot state.
pub(super) fn header(client: SocketAddr, local: SocketAddr) -> Option<Box<[u8]>> {
    let (client, local) = (unmapped(client), unmapped(local));
    if client.is_ipv4() != local.is_ipv4() {
        return None;
    }
    let command = Version::Two | Command::Proxy;
    Builder::with_addresses(command, Protocol::Datagram, (client, local))
        .build()
        .ok()
        .map(Vec::into_boxed_slice)
}

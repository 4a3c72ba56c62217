//! The PROXY protocol header (HAProxy's specification) a TCP instance gets before the
//! client's first byte, so that it learns the client's real address (which Scalingo's
//! gateway cannot give). A receiver must be configured for it, since it must never guess
//! whether a header is present; whether one is due is the redirection's access rules'
//! ([`crate::server::spec::Access::proxy`]).

use std::net::SocketAddr;

use crate::server::spec::access::unmapped;
use crate::wire::ProxyProtocol;

/// The header for a client `peer` that connected to `local`, in `version`'s form.
pub fn header(version: ProxyProtocol, peer: SocketAddr, local: SocketAddr) -> Option<Vec<u8>> {
    let (peer, local) = (unmapped(peer), unmapped(local));
    match version {
        ProxyProtocol::V1 => Some(ppp::v1::Addresses::from((peer, local)).to_string().into_bytes()),
        // `v2-every` is refused on TCP when a redirection is added; a stream has one
        // header either way.
        ProxyProtocol::V2 | ProxyProtocol::V2Every => {
            let command = ppp::v2::Version::Two | ppp::v2::Command::Proxy;
            ppp::v2::Builder::with_addresses(command, ppp::v2::Protocol::Stream, (peer, local)).build().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_headers_name_the_real_client() {
        let h = header(
            ProxyProtocol::V1,
            "[::ffff:192.0.2.7]:4321".parse().unwrap(),
            "127.0.0.1:5000".parse().unwrap(),
        );
        assert_eq!(h.unwrap(), b"PROXY TCP4 192.0.2.7 127.0.0.1 4321 5000\r\n");
        let h =
            header(ProxyProtocol::V2, "[2001:db8::7]:4321".parse().unwrap(), "[::1]:5000".parse().unwrap())
                .unwrap();
        assert_eq!(&h[..13], b"\r\n\r\n\0\r\nQUIT\n\x21");
        assert_eq!(h[13], 0x21, "AF_INET6 + STREAM");
        assert_eq!(h.len(), 16 + 36);
    }
}

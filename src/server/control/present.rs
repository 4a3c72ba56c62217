//! Presentation: what the table and the live ports hold, in the shapes the API answers.

use crate::server::state::live::{self, LivePorts};
use crate::server::state::store::{NodeRecord, RedirRow};
use crate::server::state::table::Table;
use crate::wire::{Node, NodeLiveness, NodePort, NodePortState, RedirState, TcpRedir};

/// A redirection as the API shows it: this node's state and traffic (the figures are this
/// node's own), and the state of every live node serving its namespace.
pub fn redirection(table: &Table, here_live: &LivePorts, this_node: &str, row: &RedirRow) -> TcpRedir {
    let def = table.namespaces.get(&*row.namespace);
    let host = def.map(|n| n.public_host.as_str()).unwrap_or("localhost");
    let here = here_live.state(&row.key());
    let key = row.key().to_string();
    let mut nodes: Vec<NodePort> = serving_nodes(table, &row.namespace)
        .filter(|n| n.name != this_node)
        .map(|n| NodePort {
            node: n.name.clone(),
            // A node's record says up to which revision its ports are right.
            state: if n.revision < row.revision {
                NodePortState::Pending
            } else if n.unbound.contains(&key) {
                NodePortState::Unbound
            } else {
                NodePortState::Listening
            },
        })
        .collect();
    if here_live.served().serves(&row.namespace) {
        let state = match here {
            Some((true, _)) => NodePortState::Listening,
            Some((false, _)) => NodePortState::Unbound,
            None => NodePortState::Pending,
        };
        nodes.push(NodePort { node: this_node.to_owned(), state });
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let listening = here.is_some_and(|(bound, _)| bound);
    TcpRedir {
        settings: live::settings_in_force(def, row),
        namespace: row.namespace.to_string(),
        port: row.port,
        last_port: (row.ports > 1).then(|| row.last_port()),
        protocol: row.protocol,
        address: Some(format!("{}://{host}:{}/", row.protocol, row.port)),
        state: Some(if listening { RedirState::Listening } else { RedirState::Unbound }),
        traffic: here.map(|(_, traffic)| traffic),
        nodes,
    }
}

/// Every node that has published its state, up while its lease holds.
pub fn nodes(table: &Table) -> Vec<Node> {
    table
        .nodes
        .values()
        .map(|n| Node {
            name: n.name.clone(),
            public_address: n.public_address.clone(),
            namespaces: n.namespaces.clone(),
            state: if table.alive.contains(&n.name) { NodeLiveness::Up } else { NodeLiveness::Down },
            last_seen: n.last_seen,
            ports: n.listening,
            unbound: n.unbound.len() as u64,
            port_mode: n.port_mode,
        })
        .collect()
}

/// The live nodes that serve a namespace.
pub fn serving_nodes<'a>(table: &'a Table, namespace: &'a str) -> impl Iterator<Item = &'a NodeRecord> {
    table
        .nodes
        .values()
        .filter(move |n| table.alive.contains(&n.name) && n.namespaces.iter().any(|ns| ns == namespace))
}

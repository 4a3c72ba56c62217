//! Redirections found by their key, keyed by their own rows.
//!
//! The table ([`super::table`]) and the live ports ([`super::live`]) each hold one entry per
//! redirection, sorted by its key (namespace, protocol, port), which they look up, walk by
//! namespace and find the nearest below (a range's first port). A map from [`RedirKey`] to
//! the row holds the key twice: once in the map (a pointer to the namespace, the protocol,
//! the port: 24 bytes), once in the row it points to, and B-tree nodes are partly empty,
//! so each byte of an entry costs about two (issue 32's memory per redirection). Here the
//! row is the key: a [`ByKey`] is a
//! pointer to the row, ordered as the row's key, and any [`Keyed`] value (a [`RedirKey`], a
//! [`KeyRef`] of borrowed parts that costs no allocation, a row) finds it, through
//! `Borrow<dyn Keyed>`.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use super::store::{RedirKey, RedirRow};
use crate::wire::Protocol;

/// What a redirection's key is made of, in the order keys sort: namespace, protocol, port.
pub trait Keyed {
    /// The namespace, the protocol and the (first) port.
    fn parts(&self) -> (&str, Protocol, u16);
}

impl Keyed for RedirKey {
    fn parts(&self) -> (&str, Protocol, u16) {
        (&self.namespace, self.protocol, self.port)
    }
}

impl Keyed for RedirRow {
    fn parts(&self) -> (&str, Protocol, u16) {
        (&self.namespace, self.protocol, self.port)
    }
}

/// A key of borrowed parts: a lookup that allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct KeyRef<'a> {
    /// The namespace.
    pub namespace: &'a str,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The port.
    pub port: u16,
}

impl Keyed for KeyRef<'_> {
    fn parts(&self) -> (&str, Protocol, u16) {
        (self.namespace, self.protocol, self.port)
    }
}

impl PartialEq for dyn Keyed + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn Keyed + '_ {}

impl PartialOrd for dyn Keyed + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn Keyed + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts().cmp(&other.parts())
    }
}

/// A row as a map's key: ordered as its key, and found by any [`Keyed`] value.
#[derive(Debug, Clone)]
pub struct ByKey(pub Arc<RedirRow>);

impl PartialEq for ByKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ByKey {}

impl PartialOrd for ByKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByKey {
    /// The order of its row as a [`Keyed`] value, the one its lookups use.
    fn cmp(&self, other: &Self) -> Ordering {
        (&*self.0 as &dyn Keyed).cmp(&*other.0)
    }
}

impl<'a> Borrow<dyn Keyed + 'a> for ByKey {
    fn borrow(&self) -> &(dyn Keyed + 'a) {
        &*self.0
    }
}

/// Redirections by key, each with a `V`: the table's (`V = ()`) or the live ports'.
#[derive(Debug, Clone)]
pub struct Rows<V>(BTreeMap<ByKey, V>);

impl<V> Default for Rows<V> {
    fn default() -> Self {
        Rows(BTreeMap::new())
    }
}

impl<V: PartialEq> PartialEq for Rows<V> {
    /// The same keys, rows and values (rows compared whole, not only by key).
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self.0.iter().zip(&other.0).all(|((a, x), (b, y))| a.0 == b.0 && x == y)
    }
}

impl<V> Rows<V> {
    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    // The tests read it; `len` is what the server reads.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The row at `key`, and its value.
    pub fn get(&self, key: &dyn Keyed) -> Option<(&Arc<RedirRow>, &V)> {
        self.0.get_key_value(key).map(|(k, v)| (&k.0, v))
    }

    /// The row at `key`, and its value to change (the row itself is the key: [`Self::insert`]
    /// replaces it).
    pub fn get_mut(&mut self, key: &dyn Keyed) -> Option<&mut V> {
        self.0.get_mut(key)
    }

    /// Puts `row` with `value`, in place of the row of the same key; answers what it replaced.
    pub fn insert(&mut self, row: Arc<RedirRow>, value: V) -> Option<(Arc<RedirRow>, V)> {
        let old = self.0.remove_entry(&*row as &dyn Keyed).map(|(k, v)| (k.0, v));
        self.0.insert(ByKey(row), value);
        old
    }

    /// Takes the row at `key` out, with its value.
    pub fn remove(&mut self, key: &dyn Keyed) -> Option<(Arc<RedirRow>, V)> {
        self.0.remove_entry(key).map(|(k, v)| (k.0, v))
    }

    /// Every row with its value, by key.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&Arc<RedirRow>, &V)> {
        self.0.iter().map(|(k, v)| (&k.0, v))
    }

    /// Every key, by key (each shares its row's namespace).
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = RedirKey> + '_ {
        self.0.keys().map(|k| k.0.key())
    }

    /// A namespace's rows (TCP, then UDP, by port), with their values.
    pub fn namespace<'a>(
        &'a self,
        namespace: &str,
    ) -> impl DoubleEndedIterator<Item = (&'a Arc<RedirRow>, &'a V)> + use<'a, V> {
        let from = KeyRef { namespace, protocol: Protocol::Tcp, port: 0 };
        let to = KeyRef { namespace, protocol: Protocol::Udp, port: u16::MAX };
        self.0
            .range::<dyn Keyed, _>((Bound::Included(&from as &dyn Keyed), Bound::Included(&to as &dyn Keyed)))
            .map(|(k, v)| (&k.0, v))
    }

    /// The row with the greatest key at or below `key` in its namespace and protocol, with
    /// its value: the only one whose range may cover `key`'s port (rows never overlap).
    pub fn at_or_below(&self, key: &dyn Keyed) -> Option<(&Arc<RedirRow>, &V)> {
        let (namespace, protocol, port) = key.parts();
        let from = KeyRef { namespace, protocol, port: 0 };
        let to = KeyRef { namespace, protocol, port };
        self.0
            .range::<dyn Keyed, _>((Bound::Included(&from as &dyn Keyed), Bound::Included(&to as &dyn Keyed)))
            .next_back()
            .map(|(k, v)| (&k.0, v))
    }

    /// Takes every row out, with its value.
    pub fn take(&mut self) -> impl Iterator<Item = (Arc<RedirRow>, V)> {
        std::mem::take(&mut self.0).into_iter().map(|(k, v)| (k.0, v))
    }
}

impl Rows<()> {
    /// Puts `row`, in place of the row of the same key; answers the row it replaced.
    pub fn put(&mut self, row: Arc<RedirRow>) -> Option<Arc<RedirRow>> {
        self.insert(row, ()).map(|(old, ())| old)
    }

    /// The row at `key`.
    pub fn row(&self, key: &dyn Keyed) -> Option<&Arc<RedirRow>> {
        self.get(key).map(|(row, ())| row)
    }
}

impl std::ops::Index<&RedirKey> for Rows<()> {
    type Output = RedirRow;

    /// The row at `key`; panics when there is none (tests).
    fn index(&self, key: &RedirKey) -> &RedirRow {
        self.row(key).unwrap_or_else(|| panic!("no redirection at {key}"))
    }
}

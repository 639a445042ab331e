//! Manager and team names as accounts hold them: interned, one
//! allocation per name however many accounts name it.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A manager or team name as an account holds it: interned (see [`Names`]),
/// behind a thin pointer — 8 bytes in every account where `Arc<str>` took
/// 16, for one more allocation per distinct name. Checkpointed as a string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Name(Arc<String>);

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|name| Name(Arc::new(name)))
    }
}

impl Name {
    /// Where the name lives: the same for every holder of one interned name.
    pub(super) fn address(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }
}

/// Interned names: one allocation per manager or team, however many
/// accounts name it. Names no account holds any more are dropped at expiry.
#[derive(Debug, Default)]
pub(super) struct Names(pub(super) HashSet<Name, ahash::RandomState>);

impl Names {
    pub(super) fn intern(&mut self, name: &str) -> Name {
        if let Some(known) = self.0.get(name) {
            return known.clone();
        }
        let name = Name(Arc::new(name.to_owned()));
        self.0.insert(name.clone());
        name
    }

    /// Gives back one account's hold on `name`, forgetting the name when no
    /// other account holds it: a flood of new names at the account cap must
    /// not grow the set.
    pub(super) fn release(&mut self, name: Name) {
        if Arc::strong_count(&name.0) == 2 {
            self.0.remove(&*name);
        }
    }

    /// Drops the names only this set still holds.
    pub(super) fn prune(&mut self) {
        self.0.retain(|name| Arc::strong_count(&name.0) > 1);
    }
}

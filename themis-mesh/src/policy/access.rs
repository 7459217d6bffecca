//! Access policy, beyond the paper (which leaves authorization to the application): a provider
//! may restrict a service to an allow-list of caller node ids.
//!
//! The caller's node id is the one the secure channel authenticated (paper §5.2: identities
//! cannot be forged), so the check needs no extra credential.

use std::collections::{BTreeSet, HashMap};

use themis_crypto::NodeId;

use crate::Error;

/// Default limit on restricted services.
const DEFAULT_MAX_RESTRICTED_SERVICES: usize = 1024;
/// Default limit on node ids per allow-list.
const DEFAULT_MAX_ALLOWED_CALLERS: usize = 4096;

/// Per-service allow-lists of caller node ids. A service with no list (or an empty one) is open
/// to every caller.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    lists: HashMap<String, BTreeSet<NodeId>>,
    max_services: usize,
    max_callers: usize,
}

impl Default for AccessPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl AccessPolicy {
    /// An open policy with the default limits.
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_MAX_RESTRICTED_SERVICES, DEFAULT_MAX_ALLOWED_CALLERS)
    }

    /// An open policy holding at most `max_services` allow-lists of at most `max_callers` ids.
    pub fn with_limits(max_services: usize, max_callers: usize) -> Self {
        Self {
            lists: HashMap::new(),
            max_services,
            max_callers,
        }
    }

    /// Sets the allow-list of `service` (replacing any previous one); an empty list opens the
    /// service to everyone. Fails, changing nothing, if a limit would be exceeded.
    pub fn restrict<I>(&mut self, service: &str, callers: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = NodeId>,
    {
        let mut set = BTreeSet::new();
        for id in callers {
            set.insert(id);
            if set.len() > self.max_callers {
                return Err(self.callers_full());
            }
        }
        if set.is_empty() {
            self.lists.remove(service);
            return Ok(());
        }
        if !self.lists.contains_key(service) && self.lists.len() >= self.max_services {
            return Err(self.services_full());
        }
        self.lists.insert(service.to_owned(), set);
        Ok(())
    }

    /// Adds `caller` to the allow-list of `service` (restricting the service if it was open).
    pub fn allow(&mut self, service: &str, caller: NodeId) -> Result<(), Error> {
        if !self.lists.contains_key(service) && self.lists.len() >= self.max_services {
            return Err(self.services_full());
        }
        let max_callers = self.max_callers;
        let list = self.lists.entry(service.to_owned()).or_default();
        if !list.contains(&caller) && list.len() >= max_callers {
            if list.is_empty() {
                self.lists.remove(service);
            }
            return Err(self.callers_full());
        }
        list.insert(caller);
        Ok(())
    }

    /// Opens `service` to every caller again.
    pub fn open(&mut self, service: &str) {
        self.lists.remove(service);
    }

    /// `true` if `service` has an allow-list.
    pub fn is_restricted(&self, service: &str) -> bool {
        self.lists.contains_key(service)
    }

    /// The decision: `Ok(())` if `caller` may call `service`, else [`Error::AccessDenied`].
    pub fn check(&self, service: &str, caller: &NodeId) -> Result<(), Error> {
        self.check_as(service, caller, None)
    }

    /// The decision for a `caller` that succeeds the id `predecessor` (key rotation,
    /// PROTOCOL.md §2.9: a statement the caller presented, verified and in force): allowed
    /// where the caller itself or its predecessor is on the list. An id removed from a list
    /// takes its successor with it.
    pub fn check_as(
        &self,
        service: &str,
        caller: &NodeId,
        predecessor: Option<&NodeId>,
    ) -> Result<(), Error> {
        match self.lists.get(service) {
            Some(list)
                if !list.contains(caller) && !predecessor.is_some_and(|p| list.contains(p)) =>
            {
                Err(Error::AccessDenied {
                    caller: *caller,
                    service: service.to_owned(),
                })
            }
            _ => Ok(()),
        }
    }

    fn services_full(&self) -> Error {
        Error::LimitExceeded {
            what: "access policy (restricted services)",
            limit: self.max_services,
        }
    }

    fn callers_full(&self) -> Error {
        Error::LimitExceeded {
            what: "access policy (callers per allow-list)",
            limit: self.max_callers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> NodeId {
        NodeId::from_bytes([b; 32])
    }

    #[test]
    fn open_by_default_and_denial_names_caller_and_service() {
        let mut p = AccessPolicy::new();
        assert!(p.check("check", &id(1)).is_ok());
        p.restrict("check", [id(1), id(2)]).unwrap();
        assert!(p.check("check", &id(1)).is_ok());
        let err = p.check("check", &id(3)).unwrap_err();
        assert!(
            matches!(&err, Error::AccessDenied { caller, service } if *caller == id(3) && service == "check"),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&id(3).to_string()) && msg.contains("'check'"),
            "{msg}"
        );
        // Other services stay open.
        assert!(p.check("handler", &id(3)).is_ok());
        // An empty list opens the service again.
        p.restrict("check", []).unwrap();
        assert!(p.check("check", &id(3)).is_ok());
    }

    #[test]
    fn a_successor_is_allowed_where_its_predecessor_is() {
        let mut p = AccessPolicy::new();
        p.restrict("s", [id(1)]).unwrap();
        assert!(p.check_as("s", &id(9), Some(&id(1))).is_ok());
        assert!(p.check_as("s", &id(9), Some(&id(2))).is_err());
        assert!(p.check_as("s", &id(9), None).is_err());
        // the predecessor removed from the list: its successor goes with it
        p.restrict("s", [id(3)]).unwrap();
        assert!(p.check_as("s", &id(9), Some(&id(1))).is_err());
    }

    #[test]
    fn allow_and_open() {
        let mut p = AccessPolicy::new();
        p.allow("s", id(5)).unwrap();
        assert!(p.is_restricted("s"));
        assert!(p.check("s", &id(6)).is_err());
        p.open("s");
        assert!(p.check("s", &id(6)).is_ok());
    }

    #[test]
    fn limits() {
        let mut p = AccessPolicy::with_limits(1, 2);
        assert!(matches!(
            p.restrict("a", [id(1), id(2), id(3)]),
            Err(Error::LimitExceeded { .. })
        ));
        assert!(!p.is_restricted("a"));
        p.restrict("a", [id(1), id(2)]).unwrap();
        assert!(p.allow("a", id(3)).is_err());
        assert!(p.allow("a", id(2)).is_ok());
        assert!(p.allow("b", id(1)).is_err());
        assert!(!p.is_restricted("b"));
        assert!(p.check("a", &id(3)).is_err());
    }

    #[test]
    fn zero_callers_limit_leaves_no_empty_list() {
        let mut p = AccessPolicy::with_limits(4, 0);
        assert!(p.allow("a", id(1)).is_err());
        assert!(!p.is_restricted("a"));
    }
}

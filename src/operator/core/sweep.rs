//! The sweep: which of this cluster's active registrations nothing in the cluster accounts for.
//! Pure; the shell's `sweep_io` lists and revokes.
//!
//! The operator revokes a token when its ApiToken is deleted, then forgets the ApiToken. A
//! registration that comes back afterwards is revoked by nobody: a restore of the store's
//! database from before the revocation, a failover to a standby that had not received it, a
//! revocation written by hand and undone. So, at start-up and then periodically, the operator
//! lists the store's active registrations of its cluster (and namespace, with
//! `--watch-namespace`), then the live ApiTokens and the Secrets it manages, and revokes each
//! registration that is
//!
//! - not owned by a live ApiToken (by uid: a new ApiToken of the same name is another owner),
//!   and
//! - not the token of a Secret the operator manages (an orphan left by `deletionPolicy:
//!   Orphan` keeps its registration, owned by the deleted ApiToken, until it is adopted).
//!
//! Listing the store first and the cluster second keeps a new ApiToken safe: a registration
//! the store listed was made for an ApiToken that existed before the cluster was listed.

use std::collections::BTreeSet;

/// A registration as the sweep sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub id: String,
    pub owner_uid: String,
    pub owner_namespace: String,
    pub owner_name: String,
    pub fingerprint: String,
}

/// The registrations to revoke: active ones (the caller lists only those) that no live
/// ApiToken owns and no managed Secret holds.
pub fn stale<'r>(
    registrations: &'r [Registration],
    live_uids: &BTreeSet<String>,
    held_ids: &BTreeSet<String>,
) -> Vec<&'r Registration> {
    registrations
        .iter()
        .filter(|r| !live_uids.contains(&r.owner_uid) && !held_ids.contains(&r.id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(id: &str, uid: &str) -> Registration {
        Registration {
            id: id.into(),
            owner_uid: uid.into(),
            owner_namespace: "ns".into(),
            owner_name: "n".into(),
            fingerprint: format!("fp-{id}"),
        }
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn only_registrations_of_gone_apitokens_that_no_secret_holds_are_stale() {
        let regs = [
            reg("live-current", "live"),
            reg("live-in-grace", "live"),
            reg("orphaned", "gone"),
            reg("restored", "gone"),
            reg("restored-too", "gone-too"),
        ];
        let stale: Vec<&str> = stale(&regs, &set(&["live"]), &set(&["orphaned"]))
            .into_iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(stale, ["restored", "restored-too"]);
    }

    #[test]
    fn nothing_is_stale_when_everything_is_accounted_for() {
        let regs = [reg("a", "u1"), reg("b", "u2")];
        assert!(stale(&regs, &set(&["u1", "u2"]), &set(&[])).is_empty());
        assert!(stale(&regs, &set(&[]), &set(&["a", "b"])).is_empty());
    }
}

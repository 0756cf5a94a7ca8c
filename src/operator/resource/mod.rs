//! The custom resources and every shared name. Imports nothing else of the operator.
//!
//! - [`crd`]: the `ApiToken` resource's types, schema and CEL rules;
//! - [`policy_crd`]: the `ApiTokenPolicy` resource (which namespaces may ask for which scopes);
//! - [`names`]: every name other parts agree on (DESIGN.md §3), condition and Event reasons.

pub mod crd;
pub mod names;
pub mod policy_crd;

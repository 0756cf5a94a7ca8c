pub mod crd;
pub mod names;
pub mod policy_crd;

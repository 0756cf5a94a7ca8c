//! Wiring: configuration, watches, the controller, the metrics server and leader election.
//! Imports everything below it; nothing imports it but the binary.
//!
//! - [`run`]: `loop-token-operator run` (connects, starts the watches and the controller);
//! - [`leader`]: leader election on a Lease, with its settings and its error.

pub mod leader;
pub mod run;

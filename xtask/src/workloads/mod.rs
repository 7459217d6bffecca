//! The workloads of paper §9.

mod apps;
pub(crate) mod dht;
mod key_agreement;
pub(crate) mod sidecar;

use crate::{Error, Mode, Workload};

/// A workload's failure in `mode`, with the reason for the operator.
pub(crate) fn werr(workload: &str, mode: Mode, reason: impl ToString) -> Error {
    Error::Workload {
        workload: workload.into(),
        mode,
        reason: reason.to_string(),
    }
}

/// The generator of draw `i` of a run seeded with `seed`: each operation of a closed loop
/// (which runs them in any order, on any task) draws from its own generator, so the draws
/// depend on `(seed, i)` only and no state is shared. `i` is spread by the golden-ratio
/// constant before seeding, so that neighbouring operations start far apart.
pub(crate) fn rng(seed: u64, i: u64) -> fastrand::Rng {
    fastrand::Rng::with_seed(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Every workload in report order (the paper's numbering).
pub(crate) fn all() -> Vec<Box<dyn Workload>> {
    vec![
        Box::new(dht::LocalFindStore),
        Box::new(dht::FindScaling::default()),
        Box::new(dht::Join),
        Box::new(dht::LeaveBlink),
        Box::new(key_agreement::KeyAgreement),
        Box::new(apps::Apps),
        Box::new(sidecar::Sidecar),
    ]
}

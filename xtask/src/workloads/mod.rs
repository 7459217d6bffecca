//! The workloads of paper §9.

mod apps;
mod dht;
mod key_agreement;
mod planned;

use crate::{Error, Mode, Workload};

/// A workload's failure in `mode`, with the reason for the operator.
pub(crate) fn werr(workload: &str, mode: Mode, reason: impl ToString) -> Error {
    Error::Workload {
        workload: workload.into(),
        mode,
        reason: reason.to_string(),
    }
}

/// SplitMix64 of `seed` and `i`: a deterministic draw per operation, no shared state.
pub(crate) fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Every workload in report order (the paper's numbering).
pub(crate) fn all() -> Vec<Box<dyn Workload>> {
    let planned = planned::planned().into_iter();
    let mut out: Vec<Box<dyn Workload>> = vec![
        Box::new(dht::LocalFindStore),
        Box::new(dht::FindScaling),
        Box::new(dht::Join),
        Box::new(dht::LeaveBlink),
        Box::new(key_agreement::KeyAgreement),
        Box::new(apps::Apps),
    ];
    // Any workload still planned comes last.
    out.extend(planned.skip(4).map(|p| Box::new(p) as Box<dyn Workload>));
    out
}

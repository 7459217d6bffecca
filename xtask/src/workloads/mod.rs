//! The workloads of paper §9.

mod key_agreement;
mod planned;

use crate::Workload;

/// Every workload in report order (the paper's numbering).
pub(crate) fn all() -> Vec<Box<dyn Workload>> {
    let mut planned = planned::planned().into_iter();
    let mut out: Vec<Box<dyn Workload>> = Vec::new();
    // 1 to 4, then 5 (implemented), then 6.
    for p in planned.by_ref().take(4) {
        out.push(Box::new(p));
    }
    out.push(Box::new(key_agreement::KeyAgreement));
    out.extend(planned.map(|p| Box::new(p) as Box<dyn Workload>));
    out
}

//! The workloads of paper §9.

mod apps;
mod dht;
mod key_agreement;
mod planned;

use crate::Workload;

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

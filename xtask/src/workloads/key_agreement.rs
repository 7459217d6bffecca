//! Workload 5: key pair creation + key agreement (paper §9.2: "identity (public-private key
//! pair) creation and the authenticated key agreement protocol, averaging about 52ms").
//!
//! The secure operation creates a new Ed25519 identity for the initiator A and runs the full
//! three-message handshake of the paper's Fig. 2 with the real `themis-handshake` state
//! machines, in memory: `Initiator::start` (message 1), `Responder::handle_message1`
//! (message 2), `Initiator::handle_message2` (session and message 3),
//! `Responder::handle_message3` (B's session). Encoding, parsing and every check are counted;
//! sockets are not. The insecure operation is the key pair creation (and node id) alone: no
//! agreement.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use themis_crypto::{IdentityKeypair, NetworkId, NodeId};
use themis_handshake::{HandshakeConfig, Initiator, Responder as HandshakeResponder};

use crate::load::{self, ClosedLoop, OpOutcome, OpenLoop, Timer};
use crate::workload::{Figure, Goal, Measurement, Metric, Params, PlotAxis, PointSel, Workload};
use crate::{Error, Mode, Progress};

/// Name of this workload.
pub(crate) const NAME: &str = "key-agreement";

/// The long-lived node B every new node agrees a key with.
struct Responder {
    keys: Arc<IdentityKeypair>,
    id: NodeId,
    net: NetworkId,
    config: HandshakeConfig,
}

/// One secure operation: A's identity creation and the Fig. 2 handshake with B.
fn secure_once(b: &Responder) -> Result<(), &'static str> {
    let now = Instant::now();
    // paper §5.1.1: a node picks its key pair freely; its identity is A = h(PK_A, net_id).
    let a = Arc::new(IdentityKeypair::generate());
    // B's handshake state for this exchange (its pending table holds just this one).
    let mut responder =
        HandshakeResponder::new(Arc::clone(&b.keys), b.net.clone(), b.config.clone());
    let (mut initiator, msg1) =
        Initiator::start(a, b.net.clone(), b.id, &b.config, now).map_err(|_| "message 1")?;
    let msg2 = responder
        .handle_message1(&msg1, now)
        .map_err(|_| "message 2")?;
    let (a_session, msg3) = initiator
        .handle_message2(&msg2, now)
        .map_err(|_| "message 3")?;
    let b_session = responder
        .handle_message3(&msg3, now)
        .map_err(|_| "key confirmation")?;
    if a_session.session_id != b_session.session_id {
        return Err("session ids differ");
    }
    black_box((a_session, b_session));
    Ok(())
}

/// One insecure operation: key pair creation and node id, no agreement.
fn insecure_once(net: &NetworkId) {
    let a = IdentityKeypair::generate();
    black_box(a.node_id(net));
}

async fn op(mode: Mode, b: Arc<Responder>) -> Result<OpOutcome, &'static str> {
    {
        match mode {
            Mode::Secure => secure_once(&b)?,
            Mode::Insecure | Mode::Direct | Mode::Relay => insecure_once(&b.net),
        }
        Ok(OpOutcome::default())
    }
}

/// Workload 5.
#[derive(Debug, Default)]
pub(crate) struct KeyAgreement;

impl KeyAgreement {
    fn concurrencies(cores: usize) -> Vec<usize> {
        let mut c = vec![1, cores.max(1), 2 * cores.max(1)];
        c.dedup();
        c
    }

    fn ops(params: &Params) -> u64 {
        params.profile.pick(20_000, 2_000, 20)
    }

    fn open_rate(params: &Params) -> f64 {
        params.profile.pick(1_000.0, 500.0, 200.0)
    }
}

impl Workload for KeyAgreement {
    fn name(&self) -> &'static str {
        NAME
    }

    fn title(&self) -> &'static str {
        "5. Key pair creation + key agreement"
    }

    fn method(&self) -> String {
        "Secure: a new Ed25519 identity for the initiator, then the full 3-message handshake \
         of the paper's Fig. 2 through the `themis-handshake` state machines (encoding, \
         parsing and every check), in memory. Insecure: key pair creation and node id only, \
         no agreement. \
         Closed loop at 1, cores and 2×cores operations in flight (nodes = 2: the new node and \
         its peer), then open loop at a fixed offered rate."
            .into()
    }

    fn figures(&self) -> Vec<Figure> {
        use Metric::*;
        use PointSel::{Each, Label};
        vec![
            Figure::new(
                "key pair + agreement, mean latency",
                Label("c=1"),
                MeanMs,
                "≈ 52 ms",
            )
            .with_goal(Goal::SecureAtMost(0.5)),
            Figure::new(
                "key pair + agreement, median latency",
                Label("c=1"),
                P50Ms,
                "",
            )
            .with_goal(Goal::SecureAtMost(0.5)),
            Figure::new("key pair + agreement, p99 latency", Label("c=1"), P99Ms, ""),
            Figure::new("throughput", Each, OpsPerSec, ""),
        ]
    }

    fn plot_axis(&self) -> Option<PlotAxis> {
        Some(PlotAxis::Concurrency)
    }

    fn expected_duration(&self, params: &Params) -> Duration {
        // About 0.5 ms per secure operation per core on a 2020s x86 core (measured: see the
        // report), plus the open-loop point at its fixed rate.
        let per_op = 0.5e-3;
        let closed: f64 = Self::concurrencies(params.cores)
            .iter()
            .map(|&c| Self::ops(params) as f64 * per_op / c.min(params.cores) as f64)
            .sum();
        let open = Self::ops(params) as f64 / Self::open_rate(params);
        Duration::from_secs_f64(closed * 1.1 + open)
    }

    fn run(
        &self,
        mode: Mode,
        params: &Params,
        progress: &Progress,
    ) -> Result<Vec<Measurement>, Error> {
        let net = NetworkId::new("themis-bench").map_err(|e| Error::Workload {
            workload: NAME.into(),
            mode,
            reason: e.to_string(),
        })?;
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&params.seed.to_be_bytes());
        let keys = Arc::new(IdentityKeypair::from_seed(&seed));
        let b = Arc::new(Responder {
            id: keys.node_id(&net),
            keys,
            net,
            config: HandshakeConfig::default(),
        });
        let rt = load::runtime()?;
        let ops = Self::ops(params);
        let mut out = Vec::new();
        rt.block_on(async {
            // Warm up caches and the allocator; not recorded.
            let warm = ClosedLoop::new(1, (ops / 10).max(1));
            progress.add_len(warm.ops);
            progress.message("warm-up");
            let b2 = Arc::clone(&b);
            load::closed_loop(warm, progress, move |_| op(mode, Arc::clone(&b2))).await?;

            for c in Self::concurrencies(params.cores) {
                let point = format!("c={c}");
                progress.add_len(ops);
                progress.message(point.clone());
                let b2 = Arc::clone(&b);
                let cfg = ClosedLoop::new(c, ops);
                let stats =
                    load::closed_loop(cfg, progress, move |_| op(mode, Arc::clone(&b2))).await?;
                out.push(Measurement::from_stats(NAME, mode, point, 2, &stats).with_concurrency(c));
            }

            let rate = Self::open_rate(params);
            let point = format!("open {rate}/s");
            progress.add_len(ops);
            progress.message(point.clone());
            let cfg = OpenLoop {
                rate_per_sec: rate,
                ops,
                max_in_flight: 1024,
                timer: Timer::Precise,
            };
            let stats = load::open_loop(cfg, progress, |_| op(mode, Arc::clone(&b))).await?;
            out.push(Measurement::from_stats(NAME, mode, point, 2, &stats));
            Ok::<_, Error>(())
        })?;
        if let Some(m) = out.iter().find(|m| m.errors > 0) {
            return Err(Error::Workload {
                workload: NAME.into(),
                mode,
                reason: m.note.clone().unwrap_or_else(|| "operations failed".into()),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn responder(claimed: Option<NodeId>) -> Responder {
        let net = NetworkId::new("t").unwrap();
        let keys = Arc::new(IdentityKeypair::from_seed(&[9; 32]));
        Responder {
            id: claimed.unwrap_or_else(|| keys.node_id(&net)),
            keys,
            net,
            config: HandshakeConfig::default(),
        }
    }

    #[test]
    fn one_handshake_succeeds() {
        secure_once(&responder(None)).unwrap();
    }

    #[test]
    fn a_wrong_responder_identity_is_refused() {
        let net = NetworkId::new("t").unwrap();
        let other = IdentityKeypair::from_seed(&[8; 32]).node_id(&net);
        assert!(secure_once(&responder(Some(other))).is_err());
    }
}

//! Workload 5: key pair creation + key agreement (paper §9.2: "identity (public-private key
//! pair) creation and the authenticated key agreement protocol, averaging about 52ms").
//!
//! `themis-handshake` has no state machine on main yet, so the secure operation performs the
//! cryptographic work of the paper's Fig. 2 through `themis-crypto` directly, in memory: one new
//! Ed25519 identity for the initiator A, then for the three messages two X25519 key pairs, two
//! X25519 agreements, two Ed25519 signatures and two verifications, the `h(PK_B, net_id) = B`
//! check, the transcript hash, HKDF on both sides and the key-confirmation MAC of message 3
//! computed and verified. It skips encoding and parsing of the wire messages. The insecure
//! operation is the key pair creation (and node id) alone: no agreement.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use themis_crypto::{
    EphemeralSecret, IdentityKeypair, NetworkId, NodeId, PublicKey, SessionKeys, Transcript,
    fill_random,
};

use crate::load::{self, ClosedLoop, OpOutcome, OpenLoop, Timer};
use crate::workload::{Figure, Goal, Measurement, Metric, Params, PlotAxis, PointSel, Workload};
use crate::{Error, Mode, Progress};

/// Name of this workload.
pub(crate) const NAME: &str = "key-agreement";

/// Bench-only hash labels: these are not the wire format of `themis-handshake`.
const LABEL_M1: &str = "themis-bench/fig2/m1";
const LABEL_M2: &str = "themis-bench/fig2/m2";
const LABEL_TRANSCRIPT: &str = "themis-bench/fig2/transcript";

/// The long-lived responder B every new node agrees a key with.
struct Responder {
    keys: IdentityKeypair,
    public: PublicKey,
    id: NodeId,
    net: NetworkId,
}

/// One secure operation: A's identity creation and the Fig. 2 agreement with B.
fn secure_once(b: &Responder) -> Result<(), &'static str> {
    let net = &b.net;
    // paper §5.1.1: a node picks its key pair freely; its identity is A = h(PK_A, net_id).
    let a = IdentityKeypair::generate();
    let a_public = a.public();
    let a_id = a.node_id(net);

    // Fig. 2 message 1: g^a, N_A, PK_A, net_id, B, Sig_A(g^a, N_A, PK_A, net_id, B).
    let xa = EphemeralSecret::generate();
    let mut n_a = [0u8; 32];
    fill_random(&mut n_a);
    let m1 = Transcript::digest(
        LABEL_M1,
        &[
            xa.public().as_bytes(),
            &n_a,
            a_public.as_bytes(),
            net.as_bytes(),
            b.id.as_bytes(),
        ],
    );
    let s1 = a.sign(&m1);

    // B verifies the signature and that B is his own identifier, and derives A = h(PK_A, net_id).
    a_public
        .verify(&m1, &s1)
        .map_err(|_| "message 1 signature")?;
    let a_id_at_b = a_public.node_id(net);

    // Fig. 2 message 2: g^b, PK_B, N_A, A, Sig_B(g^b, PK_B, N_A, A); B computes K_AB.
    let xb = EphemeralSecret::generate();
    let m2 = Transcript::digest(
        LABEL_M2,
        &[
            xb.public().as_bytes(),
            b.public.as_bytes(),
            &n_a,
            a_id_at_b.as_bytes(),
        ],
    );
    let s2 = b.keys.sign(&m2);
    let transcript =
        Transcript::digest(LABEL_TRANSCRIPT, &[&m1, s1.as_bytes(), &m2, s2.as_bytes()]);
    let k_b = SessionKeys::derive(
        &xb.diffie_hellman(&xa.public())
            .map_err(|_| "agreement at B")?,
        &transcript,
    );

    // A verifies h(PK_B, net_id) = B, the signature, her nonce and her identifier; K_AB = (g^b)^a.
    if !b.id.is_derived_from(&b.public, net) {
        return Err("responder identity");
    }
    b.public
        .verify(&m2, &s2)
        .map_err(|_| "message 2 signature")?;
    if a_id_at_b != a_id {
        return Err("initiator identity");
    }
    let k_a = SessionKeys::derive(
        &xa.diffie_hellman(&xb.public())
            .map_err(|_| "agreement at A")?,
        &transcript,
    );

    // Fig. 2 message 3: MAC_K(N_A); B registers K_AB only once it verifies.
    let tag = k_a.confirm.compute(&n_a);
    k_b.confirm
        .verify(&n_a, &tag)
        .map_err(|_| "key confirmation")?;
    black_box((k_a, k_b));
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
            Mode::Insecure => insecure_once(&b.net),
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
        "Secure: a new Ed25519 identity for the initiator plus the cryptographic work of the \
         paper's Fig. 2 (two X25519 key pairs and agreements, two Ed25519 signatures and \
         verifications, the `h(PK_B, net_id) = B` check, transcript hash, HKDF on both sides, \
         key-confirmation MAC), in memory through `themis-crypto` — **not** the \
         `themis-handshake` state machine, which is not on main yet, so message encoding and \
         parsing are not counted. Insecure: key pair creation and node id only, no agreement. \
         Closed loop at 1, cores and 2×cores operations in flight (nodes = 2: the new node and \
         its peer), then open loop at a fixed offered rate."
            .into()
    }

    fn figures(&self) -> Vec<Figure> {
        vec![
            Figure {
                what: "key pair + agreement, mean latency",
                point: PointSel::Label("c=1"),
                metric: Metric::MeanMs,
                paper: "≈ 52 ms",
                goal: Some(Goal::SecureAtMost(0.5)),
            },
            Figure {
                what: "key pair + agreement, median latency",
                point: PointSel::Label("c=1"),
                metric: Metric::P50Ms,
                paper: "",
                goal: Some(Goal::SecureAtMost(0.5)),
            },
            Figure {
                what: "key pair + agreement, p99 latency",
                point: PointSel::Label("c=1"),
                metric: Metric::P99Ms,
                paper: "",
                goal: None,
            },
            Figure {
                what: "throughput",
                point: PointSel::Each,
                metric: Metric::OpsPerSec,
                paper: "",
                goal: None,
            },
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
        let keys = IdentityKeypair::from_seed(&seed);
        let b = Arc::new(Responder {
            public: keys.public(),
            id: keys.node_id(&net),
            keys,
            net,
        });
        let rt = load::runtime()?;
        let ops = Self::ops(params);
        let mut out = Vec::new();
        rt.block_on(async {
            // Warm up caches and the allocator; not recorded.
            let warm = ClosedLoop {
                concurrency: 1,
                ops: (ops / 10).max(1),
            };
            progress.add_len(warm.ops);
            progress.message("warm-up");
            let b2 = Arc::clone(&b);
            load::closed_loop(warm, progress, move |_| op(mode, Arc::clone(&b2))).await?;

            for c in Self::concurrencies(params.cores) {
                let point = format!("c={c}");
                progress.add_len(ops);
                progress.message(point.clone());
                let b2 = Arc::clone(&b);
                let cfg = ClosedLoop {
                    concurrency: c,
                    ops,
                };
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

    #[test]
    fn one_agreement_succeeds() {
        let net = NetworkId::new("t").unwrap();
        let keys = IdentityKeypair::from_seed(&[9; 32]);
        let b = Responder {
            public: keys.public(),
            id: keys.node_id(&net),
            keys,
            net,
        };
        secure_once(&b).unwrap();
    }

    #[test]
    fn a_wrong_responder_identity_is_refused() {
        let net = NetworkId::new("t").unwrap();
        let keys = IdentityKeypair::from_seed(&[9; 32]);
        let other = IdentityKeypair::from_seed(&[8; 32]);
        let b = Responder {
            public: keys.public(),
            id: other.node_id(&net),
            keys,
            net,
        };
        assert_eq!(secure_once(&b), Err("responder identity"));
    }
}

//! k-means (Table 2's "K-Means Clustering"): the application's own code, shared by the mesh
//! service and the direct baseline.

use themis_mesh::Bytes;

/// Points per request, clusters, iterations.
pub(super) const POINTS: usize = 1_000;
pub(super) const K: usize = 8;
pub(super) const ITERATIONS: usize = 10;
/// Largest request the service accepts (points), checked before allocating.
const MAX_POINTS: usize = 100_000;
/// Length of an answer: the centroids then the inertia, little-endian f32.
const ANSWER_LEN: usize = K * 8 + 4;

/// 1,000 points around 8 random centres, as little-endian f32 pairs (8,000 bytes): data set
/// `set` of a run seeded with `seed`.
pub(super) fn request(seed: u64, set: u64) -> Bytes {
    let mut rng = crate::workloads::rng(seed, set);
    let centres: Vec<(f32, f32)> = (0..K)
        .map(|_| (rng.f32() * 100.0, rng.f32() * 100.0))
        .collect();
    let mut v = Vec::with_capacity(POINTS * 8);
    for (cx, cy) in centres.iter().cycle().take(POINTS) {
        let x = cx + (rng.f32() - 0.5) * 10.0;
        let y = cy + (rng.f32() - 0.5) * 10.0;
        v.extend_from_slice(&x.to_le_bytes());
        v.extend_from_slice(&y.to_le_bytes());
    }
    Bytes::from(v)
}

/// Squared distance between two points.
fn dist2(p: &[f32; 2], q: &[f32; 2]) -> f32 {
    (p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)
}

/// One Lloyd iteration: assigns every point to its nearest centroid, moves each centroid to
/// the mean of its points (an empty cluster keeps its centroid); returns the inertia of the
/// assignment.
fn lloyd_step(pts: &[[f32; 2]], cent: &mut [[f32; 2]]) -> f32 {
    let mut sum = [[0.0f32; 2]; K];
    let mut count = [0u32; K];
    let mut inertia = 0.0;
    for p in pts {
        let (mut best, mut best_d) = (0, f32::INFINITY);
        for (c, q) in cent.iter().enumerate() {
            let d = dist2(p, q);
            if d < best_d {
                (best, best_d) = (c, d);
            }
        }
        inertia += best_d;
        if let (Some(s), Some(n)) = (sum.get_mut(best), count.get_mut(best)) {
            s[0] += p[0];
            s[1] += p[1];
            *n += 1;
        }
    }
    for ((c, s), &n) in cent.iter_mut().zip(&sum).zip(&count) {
        if n > 0 {
            *c = [s[0] / n as f32, s[1] / n as f32];
        }
    }
    inertia
}

/// `kmeans`: decodes the points, runs [`ITERATIONS`] Lloyd iterations with [`K`] centroids
/// (initialised from evenly spaced points) and answers the centroids then the inertia, as
/// little-endian f32 (68 bytes).
pub(super) fn service(request: &[u8]) -> Result<Vec<u8>, String> {
    if !request.len().is_multiple_of(8) || request.len() / 8 > MAX_POINTS {
        return Err(format!(
            "k-means wants up to {MAX_POINTS} points of two little-endian f32 each"
        ));
    }
    let f32_at = |c: &[u8], at: usize| {
        c.get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0.0, f32::from_le_bytes)
    };
    let pts: Vec<[f32; 2]> = request
        .chunks_exact(8)
        .map(|c| [f32_at(c, 0), f32_at(c, 4)])
        .collect();
    if pts.len() < K {
        return Err(format!("k-means wants at least {K} points"));
    }
    let mut cent: Vec<[f32; 2]> = (0..K)
        .filter_map(|c| pts.get(c * pts.len() / K).copied())
        .collect();
    let mut inertia = 0.0f32;
    for _ in 0..ITERATIONS {
        inertia = lloyd_step(&pts, &mut cent);
    }
    let mut out = Vec::with_capacity(ANSWER_LEN);
    for c in &cent {
        out.extend_from_slice(&c[0].to_le_bytes());
        out.extend_from_slice(&c[1].to_le_bytes());
    }
    out.extend_from_slice(&inertia.to_le_bytes());
    Ok(out)
}

/// The client's check of an answer: the right size and a finite, positive inertia.
pub(super) fn answer_ok(answer: &[u8]) -> bool {
    answer.len() == ANSWER_LEN
        && answer
            .get(K * 8..)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(f32::from_le_bytes)
            .is_some_and(|i| i.is_finite() && i > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmeans_finds_the_clusters() {
        let req = request(3, 1);
        assert_eq!(req.len(), POINTS * 8);
        assert_eq!(request(3, 1), req, "seeded");
        assert_ne!(request(3, 2), req);
        let out = service(&req).unwrap();
        assert!(answer_ok(&out));
        let inertia = f32::from_le_bytes(out[K * 8..].try_into().unwrap());
        // Points lie within ±5 of their centre: a good clustering keeps the mean squared
        // distance near the uniform noise's (2 · 10² / 12 ≈ 16.7), far below the spread of
        // the centres themselves (≈ 1,700 over a 100 × 100 square).
        assert!(inertia / (POINTS as f32) < 200.0, "inertia {inertia}");
        assert!(service(&req[..7]).is_err());
        assert!(service(&[0; 16]).is_err());
        assert!(!answer_ok(&out[..10]));
    }
}

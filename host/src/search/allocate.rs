//! Choosing one setting per layer under a budget: a multiple-choice knapsack over each
//! layer's (bytes, predicted KL) per candidate, with the predicted KL of a model taken as the
//! sum of its layers' (the additivity the sensitivity measurement assumes; the end-to-end
//! verification checks it).
//!
//! The curve is the Lagrangian one (as in HAWQ-V3's and llama.cpp-style bit allocation
//! searches, and the classic "convex hull" solution of multiple-choice knapsacks): each layer
//! keeps the lower convex hull of its candidates, every layer starts at its smallest, and the
//! upgrade with the largest KL decrease per byte is taken next. Every point of that curve is
//! optimal for its own size (it minimises KL + λ·bytes for some λ ≥ 0); a budget between two
//! points takes the lower one and then spends what is left on single-layer changes, best
//! KL decrease first.

/// One layer's options: per candidate, its packed bytes and predicted KL contribution.
#[derive(Debug, Clone)]
pub struct LayerCosts {
    pub bytes: Vec<u64>,
    pub cost: Vec<f64>,
}

/// An allocation: one candidate index per layer, with its totals.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub bytes: u64,
    pub cost: f64,
    pub pick: Vec<usize>,
}

fn totals(layers: &[LayerCosts], pick: Vec<usize>) -> Point {
    let bytes = layers.iter().zip(&pick).map(|(l, &j)| l.bytes[j]).sum();
    let cost = layers.iter().zip(&pick).map(|(l, &j)| l.cost[j]).sum();
    Point { bytes, cost, pick }
}

/// The candidates on a layer's lower convex hull in (bytes, cost), by increasing bytes:
/// dominated candidates (no smaller cost for more bytes) and those above the hull go.
fn hull(l: &LayerCosts) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..l.bytes.len()).collect();
    idx.sort_by(|&a, &b| l.bytes[a].cmp(&l.bytes[b]).then(l.cost[a].total_cmp(&l.cost[b])));
    let mut front: Vec<usize> = vec![];
    for j in idx {
        if front.last().is_none_or(|&k| l.cost[j] < l.cost[k] && l.bytes[j] > l.bytes[k]) {
            front.push(j);
        }
    }
    let pt = |j: usize| (l.bytes[j] as f64, l.cost[j]);
    let mut h: Vec<usize> = vec![];
    for j in front {
        while h.len() >= 2 {
            let (o, a, b) = (pt(h[h.len() - 2]), pt(h[h.len() - 1]), pt(j));
            // Not a counter-clockwise turn: the middle point is on or above the chord.
            if (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0) <= 0.0 {
                h.pop();
            } else {
                break;
            }
        }
        h.push(j);
    }
    h
}

/// The Lagrangian curve from every layer at its smallest candidate to every layer at its
/// lowest-cost one, by increasing bytes and decreasing cost.
pub fn curve(layers: &[LayerCosts]) -> Vec<Point> {
    let hulls: Vec<Vec<usize>> = layers.iter().map(hull).collect();
    let mut at = vec![0usize; layers.len()];
    let mut pick: Vec<usize> = hulls.iter().map(|h| h[0]).collect();
    let mut out = vec![totals(layers, pick.clone())];
    loop {
        // The next upgrade with the steepest KL decrease per byte (ties: the first layer).
        let mut best: Option<(f64, usize)> = None;
        for (i, h) in hulls.iter().enumerate() {
            if let Some(&next) = h.get(at[i] + 1) {
                let cur = h[at[i]];
                let l = &layers[i];
                let slope = (l.cost[next] - l.cost[cur]) / (l.bytes[next] - l.bytes[cur]) as f64;
                if best.is_none_or(|(s, _)| slope < s) {
                    best = Some((slope, i));
                }
            }
        }
        let Some((_, i)) = best else { break };
        at[i] += 1;
        pick[i] = hulls[i][at[i]];
        out.push(totals(layers, pick.clone()));
    }
    out
}

/// The lowest-cost allocation the curve and single-layer fills find within `max_bytes`;
/// `None` when even every layer at its smallest is larger.
pub fn within_bytes(layers: &[LayerCosts], curve: &[Point], max_bytes: u64) -> Option<Point> {
    let p = curve.iter().take_while(|p| p.bytes <= max_bytes).last()?.clone();
    // Spend what is left: the single change with the largest decrease that still fits.
    Some(greedy(layers, p, |p, l, cur, j| {
        let gain = l.cost[cur] - l.cost[j];
        (p.bytes - l.bytes[cur] + l.bytes[j] <= max_bytes && gain > 0.0).then_some(gain)
    }))
}

/// Apply single-layer changes to `p`, each time the one `score` (of the allocation, a layer,
/// its current candidate and another) rates highest, until `score` accepts none.
fn greedy(
    layers: &[LayerCosts],
    mut p: Point,
    score: impl Fn(&Point, &LayerCosts, usize, usize) -> Option<f64>,
) -> Point {
    loop {
        let mut best: Option<(f64, usize, usize)> = None;
        for (i, l) in layers.iter().enumerate() {
            for j in 0..l.bytes.len() {
                if let Some(s) = score(&p, l, p.pick[i], j) {
                    if best.is_none_or(|(b, ..)| s > b) {
                        best = Some((s, i, j));
                    }
                }
            }
        }
        let Some((_, i, j)) = best else { return p };
        p.pick[i] = j;
        p = totals(layers, std::mem::take(&mut p.pick));
    }
}

/// The smallest allocation whose cost is at most `max_cost` that [`within_bytes`] finds: a
/// binary search over byte budgets between the curve's last point above the bound and its
/// first point within it (a fill below the latter can already meet the bound), then
/// single-layer trims that give back bytes while the cost stays in bounds. `None` when even
/// every layer at its lowest cost is above it.
pub fn within_cost(layers: &[LayerCosts], curve: &[Point], max_cost: f64) -> Option<Point> {
    let k = curve.iter().position(|p| p.cost <= max_cost)?;
    let mut p = curve[k].clone();
    if k > 0 {
        let (mut lo, mut hi) = (curve[k - 1].bytes, curve[k].bytes);
        // Invariant: a budget of `hi` meets the bound; `lo` does not.
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match within_bytes(layers, curve, mid) {
                Some(q) if q.cost <= max_cost => {
                    hi = mid;
                    p = q;
                }
                _ => lo = mid,
            }
        }
    }
    // Give back bytes: the single change that saves the most and keeps the cost in bounds.
    Some(greedy(layers, p, |p, l, cur, j| {
        (l.bytes[j] < l.bytes[cur] && p.cost - l.cost[cur] + l.cost[j] <= max_cost)
            .then(|| (l.bytes[cur] - l.bytes[j]) as f64)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every allocation, by enumeration: the independent reference.
    fn all(layers: &[LayerCosts]) -> Vec<Point> {
        let mut out = vec![vec![]];
        for l in layers {
            out = out
                .into_iter()
                .flat_map(|p: Vec<usize>| {
                    (0..l.bytes.len()).map(move |j| {
                        let mut q = p.clone();
                        q.push(j);
                        q
                    })
                })
                .collect();
        }
        out.into_iter().map(|p| totals(layers, p)).collect()
    }

    fn instance() -> impl Strategy<Value = Vec<LayerCosts>> {
        prop::collection::vec(
            prop::collection::vec((1u64..40, 0u32..1000), 1..5).prop_map(|c| LayerCosts {
                bytes: c.iter().map(|x| x.0).collect(),
                cost: c.iter().map(|x| x.1 as f64 / 100.0).collect(),
            }),
            1..5,
        )
    }

    #[test]
    fn a_worked_example() {
        // Two layers, three settings each (2, 4, 8 "bits"): layer 0 is sensitive, layer 1 not.
        let layers = vec![
            LayerCosts { bytes: vec![2, 4, 8], cost: vec![10.0, 2.0, 0.0] },
            LayerCosts { bytes: vec![2, 4, 8], cost: vec![1.0, 0.5, 0.0] },
        ];
        let c = curve(&layers);
        let picks: Vec<Vec<usize>> = c.iter().map(|p| p.pick.clone()).collect();
        // Slopes: layer 0 −4 then −0.5, layer 1 −0.25 then −0.125.
        assert_eq!(picks, vec![vec![0, 0], vec![1, 0], vec![2, 0], vec![2, 1], vec![2, 2]]);
        // 10 bytes: the curve stops at 8 + 2 (cost 1.0); no change fits the 0 bytes left.
        assert_eq!(within_bytes(&layers, &c, 10).unwrap().pick, vec![2, 0]);
        // 9 bytes: 4 + 4 = cost 2.5 beats the curve's 4 + 2 (3.0) by a fill of layer 1.
        assert_eq!(within_bytes(&layers, &c, 9).unwrap().pick, vec![1, 1]);
        assert_eq!(within_bytes(&layers, &c, 3), None);
        // KL ≤ 2.5: the curve's first point within it is 8 + 2 (10 bytes, 1.0), but a fill
        // from 4 + 2 reaches 4 + 4 (8 bytes, 2.5).
        assert_eq!(within_cost(&layers, &c, 2.5).unwrap().pick, vec![1, 1]);
        assert_eq!(within_cost(&layers, &c, -1.0), None);
    }

    proptest! {
        /// Every curve point is optimal for its size: no allocation of at most its bytes
        /// costs less (the Lagrangian property the search relies on).
        #[test]
        fn curve_points_are_optimal_for_their_size(layers in instance()) {
            let every = all(&layers);
            let c = curve(&layers);
            for w in c.windows(2) {
                prop_assert!(w[1].bytes > w[0].bytes && w[1].cost < w[0].cost);
            }
            for p in &c {
                let best = every.iter().filter(|q| q.bytes <= p.bytes).map(|q| q.cost).fold(f64::MAX, f64::min);
                prop_assert!(p.cost <= best + 1e-9, "curve point {p:?} vs best {best}");
            }
        }

        /// A budget's allocation fits it and is no worse than the curve point below it; the
        /// smallest allocation for a cost bound meets the bound and is no larger than the
        /// curve's first point that does.
        #[test]
        fn budgets_are_met(layers in instance(), frac in 0.0f64..1.0) {
            let every = all(&layers);
            let c = curve(&layers);
            let (lo, hi) = (c[0].bytes, c.last().unwrap().bytes);
            let budget = lo + ((hi - lo) as f64 * frac) as u64;
            let p = within_bytes(&layers, &c, budget).unwrap();
            prop_assert!(p.bytes <= budget);
            let on_curve = c.iter().take_while(|q| q.bytes <= budget).last().unwrap();
            prop_assert!(p.cost <= on_curve.cost + 1e-12);
            prop_assert!(every.iter().any(|q| q.pick == p.pick));
            let bound = on_curve.cost;
            let s = within_cost(&layers, &c, bound).unwrap();
            prop_assert!(s.cost <= bound + 1e-12 && s.bytes <= on_curve.bytes);
            if lo > 0 {
                prop_assert!(within_bytes(&layers, &c, lo - 1).is_none());
            }
        }
    }
}

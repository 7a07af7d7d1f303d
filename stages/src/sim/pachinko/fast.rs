//! The fast engine of `sim.pachinko`: exact, without ever holding or moving the V × D matrix.
//!
//! Two facts make it exact. (1) The translation is shared by all points and the rounding works
//! coordinate by coordinate, so the trajectory of a coordinate depends only on its starting bf16
//! value: per coordinate it is enough to move each *distinct* starting value (a few thousand)
//! once per step. (2) bf16(f32(x) + s) is monotone in x, so the values keep their order: values
//! that meet stay together for good, and a "group" (one current value) is always a contiguous
//! range of the sorted starting values. Per coordinate the engine keeps the groups in value order
//! with their counts of surviving points (a union–find over the starting-value ranks finds the
//! group of each point that dies), merges neighbours that land on the same pattern, and folds
//! groups whose points are all dead into a neighbour (no survivor can tell). Sums over the
//! survivors are Σ value·count over the groups in value order, the same numbers in the same order
//! as the naive engine's sorted columns. The cost is one pass over V per coordinate (draws, ranks,
//! deaths) plus Σ groups per step, instead of Σ alive·D.
//!
//! For the census every coordinate also records when each boundary between neighbouring ranks
//! closed (`merged_at`): at time τ two points share coordinate k iff no boundary between their
//! ranks is still open. Rows that are identical stay identical, so a census refines only one
//! representative per class of the previous census, splitting by coordinates (those with the most
//! distinct values first; those with one value cannot split) until every bucket is a single row
//! or all coordinates agree. The starting value of a point is drawn again when needed (the draws
//! are counter-based). The final survivors' rows are kept whole for `identical_rows`.

use rayon::prelude::*;

use super::model::{accumulate, moved, value_order, Census, Outcome, Records, Setup};

/// `merged_at` of a boundary that never closed.
const OPEN: u16 = u16::MAX;
const EMPTY: u32 = u32::MAX;

/// What the census needs from one coordinate's simulation.
struct Track {
    /// Distinct starting patterns, ascending value (rank order).
    sorted: Vec<u16>,
    /// For the boundary between ranks b and b + 1: the τ at which it closed, or [`OPEN`].
    merged_at: Vec<u16>,
}

impl Track {
    /// Group label of every rank at τ: the number of open boundaries below it.
    fn labels(&self, tau: usize) -> Vec<u32> {
        let mut labels = Vec::with_capacity(self.sorted.len());
        let mut label = 0u32;
        labels.push(0);
        for &m in &self.merged_at {
            label += (m as usize > tau) as u32;
            labels.push(label);
        }
        labels
    }

    fn rank(&self, pattern: u16) -> usize {
        self.sorted
            .binary_search_by_key(&value_order(pattern), |&q| value_order(q))
            .expect("a starting pattern of this coordinate")
    }
}

/// One coordinate's series over τ = 0..=steps.
struct Series {
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
    distinct: Vec<u32>,
    moved: Vec<u32>,
}

/// Union–find root with path halving.
fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let p = parent[x as usize];
        parent[x as usize] = parent[p as usize];
        x = parent[x as usize];
    }
    x
}

pub(crate) fn run(setup: &Setup) -> Outcome {
    let (v, d) = (setup.cfg.points, setup.cfg.dim);
    let times = setup.times();
    let per_pair: Vec<Vec<(Track, Series, Vec<u16>)>> = (0..d.div_ceil(2))
        .into_par_iter()
        .map_init(
            || vec![EMPTY; 1 << 16],
            |slot, pair| {
                // The coordinates' starting patterns in death-position order.
                let mut cols = [vec![0u16; v], vec![0u16; v]];
                for (pos, &id) in setup.id_at.iter().enumerate() {
                    let (a, b) = setup.start_pair(id, pair);
                    cols[0][pos] = a;
                    cols[1][pos] = b;
                }
                (0..2)
                    .filter(|j| 2 * pair + j < d)
                    .map(|j| simulate(setup, 2 * pair + j, &cols[j], slot))
                    .collect()
            },
        )
        .collect();

    let mut records = Records::new(d, times);
    let mut tracks = Vec::with_capacity(d);
    let survivors_count = setup.alive(setup.cfg.steps);
    let mut survivors = vec![0u16; survivors_count * d];
    for (k, (track, series, column)) in per_pair.into_iter().flatten().enumerate() {
        let at = k * times..(k + 1) * times;
        records.sum[at.clone()].copy_from_slice(&series.sum);
        records.sum_sq[at.clone()].copy_from_slice(&series.sum_sq);
        records.distinct[at.clone()].copy_from_slice(&series.distinct);
        records.moved[at].copy_from_slice(&series.moved);
        for (j, &p) in column.iter().enumerate() {
            survivors[j * d + k] = p;
        }
        tracks.push(track);
    }

    let mut classes = Classes::new(v);
    let censuses = (0..times)
        .filter(|&tau| setup.is_census(tau))
        .map(|tau| classes.census(setup, &tracks, &records, tau))
        .collect();
    Outcome {
        records,
        censuses,
        survivors,
    }
}

/// Simulates coordinate k from its starting patterns `col` (death-position order); `slot` is a
/// 65,536-entry scratch table, all [`EMPTY`] on entry and on return. Returns the track, the series
/// and the survivors' final patterns.
fn simulate(setup: &Setup, k: usize, col: &[u16], slot: &mut [u32]) -> (Track, Series, Vec<u16>) {
    let (steps, cull, times) = (setup.cfg.steps, setup.cfg.cull, setup.times());

    let mut sorted = Vec::new();
    for &p in col {
        if slot[p as usize] == EMPTY {
            slot[p as usize] = 0;
            sorted.push(p);
        }
    }
    sorted.sort_unstable_by_key(|&p| value_order(p));
    for (r, &p) in sorted.iter().enumerate() {
        slot[p as usize] = r as u32;
    }
    // At most 65,536 distinct patterns, so a rank fits in u16.
    let ranks: Vec<u16> = col.iter().map(|&p| slot[p as usize] as u16).collect();
    for &p in &sorted {
        slot[p as usize] = EMPTY;
    }

    // Groups are identified by their root, the first rank of their range.
    let n = sorted.len();
    let mut parent: Vec<u32> = (0..n as u32).collect();
    let mut count = vec![0u32; n];
    for &r in &ranks {
        count[r as usize] += 1;
    }
    let mut pattern = sorted.clone();
    let mut merged_at = vec![OPEN; n - 1];
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut next: Vec<u32> = Vec::with_capacity(n);

    let mut series = Series {
        sum: Vec::with_capacity(times),
        sum_sq: Vec::with_capacity(times),
        distinct: Vec::with_capacity(times),
        moved: Vec::with_capacity(times),
    };
    let record = |series: &mut Series, order: &[u32], pattern: &[u16], count: &[u32], moves| {
        let mut sums = (0.0, 0.0);
        for &g in order {
            accumulate(&mut sums, pattern[g as usize], count[g as usize]);
        }
        series.sum.push(sums.0);
        series.sum_sq.push(sums.1);
        series.distinct.push(order.len() as u32);
        series.moved.push(moves);
    };
    record(&mut series, &order, &pattern, &count, 0);

    for t in 0..steps {
        // steps ≤ 10,000 (the spec's bound), so τ fits below OPEN.
        let tau = (t + 1) as u16;
        let s = setup.step_component(t, k);
        // Translate every group; neighbours that land on one pattern merge.
        let mut moved_points = 0u32;
        next.clear();
        for &g in &order {
            let gi = g as usize;
            let new = moved(pattern[gi], s);
            if new != pattern[gi] {
                moved_points += count[gi];
                pattern[gi] = new;
            }
            match next.last() {
                Some(&l) if pattern[l as usize] == new => {
                    parent[gi] = l;
                    count[l as usize] += count[gi];
                    merged_at[gi - 1] = tau;
                }
                _ => next.push(g),
            }
        }
        std::mem::swap(&mut order, &mut next);

        // The cull of step t.
        for &r in &ranks[t * cull..(t + 1) * cull] {
            let root = find(&mut parent, r as u32);
            count[root as usize] -= 1;
        }

        // Fold groups without survivors into a neighbour: into the group on their left, or (at
        // the bottom) into one root with the first surviving group.
        next.clear();
        let mut lead: Option<u32> = None;
        for &g in &order {
            let gi = g as usize;
            if count[gi] > 0 {
                match lead.take() {
                    Some(a) => {
                        parent[gi] = a;
                        pattern[a as usize] = pattern[gi];
                        count[a as usize] = count[gi];
                        merged_at[gi - 1] = tau;
                        next.push(a);
                    }
                    None => next.push(g),
                }
            } else if let Some(&l) = next.last() {
                parent[gi] = l;
                merged_at[gi - 1] = tau;
            } else if let Some(a) = lead {
                parent[gi] = a;
                merged_at[gi - 1] = tau;
            } else {
                lead = Some(g);
            }
        }
        std::mem::swap(&mut order, &mut next);
        record(&mut series, &order, &pattern, &count, moved_points);
    }

    let survivors = ranks[steps * cull..]
        .iter()
        .map(|&r| pattern[find(&mut parent, r as u32) as usize])
        .collect();
    (Track { sorted, merged_at }, series, survivors)
}

/// Classes of identical rows over death positions (a union–find), refined census by census.
struct Classes {
    parent: Vec<u32>,
    /// Scratch: alive members per root during a census (0 outside).
    count: Vec<u32>,
}

impl Classes {
    fn new(points: usize) -> Classes {
        Classes {
            parent: (0..points as u32).collect(),
            count: vec![0; points],
        }
    }

    fn census(&mut self, setup: &Setup, tracks: &[Track], records: &Records, tau: usize) -> Census {
        let points = setup.cfg.points;
        // One alive representative per class, and the class's alive size.
        let mut reps = Vec::new();
        let mut roots = Vec::new();
        for pos in setup.first_alive(tau)..points {
            let root = find(&mut self.parent, pos as u32);
            if self.count[root as usize] == 0 {
                reps.push(pos as u32);
                roots.push(root);
            }
            self.count[root as usize] += 1;
        }
        let sizes: Vec<usize> = roots
            .iter()
            .map(|&r| self.count[r as usize] as usize)
            .collect();
        for &r in &roots {
            self.count[r as usize] = 0;
        }

        // Coordinates that can split anything, most distinct values first.
        let mut coords: Vec<usize> = (0..setup.cfg.dim)
            .filter(|&k| records.distinct[k * records.times + tau] > 1)
            .collect();
        coords.sort_by_key(|&k| {
            (
                std::cmp::Reverse(records.distinct[k * records.times + tau]),
                k,
            )
        });

        // Index of each representative, to look up its class.
        let index_of = |pos: u32| reps.binary_search(&pos).expect("a representative");
        let groups = refine(setup, tracks, tau, reps.clone(), &coords);
        let mut merged = vec![false; reps.len()];
        let mut populations = Vec::new();
        let mut distinct = reps.len();
        for group in &groups {
            let first = index_of(group[0]);
            let mut population = 0;
            for &pos in group {
                let i = index_of(pos);
                merged[i] = true;
                population += sizes[i];
                self.parent[roots[i] as usize] = roots[first];
            }
            distinct -= group.len() - 1;
            populations.push(population);
        }
        populations.extend(
            (0..reps.len())
                .filter(|&i| !merged[i] && sizes[i] >= 2)
                .map(|i| sizes[i]),
        );
        populations.sort_unstable_by(|a, b| b.cmp(a));
        Census {
            tau,
            rows: setup.alive(tau),
            distinct,
            populations,
        }
    }
}

/// Splits `items` (death positions) into buckets of rows identical at τ, coordinate by coordinate
/// in the order `coords`; returns the buckets of ≥ 2 rows that no coordinate split.
fn refine(
    setup: &Setup,
    tracks: &[Track],
    tau: usize,
    items: Vec<u32>,
    coords: &[usize],
) -> Vec<Vec<u32>> {
    let mut flat = items;
    // Buckets tile `flat` in order; only buckets of ≥ 2 items are kept.
    let mut lens: Vec<usize> = if flat.len() >= 2 {
        vec![flat.len()]
    } else {
        flat.clear();
        vec![]
    };
    for &k in coords {
        if lens.is_empty() {
            break;
        }
        let track = &tracks[k];
        let labels = track.labels(tau);
        let mut keyed: Vec<(u32, u32)> = flat
            .par_iter()
            .map(|&pos| {
                let p = setup.start(setup.id_at[pos as usize], k);
                (labels[track.rank(p)], pos)
            })
            .collect();
        let mut slices = Vec::with_capacity(lens.len());
        let mut rest = keyed.as_mut_slice();
        for &len in &lens {
            let (head, tail) = rest.split_at_mut(len);
            slices.push(head);
            rest = tail;
        }
        slices.par_iter_mut().for_each(|s| s.sort_unstable());
        flat.clear();
        lens.clear();
        for s in &slices {
            for run in s.chunk_by(|a, b| a.0 == b.0) {
                if run.len() >= 2 {
                    flat.extend(run.iter().map(|&(_, pos)| pos));
                    lens.push(run.len());
                }
            }
        }
    }
    let mut groups = Vec::with_capacity(lens.len());
    let mut start = 0;
    for len in lens {
        groups.push(flat[start..start + len].to_vec());
        start += len;
    }
    groups
}

//! The naive engine of `sim.pachinko`: the whole V × D bf16 matrix in memory, every surviving
//! point moved coordinate by coordinate at every step, the census by
//! [`crate::bf16::identical_rows`] on the surviving rows. Σ alive·D updates (≈ 6e10 at the full
//! pachinko size), so it is for small sizes: it is the reference the fast engine is tested
//! against, bit for bit.

use rayon::prelude::*;

use super::model::{accumulate, moved, value_order, Census, Outcome, Records, Setup};
use crate::bf16;

pub(crate) fn run(setup: &Setup) -> Outcome {
    let (v, d) = (setup.cfg.points, setup.cfg.dim);
    let times = setup.times();
    // Row `pos` holds the point that dies at death position `pos`.
    let mut rows = vec![0u16; v * d];
    rows.par_chunks_mut(d).enumerate().for_each(|(pos, row)| {
        let id = setup.id_at[pos];
        for pair in 0..d.div_ceil(2) {
            let (a, b) = setup.start_pair(id, pair);
            row[2 * pair] = a;
            if 2 * pair + 1 < d {
                row[2 * pair + 1] = b;
            }
        }
    });

    let mut records = Records::new(d, times);
    let mut censuses = Vec::new();
    measure(setup, &rows, 0, &vec![0; d], &mut records);
    censuses.push(census(setup, &rows, 0));
    for t in 0..setup.cfg.steps {
        let tau = t + 1;
        let moves: Vec<f32> = (0..d).map(|k| setup.step_component(t, k)).collect();
        let start = setup.first_alive(t) * d;
        let moved_per_coordinate = rows[start..]
            .par_chunks_mut(d)
            .fold(
                || vec![0u32; d],
                |mut acc, row| {
                    for k in 0..d {
                        let new = moved(row[k], moves[k]);
                        acc[k] += (new != row[k]) as u32;
                        row[k] = new;
                    }
                    acc
                },
            )
            .reduce(
                || vec![0u32; d],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            );
        measure(setup, &rows, tau, &moved_per_coordinate, &mut records);
        if setup.is_census(tau) {
            censuses.push(census(setup, &rows, tau));
        }
    }
    let survivors = rows[setup.first_alive(setup.cfg.steps) * d..].to_vec();
    Outcome {
        records,
        censuses,
        survivors,
    }
}

/// Fills the records of time τ from the rows alive at τ.
fn measure(setup: &Setup, rows: &[u16], tau: usize, moved: &[u32], records: &mut Records) {
    let d = setup.cfg.dim;
    let alive = &rows[setup.first_alive(tau) * d..];
    let per_coordinate: Vec<(f64, f64, u32)> = (0..d)
        .into_par_iter()
        .map(|k| {
            let mut values: Vec<u16> = alive.iter().skip(k).step_by(d).copied().collect();
            values.sort_unstable_by_key(|&p| value_order(p));
            let mut sums = (0.0, 0.0);
            let mut distinct = 0;
            for run in values.chunk_by(|a, b| a == b) {
                accumulate(&mut sums, run[0], run.len() as u32);
                distinct += 1;
            }
            (sums.0, sums.1, distinct)
        })
        .collect();
    for (k, (sum, sum_sq, distinct)) in per_coordinate.into_iter().enumerate() {
        let i = k * records.times + tau;
        records.sum[i] = sum;
        records.sum_sq[i] = sum_sq;
        records.distinct[i] = distinct;
        records.moved[i] = moved[k];
    }
}

fn census(setup: &Setup, rows: &[u16], tau: usize) -> Census {
    let d = setup.cfg.dim;
    let bytes: Vec<u8> = rows[setup.first_alive(tau) * d..]
        .iter()
        .flat_map(|p| p.to_le_bytes())
        .collect();
    let c = bf16::identical_rows(&bytes, 2 * d);
    Census {
        tau,
        rows: c.rows,
        distinct: c.distinct,
        populations: c.groups.iter().map(Vec::len).collect(),
    }
}

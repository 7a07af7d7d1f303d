//! `w.topology` (science spec S07): the lattice adjacency graph of a dead set's unique vectors.
//!
//! Nodes are the unique rows (by raw bytes) of the tokens selected by mask `mask` of the `dead`
//! file, numbered by smallest token id; a node's weight is its token count and it carries the
//! black-hole id of its tokens (from `w.black_holes`' `members`). Every pair of nodes is compared
//! once (rayon over rows of the pair matrix, results stored by pair index, so the thread count
//! cannot change anything) in two metrics:
//!
//! - **bit space** (S02, V4.3): per dimension the distance of the sign-aware ordinal keys
//!   ([`crate::lattice::Format::ordinal`]), i.e. the number of representable values between the
//!   two components, exact across exponent boundaries and across zero; L∞ = max, L1 = sum.
//!   An **edge** joins two nodes whose bit-space L∞ is 1 (every dimension equal or one step apart).
//! - **lattice coordinates** (S02; the metric of the original notebook): per dimension
//!   |x/ULP(x) − y/ULP(y)|. Within one sign and exponent this is the same integer step count; across
//!   an exponent boundary the coordinate jumps (a normal bf16 value has |x/ULP(x)| ∈ [128, 256)), and
//!   across zero it adds the two magnitudes, so large lattice distances are not step counts (V4.5).
//!   S07's "all vectors connect at 415, diameter 508" are lattice-coordinate numbers; the bit-space
//!   equivalents are reported beside them. For edges the two readings agree whenever the adjacent
//!   components share their exponents, which the stage checks (`same_exponents`); the summary also
//!   counts the lattice-variant edges (L∞ = 1; the coordinates are integers, so this is the
//!   notebook's 0.5 ≤ L∞ ≤ 1.5) and how many of them are bit-space edges.
//!
//! The graph (a petgraph `UnGraph`) gives components (union–find), degrees and the average
//! clustering coefficient (networkx's definition: the mean over a component's nodes of
//! 2·T(v)/(k(k−1)), 0 when the degree k < 2), density = edges/(n(n−1)/2) (0 for one node).
//! Components are numbered by (tokens descending, smallest token id ascending). The connectivity
//! threshold is the bottleneck (largest edge) of a minimum spanning tree under L∞ (dense Prim), the
//! diameter the largest pairwise L∞. All distances are exact integers (u32); densities and
//! clustering are f64.
//!
//! Outputs (deterministic bytes): `edges` (CSV `a,b,linf,l1,same_exponents`, a < b representative
//! token ids, ascending by (a, b)), `components` (CSV), `summary` (JSON, see [`Summary`]).
//! Memory: the pair matrices take 8 bytes per pair, hence the `max_vectors` guard.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use petgraph::graph::{NodeIndex, UnGraph};
use petgraph::unionfind::UnionFind;
use rayon::prelude::*;
use serde::Serialize;

use azimuth_stage_api::specs::w_lattice::TOPOLOGY as SPEC;

use crate::lattice::{self, Format};
use crate::params::Params;
use crate::w_analysis::{
    load_black_holes, load_mask, load_w, with_threads, Matrix, LATTICE_DTYPES,
};
use crate::{StageContext, StageError};

/// Bumped with `SPEC.version` whenever an output's layout changes.
const FORMAT: u32 = 1;

/// How many components the minimum-L∞-between-components table covers (S07: the top ones).
const TOP_COMPONENTS: usize = 10;

/// The bit-space L∞ of a near miss between the two largest components (S07: 2).
const NEAR_MISS_LINF: u32 = 2;

/// A unique vector of the dead set.
struct Node {
    /// Its tokens, ascending; the first is the representative.
    tokens: Vec<u32>,
    /// Black-hole id of its tokens (0 = none).
    black_hole: u32,
}

impl Node {
    fn rep(&self) -> u32 {
        self.tokens[0]
    }
}

/// The upper triangle (i < j) of a symmetric n × n matrix, row by row.
struct Pairs<T> {
    n: usize,
    data: Vec<T>,
}

impl<T: Copy> Pairs<T> {
    fn offset(&self, i: usize) -> usize {
        i * self.n - i * (i + 1) / 2
    }
    /// The entry of the pair {i, j}, i ≠ j.
    fn get(&self, i: usize, j: usize) -> T {
        let (a, b) = if i < j { (i, j) } else { (j, i) };
        self.data[self.offset(a) + (b - a - 1)]
    }
}

/// The pair matrices in both metrics.
struct Distances {
    bits: Pairs<u32>,
    lattice: Pairs<u32>,
}

/// Fills both pair matrices. Per node the ordinal keys and the lattice coordinates are
/// precomputed once as i32: a finite ordinal key lies within ±0x7F7F_FFFF, and a lattice
/// coordinate x/ULP(x) is always the integer ±(2^m + M) for a normal value and ±M for a subnormal
/// one (m mantissa bits, M the mantissa field), so within ±2^24; `i32::abs_diff` of two of them is
/// exact in u32, and the inner loop vectorises.
fn pairwise(f: Format, m: &Matrix<'_>, nodes: &[Node]) -> Distances {
    let n = nodes.len();
    let d = m.cols;
    let mut ord = Vec::with_capacity(n * d);
    let mut lat = Vec::with_capacity(n * d);
    for node in nodes {
        let row = m.row(node.rep() as usize);
        for j in 0..d {
            let b = f.pattern(row, j);
            ord.push(i32::try_from(f.ordinal(b)).expect("ordinal keys fit i32"));
            let c = f
                .lattice_coordinate(b)
                .expect("non-finite rows are rejected earlier");
            debug_assert_eq!(c.fract(), 0.0, "lattice coordinates are integers");
            lat.push(c as i32);
        }
    }
    let pairs = n * n.saturating_sub(1) / 2;
    let mut bits = vec![0u32; pairs];
    let mut coords = vec![0u32; pairs];
    let mut rows = Vec::with_capacity(n);
    let (mut rest_b, mut rest_c) = (&mut bits[..], &mut coords[..]);
    for i in 0..n {
        let len = n - i - 1;
        let (b, rb) = std::mem::take(&mut rest_b).split_at_mut(len);
        let (c, rc) = std::mem::take(&mut rest_c).split_at_mut(len);
        rest_b = rb;
        rest_c = rc;
        rows.push((i, b, c));
    }
    rows.into_par_iter().for_each(|(i, b, c)| {
        let (oi, li) = (&ord[i * d..(i + 1) * d], &lat[i * d..(i + 1) * d]);
        for (k, j) in (i + 1..n).enumerate() {
            let (oj, lj) = (&ord[j * d..(j + 1) * d], &lat[j * d..(j + 1) * d]);
            let (mut max_bits, mut max_lat) = (0u32, 0u32);
            for x in 0..d {
                max_bits = max_bits.max(oi[x].abs_diff(oj[x]));
                max_lat = max_lat.max(li[x].abs_diff(lj[x]));
            }
            b[k] = max_bits;
            c[k] = max_lat;
        }
    });
    Distances {
        bits: Pairs { n, data: bits },
        lattice: Pairs { n, data: coords },
    }
}

/// The largest edge of a minimum spanning tree of the complete graph under `dist` (dense Prim,
/// O(n²)): the smallest threshold t at which "distance ≤ t" connects all nodes. 0 for n < 2.
fn bottleneck<T: Copy + PartialOrd + Default>(n: usize, dist: impl Fn(usize, usize) -> T) -> T {
    let mut worst = T::default();
    if n < 2 {
        return worst;
    }
    let mut in_tree = vec![false; n];
    in_tree[0] = true;
    let mut best: Vec<T> = (0..n)
        .map(|j| if j == 0 { T::default() } else { dist(0, j) })
        .collect();
    for _ in 1..n {
        let mut next = usize::MAX;
        for j in 0..n {
            if !in_tree[j] && (next == usize::MAX || best[j] < best[next]) {
                next = j;
            }
        }
        if best[next] > worst {
            worst = best[next];
        }
        in_tree[next] = true;
        for j in 0..n {
            if !in_tree[j] {
                let dj = dist(next, j);
                if dj < best[j] {
                    best[j] = dj;
                }
            }
        }
    }
    worst
}

/// Connected components of a union–find over n nodes: each a list of nodes ascending, numbered
/// by (tokens descending, smallest token ascending). Nodes are numbered by smallest token, so a
/// component's first node holds its smallest token.
fn components(uf: &UnionFind<usize>, nodes: &[Node]) -> Vec<Vec<usize>> {
    let mut by_root: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..nodes.len() {
        by_root.entry(uf.find(i)).or_default().push(i);
    }
    let tokens = |c: &Vec<usize>| c.iter().map(|&i| nodes[i].tokens.len()).sum::<usize>();
    let mut comps: Vec<Vec<usize>> = by_root.into_values().collect();
    comps.sort_by(|a, b| {
        tokens(b)
            .cmp(&tokens(a))
            .then(nodes[a[0]].rep().cmp(&nodes[b[0]].rep()))
    });
    comps
}

/// A black hole and its population (all its tokens in W, not only those in the dead set).
#[derive(Debug, Serialize)]
struct BlackHoleRef {
    id: u32,
    population: usize,
}

/// One node of a non-trivial component.
#[derive(Debug, Serialize)]
struct NodeSummary {
    representative: u32,
    tokens: usize,
    /// 0 = not a black hole.
    black_hole: u32,
    degree: usize,
}

/// A non-trivial component of the L∞ = 1 graph.
#[derive(Debug, Serialize)]
struct ComponentSummary {
    component: usize,
    vectors: usize,
    tokens: usize,
    black_holes: Vec<BlackHoleRef>,
    edges: usize,
    density: f64,
    clustering: f64,
    nodes: Vec<NodeSummary>,
}

#[derive(Debug, Serialize)]
struct ComponentCounts {
    count: usize,
    /// Components of ≥ 2 vectors.
    non_trivial: usize,
    isolated_vectors: usize,
    isolated_tokens: usize,
}

#[derive(Debug, Serialize)]
struct L1Bin {
    l1: u64,
    edges: usize,
}

/// The exponent check on the edges (S07: adjacent vectors share every exponent).
#[derive(Debug, Serialize)]
struct ExponentCheck {
    all_edges_same_exponents: bool,
    /// Edges whose endpoints differ in the exponent of at least one dimension.
    exceptions: usize,
}

/// The lattice-coordinate reading of adjacency (L∞ = 1, the notebook's 0.5 ≤ L∞ ≤ 1.5 on
/// integer coordinates), compared with bit space.
#[derive(Debug, Serialize)]
struct LatticeEdges {
    edges: usize,
    /// Of those, how many are also bit-space edges.
    also_bit_space_edges: usize,
    same_edge_set: bool,
}

#[derive(Debug, Serialize)]
struct BlackHolePair {
    a: u32,
    b: u32,
    linf: u32,
    l1: u64,
}

/// Bit-space L∞ between the black holes present in the dead set, in black-hole id order.
#[derive(Debug, Serialize)]
struct BlackHoleMatrix {
    ids: Vec<u32>,
    populations: Vec<usize>,
    representatives: Vec<u32>,
    linf: Vec<Vec<u32>>,
    /// Smallest and largest off-diagonal entry (null with fewer than two black holes).
    linf_range: Option<[u32; 2]>,
    /// Pairs at L∞ = 1, with their L1.
    adjacent: Vec<BlackHolePair>,
}

#[derive(Debug, Serialize)]
struct TokenPair {
    a: u32,
    b: u32,
    l1: u64,
}

/// Pairs at bit-space L∞ = 2 between components 1 and 2.
#[derive(Debug, Serialize)]
struct NearMisses {
    components: [usize; 2],
    linf: u32,
    count: usize,
    pairs: Vec<TokenPair>,
}

#[derive(Debug, Serialize)]
struct RelaxedComponent {
    vectors: usize,
    tokens: usize,
    black_holes: Vec<BlackHoleRef>,
    /// The L∞ = 1 components it joins (their numbers).
    joins: Vec<usize>,
}

#[derive(Debug, Serialize)]
struct Relaxed {
    linf: u64,
    edges: usize,
    components: usize,
    non_trivial: Vec<RelaxedComponent>,
}

#[derive(Debug, Serialize)]
struct ComponentDistance {
    a: usize,
    b: usize,
    linf: u32,
}

#[derive(Debug, Serialize)]
struct Connectivity<T> {
    /// Smallest L∞ threshold at which all vectors form one component (MST bottleneck).
    connect_threshold: T,
    /// Largest pairwise L∞.
    diameter: T,
}

/// The `summary` output.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    format: u32,
    tensor: String,
    dtype: String,
    mask: String,
    rows: usize,
    cols: usize,
    dead_tokens: usize,
    vectors: usize,
    black_hole_vectors: usize,
    /// Vectors held by one token and not a black hole.
    singleton_vectors: usize,
    edges: usize,
    edge_l1_histogram: Vec<L1Bin>,
    edge_l1_mean: Option<f64>,
    exponents: ExponentCheck,
    lattice_edges: LatticeEdges,
    components: ComponentCounts,
    non_trivial_components: Vec<ComponentSummary>,
    black_hole_linf: BlackHoleMatrix,
    near_misses: Option<NearMisses>,
    relaxed: Relaxed,
    /// Minimum bit-space L∞ between each pair of the first components.
    component_min_linf: Vec<ComponentDistance>,
    bit_space: Connectivity<u32>,
    lattice_coordinates: Connectivity<u32>,
    notes: Vec<&'static str>,
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let name = p.string("tensor")?;
    let mask_name = p.string("mask")?;
    let relaxed_linf = p.int("relaxed_linf")? as u64;
    let max_vectors = p.int("max_vectors")? as usize;
    let (edges_out, components_out, summary_out) = (
        p.output("edges")?,
        p.output("components")?,
        p.output("summary")?,
    );

    let w = load_w(&p)?;
    let m = w.matrix(
        &p,
        &name,
        LATTICE_DTYPES,
        "the adjacency graph is built on the bit patterns of a float lattice",
    )?;
    let f = m.format().expect("LATTICE_DTYPES are lattice formats");
    let bh = load_black_holes(&p, "black_holes", m.rows)?;
    let dead = load_mask(&p, "dead", &mask_name, m.rows)?;
    let dead_tokens = dead.iter().filter(|&&d| d).count();
    if dead_tokens == 0 {
        return Err(p.error(format!(
            "mask `{mask_name}` of input `dead` selects no tokens; there is no graph to build \
             (check the mask or pick another with param `mask`)"
        )));
    }
    let groups = super::unique_vectors(&m, &dead);
    if groups.len() > max_vectors {
        return Err(p.error(format!(
            "mask `{mask_name}` selects {dead_tokens} tokens with {} unique vectors, more than \
             param `max_vectors` = {max_vectors}; every pair is compared (O(n²·D) time, 8 bytes \
             per pair), so raise `max_vectors` if that is affordable or use a tighter dead set",
            groups.len()
        )));
    }
    let mut nodes = Vec::with_capacity(groups.len());
    for tokens in groups {
        let id = bh.id[tokens[0] as usize];
        if let Some(&t) = tokens.iter().find(|&&t| bh.id[t as usize] != id) {
            return Err(p.error(format!(
                "input `black_holes` disagrees with W: tokens {} and {t} have identical rows but \
                 black-hole ids {id} and {}; recompute `w.black_holes` from this W",
                tokens[0], bh.id[t as usize]
            )));
        }
        let row = m.row(tokens[0] as usize);
        if let Some(j) = (0..m.cols).find(|&j| f.ulp(f.pattern(row, j)).is_none()) {
            return Err(p.error(format!(
                "row {} of W (token in mask `{mask_name}`) has a non-finite value in dimension \
                 {j}; lattice distances are only defined between finite values",
                tokens[0]
            )));
        }
        nodes.push(Node {
            tokens,
            black_hole: id,
        });
    }
    let n = nodes.len();
    let population = |id: u32| bh.members[id as usize - 1].len();

    let dist = with_threads(&p, ctx.threads, || pairwise(f, &m, &nodes))?;
    let row = |i: usize| m.row(nodes[i].rep() as usize);

    // The L∞ = 1 graph, edges in (i, j) order, with the relaxed graph and lattice-variant edges.
    let mut graph: UnGraph<(), ()> = UnGraph::with_capacity(n, 0);
    for _ in 0..n {
        graph.add_node(());
    }
    let mut uf = UnionFind::<usize>::new(n);
    let mut relaxed_uf = UnionFind::<usize>::new(n);
    let mut edges: Vec<(usize, usize, u64, bool)> = Vec::new();
    let (mut relaxed_edges, mut lattice_edges, mut lattice_and_bits) = (0usize, 0usize, 0usize);
    for i in 0..n {
        for j in i + 1..n {
            let b = dist.bits.get(i, j);
            if b == 1 {
                let l1 = lattice::l1_ordinal(f, row(i), row(j));
                let same = lattice::exponent_distance(f, row(i), row(j)) == 0;
                edges.push((i, j, l1, same));
                graph.add_edge(NodeIndex::new(i), NodeIndex::new(j), ());
                uf.union(i, j);
            }
            if b as u64 <= relaxed_linf {
                relaxed_edges += 1;
                relaxed_uf.union(i, j);
            }
            if dist.lattice.get(i, j) == 1 {
                lattice_edges += 1;
                lattice_and_bits += usize::from(b == 1);
            }
        }
    }
    let degree = |i: usize| graph.neighbors(NodeIndex::new(i)).count();
    let comps = components(&uf, &nodes);
    let mut comp_of = vec![0usize; n];
    for (c, members) in comps.iter().enumerate() {
        for &i in members {
            comp_of[i] = c;
        }
    }

    // Per component: edges, density, clustering.
    let mut comp_edges = vec![0usize; comps.len()];
    for &(i, _, _, _) in &edges {
        comp_edges[comp_of[i]] += 1;
    }
    let local_clustering = |v: usize| -> f64 {
        let nb: Vec<usize> = graph
            .neighbors(NodeIndex::new(v))
            .map(NodeIndex::index)
            .collect();
        let k = nb.len();
        if k < 2 {
            return 0.0;
        }
        let mut links = 0usize;
        for (x, &a) in nb.iter().enumerate() {
            for &b in &nb[x + 1..] {
                links += usize::from(dist.bits.get(a, b) == 1);
            }
        }
        2.0 * links as f64 / (k * (k - 1)) as f64
    };
    let black_holes_of = |members: &[usize]| -> Vec<BlackHoleRef> {
        let mut ids: Vec<u32> = members
            .iter()
            .map(|&i| nodes[i].black_hole)
            .filter(|&b| b != 0)
            .collect();
        ids.sort_unstable();
        ids.into_iter()
            .map(|id| BlackHoleRef {
                id,
                population: population(id),
            })
            .collect()
    };
    let mut comp_csv = String::from(
        "component,vectors,tokens,edges,density,clustering,black_holes,black_hole_populations,\
         representatives,degrees\n",
    );
    let mut non_trivial = Vec::new();
    for (c, members) in comps.iter().enumerate() {
        let k = members.len();
        let tokens: usize = members.iter().map(|&i| nodes[i].tokens.len()).sum();
        let density = if k < 2 {
            0.0
        } else {
            comp_edges[c] as f64 / (k * (k - 1) / 2) as f64
        };
        let clustering = members.iter().map(|&i| local_clustering(i)).sum::<f64>() / k as f64;
        let bhs = black_holes_of(members);
        let join = |v: Vec<String>| v.join(";");
        let _ = writeln!(
            comp_csv,
            "{},{k},{tokens},{},{density},{clustering},{},{},{},{}",
            c + 1,
            comp_edges[c],
            join(bhs.iter().map(|b| b.id.to_string()).collect()),
            join(bhs.iter().map(|b| b.population.to_string()).collect()),
            join(
                members
                    .iter()
                    .map(|&i| nodes[i].rep().to_string())
                    .collect()
            ),
            join(members.iter().map(|&i| degree(i).to_string()).collect()),
        );
        if k >= 2 {
            non_trivial.push(ComponentSummary {
                component: c + 1,
                vectors: k,
                tokens,
                black_holes: bhs,
                edges: comp_edges[c],
                density,
                clustering,
                nodes: members
                    .iter()
                    .map(|&i| NodeSummary {
                        representative: nodes[i].rep(),
                        tokens: nodes[i].tokens.len(),
                        black_hole: nodes[i].black_hole,
                        degree: degree(i),
                    })
                    .collect(),
            });
        }
    }
    let isolated: Vec<&Vec<usize>> = comps.iter().filter(|c| c.len() == 1).collect();

    // Edges CSV and the L1 histogram.
    let mut edges_csv = String::from("a,b,linf,l1,same_exponents\n");
    let mut l1_hist: BTreeMap<u64, usize> = BTreeMap::new();
    for &(i, j, l1, same) in &edges {
        let _ = writeln!(
            edges_csv,
            "{},{},1,{l1},{same}",
            nodes[i].rep(),
            nodes[j].rep()
        );
        *l1_hist.entry(l1).or_default() += 1;
    }
    let exceptions = edges.iter().filter(|e| !e.3).count();

    // Black holes in the dead set, in id order.
    let mut bh_nodes: Vec<usize> = (0..n).filter(|&i| nodes[i].black_hole != 0).collect();
    bh_nodes.sort_by_key(|&i| nodes[i].black_hole);
    let bh_linf: Vec<Vec<u32>> = bh_nodes
        .iter()
        .map(|&a| {
            bh_nodes
                .iter()
                .map(|&b| if a == b { 0 } else { dist.bits.get(a, b) })
                .collect()
        })
        .collect();
    let mut adjacent = Vec::new();
    let mut range: Option<[u32; 2]> = None;
    for (x, &a) in bh_nodes.iter().enumerate() {
        for &b in &bh_nodes[x + 1..] {
            let d = dist.bits.get(a, b);
            range = Some(range.map_or([d, d], |[lo, hi]| [lo.min(d), hi.max(d)]));
            if d == 1 {
                adjacent.push(BlackHolePair {
                    a: nodes[a].black_hole,
                    b: nodes[b].black_hole,
                    linf: d,
                    l1: lattice::l1_ordinal(f, row(a), row(b)),
                });
            }
        }
    }

    // Near misses between components 1 and 2.
    let near_misses = (comps.len() >= 2).then(|| {
        let mut pairs = Vec::new();
        for &a in &comps[0] {
            for &b in &comps[1] {
                if dist.bits.get(a, b) == NEAR_MISS_LINF {
                    let (x, y) = if a < b { (a, b) } else { (b, a) };
                    pairs.push(TokenPair {
                        a: nodes[x].rep(),
                        b: nodes[y].rep(),
                        l1: lattice::l1_ordinal(f, row(x), row(y)),
                    });
                }
            }
        }
        pairs.sort_by_key(|t| (t.a, t.b));
        NearMisses {
            components: [1, 2],
            linf: NEAR_MISS_LINF,
            count: pairs.len(),
            pairs,
        }
    });

    // The relaxed graph.
    let relaxed_comps = components(&relaxed_uf, &nodes);
    let relaxed = Relaxed {
        linf: relaxed_linf,
        edges: relaxed_edges,
        components: relaxed_comps.len(),
        non_trivial: relaxed_comps
            .iter()
            .filter(|c| c.len() >= 2)
            .map(|c| {
                let mut joins: Vec<usize> = c.iter().map(|&i| comp_of[i] + 1).collect();
                joins.sort_unstable();
                joins.dedup();
                RelaxedComponent {
                    vectors: c.len(),
                    tokens: c.iter().map(|&i| nodes[i].tokens.len()).sum(),
                    black_holes: black_holes_of(c),
                    joins,
                }
            })
            .collect(),
    };

    // Minimum L∞ between the first components.
    let top = comps.len().min(TOP_COMPONENTS);
    let mut min_between = vec![u32::MAX; top * top];
    for i in 0..n {
        for j in i + 1..n {
            let (ci, cj) = (comp_of[i], comp_of[j]);
            if ci != cj && ci < top && cj < top {
                let (a, b) = (ci.min(cj), ci.max(cj));
                let slot = &mut min_between[a * top + b];
                *slot = (*slot).min(dist.bits.get(i, j));
            }
        }
    }
    let mut component_min_linf = Vec::new();
    for a in 0..top {
        for b in a + 1..top {
            component_min_linf.push(ComponentDistance {
                a: a + 1,
                b: b + 1,
                linf: min_between[a * top + b],
            });
        }
    }

    let max_of = |v: &[u32]| v.iter().copied().max().unwrap_or(0);
    let bit_space = Connectivity {
        connect_threshold: bottleneck(n, |i, j| dist.bits.get(i, j)),
        diameter: max_of(&dist.bits.data),
    };
    let lattice_coordinates = Connectivity {
        connect_threshold: bottleneck(n, |i, j| dist.lattice.get(i, j)),
        diameter: max_of(&dist.lattice.data),
    };

    p.write_output(edges_out, edges_csv.as_bytes())?;
    p.write_output(components_out, comp_csv.as_bytes())?;
    let summary = Summary {
        format: FORMAT,
        tensor: name,
        dtype: m.dtype.to_string(),
        mask: mask_name,
        rows: m.rows,
        cols: m.cols,
        dead_tokens,
        vectors: n,
        black_hole_vectors: bh_nodes.len(),
        singleton_vectors: nodes
            .iter()
            .filter(|v| v.black_hole == 0 && v.tokens.len() == 1)
            .count(),
        edges: edges.len(),
        edge_l1_mean: (!edges.is_empty())
            .then(|| edges.iter().map(|e| e.2 as f64).sum::<f64>() / edges.len() as f64),
        edge_l1_histogram: l1_hist
            .into_iter()
            .map(|(l1, edges)| L1Bin { l1, edges })
            .collect(),
        exponents: ExponentCheck {
            all_edges_same_exponents: exceptions == 0,
            exceptions,
        },
        lattice_edges: LatticeEdges {
            edges: lattice_edges,
            also_bit_space_edges: lattice_and_bits,
            same_edge_set: lattice_edges == lattice_and_bits && lattice_edges == edges.len(),
        },
        components: ComponentCounts {
            count: comps.len(),
            non_trivial: comps.len() - isolated.len(),
            isolated_vectors: isolated.len(),
            isolated_tokens: isolated.iter().map(|c| nodes[c[0]].tokens.len()).sum(),
        },
        non_trivial_components: non_trivial,
        black_hole_linf: BlackHoleMatrix {
            ids: bh_nodes.iter().map(|&i| nodes[i].black_hole).collect(),
            populations: bh_nodes
                .iter()
                .map(|&i| population(nodes[i].black_hole))
                .collect(),
            representatives: bh_nodes.iter().map(|&i| nodes[i].rep()).collect(),
            linf: bh_linf,
            linf_range: range,
            adjacent,
        },
        near_misses,
        relaxed,
        component_min_linf,
        bit_space,
        lattice_coordinates,
        notes: vec![
            "bit space: per-dimension distance of sign-aware ordinal keys = representable steps \
             between the values, exact across exponent boundaries and zero (S02, V4.3)",
            "lattice coordinates: per-dimension |x/ULP(x) - y/ULP(y)|, the original notebook's \
             metric; it equals the step count only within one sign and exponent, so large values \
             are not physical distances (V4.5); S07's 415/508 are in this metric",
            "black-hole populations count all members in W, not only those in the dead set",
        ],
    };
    p.write_json(summary_out, &summary)
}

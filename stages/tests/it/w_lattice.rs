//! Tests of the `w_lattice` family.

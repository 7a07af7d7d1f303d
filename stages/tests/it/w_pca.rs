//! Tests of the `w_pca` family.

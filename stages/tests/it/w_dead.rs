//! Tests of the `w_dead` family.

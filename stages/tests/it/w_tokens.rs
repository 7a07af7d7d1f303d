//! Tests of the `w_tokens` family.

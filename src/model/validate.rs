//! Validation of one Interface row into a [`super::Validity`], in the reference's order.

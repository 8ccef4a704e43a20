//! PLACEHOLDER: kernels to come (see kernels/mod.rs).

use super::quant_dots::QuantDots;

/// Installs this module's kernels into the table.
pub(super) fn install(_dots: &mut QuantDots) {}
